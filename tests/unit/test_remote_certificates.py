"""The remote-access proxy's certificate modes beyond self-signed (issue 12): `own` (the
user's certificate and key, `abri stack certificate`) and `acme` (a European ACME CA with the
user's EAB credentials). What the CLI accepts and refuses (the field named, nothing written),
what the resolved state hands to the kit (the Caddyfile, the .env reference of the EAB key,
the HTTP port opened for the CA's check), secrets only in the vault, and what the audit says
of the CA. The fleet test test_remote_access.py gets real certificates from a real ACME server
(pebble) with EAB through the same path."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import fingerprint
from tests.unit.test_remote_rules import _file, _stack, _state

HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def make_certificate(tmp: Path, names: list[str], days: int = 90, *, issuer_key=None,
                     issuer: str | None = None, tag: str = "own", ca: bool = False
                     ) -> tuple[Path, Path]:
    """A certificate for the names (and its key) in two PEM files, self-signed or signed by
    issuer_key in the name issuer; with ca, a root that signs others."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    signer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]) if issuer \
        else subject
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=2))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        cert = cert.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    cert = cert.sign(issuer_key or key, hashes.SHA256())
    crt, pem = tmp / f"{tag}.crt", tmp / f"{tag}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return crt, pem


@pytest.fixture
def remote_site(abri, site_dir, ssh_key) -> Path:
    for args in (("host", "add", "home", "--kind", "ssh", "--address", "192.168.1.20"),
                 ("host", "add", "vps1", "--kind", "vps", "--address", "203.0.113.10",
                  "--key", ssh_key),
                 ("stack", "add", "home", "mosquitto"),
                 ("stack", "add", "home", "homeassistant"),
                 ("site", "set", "remote_access=vps1")):
        r = abri(*args, "--site", site_dir)
        assert r.code == 0, r.err
    return site_dir


def _plaintext(site: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in site.rglob("*")
                   if p.is_file() and p.name != "vault.yml" and ".abri" not in p.parts)


def test_acme_needs_its_fields_and_names_each_one(abri, remote_site):
    site = remote_site
    before = fingerprint(site)
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=acme", "--site", site)
    assert r.code == 2, r.out
    for field in ("domain", "acme_directory", "eab_key_id", "eab_hmac_key"):
        assert field in r.err, r.err
    assert "Traceback" not in r.err
    assert fingerprint(site) == before
    # malformed values: the field, what is wrong, what would be valid
    for key, value, valid in (("domain", "Home Example!", "a DNS name in lowercase"),
                              ("acme_directory", "http://acme.example.eu/dir",
                               "the https:// directory URL"),
                              ("acme_email", "nobody", "an e-mail address"),
                              ("eab_key_id", "kid with space", "the EAB key id")):
        r = abri("stack", "set", "vps1", "proxy", "--set", f"{key}={value}", "--site", site)
        assert r.code == 2 and key in r.err and valid in r.err, r.err
    assert fingerprint(site) == before


