"""Remote access (site setting remote_access): what the CLI accepts and refuses, what the
resolved state hands to the kit (the tunnel of each host, the proxy's Caddyfile, Home
Assistant's trusted proxy, the firewall's part), the keys and the certificate abri makes
(in the vault only, never in the site's plaintext files), and the kit's WireGuard
configuration text. The fleet test test_remote_access.py runs it all on real hosts."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import fingerprint, load_kit_util
from tests.unit.test_vps_hosts import _harden_core
from tui.core import remote
from tui.core.site import Site, _read_yaml

ROOT = Path(__file__).resolve().parents[2]


def _state(site: Path, host: str) -> dict:
    return _read_yaml(site / f"host_vars/{host}/abri.yml")["abri_state"]


def _stack(state: dict, name: str) -> dict:
    return next(s for s in state["stacks"] if s["name"] == name)


def _file(stack: dict, path: str) -> str:
    return next(f["content"] for f in stack["files"] if f["path"] == path)


@pytest.fixture
def home_and_vps(abri, site_dir, ssh_key) -> Path:
    for args in (("host", "add", "home", "--kind", "ssh", "--address", "192.168.1.20"),
                 ("host", "add", "vps1", "--kind", "vps", "--address", "203.0.113.10",
                  "--key", ssh_key),
                 ("host", "add", "pi", "--kind", "ssh", "--address", "192.168.1.21"),
                 ("stack", "add", "home", "mosquitto"),
                 ("stack", "add", "home", "homeassistant")):
        r = abri(*args, "--site", site_dir)
        assert r.code == 0, r.err
    return site_dir


def test_refused_values_name_the_field_and_write_nothing(abri, home_and_vps):
    site = home_and_vps
    before = fingerprint(site)
    for value, words in (("home", "'home' is an ssh host, not a vps"),
                         ("nowhere", "'nowhere' is not a host of this site"),
                         ("bad name!", "is not a valid host name")):
        r = abri("site", "set", f"remote_access={value}", "--site", site)
        assert r.code == 2, r.out
        assert "remote_access" in r.err and words in r.err, r.err
    assert fingerprint(site) == before
    # the proxy stack cannot be taken off while remote access is on; Home Assistant neither
    assert abri("site", "set", "remote_access=vps1", "--site", site).code == 0
    r = abri("stack", "remove", "vps1", "proxy", "--site", site)
    assert r.code == 2 and "runs no proxy stack" in r.err, r.err
    r = abri("stack", "remove", "home", "homeassistant", "--site", site)
    assert r.code == 2 and "no stack of this site is served remotely" in r.err, r.err
    # a second Home Assistant: remote access serves one
    r = abri("stack", "add", "pi", "homeassistant", "--site", site)
    assert r.code == 2 and "serves one stack" in r.err, r.err


def test_no_stack_to_serve_is_refused(abri, site_dir):
    abri("host", "add", "vps1", "--kind", "vps", "--address", "203.0.113.10", "--site",
         site_dir)
    r = abri("site", "set", "remote_access=vps1", "--site", site_dir)
    assert r.code == 2 and "no stack of this site is served remotely" in r.err, r.err
    assert "homeassistant" in r.err


def test_resolved_tunnel_proxy_and_trusted_proxy(abri, home_and_vps):
    site = home_and_vps
    r = abri("site", "set", "remote_access=vps1", "--site", site)
    assert r.code == 0, r.err
    assert "remote access: https://203.0.113.10/ serves homeassistant on home" in r.out
    assert "SHA-256 fingerprint" in r.out
    assert yaml.safe_load((site / "group_vars/all/abri.yml").read_text())[
        "abri_remote_access"] == "vps1"
    data = _read_yaml(site / "host_vars/vps1/abri.yml")
    assert "proxy" in data["abri_stacks"]  # added by the setting, visible to the user

    vps, home = _state(site, "vps1"), _state(site, "home")
    wg_vps, wg_home = vps["wireguard"], home["wireguard"]
    assert wg_vps["address"] == "10.86.0.1/24" and wg_vps["listen_port"] == 51820
    assert wg_home["address"] == "10.86.0.2/24" and "listen_port" not in wg_home
    assert wg_vps["private_key_ref"] == "vps1/_wireguard/private_key"
    assert wg_home["private_key_ref"] == "home/_wireguard/private_key"
    # each end knows the other's public key; the home host dials the vps and keeps the
    # NAT open, the vps never dials home
    (to_home,), (to_vps,) = wg_vps["peers"], wg_home["peers"]
    assert to_home["allowed_ips"] == ["10.86.0.2/32"] and "endpoint" not in to_home
    assert to_vps == {"name": "vps1", "public_key": to_vps["public_key"],
                      "allowed_ips": ["10.86.0.1/32"], "endpoint": "203.0.113.10:51820",
                      "keepalive": 25}
    # a host outside the tunnel gets none
    assert "wireguard" not in _state(site, "pi")

    # the proxy: Caddy on the vps, HTTPS only, to the home host's tunnel address
    proxy = _stack(vps, "proxy")
    caddyfile = _file(proxy, "Caddyfile")
    assert 'reverse_proxy "10.86.0.2:8123"' in caddyfile
    assert "tls /etc/caddy/certs/server.crt /etc/caddy/certs/server.key" in caddyfile
    assert "auto_https off" in caddyfile and "admin off" in caddyfile
    assert "network_mode: host" in _file(proxy, "compose.yml")
    (cert,) = proxy["certificates"]
    assert cert["key_ref"] == "vps1/proxy/certificate:certs/server:key"
    loaded = x509.load_pem_x509_certificate(cert["crt"].encode())
    digest = ":".join(f"{b:02X}" for b in loaded.fingerprint(hashes.SHA256()))
    assert cert["fingerprint"] == digest and digest in r.out
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n) for n in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.10"]
    assert "openssl" not in vps["engine"]["packages"]["Debian"]  # made here, not there

    # Home Assistant trusts the vps's tunnel address as its proxy
    ha = _file(_stack(home, "homeassistant"), "config/abri/integrations.yaml")
    assert "use_x_forwarded_for: true" in ha and 'trusted_proxies: ["10.86.0.1"]' in ha

    # firewall: the vps opens HTTPS (the proxy's public port) and the tunnel's UDP port
    opened = {(p["port"], p["protocol"]) for p in vps["hardening"]["open"]}
    assert opened == {(443, "tcp"), (51820, "udp")}
    # the home host, once hardened, lets the vps's tunnel address in to 8123 only
    assert abri("host", "set", "home", "--hardening", "on", "--site", site).code == 0
    hard = _state(site, "home")["hardening"]
    assert hard["tunnel"] == {"interface": "abri", "from": "10.86.0.1", "tcp": [8123]}
    assert all(p["port"] != 8123 or p["protocol"] != "udp" for p in hard["open"])


def test_keys_and_certificate_live_in_the_vault_only(abri, home_and_vps):
    site = home_and_vps
    assert abri("site", "set", "remote_access=vps1", "--site", site).code == 0
    loaded = Site.load(site)
    values = []
    for host in ("vps1", "home"):
        keys = loaded.secrets[host]["_wireguard"]
        private = base64.b64decode(keys["private_key"])
        derived = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
        assert base64.b64encode(derived).decode() == keys["public_key"]
        values.append(keys["private_key"])
    cert_key = loaded.secrets["vps1"]["proxy"]["certificate:certs/server:key"]
    assert "PRIVATE KEY" in cert_key
    values.append(cert_key.splitlines()[1])
    for path in site.rglob("*"):
        if path.is_file() and path.name != "vault.yml":
            text = path.read_text(errors="replace")
            for value in values:
                assert value not in text, f"a private key in {path.relative_to(site)}"
    # a save keeps them (no new keys, the same certificate)
    before = {h: dict(loaded.secrets[h]["_wireguard"]) for h in ("vps1", "home")}
    crt = loaded.secrets["vps1"]["proxy"]["certificate:certs/server:crt"]
    assert abri("stack", "set", "home", "homeassistant", "--set", "name=Casa", "--site",
                site).code == 0
    again = Site.load(site)
    assert {h: again.secrets[h]["_wireguard"] for h in before} == before
    assert again.secrets["vps1"]["proxy"]["certificate:certs/server:crt"] == crt
    # the vps's address changes: a new certificate for the new name
    assert abri("host", "set", "vps1", "--address", "198.51.100.7", "--site", site).code == 0
    moved = Site.load(site)
    assert moved.secrets["vps1"]["proxy"]["certificate:certs/server:crt"] != crt
    assert _state(site, "home")["wireguard"]["peers"][0]["endpoint"] == "198.51.100.7:51820"


def test_off_takes_the_proxy_off_and_the_tunnel_out_of_the_state(abri, home_and_vps):
    site = home_and_vps
    assert abri("site", "set", "remote_access=vps1", "--site", site).code == 0
    r = abri("site", "set", "remote_access=", "--site", site)
    assert r.code == 0, r.err
    assert "proxy" not in _read_yaml(site / "host_vars/vps1/abri.yml")["abri_stacks"]
    assert "wireguard" not in _state(site, "home") and "wireguard" not in _state(site, "vps1")
    ha = _file(_stack(_state(site, "home"), "homeassistant"), "config/abri/integrations.yaml")
    assert "trusted_proxies" not in ha
    assert "abri_remote_access" not in yaml.safe_load(
        (site / "group_vars/all/abri.yml").read_text())


def _wireguard_core():
    return load_kit_util("abri_wireguard_core", {"run": None})


def test_kit_wireguard_config_and_firewall_text():
    core = _wireguard_core()
    private, public = remote.key_pair()
    assert core.valid_key(private) and core.valid_key(public)
    assert not core.valid_key("not a key") and not core.valid_key("")
    spec = {"interface": "abri", "address": "10.86.0.2/24",
            "peers": [{"name": "vps1", "public_key": public, "allowed_ips": ["10.86.0.1/32"],
                       "endpoint": "203.0.113.10:51820", "keepalive": 25}]}
    text = core.render(spec, private)
    assert "[Interface]\nAddress = 10.86.0.2/24\n" in text
    assert f"PrivateKey = {private}\n" in text and "ListenPort" not in text
    assert (f"[Peer]\n# vps1\nPublicKey = {public}\nAllowedIPs = 10.86.0.1/32\n"
            "Endpoint = 203.0.113.10:51820\nPersistentKeepalive = 25\n") in text
    assert private not in core._public(text)
    # the home host's firewall: the tunnel's far end may reach the served port only
    rules = _harden_core().firewall_rules(
        [22], [], {"interface": "abri", "from": "10.86.0.1", "tcp": [8123]})
    assert 'iifname "abri" ip saddr 10.86.0.1 tcp dport { 8123 } accept' in rules


def _tls_server(crt: str, key: str, tmp: Path, status: str):
    """A TLS server on loopback answering every request with status (one thread)."""
    import socket
    import ssl
    import threading

    (tmp / "s.crt").write_text(crt)
    (tmp / "s.key").write_text(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "s.crt", tmp / "s.key")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n".encode())
            except (OSError, ssl.SSLError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return sock


def test_verify_compares_the_fingerprint_and_wants_200(abri, home_and_vps, tmp_path):
    site = home_and_vps
    assert abri("host", "set", "vps1", "--address", "127.0.0.1", "--site", site).code == 0
    assert abri("site", "set", "remote_access=vps1", "--site", site).code == 0
    loaded = Site.load(site)
    mine = loaded.secrets["vps1"]["proxy"]
    crt, key = mine["certificate:certs/server:crt"], mine["certificate:certs/server:key"]
    other_key, other_crt = remote.self_signed("127.0.0.1", 1)
    for pair, status, want in (((crt, key), "200 OK", (True, True)),
                               ((crt, key), "502 Bad Gateway", (True, False)),
                               ((other_crt, other_key), "200 OK", (False,))):
        server = _tls_server(*pair, tmp_path, status)
        try:
            port = server.getsockname()[1]
            assert abri("stack", "set", "vps1", "proxy", "--set", f"port={port}", "--site",
                        site).code == 0
            found = remote.checks(Site.load(site), "vps1", timeout=1)
        finally:
            server.close()
        assert tuple(c.ok for c in found) == want, found
        if not want[0]:
            assert "not the certificate abri made" in found[0].detail
    assert remote.checks(loaded, "home") == []  # only the vps is checked
