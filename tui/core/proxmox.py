"""Proxmox VE nodes and their guests (LXC containers, QEMU VMs), through the node's API
(controller side).

`abri apply` calls ensure_guests() before Ansible runs: for every guest host of the run it
finds the guest on its node (by vmid and abri's tag), creates what is missing (the Debian 13
template, the unprivileged container with nesting and keyctl for Docker, abri's SSH key,
onboot, the tag), starts it and waits for its SSH; then Ansible provisions it like any SSH
host in the same run. A guest that exists is never recreated: changed cores or memory go
through PUT config. A container abri did not create (no tag of this site) is never touched.

A VM guest (abri_guest.type vm) is the same for Debian 13's cloud image: the node downloads
the image once into a storage for import content (download-url), the VM is created with its
disk imported from it (scsi0 import-from) and a cloud-init drive (ciuser abri, abri's key as
sshkeys URL-encoded, ipconfig0 with the fixed address), its disk grown to the site's size
(PUT resize), then started; cloud-init does the rest at its first boot.

Why the controller and not a kit module on localhost: the work needs the node's credentials
from the vault, the pinned CA and the site (the vmid and address abri records), and it must
finish before Ansible's inventory is read; the API is plain HTTPS, so the standard library
does it with verification against the pinned CA, never switched off.

Every failure is a GuestError naming the host and the field: wrong credentials (token,
password), an unknown node (node), a certificate the pinned CA did not sign (ca), a full
storage (disk), a bridge the node lacks (bridge). Checks run before the create request, and a
failed create task leaves nothing behind (Proxmox removes the container of a failed create).
"""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.core.errors import AbriError, Problem
from tui.core.validate import VM_MIN_DISK

TEMPLATE_PACKAGE = "debian-13-standard"
#: features Docker needs inside an unprivileged container (keyctl: root@pam only)
FEATURES = "nesting=1,keyctl=1"
GIB = 1024 ** 3
#: secrets of a proxmox host in its vault, under this pseudo stack
VAULT_KEY = "_proxmox"
#: VMs: Debian 13's cloud image (cloud-init, no hardware drivers), imported by the node
VM_IMAGE_URL = ("https://cloud.debian.org/images/cloud/trixie/latest/"
                "debian-13-genericcloud-amd64.qcow2")
VM_IMAGE_FILE = "debian-13-genericcloud-amd64.qcow2"
#: the image's disk size: a VM's disk is at least this big
VM_IMAGE_GIB = VM_MIN_DISK
#: the user cloud-init makes in a VM (with abri's key and sudo without a password); the
#: cloud image refuses root logins
VM_USER = "abri"


class GuestError(AbriError):
    """A Proxmox step failed; the run stops before Ansible. Exit status 1 (a run failed)."""


