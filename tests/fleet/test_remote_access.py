"""Remote access (issue 12 item 3): Home Assistant at home, served over HTTPS by a vps through
a WireGuard tunnel the home host dials, on three networks.

* "home": the home host (Home Assistant and the broker, from the prepared host image); its
  default route goes through a router container that masquerades it onto the internet
  network (the home is behind NAT: nothing on the internet reaches it). It keeps reaching
  the test registry and the controller on its own bridge.
* "internet": the vps (a prepared host, hardened as every vps) and a client container.
* The controller (this machine) reaches both hosts for SSH, as it would reach a home server on
  its LAN and a vps on the internet.

The site is written by the CLI (`abri site set remote_access=vps1`) and applied. From the
client: Home Assistant's page over HTTPS on the vps, with the certificate whose fingerprint
abri printed; a port scan of the vps finds SSH and HTTPS only (MQTT, Home Assistant's own port
and everything else closed), the tunnel's UDP port has a handshake from the home host, the
home host is not reachable; SSH as root and with a password are refused. The same holds after
`systemctl restart nftables` on the vps and after the vps restarts, and a second apply
changes nothing on either host.

Kernel WireGuard is missing on this machine: the hosts run wireguard-go (the kit installs it
only where `ip link add ... type wireguard` is refused).
"""

from __future__ import annotations

import json
import re
import secrets as _random
import subprocess
import time

import pytest

from tests.fleet import harness
from tests.fleet.harness import docker
from tests.fleet.test_deploy import (
    NESTED_ENGINE_OPTIONS,
    _abri,
    _apply,
    _env,
    _own_config_home,
    _recap,
    _tool,
)
from tests.fleet.test_vps import ADMIN, _ssh, _wait_for, _wait_for_admin

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # the test module's autouse fixture, shared

#: what the client scans on the vps: the first 1024 TCP ports and the services' own
SCANNED = [*range(1, 1025), 1883, 8123, 8443]

#: run in the client (python3 of the host image): TCP connects, 1 s each, 64 at a time
SCAN = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
address, ports = sys.argv[1], json.loads(sys.argv[2])
def probe(port):
    with socket.socket() as s:
        s.settimeout(1.0)
        return port if s.connect_ex((address, port)) == 0 else None
with ThreadPoolExecutor(max_workers=64) as pool:
    print(json.dumps(sorted(p for p in pool.map(probe, ports) if p is not None)))
