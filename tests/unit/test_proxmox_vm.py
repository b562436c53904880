"""VM guests (--type vm): 'abri host add' checks what a VM cannot have, and the guest step
of 'abri apply' creates a QEMU VM from Debian 13's cloud image with cloud-init, against the
API stand-in on loopback (strict about the published schema; no VM boots, SSH is not
waited for). The stand-in's first boot plays cloud-init: the launcher gets the name, the
URL-decoded keys, the user and the address of ipconfig0."""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.conftest import fingerprint

sys.path.insert(0, str(Path(__file__).parents[1] / "fleet"))

import pve_schema

if pve_schema.find_schema() is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true and the Proxmox API schema is missing (../shared/data)")
    pytest.skip("the Proxmox API schema is not here (../shared/data beside the clone)",
                allow_module_level=True)

from proxmox_standin import GIB, StandIn

from tui.core import proxmox
from tui.core.site import Site

IMAGE = f"local:import/{proxmox.VM_IMAGE_FILE}"


@pytest.fixture(scope="module")
def schema():
    return pve_schema.Schema.load()


@pytest.fixture
def standin(schema):
    booted: list[dict] = []
    s = StandIn(node="pve", schema=schema, task_delay=0.02,
                launcher=lambda **kw: booted.append(kw) or kw["ip"].split("/")[0])
    s.booted = booted
    s.start()
    yield s
    s.stop()