def fingerprint(der: bytes) -> str:
    """SHA-256 of a certificate, as Proxmox prints it (AA:BB:...)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def normal_fingerprint(text: str) -> str:
    hexdigits = "".join(ch for ch in (text or "") if ch.isalnum()).upper()
    if len(hexdigits) != 64 or any(ch not in "0123456789ABCDEF" for ch in hexdigits):
        raise ValueError(f"{text!r} is not a SHA-256 fingerprint; give 32 hexadecimal bytes "
                         "as the node shows them (AA:BB:...:FF)")
    return ":".join(hexdigits[i:i + 2] for i in range(0, 64, 2))


def split_url(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{url!r} is not an https URL of a Proxmox node; use e.g. "
                         "https://192.168.1.10:8006")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r} holds a path, query or user; give only "
                         "https://HOST[:PORT] (abri adds /api2/json)")
    try:
        port = parts.port or 8006
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return parts.hostname, port


def presented_certificate(url: str, timeout: float = 10) -> bytes:
    """The certificate the node presents (DER), read from a TLS handshake that sends
    nothing: it is trusted only once the user confirmed its fingerprint."""
    host, port = split_url(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # reading, not trusting: no byte of data is sent
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("the node presented no certificate")
    return der


def _der_to_pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der)


@dataclass
class Credentials:
    user: str | None = None        # root@pam (ticket auth)
    password: str | None = None
    token_id: str | None = None    # USER@REALM!TOKENID
    token_secret: str | None = None

    @property
    def is_token(self) -> bool:
        return bool(self.token_id)


class Api:
    """A Proxmox VE API client verified against a pinned certificate (a CA, or the node's
    own certificate while the CA is being fetched)."""

    def __init__(self, host: str, url: str, node: str, pinned_pem: str, creds: Credentials,
                 timeout: float = 30):
        self.host = host
        self.url = url.rstrip("/")
        self.node = node
        self.creds = creds
        self.timeout = timeout
        self.requests = 0
        ctx = ssl.create_default_context(cadata=pinned_pem)
        # a node's own certificate may be pinned as the anchor (before its CA is known)
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        self._ctx = ctx
        self._ticket: str | None = None
        self._csrf: str | None = None

    def _problem(self, fieldname: str, message: str) -> GuestError:
        return GuestError(Problem(f"host '{self.host}'", fieldname, message))

    def login(self) -> None:
        if self.creds.is_token or self._ticket:
            return
        data = self._call("POST", "/access/ticket",
                          {"username": self.creds.user, "password": self.creds.password},
                          auth=False)
        self._ticket, self._csrf = data["ticket"], data["CSRFPreventionToken"]

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, params or {})

    def post(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, params or {})

    def put(self, path: str, params: dict[str, Any]) -> Any:
        return self._call("PUT", path, params)

    def _call(self, method: str, path: str, params: dict[str, Any], auth: bool = True) -> Any:
        if auth:
            self.login()
        body = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        target = f"{self.url}/api2/json{path}"
        if method == "GET" and body:
            target += "?" + body
        req = urllib.request.Request(target, method=method,
                                     data=body.encode() if method != "GET" else None)
        if method != "GET":
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        if auth and self.creds.is_token:
            req.add_header("Authorization",
                           f"PVEAPIToken={self.creds.token_id}={self.creds.token_secret}")
        elif auth:
            req.add_header("Cookie", f"PVEAuthCookie={urllib.parse.quote(self._ticket or '')}")
            if method != "GET":
                req.add_header("CSRFPreventionToken", self._csrf or "")
        self.requests += 1
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}").get("data")
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            raise self._http_error(exc.code, answer, method, path) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise self._problem("ca", "the node's certificate is not signed by the CA "
                                    "pinned in the site (" + (reason.verify_message or "")
                                    + "); if the node's CA was really replaced, remove and "
                                    "add the host again to pin the new one") from None
            raise self._problem("api_url", f"cannot reach {self.url}: {reason}") from None
        except (TimeoutError, OSError) as exc:
            raise self._problem("api_url", f"cannot reach {self.url}: {exc}") from None

    def _http_error(self, status: int, answer: dict[str, Any], method: str,
                    path: str) -> GuestError:
        message = str(answer.get("message") or "").strip()
        errors = answer.get("errors") or {}
        if status == 401:
            what = "token" if self.creds.is_token else "password"
            who = self.creds.token_id if self.creds.is_token else self.creds.user
            return self._problem(what, f"the node refused the credentials of {who} "
                                 f"({message or 'authentication failure'}); check the "
                                 f"{'token id and secret' if what == 'token' else 'password'}")
        if status == 403:
            return self._problem("user", f"{method} {path} was refused: {message}")
        detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) if errors else message
        return self._problem("api", f"{method} {path} was refused ({status}): {detail}")

    def wait_task(self, upid: str, fieldname: str, timeout: float = 600,
                  host: str | None = None) -> None:
        """Poll a task until it stops; its error is a GuestError naming the host (the node,
        or the guest the task was for) and fieldname."""
        where = f"host '{host or self.host}'"
        quoted = urllib.parse.quote(upid, safe="")
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            status = self.get(f"/nodes/{self.node}/tasks/{quoted}/status")
            if status.get("status") == "stopped":
                exit_status = status.get("exitstatus")
                if exit_status != "OK":
                    raise GuestError(Problem(where, fieldname, f"the node's task "
                                             f"{status.get('type')} failed: {exit_status}"))
                return
            if time.monotonic() > deadline:
                raise GuestError(Problem(where, fieldname, f"the node's task {upid} did not "
                                         f"end within {int(timeout)} s"))
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)


def pin_node(host: str, url: str, node: str, creds: Credentials, confirmed: str | None
             ) -> tuple[str, str, str]:
    """At 'abri host add': read the certificate the node presents, compare its SHA-256
    fingerprint with the one the user confirmed, then (trusting only that certificate) log
    in, check the node exists, and fetch the CA that signed it (pve-root-ca.pem). Returns
    (ca_pem, ca_fingerprint, node certificate fingerprint). Raises GuestError when the
    fingerprint is missing or differs (showing the node's), the credentials are refused or
    the node is unknown."""
    where = f"host '{host}'"
    try:
        der = presented_certificate(url)
    except (OSError, ssl.SSLError) as exc:
        raise GuestError(Problem(where, "api_url", f"cannot reach {url}: {exc}")) from None
    seen = fingerprint(der)
    if not confirmed:
        raise GuestError(Problem(where, "ca_fingerprint", f"the node presents a certificate "
                                 f"with SHA-256 fingerprint {seen}; compare it with the one "
                                 "the node shows (web interface: the node > System > "
                                 "Certificates, pve-ssl.pem) and give it with "
                                 "--ca-fingerprint to pin it"))
    if normal_fingerprint(confirmed) != seen:
        raise GuestError(Problem(where, "ca_fingerprint", f"the node presents a certificate "
                                 f"with fingerprint {seen}, not the one given; nothing was "
                                 "pinned. Check that you reach the right machine"))
    api = Api(host, url, node, _der_to_pem(der), creds)
    check_node(api)
    ca_pem = node_ca(api, der)
    ca_der = ssl.PEM_cert_to_DER_cert(ca_pem)
    return ca_pem, fingerprint(ca_der), seen


def check_node(api: Api) -> None:
    nodes = [n.get("node") for n in api.get("/nodes") or []]
    if api.node not in nodes:
        raise api._problem("node", f"{api.node!r} is not a node of this Proxmox VE cluster; "
                           "its nodes: " + (", ".join(sorted(str(n) for n in nodes)) or "none"))


def node_ca(api: Api, leaf_der: bytes) -> str:
    """The CA that signed the node's certificate (from /nodes/{node}/certificates/info),
    checked to be its issuer; the node's own certificate when it is self-signed."""
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(leaf_der)
    info = api.get(f"/nodes/{api.node}/certificates/info") or []
    for item in info:
        pem = item.get("pem")
        if item.get("filename") != "pve-root-ca.pem" or not pem:
            continue
        ca = x509.load_pem_x509_certificate(pem.encode())
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception):
            continue
        return pem
    try:
        leaf.verify_directly_issued_by(leaf)
        return _der_to_pem(leaf_der)
    except Exception:
        raise api._problem("ca", "the node did not name the CA that signed its certificate "
                           "(pve-root-ca.pem in /nodes/NODE/certificates/info)") from None