def test_acme_resolves_to_caddy_with_eab_from_the_environment(abri, remote_site):
    site = remote_site
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=acme",
             "--set", "domain=home.example.eu",
             "--set", "acme_directory=https://acme-api.actalis.com/acme/directory",
             "--set", "acme_email=me@example.eu", "--set", "eab_key_id=kid-1",
             "--set", f"eab_hmac_key={HMAC}", "--site", site)
    assert r.code == 0, r.err
    proxy = _stack(_state(site, "vps1"), "proxy")
    caddyfile = _file(proxy, "Caddyfile")
    assert "home.example.eu {" in caddyfile
    assert 'dir "https://acme-api.actalis.com/acme/directory"' in caddyfile
    assert 'eab "kid-1" {$ACME_EAB_HMAC_KEY}' in caddyfile
    assert 'email "me@example.eu"' in caddyfile
    assert "auto_https off" not in caddyfile and "trusted_roots" not in caddyfile
    assert proxy["env"] == {"ACME_EAB_HMAC_KEY": {"value_ref": "vps1/proxy/eab_hmac_key"}}
    # the CA checks the domain on port 80: open on the vps, and only then
    opened = {(p["port"], p["protocol"]) for p in _state(site, "vps1")["hardening"]["open"]}
    assert {(443, "tcp"), (80, "tcp"), (51820, "udp")} <= opened
    assert HMAC not in _plaintext(site)
    shown = abri("stack", "show", "vps1", "proxy", "--site", site)
    assert HMAC not in shown.out + shown.err
    # the audit names the CA's operator and country
    audit = json.loads(abri("audit", "--json", "--site", site).out)
    found = [f for f in audit["findings"] if f["stack"] == "proxy"
             and "image pull" not in f["purpose"]]
    assert [(f["endpoint"], f["country"], f["cloud_act"]) for f in found] == [
        ("acme-api.actalis.com", "IT", False)], found
    # a US CA is a finding with a fix, and strict refuses the apply before any host
    r = abri("stack", "set", "vps1", "proxy", "--set",
             "acme_directory=https://acme-v02.api.letsencrypt.org/directory", "--site", site)
    assert r.code == 0, r.err
    audit = json.loads(abri("audit", "--json", "--site", site).out)
    us = next(f for f in audit["findings"] if f["stack"] == "proxy"
              and "image pull" not in f["purpose"])
    assert us["country"] == "US" and "acme_directory" in us["fix"], us
    # and a strict site refuses it before any host is touched (the same gate as plan/apply)
    from tui.core import audit
    from tui.core.errors import AbriError
    from tui.core.site import Site

    loaded = Site.load(site)
    loaded.settings.set("sovereignty", "strict")
    with pytest.raises(AbriError) as refused:
        audit.gate(loaded, ["vps1"])
    assert any(pr.field == "sovereignty" and "acme-v02.api.letsencrypt.org" in pr.message
               for pr in refused.value.problems), refused.value.problems
    # back to self-signed: port 80 closed again, the Caddyfile without ACME, the EAB key kept
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=self-signed", "--site", site)
    assert r.code == 0, r.err
    state = _state(site, "vps1")
    assert 80 not in {p["port"] for p in state["hardening"]["open"]}
    assert "issuer acme" not in _file(_stack(state, "proxy"), "Caddyfile")


def test_own_certificate_checked_then_kept_in_the_vault(abri, remote_site, tmp_path):
    site = remote_site
    before = fingerprint(site)
    good_crt, good_key = make_certificate(tmp_path, ["home.example.eu"])
    _other_crt, other_key = make_certificate(tmp_path, ["home.example.eu"], tag="other")
    old_crt, old_key = make_certificate(tmp_path, ["home.example.eu"], days=-1, tag="old")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for files, field, words in (
            ((junk, good_key), "--cert-file", "is not a PEM certificate"),
            ((good_crt, other_key), "--key-file", "does not belong to the certificate"),
            ((old_crt, old_key), "--cert-file", "expired on"),
            ((good_crt, junk), "--key-file", "not an unencrypted PEM private key"),
            ((tmp_path / "missing.crt", good_key), "--cert-file", "cannot be read")):
        r = abri("stack", "certificate", "vps1", "proxy", "--cert-file", str(files[0]),
                 "--key-file", str(files[1]), "--site", site)
        assert r.code == 2 and field in r.err and words in r.err, (field, r.err)
        assert "Traceback" not in r.err
    # switching to own before the certificate is given: refused with the command to run
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=own", "--site", site)
    assert r.code == 2 and "abri stack certificate vps1 proxy" in r.err, r.err
    assert fingerprint(site) == before

    r = abri("stack", "certificate", "vps1", "proxy", "--cert-file", str(good_crt),
             "--key-file", str(good_key), "--site", site)
    assert r.code == 0, r.err
    assert "SHA-256 fingerprint" in r.out and "home.example.eu" in r.out
    key_body = good_key.read_text().splitlines()[1]
    assert key_body not in r.out + r.err
    # a domain the certificate does not hold is refused
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=own",
             "--set", "domain=other.example.eu", "--site", site)
    assert r.code == 2 and "domain" in r.err and "home.example.eu" in r.err, r.err
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=own",
             "--set", "domain=home.example.eu", "--site", site)
    assert r.code == 0, r.err
    proxy = _stack(_state(site, "vps1"), "proxy")
    assert "tls /etc/caddy/certs/own.crt /etc/caddy/certs/own.key" in _file(proxy, "Caddyfile")
    own = next(c for c in proxy["certificates"] if c["path"] == "certs/own")
    assert own["key_ref"] == "vps1/proxy/certificate:certs/own:key"
    assert own["crt"].startswith("-----BEGIN CERTIFICATE-----")
    # no key in the site's plaintext; the self-signed pair abri made is kept (switching back
    # needs no new one), the user's survives a switch to self-signed and back
    assert key_body not in _plaintext(site)
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=self-signed",
             "--site", site)
    assert r.code == 0, r.err
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=own", "--site", site)
    assert r.code == 0, r.err
    assert next(c for c in _stack(_state(site, "vps1"), "proxy")["certificates"]
                if c["path"] == "certs/own")["fingerprint"] == own["fingerprint"]