@pytest.fixture
def node(abri, site_dir, standin, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(standin.password + "\n")
    r = abri("host", "add", "pve", "--kind", "proxmox", "--api-url", standin.url, "--node",
             "pve", "--user", "root@pam", "--password-file", pw, "--ca-fingerprint",
             standin.certs.leaf_fingerprint, "--site", site_dir)
    assert r.code == 0, r.err
    return standin


def add_vm(abri, site_dir, name="ha-vm", *extra, ip="10.99.0.30/24"):
    args = ["host", "add", name, "--kind", "guest", "--parent", "pve", "--type", "vm",
            "--cores", "2", "--memory", "2048", "--disk", "12", "--ip", ip]
    if ip != "dhcp":
        args += ["--gateway", "10.99.0.1"]
    return abri(*args, "--site", site_dir, *extra)


def no_wait(host, timeout):
    pass


def writes(standin, since=0):
    return [q for q in standin.requests[since:] if q["method"] != "GET"
            and q["path"] != "/access/ticket"]


def test_vm_fields_are_checked(abri, site_dir, node):
    before = fingerprint(site_dir)
    r = add_vm(abri, site_dir, ip="dhcp")
    assert r.code == 2 and "host 'ha-vm': ip: a VM needs a fixed address" in r.err
    r = abri("host", "add", "ha-vm", "--kind", "guest", "--parent", "pve", "--type", "vm",
             "--disk", "2", "--ip", "10.99.0.30/24", "--gateway", "10.99.0.1", "--usb",
             "/dev/ttyUSB0", "--site", site_dir)
    assert r.code == 2 and "host 'ha-vm': disk:" in r.err and "host 'ha-vm': usb:" in r.err
    r = add_vm(abri, site_dir, "ha-vm", "--type", "kvm")
    assert r.code == 2 and "host 'ha-vm': type: 'kvm' is not a guest type" in r.err
    assert "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    r = add_vm(abri, site_dir)
    assert r.code == 0, r.err
    data = yaml.safe_load((site_dir / "host_vars/ha-vm/abri.yml").read_text())
    assert data["abri_guest"]["type"] == "vm"
    line = next(x for x in (site_dir / "inventory.ini").read_text().splitlines()
                if x.startswith("ha-vm "))
    assert "ansible_host=10.99.0.30 ansible_user=abri" in line  # cloud-init's user


def test_vm_created_from_the_cloud_image_once_then_recognized(abri, site_dir, node):
    standin = node
    assert add_vm(abri, site_dir).code == 0
    site = Site.load(site_dir)
    lines: list[str] = []
    proxmox.ensure_guests(site, ["ha-vm"], say=lines.append, wait=no_wait)
    assert not standin.refused(), standin.refused()
    # the image first: the node downloads it into import content (never this machine)
    [download] = [q for q in standin.requests if q["path"].endswith("/download-url")]
    assert download["params"] == {"url": proxmox.VM_IMAGE_URL, "content": "import",
                                  "filename": proxmox.VM_IMAGE_FILE}
    assert download["path"] == "/nodes/pve/storage/local/download-url"
    [create] = standin.creates()
    assert create["path"] == "/nodes/pve/qemu"
    p = create["params"]
    vmid = int(p["vmid"])
    assert p["name"] == "ha-vm" and p["cores"] == "2" and p["memory"] == "2048"
    assert p["scsi0"] == f"local-lvm:0,import-from={IMAGE},discard=on,iothread=1"
    assert p["ide2"] == "local-lvm:cloudinit" and p["boot"] == "order=scsi0"
    assert p["net0"] == "virtio,bridge=vmbr0"
    assert p["ipconfig0"] == "ip=10.99.0.30/24,gw=10.99.0.1"
    assert p["ciuser"] == "abri" and p["onboot"] == "1" and p["agent"] == "enabled=1"
    assert p["tags"] == proxmox.site_tag(site.site_id)
    # sshkeys: URL-encoded as qemu-server wants it (%20, never '+'; nothing left bare)
    assert p["sshkeys"].startswith("ssh-ed25519%20") and p["sshkeys"].endswith("%0A")
    assert "+" not in p["sshkeys"] and " " not in p["sshkeys"]
    public = proxmox.ssh_public_key(site.site_id)[1]
    assert urllib.parse.unquote(p["sshkeys"]) == public + "\n"
    # then grown to the site's size, and started: cloud-init's first boot
    vm = standin.vms[vmid]
    assert vm["config"]["scsi0"].endswith(",size=12G") and vm["status"] == "running"
    assert standin.booted == [{"vmid": vmid, "hostname": "ha-vm", "ip": "10.99.0.30/24",
                               "gateway": "10.99.0.1", "ssh_keys": public + "\n",
                               "user": "abri"}]
    assert "VM" in lines[-1] and "created and started" in lines[-1]
    site = Site.load(site_dir)
    assert site.hosts["ha-vm"].guest["vmid"] == vmid and site.hosts["ha-vm"].user == "abri"

    # again: the VM is found by vmid and tag; nothing is sent but reads
    count = len(standin.requests)
    proxmox.ensure_guests(site, ["ha-vm"], say=lines.append, wait=no_wait)
    assert not writes(standin, count) and len(standin.creates()) == 1
    assert "exists and runs; nothing to change" in lines[-1]
    # the image is not downloaded twice for a second VM
    assert add_vm(abri, site_dir, "mq-vm", ip="10.99.0.31/24").code == 0
    proxmox.ensure_guests(Site.load(site_dir), ["mq-vm"], wait=no_wait)
    assert len([q for q in standin.requests if q["path"].endswith("/download-url")]) == 1
    assert len(standin.creates()) == 2 and not standin.refused()


def test_vm_size_changes_go_through_config_and_resize(abri, site_dir, node):
    standin = node
    assert add_vm(abri, site_dir).code == 0
    site = Site.load(site_dir)
    proxmox.ensure_guests(site, ["ha-vm"], wait=no_wait)
    vmid = site.hosts["ha-vm"].guest["vmid"]
    count = len(standin.requests)
    assert abri("host", "set", "ha-vm", "--cores", "4", "--memory", "4096", "--disk", "20",
                "--site", site_dir).code == 0
    lines: list[str] = []
    proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], say=lines.append, wait=no_wait)
    sent = writes(standin, count)
    assert [(q["method"], q["path"], q["params"]) for q in sent] == [
        ("PUT", f"/nodes/pve/qemu/{vmid}/config", {"cores": "4", "memory": "4096"}),
        ("PUT", f"/nodes/pve/qemu/{vmid}/resize", {"disk": "scsi0", "size": "20G"})]
    assert standin.vms[vmid]["config"]["scsi0"].endswith(",size=20G")
    assert len(standin.creates()) == 1 and not standin.refused()
    assert "disk 12 -> 20 GiB" in lines[-1]
    # a stopped VM is started, not recreated
    standin.vms[vmid]["status"] = "stopped"
    proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], wait=no_wait)
    assert standin.vms[vmid]["status"] == "running" and len(standin.creates()) == 1