# ---------------------------------------------------------------- guests at apply time


def site_tag(site_id: str) -> str:
    """The tag abri sets on the guests it creates for one site."""
    return f"abri-{site_id[:12]}"


def api_for(site, node_host) -> Api:
    conf = node_host.proxmox
    secret = site.secrets.get(node_host.name, {}).get(VAULT_KEY, {})
    if conf.get("token_id"):
        creds = Credentials(token_id=conf["token_id"], token_secret=secret.get("token_secret"))
    else:
        creds = Credentials(user=conf.get("user"), password=secret.get("password"))
    return Api(node_host.name, conf["api_url"], conf["node"], conf["ca_pem"], creds)


def ssh_public_key(site_id: str) -> tuple[Path, str]:
    from tui.core import sshkey

    key = sshkey.ensure(site_id)
    return key, Path(f"{key}.pub").read_text(encoding="utf-8").strip()


@dataclass
class GuestReport:
    name: str
    vmid: int
    created: bool = False
    started: bool = False
    changed: list[str] | None = None


def ensure_guests(site, names: list[str], say: Callable[[str], None] = print,
                  ssh_timeout: float = 300,
                  wait: Callable[[Any, float], None] | None = None) -> list[GuestReport]:
    """Make every guest of `names` exist and run, then wait for its SSH. Saves the site
    when it learnt something (a vmid, an address)."""
    reports = []
    learnt = False
    for name in names:
        host = site.hosts[name]
        if host.kind != "guest":
            continue
        node_host = site.hosts[host.parent]
        api = api_for(site, node_host)
        check_node(api)
        report = _ensure_guest(site, host, api, say)
        reports.append(report)
        if host.guest.get("vmid") != report.vmid:
            host.guest["vmid"] = report.vmid
            learnt = True
        if not host.address:
            host.address = _guest_address(api, report.vmid, host)
            learnt = True
        if learnt:
            site.save()
        (wait or _wait_ssh)(host, ssh_timeout)
    return reports


def guest_type(g: dict[str, Any]) -> str:
    """'lxc' (the default) or 'vm'."""
    return str(g.get("type") or "lxc")


def _api_kind(g: dict[str, Any]) -> str:
    """The API's word for the guest's type: lxc or qemu."""
    return "qemu" if guest_type(g) == "vm" else "lxc"


def _listed(api: Api) -> dict[int, dict[str, Any]]:
    """Every container and VM of the node by vmid, each with its 'kind' (lxc, qemu): one
    vmid is one guest of either type."""
    out: dict[int, dict[str, Any]] = {}
    for kind in ("lxc", "qemu"):
        for item in api.get(f"/nodes/{api.node}/{kind}") or []:
            out[int(item["vmid"])] = {**item, "kind": kind}
    return out


def _find(host, listed: dict[int, dict[str, Any]], tag: str) -> dict[str, Any] | None:
    g = host.guest
    if g.get("vmid"):
        return listed.get(int(g["vmid"]))
    return next((c for c in listed.values() if c["kind"] == _api_kind(g)
                 and tag in _tags(c.get("tags")) and c.get("name") == host.name), None)


def _what(kind: str) -> str:
    return "VM" if kind == "qemu" else "container"


