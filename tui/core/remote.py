"""Remote access: a vps serves the home's Home Assistant over HTTPS through a WireGuard
tunnel (site setting ``remote_access``, the vps's name).

* The tunnel: the vps listens (UDP ``WG_PORT``, opened in its firewall), every home host
  running a stack whose manifest declares ``remote_access: {role: upstream}`` dials it
  (PersistentKeepalive: a home behind NAT is never reached from outside). Addresses from
  ``NETWORK``: the vps .1, the home hosts .2, .3 ... in the order of their names. Each host's
  key pair is made here (X25519) and kept in its vault (``_wireguard``); the private key is
  never printed and reaches the host only through the kit's no_log ``secrets`` option.
* The proxy: the stack whose manifest declares ``remote_access: {role: proxy}``, added to
  the vps by ``enable`` (and taken off when the setting is cleared). Its templates get the
  upstreams' tunnel addresses; an upstream's get the proxy's (Home Assistant trusts it).
* Certificates a manifest marks ``made_by: controller`` (the proxy's self-signed one) are
  made here, kept in the host's vault, and their SHA-256 fingerprint is in the resolved
  state and shown after apply, so the user can compare what the browser shows.

Nothing here names a service: roles come from the manifests.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from typing import TYPE_CHECKING, Any

from tui.core.catalog import when_holds
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

#: the tunnel's private range and port, and abri's interface name on every host
NETWORK = ipaddress.ip_network("10.86.0.0/24")
WG_PORT = 51820
INTERFACE = "abri"
KEEPALIVE = 25
#: where a host's tunnel keys live in its vault (not a stack: the underscore keeps it apart)
WG_SECRET = "_wireguard"


def proxy_stack(site: Site) -> str | None:
    names = site.catalog.remote_access("proxy")
    return names[0] if names else None


def upstreams(site: Site) -> list[tuple[str, str]]:
    """(host, stack) of every stack the proxy serves, in the order of the host names."""
    roles = set(site.catalog.remote_access("upstream"))
    return sorted((h.name, s) for h in site.hosts.values() for s in h.stacks if s in roles)


def peers(site: Site) -> list[str]:
    """The home hosts of the tunnel, in address order."""
    return sorted({h for h, _ in upstreams(site)})


def addresses(site: Site) -> dict[str, str]:
    """Tunnel address of the vps and of every home host (no prefix length)."""
    vps = site.settings.remote_access
    if not vps:
        return {}
    hosts = NETWORK.hosts()
    out = {vps: str(next(hosts))}
    for name in peers(site):
        out[name] = str(next(hosts))
    return out


def problems(site: Site) -> list[Problem]:
    """What keeps the site's remote access from working (checked with the whole site)."""
    vps = site.settings.remote_access
    proxy = proxy_stack(site)
    out = [Problem(f"host '{h.name}', stack '{proxy}'", "stack", f"{proxy} runs only on "
                   "the vps that serves the site's remote access, where 'abri site set "
                   "remote_access=VPS' puts it"
                   + (f" (now {vps})" if vps else " (none now)"))
           for h in site.hosts.values() if proxy and proxy in h.stacks and h.name != vps]
    if not vps:
        return out
    where = "site"
    host = site.hosts.get(vps)
    vpses = [h.name for h in site.hosts.values() if h.kind == "vps"]
    if host is None or host.kind != "vps":
        from tui.core.validate import a_kind

        what = "is not a host of this site" if host is None else \
            f"is {a_kind(host.kind)} host, not a vps"
        return [*out, Problem(where, "remote_access", f"{vps!r} {what}; remote access is "
                              "served by a vps: valid: " + (", ".join(vpses) or "none yet "
                                                            "(abri host add NAME --kind vps "
                                                            "...)"))]
    if proxy is None:
        out.append(Problem(where, "remote_access", "the catalog has no stack with "
                           "remote_access role proxy"))
    elif proxy not in host.stacks:
        out.append(Problem(where, "remote_access", f"the vps {vps!r} runs no {proxy} stack; "
                           f"set remote_access again (abri site set remote_access={vps}), "
                           "which adds it"))
    ups = upstreams(site)
    roles = ", ".join(site.catalog.remote_access("upstream")) or "none in the catalog"
    if not ups:
        out.append(Problem(where, "remote_access", f"no stack of this site is served remotely "
                           f"(stacks that can be: {roles}); add one to a home host first"))
    elif len(ups) > 1:
        out.append(Problem(where, "remote_access", "serves one stack; this site has "
                           + ", ".join(f"{s} on {h}" for h, s in ups)))
    on_vps = [s for h, s in ups if h == vps]
    if on_vps:
        out.append(Problem(where, "remote_access", f"{', '.join(on_vps)} runs on the vps "
                           f"{vps!r} itself; remote access serves a home host's stack through "
                           "the tunnel"))
    if len(peers(site)) > NETWORK.num_addresses - 3:
        out.append(Problem(where, "remote_access", f"too many home hosts for {NETWORK}"))
    if proxy is not None and proxy in host.stacks:
        out += certificate_problems(site, vps, proxy)
    return out