def test_a_vm_abri_did_not_create_is_never_touched(abri, site_dir, node):
    standin = node
    assert add_vm(abri, site_dir, "ha-vm", "--vmid", "150").code == 0
    standin.vms[150] = {"config": {"name": "theirs", "cores": 1, "memory": "512"},
                        "status": "stopped", "launched": True}
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], wait=no_wait)
    assert "host 'ha-vm': vmid: vmid 150 on node pve is a VM abri did not create" \
        in str(info.value)
    # a container at the vmid is not taken for the VM either
    standin.vms.clear()
    standin.cts[150] = {"config": {"hostname": "ha-vm", "tags": proxmox.site_tag(
        Site.load(site_dir).site_id)}, "status": "running"}
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], wait=no_wait)
    assert "host 'ha-vm': type: vmid 150 on node pve is a container abri created" \
        in str(info.value)
    assert not writes(standin)


@pytest.mark.parametrize("case, where", [
    ("full storage", "host 'ha-vm': disk:"),
    ("unknown bridge", "host 'ha-vm': bridge:"),
    ("no import storage", "host 'ha-vm': storage:"),
    ("download fails", "host 'pve': image:"),
    ("create task fails", "host 'ha-vm': create:"),
    ("wrong credentials", "host 'pve': password:"),
])
def test_vm_errors_name_host_and_field_and_leave_nothing(abri, site_dir, node, case, where):
    standin = node
    assert add_vm(abri, site_dir).code == 0
    site = Site.load(site_dir)
    if case == "full storage":
        standin.storages["local-lvm"].avail = 8 * GIB
    elif case == "unknown bridge":
        site.hosts["ha-vm"].guest["bridge"] = "vmbr9"
    elif case == "no import storage":
        standin.storages["local"].content = "iso,vztmpl,backup"
    elif case == "download fails":
        standin.fail_next_task = "download failed: 404 Not Found"
    elif case == "create task fails":
        standin.storages["local"].files.append(IMAGE)
        standin.fail_next_task = "unable to create VM - import failed"
    elif case == "wrong credentials":
        site.secrets["pve"]["_proxmox"]["password"] = "changed-on-the-node"
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(site, ["ha-vm"], wait=no_wait)
    assert where in str(info.value), str(info.value)
    assert not standin.vms and not standin.booted  # nothing half-created
    if case != "create task fails":
        assert not standin.creates()
    assert not [q for q in standin.refused() if q["status"] == 400]  # never schema-invalid
    assert Site.load(site_dir).hosts["ha-vm"].guest.get("vmid") is None


def test_destroy_a_vm_abri_created(abri, site_dir, node):
    standin = node
    assert add_vm(abri, site_dir).code == 0
    proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], wait=no_wait)
    vmid = Site.load(site_dir).hosts["ha-vm"].guest["vmid"]
    destroyed: list[int] = []
    standin.on_destroy = destroyed.append
    r = abri("host", "destroy", "ha-vm", "--confirm", "ha-vm", "--site", site_dir)
    assert r.code == 0, r.err
    assert destroyed == [vmid] and not standin.vms and not standin.refused()
    assert [q["path"] for q in writes(standin)][-2:] == [
        f"/nodes/pve/qemu/{vmid}/status/stop", f"/nodes/pve/qemu/{vmid}"]
    assert "ha-vm" not in Site.load(site_dir).hosts


def test_an_api_token_can_create_a_vm(abri, site_dir, standin, tmp_path):
    """A VM needs no keyctl: a node added with an API token creates one (an LXC guest for
    Docker it cannot: see test_proxmox_hosts)."""
    secret = tmp_path / "tok"
    secret.write_text(standin.token[1] + "\n")
    r = abri("host", "add", "pve", "--kind", "proxmox", "--api-url", standin.url, "--node",
             "pve", "--token-id", standin.token[0], "--token-secret-file", secret,
             "--ca-fingerprint", standin.certs.leaf_fingerprint, "--site", site_dir)
    assert r.code == 0, r.err
    assert add_vm(abri, site_dir).code == 0
    proxmox.ensure_guests(Site.load(site_dir), ["ha-vm"], wait=no_wait)
    assert len(standin.vms) == 1 and not standin.refused()
    assert not [q for q in standin.requests if q["path"] == "/access/ticket"]