def _ensure_guest(site, host, api: Api, say) -> GuestReport:
    g = host.guest
    tag = site_tag(site.site_id)
    node = api.node
    kind = _api_kind(g)
    where = f"host '{host.name}'"
    listed = _listed(api)
    existing = _find(host, listed, tag)
    if existing is not None:
        vmid = int(existing["vmid"])
        if tag not in _tags(existing.get("tags")):
            raise GuestError(Problem(where, "vmid", f"vmid {vmid} on node {node} is a "
                                     f"{_what(existing['kind'])} abri did not create (no tag "
                                     f"{tag}); abri never touches it. Choose another --vmid, "
                                     "or leave it out to get a free one"))
        if existing["kind"] != kind:
            raise GuestError(Problem(where, "type", f"vmid {vmid} on node {node} is a "
                                     f"{_what(existing['kind'])} abri created, and the site "
                                     f"says {guest_type(g)}; abri never recreates a guest. "
                                     "Destroy it first ('abri host destroy') or give the "
                                     "site's type back"))
        base = f"/nodes/{node}/{kind}/{vmid}"
        report = GuestReport(host.name, vmid)
        config = api.get(f"{base}/config") or {}
        change = {}
        for key in ("cores", "memory"):
            have = str(config.get(key) or "").removeprefix("current=")
            if key in g and have != str(g[key]):
                change[key] = g[key]
        if change:
            api.put(f"{base}/config", change)
            report.changed = sorted(change)
            say(f"guest {host.name}: vmid {vmid}: changed " + ", ".join(
                f"{k} {config.get(k)} -> {v}" for k, v in change.items()))
        devices = _device_changes(config, g.get("usb") or []) if kind == "lxc" else {}
        if devices:
            if api.creds.is_token:
                raise GuestError(Problem(where, "usb", "passing USB devices "
                                         "through is for root@pam with its password; Proxmox "
                                         "refuses it to an API token, even root's"))
            api.put(f"{base}/config", devices)
            report.changed = sorted([*(report.changed or []), "usb"])
            say(f"guest {host.name}: vmid {vmid}: USB devices now "
                + (", ".join(g.get("usb") or []) or "none"))
        disk = "scsi0" if kind == "qemu" else "rootfs"
        have = _size_gib(config.get(disk))
        want = int(g["disk"])
        if have is not None and want < have:
            raise GuestError(Problem(where, "disk", f"vmid {vmid} has "
                                     f"{have:g} GiB; Proxmox cannot shrink a disk. Give "
                                     f"--disk {have:g} or more"))
        if have is not None and want > have:
            api.wait_task(api.put(f"{base}/resize", {"disk": disk, "size": f"{want}G"}),
                          "disk", host=host.name)
            report.changed = sorted([*(report.changed or []), "disk"])
            say(f"guest {host.name}: vmid {vmid}: {'root ' if kind == 'lxc' else ''}disk "
                f"{have:g} -> {want} GiB")
        status = api.get(f"{base}/status/current") or {}
        if status.get("status") != "running":
            api.wait_task(api.post(f"{base}/status/start"), "start", host=host.name)
            report.started = True
            say(f"guest {host.name}: vmid {vmid} started")
        if not report.changed and not report.started:
            say(f"guest {host.name}: vmid {vmid} exists and runs; nothing to change")
        return report
    if kind == "qemu":
        return _create_vm(site, host, api, tag, say, listed)
    return _create(site, host, api, tag, say, listed)


def _device_changes(config: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """The PUT config parameters that make a guest's dev[n] the wanted device paths (in
    order), or {} when they are already."""
    have: dict[int, str] = {}
    for key, value in config.items():
        if key.startswith("dev") and key[3:].isdigit():
            first = str(value).split(",")[0]
            have[int(key[3:])] = first.split("=", 1)[1] if first.startswith("path=") else first
    want = dict(enumerate(wanted))
    if have == want:
        return {}
    out: dict[str, Any] = {f"dev{i}": f"path={p}" for i, p in want.items()
                           if have.get(i) != p}
    gone = sorted(i for i in have if i not in want)
    if gone:
        out["delete"] = ",".join(f"dev{i}" for i in gone)
    return out


def _size_gib(rootfs: object) -> float | None:
    """The size= of a rootfs property string ('local-lvm:vm-120-disk-0,size=8G') in GiB."""
    for part in str(rootfs or "").split(","):
        if part.startswith("size="):
            text = part[5:]
            unit = text[-1:].upper()
            scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024}
            try:
                return float(text[:-1]) * scale[unit] if unit in scale \
                    else float(text) / GIB
            except ValueError:
                return None
    return None


def _tags(text: object) -> set[str]:
    import re

    return {t for t in re.split(r"[;, ]+", str(text or "")) if t}


def _create(site, host, api: Api, tag: str, say, by_id: dict[int, Any]) -> GuestReport:
    g = host.guest
    node = api.node
    where = f"host '{host.name}'"
    if api.creds.is_token:
        raise GuestError(Problem(f"host '{host.parent}'", "token",
                                 f"cannot create guest {host.name}: Docker inside an "
                                 "unprivileged container needs the keyctl feature, and "
                                 "Proxmox lets only root@pam with its password set it (an API "
                                 "token is refused, even root's). Add the node with --user "
                                 "root@pam --password-file FILE, or create the container "
                                 "yourself and add it as an ssh host"))
    # every check before the create request: a refusal leaves nothing behind
    storage = _bridge_and_storage(api, node, g, where, "rootdir")
    template = _template(api, where, say)
    vmid = int(g.get("vmid") or api.get("/cluster/nextid"))
    if vmid in by_id:
        raise GuestError(Problem(where, "vmid", f"vmid {vmid} is taken on node {node}"))
    key_path, public = ssh_public_key(site.site_id)
    net = f"name=eth0,bridge={g['bridge']},ip={g['ip']}"
    if g.get("gateway"):
        net += f",gw={g['gateway']}"
    params = {
        "vmid": vmid, "ostemplate": template, "hostname": host.name, "net0": net,
        "rootfs": f"{storage['storage']}:{int(g['disk'])}", "unprivileged": 1,
        "features": FEATURES, "ssh-public-keys": public, "cores": int(g["cores"]),
        "memory": int(g["memory"]), "swap": 512, "onboot": 1, "tags": tag,
    }
    for i, dev in enumerate(g.get("usb") or []):
        params[f"dev{i}"] = f"path={dev}"
    say(f"guest {host.name}: creating LXC {vmid} on {node} ({g['cores']} cores, "
        f"{g['memory']} MiB, {g['disk']} GiB on {storage['storage']}, {net})")
    api.wait_task(api.post(f"/nodes/{node}/lxc", params), "create", host=host.name)
    # a start that fails leaves a tagged container: the next apply finds it and starts it
    api.wait_task(api.post(f"/nodes/{node}/lxc/{vmid}/status/start"), "start",
                  host=host.name)
    say(f"guest {host.name}: LXC {vmid} created and started")
    host.user = "root"
    host.key = str(key_path)
    return GuestReport(host.name, vmid, created=True, started=True)