"""

#: run in the client: GET https://ADDRESS/PATH without verifying (self-signed), the
#: certificate's SHA-256 fingerprint, the status and the start of the body
HTTPS = """
import hashlib, json, socket, ssl, sys, urllib.error, urllib.request
address, path = sys.argv[1], sys.argv[2]
cafile = sys.argv[3] if len(sys.argv) > 3 else None
ctx = ssl.create_default_context(cafile=cafile)
if not cafile:  # a name and a CA file: verified as a browser would
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
out = {}
try:
    with socket.create_connection((address, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=address) as tls:
            der = tls.getpeercert(binary_form=True)
            out["fingerprint"] = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
            out["tls"] = tls.version()
    req = urllib.request.Request(f"https://{address}{path}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=20) as resp:
            out["status"], out["body"] = resp.status, resp.read(20000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        out["status"], out["body"] = exc.code, exc.read(2000).decode("utf-8", "replace")
except OSError as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


class Net:
    """The client and the router (containers of the test's own, removed with the fleet)."""

    def __init__(self, home_fleet, vps_fleet):
        self.home_fleet, self.vps_fleet = home_fleet, vps_fleet
        tag = _random.token_hex(3)
        labels = vps_fleet._labels
        base = harness.build_host_image("trixie").ref  # python3 for the client's probes
        self.client = f"{vps_fleet.prefix}-client-{tag}"
        docker("run", "-d", "--name", self.client, *labels, "--network", vps_fleet.network,
               "--entrypoint", "sleep", base, "infinity")
        vps_fleet._containers.append(self.client)
        # the router: on the home network first (its default route), then on the internet
        # network, masquerading what leaves there (the home's NAT)
        self.router = f"{home_fleet.prefix}-router-{tag}"
        docker("run", "-d", "--name", self.router, *home_fleet._labels,
               "--network", home_fleet.network, "--cap-add", "NET_ADMIN",
               "--sysctl", "net.ipv4.ip_forward=1", "--entrypoint", "sleep",
               harness.build_netwatch_image().ref, "infinity")
        home_fleet._containers.append(self.router)
        docker("network", "connect", vps_fleet.network, self.router)
        home_net = docker("network", "inspect", home_fleet.network, "-f",
                          "{{range .IPAM.Config}}{{.Subnet}} {{end}}").stdout.split()[0]
        self.router_home = self._address(self.router, home_fleet.network)
        # everything the home sends out leaves with the router's address (NAT)
        docker("exec", "-i", self.router, "nft", "-f", "-", input=(
            "table ip abri_test_nat {\n"
            "  chain post { type nat hook postrouting priority srcnat; policy accept;\n"
            f"    ip saddr {home_net} ip daddr != {home_net} masquerade\n"
            "  }\n"
            "}\n"))
        assert "masquerade" in docker("exec", self.router, "nft", "list", "table", "ip",
                                      "abri_test_nat").stdout

    @staticmethod
    def _address(container: str, network: str) -> str:
        return docker("inspect", "-f",
                      f"{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}",
                      container).stdout.strip()

    def behind_nat(self, home, registry: str) -> None:
        """The home host's default route through the router; the registry and the
        controller stay on its own bridge."""
        gateway = home.controller_address()
        registry_ip = registry.split(":")[0]
        home.exec(f"ip route replace {registry_ip}/32 via {gateway} && "
                  f"ip route replace default via {self.router_home}")

    def client_python(self, script: str, *args: str, timeout: float = 120) -> dict | list:
        proc = docker("exec", "-i", self.client, "python3", "-", *args, input=script,
                      timeout=timeout)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def scan(self, address: str, ports: list[int] = SCANNED) -> set[int]:
        return set(self.client_python(SCAN, address, json.dumps(ports), timeout=300))

    def https(self, address: str, path: str = "/", cafile: str | None = None) -> dict:
        return self.client_python(HTTPS, address, path, *([cafile] if cafile else []))

    def pebble(self, vps, domain: str, tmp_path) -> dict:
        """A test ACME CA on the internet network (pebble, EAB required), its DNS answering
        every name with the vps's address; the client resolves the domain to the vps too.
        Returns the directory URL, the EAB key id and HMAC key, the directory's root (a file
        here, for abri) and the issuing root (in the client, for the browser-like check)."""
        import base64
        import os
        import ssl
        import urllib.request

        from tests.unit.test_remote_certificates import make_certificate

        fleet = self.vps_fleet
        name = f"{fleet.prefix}-pebble-{_random.token_hex(3)}"
        docker("run", "-d", "--name", name, *fleet._labels, "--network", fleet.network,
               "--entrypoint", "sleep", harness.build_pebble_image().ref, "infinity")
        fleet._containers.append(name)
        address = self._address(name, fleet.network)
        # the directory's TLS pair: a root of the test's, a leaf for the container's address
        root_crt, root_key = make_certificate(tmp_path, ["pebble-root.abri.test"], 30,
                                              tag="pebble-root", ca=True)
        leaf_crt, leaf_key = _leaf_for_address(tmp_path, address, root_crt, root_key)
        kid, hmac = "kid-abri", base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
        config = {"pebble": {
            "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/pebble/cert.pem", "privateKey": "/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": True, "externalAccountMACKeys": {kid: hmac}}}
        docker("exec", name, "mkdir", "-p", "/pebble")
        for src, dest in ((leaf_crt, "cert.pem"), (leaf_key, "key.pem")):
            docker("cp", str(src), f"{name}:/pebble/{dest}")
        docker("exec", "-i", name, "sh", "-c", "cat > /pebble/config.json",
               input=json.dumps(config))
        docker("exec", "-d", name, "sh", "-c",
               f"pebble-challtestsrv -defaultIPv4 {vps.address} -defaultIPv6 '' -dns01 :8053 "
               "-http01 '' -https01 '' -tlsalpn01 '' -doh '' -management :8055 "
               ">/pebble/dns.log 2>&1")
        docker("exec", "-d", name, "sh", "-c", "pebble -config /pebble/config.json "
               "-dnsserver 127.0.0.1:8053 >/pebble/pebble.log 2>&1")
        ctx = ssl.create_default_context(cafile=str(root_crt))
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"https://{address}:15000/roots/0", context=ctx,
                                            timeout=5) as resp:
                    issuing_root = resp.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        docker("exec", "-i", self.client, "sh", "-c", "cat > /tmp/acme-root.pem",
               input=issuing_root)
        docker("exec", self.client, "sh", "-c", f"echo '{vps.address} {domain}' >> /etc/hosts")
        return {"name": name, "directory": f"https://{address}:14000/dir", "kid": kid,
                "hmac": hmac, "root_file": root_crt, "client_root": "/tmp/acme-root.pem"}


def _leaf_for_address(tmp, address: str, root_crt, root_key):
    """A certificate for an IP address signed by the given root (both PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate(root_crt.read_bytes())
    ca_key = serialization.load_pem_private_key(root_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, pem = tmp / "pebble-leaf.crt", tmp / "pebble-leaf.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def _handshake(host, peer_public: str) -> int:
    """Seconds since the epoch of the last handshake with a peer (0: none)."""
    out = host.exec("wg show abri latest-handshakes", check=False).stdout
    for line in out.splitlines():
        key, _, when = line.partition("\t")
        if key.strip() == peer_public:
            return int(when.strip() or 0)
    return 0


def _forwarded(host, url: str) -> int:
    """The status Home Assistant answers a GET with an X-Forwarded-For header, sent from
    the host (its python3)."""
    script = ("import urllib.error, urllib.request\n"
              f"req = urllib.request.Request({url!r}, headers={{'X-Forwarded-For': "
              "'198.51.100.9'})\n"
              "try:\n"
              "    print(urllib.request.urlopen(req, timeout=20).status)\n"
              "except urllib.error.HTTPError as exc:\n"
              "    print(exc.code)\n")
    return int(host.exec("python3 -", input=script).stdout.strip())


def _served(net: Net, address: str, timeout: float = 240) -> dict:
    """Wait until HTTPS on the vps answers with Home Assistant's page (the tunnel and
    Home Assistant may still be coming up); returns the last answer."""
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        seen = net.https(address)
        if seen.get("status") == 200 and "Home Assistant" in seen.get("body", ""):
            return seen
        time.sleep(3)
    return seen


def test_remote_access_through_the_tunnel(fleet, fleet_registry, tmp_path):
    start = time.monotonic()
    home_fleet = fleet(1, image="prepared")
    vps_fleet = fleet(1, image="prepared")
    home, vps = home_fleet.hosts[0], vps_fleet.hosts[0]
    net = Net(home_fleet, vps_fleet)
    net.behind_nat(home, fleet_registry.address)
    # the two networks: the vps cannot reach the home host; the home host reaches the vps
    # (through its NAT) and still the registry
    assert vps.exec(f"timeout 3 bash -c '</dev/tcp/{home.address}/22'",
                    check=False).returncode != 0
    assert home.exec(f"timeout 5 bash -c '</dev/tcp/{vps.address}/22'",
                     check=False).returncode == 0
    registry_ip, _, registry_port = fleet_registry.address.partition(":")
    assert home.exec(f"timeout 5 bash -c '</dev/tcp/{registry_ip}/{registry_port}'",
                     check=False).returncode == 0
    print(f"\n[remote] hosts and networks up: {time.monotonic() - start:.1f}s")

    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "home", "--kind", "ssh", "--address", home.address, "--user", "root",
          "--key", str(home.key_path), "--site", str(site))
    _abri("host", "add", "vps1", "--kind", "vps", "--address", vps.address, "--user", "root",
          "--key", str(vps.key_path), "--provider", "hetzner", "--region", "fsn1",
          "--site", str(site))
    _abri("stack", "add", "home", "mosquitto", "--site", str(site))
    _abri("stack", "add", "home", "homeassistant", "--site", str(site))
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\ndocker_engine_daemon_options: " + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")
    # refused: a host that is not a vps, one that is not in the site (nothing written)
    for wrong in ("home", "nowhere"):
        run = subprocess.run([_tool("abri"), "site", "set", f"remote_access={wrong}",
                              "--site", str(site)], capture_output=True, text=True, env=_env(),
                             timeout=120)
        assert run.returncode == 2 and "remote_access" in run.stderr, run.stderr
    shown = _abri("site", "set", "remote_access=vps1", "--site", str(site))
    assert "remote_access      vps1" in shown, shown

    first, first_s = _apply(site)
    print(f"[remote] first apply: rc {first.returncode}, {first_s:.1f}s")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    printed = re.search(r"SHA-256 fingerprint ([0-9A-F:]{95})", first.stdout)
    assert printed, first.stdout[-3000:]
    assert f"remote access: https://{vps.address}/ serves homeassistant on home" in first.stdout
    # abri verify (at the end of the apply) checked it from this machine too
    report = first.stdout.split("Recap:")[-1]
    assert "ok   remote access certificate" in report, report[-3000:]
    assert "ok   remote access through the tunnel" in report, report[-3000:]

    # wireguard-go, because this kernel makes no WireGuard device
    assert home.exec("pgrep -x wireguard-go", check=False).returncode == 0
    assert home.exec("stat -c '%a %U' /etc/wireguard/abri.conf").stdout.strip() == "600 root"
    # HTTPS from the internet: Home Assistant's page, served by the home host through the
    # tunnel, with the certificate abri printed
    t = time.monotonic()
    answer = _served(net, vps.address)
    print(f"[remote] first HTTPS answer through the tunnel after {time.monotonic() - t:.1f}s")
    assert answer.get("status") == 200 and "Home Assistant" in answer["body"], answer
    assert answer["fingerprint"] == printed.group(1), (answer["fingerprint"], printed.group(1))
    title = re.search(r"<title>([^<]*)</title>", answer["body"])
    print(f"[remote] https://{vps.address}/ from the internet: {answer['status']} "
          f"{answer['tls']}, title {title.group(1) if title else None!r}, certificate "
          f"{answer['fingerprint'][:23]}...")
    print("[remote] the first apply's report:\n" + first.stdout.split("Recap:")[-1][-2500:])
    # Home Assistant saw the vps's tunnel address as its (trusted) proxy: a request it took
    # for a direct one with a forged X-Forwarded-For would be refused (400)
    integrations = home.exec("cat /opt/abri/homeassistant/config/abri/integrations.yaml").stdout
    assert "use_x_forwarded_for: true" in integrations
    assert 'trusted_proxies: ["10.86.0.1"]' in integrations, integrations
    # ... and Home Assistant acts on it: X-Forwarded-For from the vps's tunnel address is
    # taken, from anywhere else (the home host's own loopback) refused with 400
    assert _forwarded(vps, "http://10.86.0.2:8123/") == 200
    assert _forwarded(home, "http://127.0.0.1:8123/") == 400
    # the tunnel: a handshake on both ends (the vps's UDP port answers the home host)
    home_pub = home.exec("wg show abri public-key").stdout.strip()
    vps_pub = vps.exec("wg show abri public-key").stdout.strip()
    assert _handshake(vps, home_pub) > 0 and _handshake(home, vps_pub) > 0

    def closed_from_the_internet() -> None:
        open_ports = net.scan(vps.address)
        assert open_ports == {22, 443}, open_ports
        # the home host is not reachable from the internet at all
        assert not net.scan(home.address, [22, 1883, 8123])

    closed_from_the_internet()
    # SSH: the admin user with the key; root and passwords refused
    assert _ssh(vps, ADMIN, "sudo -n id -un").stdout.strip() == "root"
    root = _ssh(vps, "root", "true")
    assert root.returncode != 0 and "Permission denied" in root.stderr, root.stderr
    password = _ssh(vps, ADMIN, "true", "-o", "PreferredAuthentications=password,"
                    "keyboard-interactive", "-o", "PubkeyAuthentication=no")
    assert "Permission denied (publickey)." in password.stderr, password.stderr

    # nftables restarted on the vps (its nftables.conf flushes the whole ruleset)
    vps.exec("systemctl restart nftables")
    assert vps.exec("nft list table inet abri", check=False).returncode == 0
    answer = _served(net, vps.address, timeout=120)
    assert answer.get("status") == 200 and answer["fingerprint"] == printed.group(1), answer
    closed_from_the_internet()

    # the vps restarted: firewall, tunnel and proxy come back by themselves
    t = time.monotonic()
    docker("restart", vps.name, timeout=300)
    _wait_for_admin(vps)
    assert vps.exec("nft list table inet abri", check=False).returncode == 0
    answer = _served(net, vps.address, timeout=240)
    print(f"[remote] HTTPS through the tunnel again {time.monotonic() - t:.1f}s after the "
          "vps's restart")
    assert answer.get("status") == 200 and "Home Assistant" in answer["body"], answer
    assert answer["fingerprint"] == printed.group(1)
    closed_from_the_internet()
    assert _wait_for(lambda: _handshake(vps, home_pub) > 0, timeout=60)

    again, again_s = _apply(site, "apply", "--no-verify")
    print(f"[remote] second apply: rc {again.returncode}, {again_s:.1f}s")
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    for name in ("home", "vps1"):
        assert _recap(again.stdout, name)["changed"] == 0, (name, again.stdout[-6000:])
    # and the plan (check mode, the tunnel's module included) sees nothing to do
    plan, plan_s = _apply(site, "plan")
    print(f"[remote] plan: rc {plan.returncode}, {plan_s:.1f}s")
    assert plan.returncode == 0, plan.stdout[-6000:] + plan.stderr[-3000:]
    assert "vps1: 0 change(s)" in plan.stdout and "home: 0 change(s)" in plan.stdout, \
        plan.stdout[-3000:]
    verified = _apply(site, "verify")[0]
    assert verified.returncode == 0 and "ok   remote access through the tunnel" in \
        verified.stdout, verified.stdout[-3000:]

    # no private key or certificate key in any output or in the site's plaintext files
    private = [home.exec("wg show abri private-key").stdout.strip(),
               vps.exec("wg show abri private-key").stdout.strip()]
    cert_key = vps.exec("cat /opt/abri/proxy/certs/server.key").stdout.strip()
    assert all(len(k) == 44 for k in private) and "PRIVATE KEY" in cert_key
    body = cert_key.splitlines()[1]
    outputs = "".join(r.stdout + r.stderr for r in (first, again, plan, verified)) + shown
    for path in site.rglob("*"):
        if path.is_file() and path.name != "vault.yml" and ".abri" not in path.parts:
            outputs += path.read_text(errors="replace")
    for value in (*private, body):
        assert value not in outputs, "a private key appeared in the output or the site"

    # ---- certificate acme: a real ACME CA (pebble) that requires EAB, the vps's name
    # resolved to it by the CA's DNS; Caddy asks it with the key id and HMAC key from the
    # vault, answers its domain check, and serves a certificate that verifies against the
    # CA's issuing root for the name (from the client, as a browser would)
    t = time.monotonic()
    domain = "home.abri.test"
    ca = net.pebble(vps, domain, tmp_path)
    _abri("stack", "certificate", "vps1", "proxy", "--acme-root-file", str(ca["root_file"]),
          "--site", str(site))
    set_acme = _abri("stack", "set", "vps1", "proxy", "--set", "certificate=acme",
                     "--set", f"domain={domain}", "--set", f"acme_directory={ca['directory']}",
                     "--set", f"eab_key_id={ca['kid']}", "--set", f"eab_hmac_key={ca['hmac']}",
                     "--site", str(site))
    assert ca["hmac"] not in set_acme
    acme, acme_s = _apply(site)
    print(f"[remote] apply with certificate acme: rc {acme.returncode}, {acme_s:.1f}s")
    assert acme.returncode == 0, acme.stdout[-8000:] + acme.stderr[-3000:]
    assert f"remote access: https://{domain}/" in acme.stdout, acme.stdout[-3000:]
    report = acme.stdout.split("Recap:")[-1]
    assert "ok   remote access certificate" in report, report[-3000:]
    assert "ok   remote access through the tunnel" in report, report[-3000:]
    answer = net.https(domain, "/", ca["client_root"])
    assert answer.get("status") == 200 and "Home Assistant" in answer["body"], answer
    pebble_log = docker("exec", ca["name"], "cat", "/pebble/pebble.log").stdout
    assert "Issued certificate" in pebble_log or "issued" in pebble_log.lower(), \
        pebble_log[-3000:]
    print(f"[remote] ACME certificate from pebble (EAB) verified for {domain} "
          f"{time.monotonic() - t:.1f}s after the switch")
    assert net.scan(vps.address) == {22, 80, 443}  # the CA's check needs port 80
    assert ca["hmac"] not in acme.stdout + acme.stderr
    assert ca["hmac"] not in "".join(
        p.read_text(errors="replace") for p in site.rglob("*")
        if p.is_file() and p.name != "vault.yml" and ".abri" not in p.parts)
    assert "ACME_EAB_HMAC_KEY" in vps.exec("cat /opt/abri/proxy/.env").stdout
    assert vps.exec("stat -c %a /opt/abri/proxy/.env").stdout.strip() == "600"

    # ---- certificate own: the user's certificate for the domain, from the vault
    from tests.unit.test_remote_certificates import make_certificate

    own_crt, own_key = make_certificate(tmp_path, [domain])
    _abri("stack", "certificate", "vps1", "proxy", "--cert-file", str(own_crt), "--key-file",
          str(own_key), "--site", str(site))
    _abri("stack", "set", "vps1", "proxy", "--set", "certificate=own", "--site", str(site))
    own, own_s = _apply(site)
    print(f"[remote] apply with certificate own: rc {own.returncode}, {own_s:.1f}s")
    assert own.returncode == 0, own.stdout[-8000:] + own.stderr[-3000:]
    printed_own = re.search(r"certificate own, SHA-256 fingerprint ([0-9A-F:]{95})", own.stdout)
    assert printed_own, own.stdout[-3000:]
    answer = _served(net, vps.address, timeout=120)
    assert answer.get("status") == 200 and answer["fingerprint"] == printed_own.group(1), answer
    assert net.scan(vps.address) == {22, 443}  # port 80 closed again
    key_body = own_key.read_text().splitlines()[1]
    assert key_body not in own.stdout + own.stderr
    last, last_s = _apply(site, "apply", "--no-verify")
    print(f"[remote] second apply with certificate own: rc {last.returncode}, {last_s:.1f}s")
    assert last.returncode == 0, last.stdout[-6000:] + last.stderr[-3000:]
    for name in ("home", "vps1"):
        assert _recap(last.stdout, name)["changed"] == 0, (name, last.stdout[-6000:])
    print(f"[remote] whole test: {time.monotonic() - start:.1f}s")