def test_a_private_acme_ca_root_is_trusted_when_given(abri, remote_site, tmp_path):
    site = remote_site
    root, _ = make_certificate(tmp_path, ["ca.home.example.eu"], days=3650, tag="root",
                               ca=True)
    r = abri("stack", "certificate", "vps1", "proxy", "--acme-root-file", str(root),
             "--site", site)
    assert r.code == 0, r.err
    r = abri("stack", "set", "vps1", "proxy", "--set", "certificate=acme",
             "--set", "domain=home.example.eu",
             "--set", "acme_directory=https://ca.home.example.eu:9000/acme/acme/directory",
             "--set", "eab_key_id=kid-1", "--set", f"eab_hmac_key={HMAC}", "--site", site)
    assert r.code == 0, r.err
    proxy = _stack(_state(site, "vps1"), "proxy")
    assert "trusted_roots /etc/caddy/certs/acme-root.crt" in _file(proxy, "Caddyfile")
    entry = next(c for c in proxy["certificates"] if c["path"] == "certs/acme-root")
    assert "key_ref" not in entry
    # both at once is not a thing
    r = abri("stack", "certificate", "vps1", "proxy", "--acme-root-file", str(root),
             "--cert-file", str(root), "--site", site)
    assert r.code == 2 and "--acme-root-file alone" in r.err, r.err


def test_verify_takes_an_acme_certificate_only_from_a_ca_for_the_domain(tmp_path):
    from tui.core import remote

    def der(path: Path) -> bytes:
        return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
            serialization.Encoding.DER)

    _, ca_key_file = make_certificate(tmp_path, ["ca.example.eu"], tag="ca", ca=True)
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    issued_crt, _ = make_certificate(tmp_path, ["home.example.eu"], issuer_key=ca_key,
                                     issuer="ca.example.eu", tag="issued")
    self_crt, _ = make_certificate(tmp_path, ["home.example.eu"], tag="self")
    wild_crt, _ = make_certificate(tmp_path, ["*.example.eu"], issuer_key=ca_key,
                                   issuer="ca.example.eu", tag="wild")
    assert remote.issued(der(issued_crt), "home.example.eu") is True
    assert remote.issued(der(wild_crt), "home.example.eu") is True
    assert remote.issued(der(wild_crt), "a.home.example.eu") is False
    assert remote.issued(der(issued_crt), "other.example.eu") is False
    assert remote.issued(der(self_crt), "home.example.eu") is False  # self-signed
    assert remote.issued(der(issued_crt), None) is False
    assert remote.issued(b"not a certificate", "home.example.eu") is False