def _create_vm(site, host, api: Api, tag: str, say,
               listed: dict[int, dict[str, Any]]) -> GuestReport:
    """A QEMU VM from Debian 13's cloud image: the image downloaded once to a storage for
    import content (download-url), the VM created with its system disk imported from it
    (import-from) and a cloud-init drive (ciuser, sshkeys, ipconfig0), the disk grown to
    the site's size, then started. Every check comes before the create request."""
    g = host.guest
    node = api.node
    where = f"host '{host.name}'"
    if g.get("ip", "dhcp") == "dhcp":  # the site refuses it too; a hand-edited site
        raise GuestError(Problem(where, "ip", "a VM needs a fixed address (its address "
                                 "could only be learnt from a QEMU guest agent, which "
                                 "Debian's cloud image does not carry)"))
    storage = _bridge_and_storage(api, node, g, where, "images")
    if int(g["disk"]) < VM_IMAGE_GIB:
        raise GuestError(Problem(where, "disk", f"Debian's cloud image is {VM_IMAGE_GIB} GiB; "
                                 f"a VM's disk cannot be smaller (give --disk {VM_IMAGE_GIB} "
                                 "or more)"))
    vmid = int(g.get("vmid") or api.get("/cluster/nextid"))
    if vmid in listed:
        raise GuestError(Problem(where, "vmid", f"vmid {vmid} is taken on node {node}"))
    image = _cloud_image(api, where, say)
    key_path, public = ssh_public_key(site.site_id)
    target = storage["storage"]
    ipconfig = f"ip={g['ip']}" + (f",gw={g['gateway']}" if g.get("gateway") else "")
    params = {
        "vmid": vmid, "name": host.name, "cores": int(g["cores"]),
        "memory": str(int(g["memory"])), "ostype": "l26", "scsihw": "virtio-scsi-single",
        "scsi0": f"{target}:0,import-from={image},discard=on,iothread=1",
        "ide2": f"{target}:cloudinit", "boot": "order=scsi0",
        "net0": f"virtio,bridge={g['bridge']}", "serial0": "socket", "vga": "serial0",
        "agent": "enabled=1", "ciuser": VM_USER,
        # qemu-server takes sshkeys URL-encoded (its 'urlencoded' format): every byte but
        # letters, digits and -_.~ as %XX, spaces as %20 (never '+'), newlines as %0A;
        # the form encoding of the request then encodes that once more
        "sshkeys": urllib.parse.quote(public + "\n", safe=""),
        "ipconfig0": ipconfig, "onboot": 1, "tags": tag,
    }
    say(f"guest {host.name}: creating VM {vmid} on {node} ({g['cores']} cores, "
        f"{g['memory']} MiB, {g['disk']} GiB on {target} from {image}, {ipconfig})")
    api.wait_task(api.post(f"/nodes/{node}/qemu", params), "create", host=host.name)
    # from here the VM carries the tag: a step that fails leaves it for the next apply,
    # which finds it and grows, starts it (a failed create task leaves nothing)
    if int(g["disk"]) > VM_IMAGE_GIB:
        api.wait_task(api.put(f"/nodes/{node}/qemu/{vmid}/resize",
                              {"disk": "scsi0", "size": f"{int(g['disk'])}G"}), "disk",
                      host=host.name)
    api.wait_task(api.post(f"/nodes/{node}/qemu/{vmid}/status/start"), "start",
                  host=host.name)
    say(f"guest {host.name}: VM {vmid} created and started")
    host.user = VM_USER
    host.key = str(key_path)
    return GuestReport(host.name, vmid, created=True, started=True)


