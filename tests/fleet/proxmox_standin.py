"""A Proxmox VE API stand-in for the tests: HTTPS with a CA of its own, strict about the
published schema (pve_schema), and backed by real fleet hosts.

What it serves (under /api2/json): /access/ticket (password login: ticket and
CSRFPreventionToken; writes without the CSRF header are refused), API tokens
(``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``), /version, /nodes,
/nodes/{node}/storage (content, avail: a storage can be made full), /nodes/{node}/network
(bridges), /cluster/nextid, /nodes/{node}/aplinfo (GET: the appliance list with a
debian-13-standard template; POST: its download, as a task), /nodes/{node}/storage/{storage}/
content, /nodes/{node}/lxc (GET list, POST create as a task), /nodes/{node}/lxc/{vmid}/config
(GET, PUT), .../status/current, .../status/start, .../interfaces, /nodes/{node}/certificates/
info and /nodes/{node}/tasks/{upid}/status; for QEMU VMs /nodes/{node}/qemu (GET list, POST
create as a task: import-from copies an image of import content into a new disk, STORAGE:
cloudinit makes the cloud-init drive), .../qemu/{vmid}/config (GET, PUT), .../resize,
.../status/current, start and stop, DELETE, and /nodes/{node}/storage/{storage}/download-url
(recorded in ``downloads``, never fetched). Tasks run in threads and take the time their work
takes (creating a container boots a real host); they end with exitstatus "OK" or an error.

Every request is first checked against the schema: a path or method that does not exist, a
parameter that is unknown, missing, of the wrong type, outside its enum, pattern or format, or
a property string (net0, rootfs, features) with an unknown or malformed key is refused with
Proxmox's own error shape. Then pve-container's permission rule: only root@pam with a ticket
may set features other than nesting, or dev[n]; an API token (even root's) may not.

Creating a container calls ``launcher(vmid, hostname, ip, gateway, ssh_keys)``, which starts
a real host (the fleet test gives one made with harness.py) and returns its address; without
a launcher the stand-in only records the container. A VM's first start plays cloud-init: the
launcher gets its name as hostname, the URL-decoded sshkeys, ciuser as ``user`` and the
address of ipconfig0 (none of it without a cloudinit drive). Every request is kept in
``requests``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pve_schema
from pve_schema import ParamError, Schema

DEBIAN_TEMPLATE = "debian-13-standard_13.1-2_amd64.tar.zst"
GIB = 1024 ** 3
#: the virtual size of a disk imported from an image in 'import' content (Debian's
#: genericcloud qcow2 images are 3 GiB)
IMAGE_GIB = 3
_DISK_KEY = re.compile(r"^(scsi|virtio|ide|sata)\d+$")


@dataclass
class Storage:
    name: str
    content: str
    total: int = 100 * GIB
    avail: int = 90 * GIB
    kind: str = "dir"
    files: list[str] = field(default_factory=list)


@dataclass
class Task:
    upid: str
    type: str
    vmid: str
    user: str
    status: str = "running"
    exitstatus: str | None = None
    start: float = field(default_factory=time.time)


def root_only(clean: dict[str, Any], schema: Schema, template: str, method: str,
              user: str, token: bool) -> str | None:
    """pve-container's check_ct_modify_config_perm: features other than nesting, and
    device passthrough, are for root@pam with a ticket only. The refusal, or None."""
    if not (template.endswith("/lxc") or template.endswith("/lxc/{vmid}/config")):
        return None
    if user == "root@pam" and not token:
        return None
    fmt = pve_schema.property_format(schema, template, method, "features")
    if "features" in clean and fmt:
        flags = pve_schema.parse_property_string(fmt, clean["features"])
        others = sorted(k for k, v in flags.items() if k != "nesting"
                        and str(v) not in ("0", ""))
        if others:
            return ("changing feature flags (except nesting) is only allowed for root@pam "
                    f"(asked for: {', '.join(others)})")
    devs = sorted(k for k in clean if k.startswith("dev") and k[3:].isdigit())
    if devs:
        return f"only root@pam may pass devices through ({', '.join(devs)})"
    return None


class Certs:
    """A CA of the stand-in's own and a server certificate it signs (like a Proxmox node's
    pve-root-ca.pem and pve-ssl.pem)."""

    def __init__(self, names: list[str], folder: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox Virtual "
                                                "Environment stand-in CA"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster "
                                                "Manager CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                           crl_sign=True, content_commitment=False,
                                           key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False,
                                           decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=700))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.ca_pem = ca.public_bytes(pem).decode()
        self.leaf_pem = leaf.public_bytes(pem).decode()
        self.ca_fingerprint = ":".join(f"{b:02X}" for b in ca.fingerprint(hashes.SHA256()))
        self.leaf_fingerprint = ":".join(f"{b:02X}" for b in leaf.fingerprint(hashes.SHA256()))
        self.chain_file = folder / "pve-ssl.pem"
        self.key_file = folder / "pve-ssl.key"
        self.chain_file.write_text(self.leaf_pem)
        self.key_file.write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.key_file.chmod(0o600)


class StandIn:
    """One Proxmox VE node behind its API. start() serves it; stop() ends it."""

    def __init__(self, node: str = "pve", *, password: str | None = None,
                 token: tuple[str, str] | None = None, bind: str = "127.0.0.1",
                 names: list[str] | None = None, bridges: dict[str, str] | None = None,
                 launcher: Callable[..., str] | None = None, task_delay: float = 0.3,
                 schema: Schema | None = None):
        self.node = node
        self.password = password or secrets.token_urlsafe(12)
        #: (USER@REALM!TOKENID, SECRET)
        self.token = token or ("root@pam!abri", secrets.token_hex(16))
        self.bind = bind
        self.schema = schema or Schema.load()
        self.storages = {"local": Storage("local", "iso,vztmpl,backup,import"),
                         "local-lvm": Storage("local-lvm", "images,rootdir", kind="lvmthin")}
        #: bridge -> its address in CIDR form (the guests' network)
        self.bridges = bridges or {"vmbr0": "10.99.0.1/24"}
        self.launcher = launcher
        self.task_delay = task_delay
        self.cts: dict[int, dict[str, Any]] = {}
        #: QEMU VMs: {"config", "status", "launched"}; a VM's host boots at its first start
        #: (cloud-init's first boot: name, sshkeys, ipconfig0 from the cloudinit drive)
        self.vms: dict[int, dict[str, Any]] = {}
        #: the URLs download-url was asked for (the stand-in never fetches them)
        self.downloads: list[str] = []
        self.tasks: dict[str, Task] = {}
        self.tickets: dict[str, str] = {}  # ticket -> user
        self.csrf: dict[str, str] = {}     # ticket -> CSRF token
        self.requests: list[dict[str, Any]] = []
        self.fail_next_task: str | None = None  # the next task ends with this error
        #: called with the vmid of a container destroyed (the fleet test removes its host)
        self.on_destroy: Callable[[int], None] | None = None
        self._lock = threading.RLock()
        self._folder = Path(tempfile.mkdtemp(prefix="abri-pve-standin-"))
        self.certs = Certs(names or [bind], self._folder)
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # -- lifecycle
    @property
    def url(self) -> str:
        return f"https://{self.bind}:{self.port}"

    def start(self) -> StandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer((self.bind, 0), Handler)
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs.chain_file, self.certs.key_file)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def refused(self) -> list[dict[str, Any]]:
        """The requests the stand-in refused (status >= 400)."""
        return [r for r in self.requests if r["status"] >= 400]

    def creates(self) -> list[dict[str, Any]]:
        """Every create request, LXC or QEMU."""
        return [r for r in self.requests if r["method"] == "POST"
                and r["path"] in (f"/nodes/{self.node}/lxc", f"/nodes/{self.node}/qemu")]

    # -- request handling
    def handle(self, method: str, path: str, params: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        record: dict[str, Any] = {"method": method, "path": path,
                                  "params": {k: ("***" if k in ("password",) else v)
                                             for k, v in params.items()}}
        with self._lock:
            self.requests.append(record)
        extra: dict[str, str] = {}
        try:
            template, _info, clean = self.schema.check(method, path, params)
            if template == "/access/ticket" and method == "POST":
                data = self._login(clean)
            else:
                user, token = self._auth(method, headers)
                why = root_only(clean, self.schema, template, method, user, token)
                if why:
                    raise ParamError(403, f"Permission check failed ({why})")
                data = self._route(method, template, clean, user)
            status, body = 200, {"data": data}
        except ParamError as exc:
            status, body = exc.status, exc.body()
            record["error"] = exc.message + (f" {exc.errors}" if exc.errors else "")
        except Exception as exc:  # a bug of the stand-in: an answer and a record, no hang
            status, body = 500, {"data": None, "message": f"stand-in error: {exc!r}"}
            record["error"] = body["message"]
        record["status"] = status
        return status, body, extra

    def _login(self, p: dict[str, Any]) -> dict[str, Any]:
        user = p["username"] if "@" in p["username"] else f"{p['username']}@{p.get('realm')}"
        if user != "root@pam" or p["password"] != self.password:
            raise ParamError(401, "authentication failure")
        ticket = f"PVE:{user}:{int(time.time()):08X}::{secrets.token_urlsafe(24)}"
        csrf = f"{int(time.time()):08X}:{secrets.token_urlsafe(16)}"
        with self._lock:
            self.tickets[ticket] = user
            self.csrf[ticket] = csrf
        return {"username": user, "ticket": ticket, "CSRFPreventionToken": csrf,
                "cap": {}}

    def _auth(self, method: str, headers: dict[str, str]) -> tuple[str, bool]:
        auth = headers.get("authorization", "")
        if auth.startswith("PVEAPIToken="):
            ident, _, secret = auth[len("PVEAPIToken="):].partition("=")
            if (ident, secret) != self.token:
                raise ParamError(401, "authentication failure")
            return ident.split("!", 1)[0], True
        cookie = headers.get("cookie", "")
        ticket = None
        for part in cookie.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "PVEAuthCookie":
                ticket = urllib.parse.unquote(v)
        if not ticket:
            raise ParamError(401, "No ticket")
        user = self.tickets.get(ticket)
        if user is None:
            raise ParamError(401, "invalid ticket")
        if method != "GET" and headers.get("csrfpreventiontoken") != self.csrf[ticket]:
            raise ParamError(401, "Permission denied - invalid csrf token")
        return user, False

    def _node(self, p: dict[str, Any]) -> None:
        if p.get("node") != self.node:
            # what pveproxy answers for a node name that is not in the cluster
            raise ParamError(500, f"hostname lookup '{p.get('node')}' failed - failed to get "
                             f"address info for: {p.get('node')}: Name or service not known")

    def _ct(self, p: dict[str, Any]) -> dict[str, Any]:
        ct = self.cts.get(int(p["vmid"]))
        if ct is None:
            raise ParamError(500, f"Configuration file 'nodes/{self.node}/lxc/{p['vmid']}.conf'"
                             " does not exist")
        return ct

    def _route(self, method: str, t: str, p: dict[str, Any], user: str) -> Any:
        if t == "/version":
            return {"version": "9.1.1", "release": "9.1", "repoid": "0123abcd"}
        if t == "/nodes":
            return [{"node": self.node, "status": "online", "type": "node", "maxcpu": 4,
                     "maxmem": 16 * GIB, "id": f"node/{self.node}"}]
        if t == "/cluster/nextid":
            with self._lock:
                if "vmid" in p:
                    if int(p["vmid"]) in self.cts or int(p["vmid"]) in self.vms:
                        raise ParamError(400, "Parameter verification failed.",
                                         {"vmid": f"VM {p['vmid']} already exists"})
                    return p["vmid"]
                return str(max([99, *self.cts, *self.vms]) + 1)
        self._node(p)
        if t == "/nodes/{node}/storage":
            return [{"storage": s.name, "content": s.content, "type": s.kind, "active": 1,
                     "enabled": 1, "total": s.total, "avail": s.avail,
                     "used": s.total - s.avail}
                    for s in self.storages.values()
                    if not p.get("content") or p["content"] in s.content.split(",")]
        if t == "/nodes/{node}/network":
            return [{"iface": name, "type": "bridge", "active": 1, "cidr": cidr,
                     "address": cidr.split("/")[0]} for name, cidr in self.bridges.items()
                    if p.get("type") in (None, "bridge", "any_bridge")]
        if t == "/nodes/{node}/certificates/info":
            return [{"filename": "pve-root-ca.pem", "pem": self.certs.ca_pem,
                     "fingerprint": self.certs.ca_fingerprint},
                    {"filename": "pve-ssl.pem", "pem": self.certs.leaf_pem,
                     "fingerprint": self.certs.leaf_fingerprint}]
        if t == "/nodes/{node}/aplinfo":
            if method == "GET":
                return [{"template": DEBIAN_TEMPLATE, "os": "debian-13", "section": "system",
                         "package": "debian-13-standard", "version": "13.1-2",
                         "type": "lxc", "headline": "Debian 13 (standard)"}]
            storage = self._storage(p["storage"], "vztmpl")
            if p["template"] != DEBIAN_TEMPLATE:
                raise ParamError(400, f"no such template '{p['template']}'")

            def download() -> None:
                storage.files.append(f"{storage.name}:vztmpl/{p['template']}")
            return self._task("download", "", user, download)
        if t == "/nodes/{node}/storage/{storage}/content":
            storage = self._storage(p["storage"])
            return [{"volid": v, "content": v.split(":", 1)[1].split("/")[0],
                     "format": v.rsplit(".", 1)[-1] if ":import/" in v else "tzst",
                     "size": 130 * 1024 ** 2} for v in storage.files
                    if not p.get("content") or f":{p['content']}/" in v]
        if t == "/nodes/{node}/lxc" and method == "GET":
            return [{"vmid": vmid, "name": ct["config"].get("hostname", ""),
                     "status": ct["status"], "tags": ct["config"].get("tags", ""),
                     "type": "lxc"} for vmid, ct in sorted(self.cts.items())]
        if t == "/nodes/{node}/lxc":
            return self._create(p, user)
        if t == "/nodes/{node}/lxc/{vmid}/config":
            ct = self._ct(p)
            if method == "GET":
                return {**ct["config"], "digest": secrets.token_hex(20)}
            for key, value in p.items():
                if key not in ("node", "vmid", "digest", "delete"):
                    ct["config"][key] = value
            for key in str(p.get("delete") or "").replace(";", ",").split(","):
                ct["config"].pop(key.strip(), None)
            return None
        if t == "/nodes/{node}/lxc/{vmid}/resize":
            ct = self._ct(p)
            if p["disk"] != "rootfs":
                raise ParamError(500, f"unable to resize {p['disk']}: no such mount point")
            fmt = pve_schema.property_format(self.schema, "/nodes/{node}/lxc", "POST", "rootfs")
            parts = pve_schema.parse_property_string(fmt, ct["config"]["rootfs"])
            have = float(parts.get("size", "0G").rstrip("G"))
            text = p["size"]
            if not text.endswith("G"):
                raise ParamError(500, "the stand-in only resizes in G")
            want = have + float(text[1:-1]) if text.startswith("+") else float(text[:-1])
            if want < have:
                raise ParamError(500, "unable to shrink disk size")
            storage = self._storage(parts["volume"].split(":")[0])

            def grow() -> None:
                if (want - have) * GIB > storage.avail:
                    raise RuntimeError("lvextend: insufficient free space")
                storage.avail -= int((want - have) * GIB)
                ct["config"]["rootfs"] = f"{parts['volume']},size={int(want)}G"
            return self._task("resize", str(p["vmid"]), user, grow)
        if t == "/nodes/{node}/lxc/{vmid}/status/stop":
            ct = self._ct(p)

            def stop() -> None:
                ct["status"] = "stopped"
            return self._task("vzstop", str(p["vmid"]), user, stop)
        if t == "/nodes/{node}/lxc/{vmid}" and method == "DELETE":
            ct = self._ct(p)
            if ct["status"] == "running":
                raise ParamError(500, f"CT {p['vmid']} is running - destroy failed")
            vmid = int(p["vmid"])

            def destroy() -> None:
                if self.on_destroy is not None:
                    self.on_destroy(vmid)
                with self._lock:
                    self.cts.pop(vmid, None)
            return self._task("vzdestroy", str(vmid), user, destroy)
        if t == "/nodes/{node}/lxc/{vmid}/status/current":
            ct = self._ct(p)
            return {"vmid": int(p["vmid"]), "status": ct["status"],
                    "name": ct["config"].get("hostname", ""), "tags": ct["config"].get("tags")}
        if t == "/nodes/{node}/lxc/{vmid}/status/start":
            ct = self._ct(p)

            def start() -> None:
                ct["status"] = "running"
            return self._task("vzstart", str(p["vmid"]), user, start)
        if t == "/nodes/{node}/lxc/{vmid}/interfaces":
            ct = self._ct(p)
            return [{"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8"},
                    {"name": "eth0", "hwaddr": "bc:24:11:00:00:01",
                     "inet": ct.get("address_cidr", "")}]
        if t == "/nodes/{node}/storage/{storage}/download-url":
            return self._download(p, user)
        if t.startswith("/nodes/{node}/qemu"):
            return self._route_qemu(method, t, p, user)
        if t == "/nodes/{node}/tasks/{upid}/status":
            task = self.tasks.get(p["upid"])
            if task is None:
                raise ParamError(500, f"no such task '{p['upid']}'")
            out = {"upid": task.upid, "node": self.node, "pid": 1234, "pstart": 1,
                   "starttime": int(task.start), "type": task.type, "id": task.vmid,
                   "user": task.user, "status": task.status}
            if task.exitstatus is not None:
                out["exitstatus"] = task.exitstatus
            return out
        raise ParamError(501, f"Method '{method} /api2/json{t}' not implemented (stand-in)")

    def _download(self, p: dict[str, Any], user: str) -> str:
        """download-url: the node fetches a file into a storage (here: recorded, never
        fetched). An image for import content needs an extension the import knows."""
        storage = self._storage(p["storage"], p["content"])
        name = p["filename"]
        if "/" in name or (p["content"] == "import"
                           and not re.search(r"\.(qcow2|raw|vmdk|ova)$", name)):
            raise ParamError(400, "Parameter verification failed.",
                             {"filename": "invalid filename or wrong extension"})
        volid = f"{storage.name}:{p['content']}/{name}"

        def download() -> None:
            if volid in storage.files:
                raise RuntimeError(f"refusing to override existing file '{name}'")
            self.downloads.append(p["url"])
            storage.files.append(volid)
        return self._task("download", "", user, download)

    def _vm(self, p: dict[str, Any]) -> dict[str, Any]:
        vm = self.vms.get(int(p["vmid"]))
        if vm is None:
            raise ParamError(500, f"Configuration file 'nodes/{self.node}/qemu-server/"
                             f"{p['vmid']}.conf' does not exist")
        return vm

    def _route_qemu(self, method: str, t: str, p: dict[str, Any], user: str) -> Any:
        if t == "/nodes/{node}/qemu" and method == "GET":
            return [{"vmid": vmid, "name": vm["config"].get("name", ""),
                     "status": vm["status"], "tags": vm["config"].get("tags", "")}
                    for vmid, vm in sorted(self.vms.items())]
        if t == "/nodes/{node}/qemu":
            return self._create_vm(p, user)
        if t == "/nodes/{node}/qemu/{vmid}/config" and method == "GET":
            return {**self._vm(p)["config"], "digest": secrets.token_hex(20)}
        if t == "/nodes/{node}/qemu/{vmid}/config" and method == "PUT":
            vm = self._vm(p)
            for key, value in p.items():
                if key not in ("node", "vmid", "digest", "delete"):
                    if _DISK_KEY.match(key):
                        raise ParamError(500, "the stand-in does not change disks through "
                                         "PUT config")
                    vm["config"][key] = value
            for key in str(p.get("delete") or "").replace(";", ",").split(","):
                vm["config"].pop(key.strip(), None)
            return None
        if t == "/nodes/{node}/qemu/{vmid}/resize":
            vm = self._vm(p)
            disk = vm["config"].get(p["disk"])
            if disk is None:
                raise ParamError(500, f"unable to resize {p['disk']}: no such disk")
            fmt = pve_schema.property_format(self.schema, "/nodes/{node}/qemu", "POST",
                                             p["disk"])
            parts = pve_schema.parse_property_string(fmt, disk)
            have = float(parts.get("size", "0G").rstrip("G"))
            text = p["size"]
            if not text.endswith("G"):
                raise ParamError(500, "the stand-in only resizes in G")
            want = have + float(text[1:-1]) if text.startswith("+") else float(text[:-1])
            if want < have:
                raise ParamError(500, "shrinking disks is not supported")
            storage = self._storage(parts["file"].split(":")[0])

            def grow() -> None:
                if (want - have) * GIB > storage.avail:
                    raise RuntimeError("lvextend: insufficient free space")
                storage.avail -= int((want - have) * GIB)
                vm["config"][p["disk"]] = re.sub(r"size=[^,]*", f"size={int(want)}G", disk)
            return self._task("resize", str(p["vmid"]), user, grow)
        if t == "/nodes/{node}/qemu/{vmid}/status/current":
            vm = self._vm(p)
            return {"vmid": int(p["vmid"]), "status": vm["status"], "qmpstatus": vm["status"],
                    "name": vm["config"].get("name", ""), "tags": vm["config"].get("tags")}
        if t == "/nodes/{node}/qemu/{vmid}/status/start":
            vm = self._vm(p)
            vmid = int(p["vmid"])

            def start() -> None:
                if not vm.get("launched"):
                    self._first_boot(vmid, vm)
                vm["status"] = "running"
            return self._task("qmstart", str(vmid), user, start)
        if t == "/nodes/{node}/qemu/{vmid}/status/stop":
            vm = self._vm(p)

            def stop() -> None:
                vm["status"] = "stopped"
            return self._task("qmstop", str(p["vmid"]), user, stop)
        if t == "/nodes/{node}/qemu/{vmid}" and method == "DELETE":
            vm = self._vm(p)
            if vm["status"] == "running":
                raise ParamError(500, f"VM {p['vmid']} is running - destroy failed")
            vmid = int(p["vmid"])

            def destroy() -> None:
                if self.on_destroy is not None and vm.get("launched"):
                    self.on_destroy(vmid)
                with self._lock:
                    self.vms.pop(vmid, None)
            return self._task("qmdestroy", str(vmid), user, destroy)
        raise ParamError(501, f"Method '{method} /api2/json{t}' not implemented (stand-in)")

    def _create_vm(self, p: dict[str, Any], user: str) -> str:
        """POST /nodes/{node}/qemu: disks are allocated (import-from copies an image of
        import content into a new volume of an images storage; STORAGE:cloudinit makes the
        cloud-init drive), the bridge checked; the VM boots at its first start."""
        vmid = int(p["vmid"])
        if vmid in self.vms or vmid in self.cts:
            raise ParamError(500, f"unable to create VM {vmid} - VM {vmid} already exists on "
                             f"node '{self.node}'")
        config = {k: v for k, v in p.items() if k not in ("node", "vmid", "start")}
        need: dict[str, float] = {}
        volumes: dict[str, str] = {}
        for key in sorted(k for k in p if _DISK_KEY.match(k)):
            fmt = pve_schema.property_format(self.schema, "/nodes/{node}/qemu", "POST", key)
            parts = pve_schema.parse_property_string(fmt, p[key])
            target, _, what = parts["file"].partition(":")
            self._storage(target, "images")
            if what == "cloudinit":
                volumes[key] = f"{target}:vm-{vmid}-cloudinit,media=cdrom"
                continue
            if "import-from" in parts:
                source = parts["import-from"]
                if not any(source in s.files for s in self.storages.values()):
                    raise ParamError(500, f"unable to create VM {vmid} - import-from: volume "
                                     f"'{source}' does not exist")
                size = float(IMAGE_GIB)
            elif re.match(r"^\d+(\.\d+)?$", what):
                size = float(what)
            else:
                raise ParamError(500, f"the stand-in only creates new disks ({key})")
            n = len([v for v in volumes.values() if "-disk-" in v])
            volumes[key] = f"{target}:vm-{vmid}-disk-{n},size={int(size)}G"
            need[target] = need.get(target, 0.0) + size
        if "net0" in p:
            fmt = pve_schema.property_format(self.schema, "/nodes/{node}/qemu", "POST", "net0")
            net = pve_schema.parse_property_string(fmt, p["net0"])
            if net.get("bridge") and net["bridge"] not in self.bridges:
                raise ParamError(400, f"bridge '{net['bridge']}' does not exist")
            mac = f"BC:24:11:{vmid >> 16 & 255:02X}:{vmid >> 8 & 255:02X}:{vmid & 255:02X}"
            config["net0"] = f"{net['model']}={net.get('macaddr') or mac}" + "".join(
                f",{k}={v}" for k, v in net.items() if k not in ("model", "macaddr"))
        config.update(volumes)
        vm = {"config": config, "status": "stopped", "launched": False}
        with self._lock:
            self.vms[vmid] = vm

        def work() -> None:
            for name, size in need.items():
                storage = self.storages[name]
                if size * GIB > storage.avail:
                    raise RuntimeError(f"unable to create VM {vmid} - lvcreate: Volume group "
                                       "\"pve\" has insufficient free space")
                storage.avail -= int(size * GIB)

        def cleanup() -> None:
            with self._lock:
                self.vms.pop(vmid, None)

        return self._task("qmcreate", str(vmid), user, work, on_fail=cleanup)

    def _first_boot(self, vmid: int, vm: dict[str, Any]) -> None:
        """What cloud-init does at a VM's first boot, from its cloudinit drive: the
        hostname from name, ciuser with the keys of sshkeys (URL-decoded), the address of
        ipconfig0. Without a cloudinit drive none of it happens."""
        config = vm["config"]
        has_drive = any(_DISK_KEY.match(k) and ",media=cdrom" in str(v)
                        and "-cloudinit" in str(v) for k, v in config.items())
        ip, gw, keys, ciuser = "dhcp", None, "", "root"
        if has_drive:
            for part in str(config.get("ipconfig0") or "").split(","):
                k, _, v = part.partition("=")
                if k == "ip":
                    ip = v
                elif k == "gw":
                    gw = v
            keys = urllib.parse.unquote(str(config.get("sshkeys") or ""))
            ciuser = str(config.get("ciuser") or "root")
        address = ""
        if self.launcher is not None:
            address = self.launcher(vmid=vmid, hostname=config.get("name", f"VM{vmid}"),
                                    ip=ip, gateway=gw, ssh_keys=keys, user=ciuser)
        vm["address"] = address
        vm["launched"] = True

    def _storage(self, name: str, content: str | None = None) -> Storage:
        s = self.storages.get(name)
        if s is None:
            raise ParamError(500, f"storage '{name}' does not exist")
        if content and content not in s.content.split(","):
            raise ParamError(500, f"storage '{name}' does not support {content} content")
        return s

    def _create(self, p: dict[str, Any], user: str) -> str:
        vmid = int(p["vmid"])
        if vmid in self.cts:
            raise ParamError(500, f"CT {vmid} already exists on node '{self.node}'")
        template = p["ostemplate"]
        storage_name, _, _ = template.partition(":")
        tstorage = self._storage(storage_name, "vztmpl")
        if template not in tstorage.files:
            raise ParamError(500, f"volume '{template}' does not exist")
        rootfs = p.get("rootfs", "local-lvm:4")
        fmt = pve_schema.property_format(self.schema, "/nodes/{node}/lxc", "POST", "rootfs")
        volume = pve_schema.parse_property_string(fmt, rootfs)["volume"]
        rstorage = self._storage(volume.split(":")[0], "rootdir")
        size_gb = float(volume.split(":")[1]) if volume.split(":")[1].replace(
            ".", "").isdigit() else 0
        net = {}
        if "net0" in p:
            nfmt = pve_schema.property_format(self.schema, "/nodes/{node}/lxc", "POST", "net0")
            net = pve_schema.parse_property_string(nfmt, p["net0"])
            if net.get("bridge") and net["bridge"] not in self.bridges:
                raise ParamError(400, f"bridge '{net['bridge']}' does not exist")
        config = {k: v for k, v in p.items() if k not in ("node", "vmid", "ostemplate",
                                                           "ssh-public-keys", "password",
                                                           "start", "storage")}
        config["rootfs"] = f"{rstorage.name}:vm-{vmid}-disk-0,size={int(size_gb)}G"
        config.setdefault("unprivileged", 1)
        ct = {"config": config, "status": "stopped", "creating": True}
        with self._lock:
            self.cts[vmid] = ct

        def work() -> None:
            if size_gb * GIB > rstorage.avail:
                raise RuntimeError(f"unable to create CT {vmid} - lvcreate: Volume group "
                                   f"\"pve\" has insufficient free space")
            rstorage.avail -= int(size_gb * GIB)
            address = ""
            if self.launcher is not None:
                ip = net.get("ip", "dhcp")
                address = self.launcher(vmid=vmid, hostname=p.get("hostname", f"CT{vmid}"),
                                        ip=ip, gateway=net.get("gw"),
                                        ssh_keys=p.get("ssh-public-keys", ""))
                prefix = ip.split("/")[1] if "/" in ip else "24"
                ct["address_cidr"] = f"{address}/{prefix}"
            ct.pop("creating", None)
            if p.get("start"):
                ct["status"] = "running"

        def cleanup() -> None:
            with self._lock:
                self.cts.pop(vmid, None)

        return self._task("vzcreate", str(vmid), user, work, on_fail=cleanup)

    def _task(self, kind: str, vmid: str, user: str, work: Callable[[], None],
              on_fail: Callable[[], None] | None = None) -> str:
        pid, pstart = secrets.randbelow(1 << 20), secrets.randbelow(1 << 20)
        upid = (f"UPID:{self.node}:{pid:08X}:{pstart:08X}:{int(time.time()):08X}:{kind}"
                f":{vmid}:{user}:")
        task = Task(upid, kind, vmid, user)
        self.tasks[upid] = task
        fail = self.fail_next_task
        self.fail_next_task = None

        def run() -> None:
            time.sleep(self.task_delay)
            try:
                if fail:
                    raise RuntimeError(fail)
                work()
                task.exitstatus = "OK"
            except Exception as exc:  # a task's error is its exitstatus, as in Proxmox
                task.exitstatus = str(exc)
                if on_fail:
                    on_fail()
            task.status = "stopped"

        threading.Thread(target=run, daemon=True).start()
        return upid


class _Handler(BaseHTTPRequestHandler):
    owner: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet: the stand-in records requests
        pass

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        params: dict[str, Any] = {}
        for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
            params[k] = v
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if raw:
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                try:
                    params.update(json.loads(raw))
                except ValueError:
                    self._send(400, {"data": None, "message": "malformed JSON body"})
                    return
            else:
                for k, v in urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True):
                    params[k] = v
        prefix = "/api2/json"
        if not url.path.startswith(prefix + "/"):
            self._send(501, {"data": None, "message": "Not Implemented"})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = "/".join(urllib.parse.unquote(part) for part in url.path[len(prefix):].split("/"))
        status, body, _ = self.owner.handle(method, path, params, headers)
        self._send(status, body)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status, body.get("message", "OK").splitlines()[0]
                           if status >= 400 else "OK")
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
