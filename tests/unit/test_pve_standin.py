"""The Proxmox API stand-in is strict: what breaks the published schema, or pve-container's
permission rule, is refused in Proxmox's own error shape. No Docker: the stand-in runs on
loopback without a launcher (containers are only recorded)."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "fleet"))

import pve_schema

if pve_schema.find_schema() is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true and the Proxmox API schema is missing (../shared/data)")
    pytest.skip("the Proxmox API schema is not here (../shared/data beside the clone)",
                allow_module_level=True)

from proxmox_standin import DEBIAN_TEMPLATE, StandIn

GOOD = {"vmid": "120", "ostemplate": f"local:vztmpl/{DEBIAN_TEMPLATE}", "hostname": "ha-lxc",
        "net0": "name=eth0,bridge=vmbr0,ip=10.99.0.20/24,gw=10.99.0.1",
        "rootfs": "local-lvm:8", "unprivileged": "1", "features": "nesting=1,keyctl=1",
        "cores": "2", "memory": "2048", "onboot": "1", "tags": "abri",
        "ssh-public-keys": "ssh-ed25519 AAAAC3Nza test"}


@pytest.fixture(scope="module")
def schema():
    return pve_schema.Schema.load()


def refused(schema, method, path, params) -> pve_schema.ParamError:
    with pytest.raises(pve_schema.ParamError) as info:
        schema.check(method, path, params)
    return info.value


def test_a_good_create_passes(schema):
    template, _info, clean = schema.check("POST", "/nodes/pve/lxc", GOOD)
    assert template == "/nodes/{node}/lxc"
    assert clean["vmid"] == 120 and clean["unprivileged"] == 1 and clean["node"] == "pve"


@pytest.mark.parametrize("change, param, words", [
    ({"cores": "two"}, "cores", "type check ('integer') failed"),
    ({"onboot": "maybe"}, "onboot", "type check ('boolean') failed"),
    ({"memory": "8"}, "memory", "minimum value of 16"),
    ({"vmid": None}, "vmid", "property is missing and it is not optional"),
    ({"ostemplate": None}, "ostemplate", "property is missing"),
    ({"colour": "blue"}, "colour", "not defined in schema"),
    ({"arch": "sparc"}, "arch", "enumeration"),
    ({"net0": "name=eth0,bridge=vmbr0,ip=10.99.0.20"}, "net0", "ip: value does not look like"),
    ({"net0": "name=eth0,bridge=vmbr0,colour=red"}, "net0", "'colour' is not defined"),
    ({"net0": "bridge=vmbr0,ip=dhcp"}, "net0", "name: property is missing"),
    ({"net0": "name=eth0,bridge=vmbr0,gw=10.99.0"}, "net0", "gw: value does not look"),
    ({"net0": "name=eth0,name=eth1"}, "net0", "duplicate key"),
    ({"features": "nesting=yes-please"}, "features", "nesting: type check ('boolean')"),
    ({"rootfs": "local-lvm:8,size=lots"}, "rootfs", "size: value does not look"),
    ({"hostname": "bad_name!"}, "hostname", "dns-name"),
    ({"tags": "a b,"}, None, None),  # a valid tag list (the separators are allowed)
])
def test_create_refusals(schema, change, param, words):
    params = dict(GOOD)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    if param is None:
        schema.check("POST", "/nodes/pve/lxc", params)
        return
    exc = refused(schema, "POST", "/nodes/pve/lxc", params)
    assert exc.status == 400 and exc.message == "Parameter verification failed."
    assert words in exc.errors[param], exc.errors
    body = exc.body()
    assert body["data"] is None and param in body["errors"]


def test_paths_and_methods(schema):
    assert refused(schema, "GET", "/nodes/pve/nothing-here", {}).status == 501
    assert refused(schema, "DELETE", "/version", {}).status == 501
    # a path parameter is checked like any other: vmid is an integer of at least 100
    exc = refused(schema, "GET", "/nodes/pve/lxc/12/config", {})
    assert "minimum value of 100" in exc.errors["vmid"]
    exc = refused(schema, "GET", "/nodes/pve/lxc/abc/status/current", {})
    assert "integer" in exc.errors["vmid"]


def test_put_config_is_checked(schema):
    schema.check("PUT", "/nodes/pve/lxc/120/config", {"cores": "4", "memory": "4096"})
    exc = refused(schema, "PUT", "/nodes/pve/lxc/120/config", {"cores": "0"})
    assert "minimum value of 1" in exc.errors["cores"]


# -- the server itself, over HTTPS with its own CA


@pytest.fixture(scope="module")
def standin(schema):
    s = StandIn(node="pve", schema=schema, task_delay=0.05).start()
    yield s
    s.stop()


def call(standin, method, path, params=None, headers=None):
    ctx = ssl.create_default_context(cadata=standin.certs.ca_pem)
    data = urllib.parse.urlencode(params or {}).encode() if method != "GET" else None
    query = "?" + urllib.parse.urlencode(params) if method == "GET" and params else ""
    req = urllib.request.Request(f"{standin.url}/api2/json{path}{query}", data=data,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def token_header(standin, secret=None):
    ident, real = standin.token
    return {"Authorization": f"PVEAPIToken={ident}={secret or real}"}


def test_server_refuses_keyctl_for_a_token_and_allows_it_with_a_ticket(standin):
    call(standin, "POST", "/nodes/pve/aplinfo", {"storage": "local",
                                                   "template": DEBIAN_TEMPLATE},
         token_header(standin))
    import time
    for _ in range(100):
        if standin.storages["local"].files:
            break
        time.sleep(0.05)
    status, body = call(standin, "POST", "/nodes/pve/lxc", GOOD, token_header(standin))
    assert status == 403 and body["data"] is None
    assert "only allowed for root@pam" in body["message"] and "keyctl" in body["message"]
    # nesting alone is allowed for a token
    status, body = call(standin, "POST", "/nodes/pve/lxc",
                        {**GOOD, "vmid": "121", "features": "nesting=1"}, token_header(standin))
    assert status == 200 and body["data"].startswith("UPID:pve:"), body
    # a ticket of root@pam may; writes need the CSRF token
    status, login = call(standin, "POST", "/access/ticket",
                         {"username": "root@pam", "password": standin.password})
    assert status == 200
    cookie = {"Cookie": f"PVEAuthCookie={urllib.parse.quote(login['data']['ticket'])}"}
    status, body = call(standin, "POST", "/nodes/pve/lxc", GOOD, cookie)
    assert status == 401 and "csrf" in body["message"]
    status, body = call(standin, "POST", "/nodes/pve/lxc", GOOD,
                        {**cookie, "CSRFPreventionToken": login["data"]["CSRFPreventionToken"]})
    assert status == 200, body
    assert not [r for r in standin.requests if r["status"] >= 500]


def test_server_error_shapes(standin):
    status, body = call(standin, "GET", "/nodes/pve/lxc", {}, token_header(standin, "wrong"))
    assert status == 401 and body == {"data": None, "message": "authentication failure"}
    status, body = call(standin, "POST", "/access/ticket",
                        {"username": "root@pam", "password": "nope"})
    assert status == 401
    status, body = call(standin, "POST", "/nodes/pve/lxc", {**GOOD, "cores": "x"},
                        token_header(standin))
    assert status == 400 and body["errors"] == {
        "cores": "type check ('integer') failed - got 'x'"}
    status, body = call(standin, "GET", "/nodes/elsewhere/storage", {}, token_header(standin))
    assert status == 500 and "elsewhere" in body["message"]
    assert standin.refused()  # every refusal is on record


# -- QEMU VMs (cloud-init) and the node's download of an image to import

VM = {"vmid": "130", "name": "ha-vm", "cores": "2", "memory": "2048", "ostype": "l26",
      "scsihw": "virtio-scsi-single",
      "scsi0": "local-lvm:0,import-from=local:import/debian-13-genericcloud-amd64.qcow2,"
               "discard=on,iothread=1",
      "ide2": "local-lvm:cloudinit", "boot": "order=scsi0", "net0": "virtio,bridge=vmbr0",
      "serial0": "socket", "vga": "serial0", "agent": "enabled=1", "ciuser": "abri",
      "sshkeys": "ssh-ed25519%20AAAAC3Nza%20abri%0A", "onboot": "1", "tags": "abri",
      "ipconfig0": "ip=10.99.0.30/24,gw=10.99.0.1"}


def test_a_good_vm_create_passes(schema):
    template, _info, clean = schema.check("POST", "/nodes/pve/qemu", VM)
    assert template == "/nodes/{node}/qemu" and clean["vmid"] == 130
    # the property strings' aliases: virtio=MAC is model=virtio,macaddr=MAC; volume is file
    schema.check("POST", "/nodes/pve/qemu", {**VM, "net0": "virtio=BC:24:11:00:00:01,"
                                             "bridge=vmbr0", "ide2": "volume=local-lvm:"
                                             "cloudinit,media=cdrom"})


@pytest.mark.parametrize("change, param, words", [
    ({"sshkeys": "ssh-ed25519 AAAAC3Nza abri"}, "sshkeys", "valid urlencoded"),
    ({"sshkeys": "ssh-ed25519+AAAAC3Nza"}, "sshkeys", "valid urlencoded"),
    ({"ipconfig0": "gw=10.99.0.1"}, "ipconfig0", "pve-qm-ipconfig"),
    ({"ipconfig0": "ip=dhcp,gw=10.99.0.1"}, "ipconfig0", "pve-qm-ipconfig"),
    ({"ipconfig0": "ip=10.99.0.30"}, "ipconfig0", "pve-qm-ipconfig"),
    ({"ipconfig0": "address=10.99.0.30/24"}, "ipconfig0", "pve-qm-ipconfig"),
    ({"net0": "virtio-net,bridge=vmbr0"}, "net0", "model: value 'virtio-net'"),
    ({"net0": "virtio,bridge=vmbr0,colour=red"}, "net0", "'colour' is not defined"),
    ({"net0": "bridge=vmbr0"}, "net0", "model: property is missing"),
    ({"scsi0": "local-lvm:0,import=local:import/x.qcow2"}, "scsi0", "'import' is not defined"),
    ({"scsi0": "local-lvm:0,iothread=maybe"}, "scsi0", "iothread: type check ('boolean')"),
    ({"scsi0": "local-lvm:0,file=local-lvm:1"}, "scsi0", "duplicate key"),
    ({"boot": "order=scsi0;floppy0"}, "boot", "pve-qm-boot"),
    ({"agent": "enabled=sometimes"}, "agent", "enabled: type check ('boolean')"),
    ({"memory": "current=8"}, "memory", "minimum value of 16"),
    ({"scsihw": "virtio"}, "scsihw", "enumeration"),
    ({"hostname": "ha-vm"}, "hostname", "not defined in schema"),  # an LXC word
    ({"vmid": None}, "vmid", "property is missing"),
])
def test_vm_create_refusals(schema, change, param, words):
    params = dict(VM)
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    exc = refused(schema, "POST", "/nodes/pve/qemu", params)
    assert exc.status == 400 and words in exc.errors[param], exc.errors


def test_vm_resize_config_and_download_are_checked(schema):
    schema.check("PUT", "/nodes/pve/qemu/130/resize", {"disk": "scsi0", "size": "16G"})
    exc = refused(schema, "PUT", "/nodes/pve/qemu/130/resize", {"disk": "rootfs",
                                                                  "size": "16G"})
    assert "enumeration" in exc.errors["disk"]
    exc = refused(schema, "PUT", "/nodes/pve/qemu/130/resize", {"disk": "scsi0",
                                                                  "size": "16 GiB"})
    assert "regex" in exc.errors["size"]
    schema.check("PUT", "/nodes/pve/qemu/130/config", {"cores": "4", "memory": "4096"})
    exc = refused(schema, "PUT", "/nodes/pve/qemu/130/config", {"rootfs": "local-lvm:8"})
    assert "not defined in schema" in exc.errors["rootfs"]
    good = {"url": "https://cloud.debian.org/images/cloud/trixie/latest/"
                   "debian-13-genericcloud-amd64.qcow2",
            "content": "import", "filename": "debian-13-genericcloud-amd64.qcow2"}
    schema.check("POST", "/nodes/pve/storage/local/download-url", good)
    exc = refused(schema, "POST", "/nodes/pve/storage/local/download-url",
                  {**good, "content": "images"})
    assert "enumeration" in exc.errors["content"]
    exc = refused(schema, "POST", "/nodes/pve/storage/local/download-url",
                  {**good, "url": "ftp://example.org/x.qcow2"})
    assert "regex" in exc.errors["url"]
    exc = refused(schema, "POST", "/nodes/pve/storage/local/download-url",
                  {**good, "checksum": "abc"})
    assert "required by 'checksum'" in exc.errors["checksum-algorithm"]


def test_server_vm_needs_an_image_that_exists_and_a_storage_for_import(standin):
    status, body = call(standin, "POST", "/nodes/pve/qemu", {**VM, "vmid": "131"},
                        token_header(standin))
    assert status == 500 and "does not exist" in body["message"], body
    status, body = call(standin, "POST", "/nodes/pve/storage/local-lvm/download-url",
                        {"url": "https://cloud.debian.org/x.qcow2", "content": "import",
                         "filename": "x.qcow2"}, token_header(standin))
    assert status == 500 and "does not support import content" in body["message"]
    status, body = call(standin, "POST", "/nodes/pve/storage/local/download-url",
                        {"url": "https://cloud.debian.org/x.iso", "content": "import",
                         "filename": "x.iso"}, token_header(standin))
    assert status == 400 and "extension" in body["errors"]["filename"]
    assert not standin.downloads and 131 not in standin.vms