def _cloud_image(api: Api, where: str, say) -> str:
    """The volume id of Debian 13's cloud image in a storage for import content,
    downloaded there by the node (download-url, certificates verified) when absent."""
    node = api.node
    stores = api.get(f"/nodes/{node}/storage", {"content": "import"}) or []
    if not stores:
        raise GuestError(Problem(where, "storage", f"node {node} has no storage for import "
                                 "content (a VM's disk is imported from Debian's cloud "
                                 "image): allow 'import' on one, e.g. local (Datacenter > "
                                 "Storage > local > Content)"))
    for s in stores:
        content = api.get(f"/nodes/{node}/storage/{s['storage']}/content",
                          {"content": "import"}) or []
        for c in content:
            if str(c.get("volid", "")).endswith(f":import/{VM_IMAGE_FILE}"):
                return str(c["volid"])
    store = max(stores, key=lambda s: int(s.get("avail") or 0))["storage"]
    say(f"node {node}: downloading {VM_IMAGE_URL} to {store}")
    api.wait_task(api.post(f"/nodes/{node}/storage/{store}/download-url",
                           {"url": VM_IMAGE_URL, "content": "import",
                            "filename": VM_IMAGE_FILE}), "image")
    return f"{store}:import/{VM_IMAGE_FILE}"



def _bridge_and_storage(api: Any, node: str, g: dict[str, Any], where: str,
                        content: str) -> dict[str, Any]:
    """Checked before any create request (a refusal leaves nothing behind): the guest's
    bridge is one of the node's, and the storage for its disk (content rootdir for a
    container, images for a VM) has room for it. Returns that storage."""
    bridges = {b.get("iface") for b in api.get(f"/nodes/{node}/network",
                                                {"type": "any_bridge"}) or []}
    if g["bridge"] not in bridges:
        raise GuestError(Problem(where, "bridge", f"{g['bridge']!r} is not a bridge of node "
                                 f"{node}; its bridges: " + (", ".join(sorted(bridges))
                                                             or "none")))
    listed = api.get(f"/nodes/{node}/storage", {"content": content}) or []
    storage = _pick_storage(listed, g.get("storage"), where, node, content)
    if int(storage.get("avail") or 0) < int(g["disk"]) * GIB:
        raise GuestError(Problem(where, "disk", f"storage {storage['storage']} on node {node} "
                                 f"has {int(storage.get('avail') or 0) / GIB:.1f} GiB free; "
                                 f"the guest needs {g['disk']} GiB. Free space there, give "
                                 "--storage another one, or a smaller --disk"))
    return storage

def _pick_storage(items: list[dict[str, Any]], wanted: str | None, where: str, node: str,
                  content: str) -> dict[str, Any]:
    names = [s.get("storage") for s in items]
    if wanted:
        for s in items:
            if s.get("storage") == wanted:
                return s
        raise GuestError(Problem(where, "storage", f"{wanted!r} is not a storage for "
                                 f"{content} on node {node}; valid: "
                                 + (", ".join(str(n) for n in names) or "none")))
    if not items:
        raise GuestError(Problem(where, "storage", f"node {node} has no storage for {content}"))
    return max(items, key=lambda s: int(s.get("avail") or 0))


def _template(api: Api, where: str, say) -> str:
    """The volume id of the newest Debian 13 template, downloaded when absent."""
    node = api.node
    stores = api.get(f"/nodes/{node}/storage", {"content": "vztmpl"}) or []
    if not stores:
        raise GuestError(Problem(where, "template", f"node {node} has no storage for "
                                 "container templates (vztmpl)"))
    for s in stores:
        content = api.get(f"/nodes/{node}/storage/{s['storage']}/content",
                          {"content": "vztmpl"}) or []
        have = sorted(c["volid"] for c in content
                      if f"vztmpl/{TEMPLATE_PACKAGE}_" in str(c.get("volid")))
        if have:
            return have[-1]
    offered = sorted((a for a in api.get(f"/nodes/{node}/aplinfo") or []
                      if a.get("package") == TEMPLATE_PACKAGE
                      or str(a.get("template", "")).startswith(TEMPLATE_PACKAGE + "_")),
                     key=lambda a: str(a.get("version", "")))
    if not offered:
        raise GuestError(Problem(where, "template", f"node {node} offers no "
                                 f"{TEMPLATE_PACKAGE} template (aplinfo); run 'pveam update' "
                                 "on the node"))
    name = offered[-1]["template"]
    store = stores[0]["storage"]
    say(f"node {node}: downloading template {name} to {store}")
    api.wait_task(api.post(f"/nodes/{node}/aplinfo", {"storage": store, "template": name}),
                  "template")
    return f"{store}:vztmpl/{name}"


def _guest_address(api: Api, vmid: int, host, timeout: float = 120) -> str:
    ip = host.guest.get("ip", "dhcp")
    if ip != "dhcp":
        return ip.split("/")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for iface in api.get(f"/nodes/{api.node}/lxc/{vmid}/interfaces") or []:
            inet = iface.get("inet") or ""
            if iface.get("name") == "eth0" and inet:
                return inet.split("/")[0]
        time.sleep(1)
    raise GuestError(Problem(f"host '{host.name}'", "ip", f"the guest got no DHCP address "
                             f"within {int(timeout)} s; give a fixed --ip CIDR"))


def _wait_ssh(host, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.address, host.port or 22), timeout=5) as s:
                s.settimeout(5)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(1)
    raise GuestError(Problem(f"host '{host.name}'", "address", f"SSH on {host.address} did not "
                             f"answer within {int(timeout)} s ({last or 'no banner'})"))