def certificate_problems(site: Site, host_name: str, stack_name: str) -> list[Problem]:
    """What the proxy's certificate setting still lacks: acme needs the domain, the CA's
    directory and the EAB credentials; own needs the user's certificate, for the domain."""
    stack = site.catalog[stack_name]
    values = {**stack.defaults(), **(site.hosts[host_name].stacks.get(stack_name) or {})}
    mine = site.secrets.get(host_name, {}).get(stack_name) or {}
    where = f"host '{host_name}', stack '{stack_name}'"
    how = f"abri stack set {host_name} {stack_name} --set"
    mode = values.get("certificate")
    out = []
    if mode == "acme":
        for key, example in (("domain", "home.example.eu"),
                             ("acme_directory", "the https:// URL your CA gives you"),
                             ("eab_key_id", "the key id your CA gives you")):
            if not values.get(key):
                out.append(Problem(where, key, f"certificate acme needs it ({how} "
                                   f"{key}=...: {example})"))
        if not mine.get("eab_hmac_key"):
            out.append(Problem(where, "eab_hmac_key", f"certificate acme needs your CA's EAB "
                               f"HMAC key ({how} eab_hmac_key=...; kept in the vault)"))
    for cert in user_certificates(stack, values):
        pem = mine.get(cert_keys(cert["dest"])["crt"])
        if not pem:
            if not cert.get("optional"):
                out.append(Problem(where, "certificate", f"certificate {mode} needs your "
                                   f"certificate and key: abri stack certificate {host_name} "
                                   f"{stack_name} --cert-file FILE --key-file FILE"))
            continue
        names = certificate_names(pem)
        if mode == "own" and values.get("domain") and not covers(names, values["domain"]):
            out.append(Problem(where, "domain", f"{values['domain']!r} is not a name of your "
                               f"certificate (it holds {', '.join(names) or 'no DNS name'})"))
    return out


def certificate_names(pem: str) -> list[str]:
    """The DNS names (subjectAltName) of a PEM certificate (its first one: the leaf)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem.encode())
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in alt.get_values_for_type(x509.DNSName)]


def covers(names: list[str], domain: str) -> bool:
    """Whether one of a certificate's names (a *. wildcard for one label) is the domain."""
    for name in names:
        name = name.lower()
        if name == domain or (name.startswith("*.") and "." in domain
                              and domain.split(".", 1)[1] == name[2:]):
            return True
    return False