def destroy_guest(site, name: str, say: Callable[[str], None] = print) -> int | None:
    """Stop and destroy a guest abri created (its vmid carries this site's tag), then the
    caller takes it out of the site. A container without the tag is never touched. Returns
    the vmid destroyed, None when the node has no such container (nothing to destroy)."""
    host = site.hosts[name]
    where = f"host '{name}'"
    if host.kind != "guest":
        raise GuestError(Problem(where, "kind", f"only a guest can be destroyed; this is "
                                 f"{'an' if host.kind[0] in 'aeiou' else 'a'} {host.kind} "
                                 "host ('abri host remove' takes it out of the site)"))
    api = api_for(site, site.hosts[host.parent])
    check_node(api)
    tag = site_tag(site.site_id)
    found = _find(host, _listed(api), tag)
    vmid = host.guest.get("vmid")
    if found is None:
        say(f"guest {name}: no guest {vmid or 'of this name'} on node {api.node}; "
            "nothing to destroy")
        return None
    vmid = int(found["vmid"])
    kind = found["kind"]
    if tag not in _tags(found.get("tags")):
        raise GuestError(Problem(where, "vmid", f"vmid {vmid} on node {api.node} is a "
                                 f"{_what(kind)} abri did not create (no tag {tag}); abri "
                                 "never destroys it"))
    base = f"/nodes/{api.node}/{kind}/{vmid}"
    status = api.get(f"{base}/status/current") or {}
    if status.get("status") == "running":
        api.wait_task(api.post(f"{base}/status/stop"), "stop", host=name)
        say(f"guest {name}: vmid {vmid} stopped")
    api.wait_task(api._call("DELETE", base, {"purge": 1, "destroy-unreferenced-disks": 1}),
                  "destroy", host=name)
    say(f"guest {name}: vmid {vmid} destroyed on node {api.node}")
    return vmid


# ---------------------------------------------------------------- adding nodes and guests
# One place for what 'abri host add --kind proxmox|guest' and the TUI's host editor do: the
# callers give the values (the CLI reads its secret files first), these check every field,
# ask the node where needed, and change the site in memory; the caller saves it.


def node_problems(site, name: str, *, api_url: str | None, node: str | None,
                  user: str | None = None, password: str | None = None,
                  token_id: str | None = None, token_secret: str | None = None,
                  ca_fingerprint: str | None = None,
                  secret_fields: dict[str, str] | None = None
                  ) -> tuple[list[Problem], Credentials]:
    """Every offline check of a new proxmox node's fields, and its credentials. secret_fields
    renames the fields a missing password or token secret is reported under (the CLI's
    password_file, token_secret_file)."""
    from tui.core import validate

    names = {"password": "password", "token_secret": "token_secret",
             **(secret_fields or {})}
    where = f"host '{name}'"
    problems: list[Problem] = []

    def check(fieldname, fn, value):
        try:
            return fn(value)
        except ValueError as exc:
            problems.append(Problem(where, fieldname, str(exc)))
            return None

    if not api_url:
        problems.append(Problem(where, "api_url", "is required; give the node's API, "
                                "e.g. https://192.168.1.10:8006"))
    else:
        check("api_url", split_url, api_url)
    if not node:
        problems.append(Problem(where, "node", "is required; give the node's name (e.g. "
                                "pve)"))
    else:
        check("node", validate.pve_node, node)
    creds = Credentials()
    if token_id and user:
        problems.append(Problem(where, "user", "give either a user with its password or an "
                                "API token id with its secret, not both"))
    if token_id:
        creds.token_id = check("token_id", validate.pve_token_id, token_id)
        if password:
            problems.append(Problem(where, names["password"], "goes with a user, not with "
                                    "an API token"))
        if not token_secret:
            problems.append(Problem(where, names["token_secret"], "is required with an API "
                                    "token id (the token's secret)"))
        creds.token_secret = token_secret
    elif user:
        creds.user = check("user", validate.pve_user, user)
        if token_secret:
            problems.append(Problem(where, names["token_secret"], "goes with an API token "
                                    "id"))
        if not password:
            problems.append(Problem(where, names["password"], "is required with a user (its "
                                    "password)"))
        creds.password = password
    else:
        problems.append(Problem(where, "user", "credentials are required: root@pam with its "
                                "password (can create guests for Docker), or an API token "
                                "(USER@REALM!ID and its secret)"))
    if ca_fingerprint:
        check("ca_fingerprint", normal_fingerprint, ca_fingerprint)
    if name in site.hosts:
        problems.append(Problem(where, "name", "is already in this site; choose another "
                                "name or remove the host first"))
    else:
        check("name", validate.host_name, name)
    return problems, creds


def add_node(site, name: str, *, api_url: str, node: str, creds: Credentials,
             ca_fingerprint: str | None):
    """Pin a checked node (node_problems found nothing) and add it to the site in memory:
    its API settings in the site, the password or token secret in its vault. Raises
    GuestError when the node presents another certificate, refuses the credentials or
    does not know the node (nothing changed then). Returns the host."""
    url = api_url.rstrip("/")
    host_part = split_url(url)[0]
    ca_pem, ca_fp, cert_fp = pin_node(name, url, node, creds, ca_fingerprint)
    host = site.add_host(name, "proxmox", host_part)
    conf = {"api_url": url, "node": node, "ca_pem": ca_pem, "ca_fingerprint": ca_fp,
            "cert_fingerprint": cert_fp}
    if creds.is_token:
        conf["token_id"] = creds.token_id
        secret = {"token_secret": creds.token_secret}
    else:
        conf["user"] = creds.user
        secret = {"password": creds.password}
    site.configure_proxmox(host.name, conf, secret)
    return host


#: a guest's fields, as 'abri host add' and the host editor take them (text)
GUEST_FIELDS = ("type", "cores", "memory", "disk", "bridge", "ip", "gateway", "vmid",
                "storage")
GUEST_DEFAULTS = {"type": "lxc", "cores": "2", "memory": "2048", "disk": "16",
                  "bridge": "vmbr0"}


def add_guest(site, name: str, parent: str | None, values: dict[str, Any],
              usb: list[str] | None = None, user: str | None = None):
    """Check a new guest's fields and add it to the site in memory (nothing is asked of the
    node: apply creates it). Raises AbriError with every problem, each naming its field.
    Returns the host."""
    from tui.core import sshkey, validate

    where = f"host '{name}'"
    problems: list[Problem] = []

    def check(fieldname, fn, value, *extra):
        try:
            return fn(value, *extra)
        except ValueError as exc:
            problems.append(Problem(where, fieldname, str(exc)))
            return None

    v = {k: (None if values.get(k) in (None, "") else str(values[k]).strip())
         for k in GUEST_FIELDS}
    for k, default in GUEST_DEFAULTS.items():
        v[k] = v[k] or default
    guest: dict[str, Any] = {
        "cores": check("cores", validate.guest_cores, v["cores"]),
        "memory": check("memory", validate.guest_memory, v["memory"]),
        "disk": check("disk", validate.guest_disk, v["disk"]),
        "bridge": check("bridge", validate.bridge, v["bridge"]),
    }
    if v["ip"] is None:
        problems.append(Problem(where, "ip", "is required; dhcp, or a fixed address with "
                                "its prefix length (e.g. 192.168.1.50/24) and a gateway"))
    else:
        guest["ip"] = check("ip", validate.guest_ip, v["ip"])
    if v["gateway"]:
        if guest.get("ip") == "dhcp":
            problems.append(Problem(where, "gateway", "comes from DHCP with ip dhcp; leave "
                                    "it out"))
        else:
            guest["gateway"] = check("gateway", validate.gateway, v["gateway"],
                                     guest.get("ip"))
    elif guest.get("ip") not in (None, "dhcp"):
        problems.append(Problem(where, "gateway", "is required with a fixed ip (the guest "
                                "installs Docker from Debian's mirrors)"))
    if v["vmid"] is not None:
        guest["vmid"] = check("vmid", validate.guest_vmid, v["vmid"])
    if v["storage"] is not None:
        guest["storage"] = check("storage", validate.pve_storage, v["storage"])
    if usb:
        guest["usb"] = [check("usb", validate.usb_device, d) for d in usb]
        if len(set(guest["usb"])) != len(guest["usb"]):
            problems.append(Problem(where, "usb", "names a device twice"))
    kind = check("type", validate.guest_type, v["type"])
    if kind == "vm":
        guest["type"] = "vm"
    elif values.get("type"):
        guest["type"] = kind
    problems += [Problem(where, k, m) for k, m in validate.vm_guest_problems(guest)]
    if user not in (None, "", "root"):
        problems.append(Problem(where, "user", "abri reaches a guest it creates with its own "
                                "key, as root (a VM: as abri); leave the user out"))
    added = False
    try:
        site.add_host(name, "guest", None, None, None, None, parent)
        added = True
    except AbriError as exc:
        problems.extend(exc.problems)
    if problems:
        if added:
            del site.hosts[name]
        raise AbriError(problems)
    host = site.hosts[name]
    host.guest = {k: val for k, val in guest.items() if val is not None}
    if guest["ip"] != "dhcp":
        host.address = guest["ip"].split("/")[0]
    host.user = VM_USER if guest.get("type") == "vm" else "root"
    try:
        site.check()  # the whole site must still validate
    except AbriError:
        del site.hosts[name]
        raise
    host.key = str(sshkey.ensure(site.site_id))
    return host


def node_resources(site, node_name: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The bridges of a node of the site, and its storages for guest disks (rootdir or
    images) with their free space: what the host editor offers. Raises GuestError naming
    the node's field when it cannot be asked."""
    api = api_for(site, site.hosts[node_name])
    check_node(api)
    bridges = sorted(str(b.get("iface")) for b in api.get(
        f"/nodes/{api.node}/network", {"type": "any_bridge"}) or [] if b.get("iface"))
    storages: dict[str, dict[str, Any]] = {}
    for content in ("rootdir", "images"):
        for s in api.get(f"/nodes/{api.node}/storage", {"content": content}) or []:
            entry = storages.setdefault(str(s["storage"]), {
                "storage": str(s["storage"]), "avail": int(s.get("avail") or 0),
                "content": []})
            entry["content"].append(content)
    return bridges, sorted(storages.values(), key=lambda s: -s["avail"])