def read_user_certificate(cert_text: str, key_text: str | None, *, field: str = "cert_file"
                          ) -> tuple[str, str | None]:
    """Check the user's certificate (with its chain) and key before they go into the vault:
    PEM, the key matches the certificate, not expired. Returns (certificate PEM, key PEM);
    ValueError says what is wrong (the key's text never appears in it)."""
    import datetime as _dt

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if "\x00" in cert_text or "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ValueError("is not a PEM certificate (it must hold -----BEGIN CERTIFICATE-----)")
    try:
        chain = x509.load_pem_x509_certificates(cert_text.encode())
    except ValueError as exc:
        raise ValueError(f"is not a readable PEM certificate ({exc})") from None
    leaf = chain[0]
    now = _dt.datetime.now(_dt.UTC)
    if leaf.not_valid_after_utc < now:
        raise ValueError(f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    cert_pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
    if key_text is None:
        return cert_pem, None
    try:
        key = serialization.load_pem_private_key(key_text.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the key file is not an unencrypted PEM private key") from None
    mine = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    if mine != theirs:
        raise ValueError("the key does not belong to the certificate (their public keys "
                         "differ)")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def set_user_certificate(site: Site, host_name: str, stack_name: str, cert_pem: str,
                         key_pem: str | None) -> str:
    """Keep the user's certificate (and key) for the stack's made_by user certificate that
    takes it (with a key: the server's; without: an optional CA root). Returns its
    fingerprint."""
    host = site.hosts.get(host_name)
    where = f"host '{host_name}'"
    if host is None:
        raise AbriError(Problem(where, "name", "is not in this site"))
    if stack_name not in host.stacks or stack_name not in site.catalog:
        raise AbriError(Problem(where, "stack", f"{stack_name!r} is not on this host"))
    stack = site.catalog[stack_name]
    takes = [c for c in stack.certificates if c.get("made_by") == "user"
             and bool(c.get("optional")) == (key_pem is None)]
    if not takes:
        what = "a certificate with its key" if key_pem is not None else "a CA root alone"
        raise AbriError(Problem(where, "stack", f"{stack_name} takes no {what}"))
    keys = cert_keys(takes[0]["dest"])
    mine = site.secrets.setdefault(host_name, {}).setdefault(stack_name, {})
    mine[keys["crt"]] = cert_pem
    mine[keys["name"]] = ", ".join(certificate_names(cert_pem))
    if key_pem is not None:
        mine[keys["key"]] = key_pem
    else:
        mine.pop(keys["key"], None)
    return fingerprint(cert_pem)


def enable(site: Site, value: str) -> None:
    """Set remote_access (a vps name, or empty for off): the proxy stack is added to that
    vps, and taken off the vps that had it before. Checked with the whole site on save."""
    old = site.settings.remote_access
    try:
        site.settings.set("remote_access", value)
    except ValueError as exc:
        raise AbriError(Problem("site", "remote_access", str(exc))) from None
    new = site.settings.remote_access
    proxy = proxy_stack(site)
    if new and (new not in site.hosts or site.hosts[new].kind != "vps"):
        raise AbriError(problems(site))
    if old and old != new and proxy and old in site.hosts and proxy in site.hosts[old].stacks:
        site.remove_stack(old, proxy)
    if new and proxy and proxy not in site.hosts[new].stacks:
        site.add_stack(new, proxy)


# ---------------------------------------------------------------------------------- keys


def key_pair() -> tuple[str, str]:
    """A WireGuard key pair (private, public), base64 as wg(8) writes them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode(), base64.b64encode(pub).decode()


def public_key(site: Site, host: str) -> str:
    return (site.secrets.get(host, {}).get(WG_SECRET) or {}).get("public_key", "")


def ensure_secrets(site: Site) -> list[str]:
    """Give every host of the tunnel a key pair and every stack a certificate abri makes
    (made_by controller) that it lacks; returns what was made (never a secret)."""
    made = []
    for name in addresses(site):
        mine = site.secrets.setdefault(name, {}).setdefault(WG_SECRET, {})
        if not mine.get("private_key") or not mine.get("public_key"):
            mine["private_key"], mine["public_key"] = key_pair()
            made.append(f"{name}: a WireGuard key pair")
    for host in site.hosts.values():
        for stack_name in host.stacks:
            if stack_name not in site.catalog:
                continue
            stack = site.catalog[stack_name]
            values = {**stack.defaults(), **(host.stacks.get(stack_name) or {})}
            for cert in controller_certificates(stack, values):
                mine = site.secrets.setdefault(host.name, {}).setdefault(stack_name, {})
                name = certificate_name(host)
                keys = cert_keys(cert["dest"])
                if not mine.get(keys["crt"]) or not mine.get(keys["key"]) or \
                        mine.get(keys["name"]) != name:
                    mine[keys["key"]], mine[keys["crt"]] = self_signed(name, cert.get("days",
                                                                                  3650))
                    mine[keys["name"]] = name
                    made.append(f"{host.name}: a self-signed certificate for {name} "
                                f"({stack_name})")
    return made


def controller_certificates(stack, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in stack.certificates
            if c.get("made_by") == "controller" and when_holds(c.get("when"), values)]


def vault_certificates(stack, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The certificates kept in the vault that the stack uses with these settings: those
    abri made here and the user's own."""
    return [c for c in stack.certificates
            if c.get("made_by") in ("controller", "user") and when_holds(c.get("when"), values)]


def user_certificates(stack, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in stack.certificates
            if c.get("made_by") == "user" and when_holds(c.get("when"), values)]


def certificate_name(host) -> str:
    return host.service_address


def cert_keys(dest: str) -> dict[str, str]:
    """The vault keys of a certificate abri made (its key, the certificate, its name)."""
    return {k: f"certificate:{dest}:{k}" for k in ("key", "crt", "name")}


def self_signed(name: str, days: int) -> tuple[str, str]:
    """(private key PEM, certificate PEM): ECDSA P-256, SHA-256, the name as CN and as
    subjectAltName (an IP address or a DNS name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem_key = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return pem_key, cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(pem: str) -> str:
    """SHA-256 fingerprint of a PEM certificate, as browsers show it (AA:BB:...)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


# ---------------------------------------------------------------------------------- state


def wireguard_state(site: Site, name: str) -> dict[str, Any] | None:
    """What the kit's abri_wireguard converges on one host, or None when the host is not
    in the tunnel. Public keys are data; the private key is a vault reference."""
    where = addresses(site)
    vps = site.settings.remote_access
    if name not in where or not public_key(site, name):
        return None
    prefix = NETWORK.prefixlen
    state: dict[str, Any] = {
        "interface": INTERFACE, "address": f"{where[name]}/{prefix}",
        "private_key_ref": f"{name}/{WG_SECRET}/private_key", "peers": []}
    if name == vps:
        state["listen_port"] = WG_PORT
        for peer in peers(site):
            if public_key(site, peer):
                state["peers"].append({"name": peer, "public_key": public_key(site, peer),
                                       "allowed_ips": [f"{where[peer]}/32"]})
    else:
        server = site.hosts[vps]
        endpoint = server.address or server.name
        if ":" in endpoint:
            endpoint = f"[{endpoint}]"
        state["peers"].append({"name": vps, "public_key": public_key(site, vps),
                               "allowed_ips": [f"{where[vps]}/32"],
                               "endpoint": f"{endpoint}:{WG_PORT}",
                               "keepalive": KEEPALIVE})
    return state


def template_context(site: Site, host_name: str, stack) -> dict[str, Any]:
    """What a stack's templates see as ``remote_access`` (see the manifest schema)."""
    role = (stack.remote_access or {}).get("role")
    vps = site.settings.remote_access
    where = addresses(site)
    if not vps or role is None:
        return {}
    if role == "proxy" and host_name == vps:
        ups = []
        for host, name in upstreams(site):
            if host == vps or host not in where:
                continue
            manifest = site.catalog[name]
            values = {**manifest.defaults(), **(site.hosts[host].stacks.get(name) or {})}
            port = next(p for p in manifest.ports if p.name == manifest.remote_access["port"])
            ups.append({"host": host, "stack": name, "address": where[host],
                        "port": int(values[port.setting])})
        mine = site.secrets.get(host_name, {}).get(stack.name) or {}
        values = {**stack.defaults(), **(site.hosts[host_name].stacks.get(stack.name) or {})}
        given = [c["dest"] for c in user_certificates(stack, values)
                 if mine.get(cert_keys(c["dest"])["crt"])]
        return {"upstreams": ups, "name": certificate_name(site.hosts[vps]), "given": given}
    if role == "upstream" and host_name in where and host_name != vps:
        return {"proxies": [where[vps]]}
    return {}


def firewall(site: Site, host_name: str) -> dict[str, Any]:
    """The hardening firewall's part of remote access on one host: the vps opens the
    tunnel's UDP port; a home host lets the vps's tunnel address in to the served ports."""
    vps = site.settings.remote_access
    where = addresses(site)
    if host_name not in where:
        return {}
    if host_name == vps:
        return {"open": [{"port": WG_PORT, "protocol": "udp",
                          "why": "wireguard (remote access tunnel)"}]}
    served = []
    for host, name in upstreams(site):
        if host == host_name:
            manifest = site.catalog[name]
            values = {**manifest.defaults(), **(site.hosts[host].stacks.get(name) or {})}
            port = next(p for p in manifest.ports if p.name == manifest.remote_access["port"])
            served.append(int(values[port.setting]))
    return {"tunnel": {"interface": INTERFACE, "from": where[vps], "tcp": sorted(served)}}


def summary(site: Site) -> list[str]:
    """Lines for the user after apply: where remote access answers and the certificate's
    fingerprint to compare with the browser's."""
    vps = site.settings.remote_access
    if not vps or vps not in site.hosts:
        return []
    host = site.hosts[vps]
    proxy = proxy_stack(site)
    if proxy is None or proxy not in host.stacks:
        return []
    manifest = site.catalog[proxy]
    values = {**manifest.defaults(), **(host.stacks.get(proxy) or {})}
    port = int(values[manifest.ports[0].setting]) if manifest.ports else 443
    address = values.get("domain") or certificate_name(host)
    shown = f"[{address}]" if ":" in address else address
    url = f"https://{shown}/" if port == 443 else f"https://{shown}:{port}/"
    served = ", ".join(f"{s} on {h}" for h, s in upstreams(site))
    lines = [f"remote access: {url} serves {served or 'nothing yet'} through the tunnel"]
    for pem in pinned(site, vps, proxy, manifest, values):
        lines.append(f"remote access: certificate {values.get('certificate', '')}, "
                     f"SHA-256 fingerprint {fingerprint(pem)}")
    if values.get("certificate") == "acme":
        from urllib.parse import urlsplit

        lines.append(f"remote access: certificate acme for {values.get('domain')} from "
                     f"{urlsplit(values.get('acme_directory') or '').hostname} (asked by the "
                     "proxy at its start, renewed by it)")
    return lines


def pinned(site: Site, host_name: str, stack_name: str, manifest, values) -> list[str]:
    """The PEM certificates the stack serves that abri knows in advance (made here, or the
    user's own; not a CA root), whose fingerprints verify compares."""
    mine = site.secrets.get(host_name, {}).get(stack_name) or {}
    return [pem for c in vault_certificates(manifest, values) if not c.get("optional")
            and (pem := mine.get(cert_keys(c["dest"])["crt"]))]


# ---------------------------------------------------------------------------------- check


def checks(site: Site, name: str, timeout: float = 60.0) -> list:
    """'abri verify' on the vps that serves remote access, from this machine as from the
    internet: its HTTPS port presents the certificate abri made (the same fingerprint), and
    a GET / answers 200 from the upstream through the tunnel (the proxy answers 502 while
    the tunnel or the upstream is down). Retried for up to timeout seconds: the home host
    may finish its handshake after the vps's apply."""
    import hashlib
    import socket
    import ssl
    import time

    from tui.core import verify

    vps = site.settings.remote_access
    proxy = proxy_stack(site)
    if name != vps or not proxy or proxy not in site.hosts[name].stacks:
        return []
    host = site.hosts[name]
    manifest = site.catalog[proxy]
    values = {**manifest.defaults(), **(host.stacks.get(proxy) or {})}
    port = int(values[manifest.ports[0].setting])
    expected = [fingerprint(pem) for pem in pinned(site, name, proxy, manifest, values)]
    domain = values.get("domain") or None
    acme = values.get("certificate") == "acme"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    # compared by fingerprint below (the pin is the check); an ACME certificate by its name
    # and issuer (the CA may be one this machine does not trust, a private one)
    ctx.verify_mode = ssl.CERT_NONE
    address = host.service_address
    seen, status, error, der = "", 0, "", b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=domain) as tls:
                der = tls.getpeercert(binary_form=True) or b""
                seen = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
                if (not expected or seen in expected) and (not acme or issued(der, domain)):
                    tls.sendall(f"GET / HTTP/1.1\r\nHost: {domain or address}\r\n"
                                "Connection: close\r\n\r\n".encode())
                    head = tls.recv(64).decode("latin-1")
                    parts = head.split()
                    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            error = ""
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if status == 200 or (seen and expected and seen not in expected) \
                or time.monotonic() > deadline:
            break
        time.sleep(2)
    where = f"https://{address}:{port}/" + (f" (as {domain})" if domain else "")
    cert_ok = bool(seen) and (not expected or seen in expected) and (
        not acme or issued(der, domain))
    wrong = (f", not the certificate abri made or was given ({expected[0]})" if expected else
             f", not one a CA issued for {domain}")
    out = [verify.Check("remote access certificate", cert_ok,
                        f"{where} presents SHA-256 {seen or '(no answer: ' + error + ')'}"
                        + ("" if cert_ok or not seen else wrong))]
    if cert_ok:
        served = ", ".join(f"{s} on {h}" for h, s in upstreams(site))
        out.append(verify.Check("remote access through the tunnel", status == 200,
                                f"GET {where} answered {status or error or 'nothing'} "
                                f"({served})"))
    return out


def issued(der: bytes, domain: str | None) -> bool:
    """Whether a DER certificate names the domain and was signed by someone else than
    itself (a CA's, not a self-signed one)."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = [str(n) for n in alt.get_values_for_type(x509.DNSName)]
    return bool(domain) and covers(names, domain) and cert.issuer != cert.subject
