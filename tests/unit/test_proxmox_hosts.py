"""Proxmox nodes and LXC guests in the site: 'abri host add' for both kinds (the node's
certificate pinned only once confirmed, credentials in the vault only, every refused field
named with nothing written), and the controller's guest step against the API stand-in on
loopback (no Docker: the stand-in only records containers, and SSH is not waited for)."""

from __future__ import annotations

import os
import sys
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

from proxmox_standin import DEBIAN_TEMPLATE, GIB, StandIn

from tui.core import proxmox
from tui.core.site import Site


@pytest.fixture(scope="module")
def schema():
    return pve_schema.Schema.load()


@pytest.fixture
def standin(schema):
    s = StandIn(node="pve", schema=schema, task_delay=0.02).start()
    yield s
    s.stop()


@pytest.fixture
def secret_files(tmp_path, standin):
    pw = tmp_path / "pw"
    pw.write_text(standin.password + "\n")
    tok = tmp_path / "tok"
    tok.write_text(standin.token[1] + "\n")
    bad = tmp_path / "bad"
    bad.write_text("not-the-password\n")
    return {"password": pw, "token": tok, "bad": bad}


def add_node(abri, site_dir, standin, files, *extra, name="pve", fp=True, node="pve"):
    args = ["host", "add", name, "--kind", "proxmox", "--api-url", standin.url,
            "--node", node, "--site", site_dir]
    if fp:
        args += ["--ca-fingerprint", standin.certs.leaf_fingerprint]
    return abri(*args, *(extra or ("--user", "root@pam", "--password-file",
                                   files["password"])))


def add_guest(abri, site_dir, name="ha", *extra):
    return abri("host", "add", name, "--kind", "guest", "--parent", "pve", "--cores", "2",
                "--memory", "2048", "--disk", "8", "--bridge", "vmbr0", "--ip",
                "10.99.0.20/24", "--gateway", "10.99.0.1", "--site", site_dir, *extra)


def test_node_is_pinned_after_its_fingerprint_is_confirmed(abri, site_dir, standin,
                                                           secret_files):
    before = fingerprint(site_dir)
    r = add_node(abri, site_dir, standin, secret_files, fp=False)
    assert r.code == 2 and "ca_fingerprint" in r.err
    assert standin.certs.leaf_fingerprint in r.err  # shown, to be compared
    r = abri("host", "add", "pve", "--kind", "proxmox", "--api-url", standin.url, "--node",
             "pve", "--user", "root@pam", "--password-file", secret_files["password"],
             "--ca-fingerprint", "AA:" * 31 + "AA", "--site", site_dir)
    assert r.code == 2 and "not the one given" in r.err
    assert fingerprint(site_dir) == before
    assert not [q for q in standin.requests if q["path"] == "/access/ticket"]  # no password sent
    r = add_node(abri, site_dir, standin, secret_files)
    assert r.code == 0, r.err
    assert standin.certs.ca_fingerprint in r.out
    data = yaml.safe_load((site_dir / "host_vars/pve/abri.yml").read_text())
    conf = data["abri_proxmox"]
    assert conf["ca_pem"] == standin.certs.ca_pem and conf["node"] == "pve"
    assert conf["user"] == "root@pam" and conf["api_url"] == standin.url
    for f in site_dir.rglob("*"):
        if f.is_file() and ".abri" not in f.parts:
            assert standin.password not in f.read_text(errors="replace"), f
    site = Site.load(site_dir)
    assert site.secrets["pve"]["_proxmox"] == {"password": standin.password}
    assert site.hosts["pve"].address == "127.0.0.1"


@pytest.mark.parametrize("case, field", [
    ("bad password", "password"), ("unknown node", "node"), ("bad url", "api_url"),
    ("no credentials", "user"), ("token without secret", "token_secret_file"),
])
def test_node_refusals_write_nothing(abri, site_dir, standin, secret_files, case, field):
    before = fingerprint(site_dir)
    if case == "bad password":
        r = add_node(abri, site_dir, standin, secret_files, "--user", "root@pam",
                     "--password-file", secret_files["bad"])
    elif case == "unknown node":
        r = add_node(abri, site_dir, standin, secret_files, node="elsewhere")
    elif case == "bad url":
        r = abri("host", "add", "pve", "--kind", "proxmox", "--api-url", "http://x:8006",
                 "--node", "pve", "--user", "root@pam", "--password-file",
                 secret_files["password"], "--site", site_dir)
    elif case == "no credentials":
        r = add_node(abri, site_dir, standin, secret_files, "--cores", "2")
    else:
        r = add_node(abri, site_dir, standin, secret_files, "--token-id", "root@pam!abri")
    assert r.code == 2, (r.out, r.err)
    assert f"host 'pve': {field}:" in r.err, r.err
    assert "Traceback" not in r.err
    assert fingerprint(site_dir) == before


def test_guest_fields_are_checked(abri, site_dir, standin, secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    before = fingerprint(site_dir)
    r = abri("host", "add", "ha", "--kind", "guest", "--parent", "pve", "--cores", "0",
             "--memory", "lots", "--disk", "1", "--bridge", "vm br", "--ip", "10.99.0.20",
             "--vmid", "12", "--site", site_dir)
    assert r.code == 2
    for field in ("cores", "memory", "disk", "bridge", "ip", "vmid"):
        assert f"host 'ha': {field}:" in r.err, (field, r.err)
    r = abri("host", "add", "ha", "--kind", "guest", "--parent", "pve", "--ip",
             "10.99.0.20/24", "--gateway", "10.98.0.1", "--site", site_dir)
    assert r.code == 2 and "host 'ha': gateway: 10.98.0.1 is not in" in r.err
    r = abri("host", "add", "ha", "--kind", "guest", "--parent", "nope", "--ip", "dhcp",
             "--site", site_dir)
    assert r.code == 2 and "host 'ha': parent:" in r.err
    r = abri("host", "add", "ha", "--kind", "guest", "--parent", "pve", "--ip", "dhcp",
             "--api-url", standin.url, "--site", site_dir)
    assert r.code == 2 and "host 'ha': api_url: is for a proxmox node" in r.err
    assert fingerprint(site_dir) == before
    r = add_guest(abri, site_dir)
    assert r.code == 0, r.err
    data = yaml.safe_load((site_dir / "host_vars/ha/abri.yml").read_text())
    assert data["abri_guest"] == {"cores": 2, "memory": 2048, "disk": 8, "bridge": "vmbr0",
                                  "ip": "10.99.0.20/24", "gateway": "10.99.0.1"}
    import json

    listed = {h["name"]: h for h in json.loads(abri("host", "list", "--json", "--site",
                                                    site_dir).out)}
    assert listed["ha"]["guest"]["ip"] == "10.99.0.20/24" and listed["ha"]["parent"] == "pve"
    assert listed["pve"]["proxmox"]["node"] == "pve" and "ca_pem" not in listed["pve"]["proxmox"]
    inv = (site_dir / "inventory.ini").read_text()
    assert "ha ansible_host=10.99.0.20 ansible_user=root" in inv and "abri_parent=pve" in inv


# -- the guest step of 'abri apply', against the stand-in (no guest boots)


def guests_site(abri, site_dir, standin, secret_files, *node_args):
    assert add_node(abri, site_dir, standin, secret_files, *node_args).code == 0
    assert add_guest(abri, site_dir).code == 0
    return Site.load(site_dir)


def no_wait(host, timeout):
    pass


def test_guest_created_once_then_recognized(abri, site_dir, standin, secret_files):
    site = guests_site(abri, site_dir, standin, secret_files)
    lines: list[str] = []
    proxmox.ensure_guests(site, list(site.hosts), say=lines.append, wait=no_wait)
    assert not standin.refused(), standin.refused()
    [create] = standin.creates()
    p = create["params"]
    assert p["features"] == "nesting=1,keyctl=1" and p["unprivileged"] == "1"
    assert p["net0"] == "name=eth0,bridge=vmbr0,ip=10.99.0.20/24,gw=10.99.0.1"
    assert p["tags"] == proxmox.site_tag(site.site_id) and p["onboot"] == "1"
    assert p["ssh-public-keys"].startswith("ssh-ed25519 ")
    assert f"local:vztmpl/{DEBIAN_TEMPLATE}" == p["ostemplate"]  # downloaded first
    assert standin.cts[int(p["vmid"])]["status"] == "running"
    site = Site.load(site_dir)
    assert site.hosts["ha"].guest["vmid"] == int(p["vmid"])
    # again: no create, nothing changed
    count = len(standin.requests)
    proxmox.ensure_guests(site, list(site.hosts), say=lines.append, wait=no_wait)
    assert len(standin.creates()) == 1
    assert not [q for q in standin.requests[count:] if q["method"] != "GET"
                and q["path"] != "/access/ticket"]
    assert "nothing to change" in lines[-1]
    # more memory: one PUT config, no create
    site.hosts["ha"].guest["memory"] = 4096
    proxmox.ensure_guests(site, list(site.hosts), say=lines.append, wait=no_wait)
    puts = [q for q in standin.requests if q["method"] == "PUT"]
    assert [q["params"] for q in puts] == [{"memory": "4096"}]
    assert len(standin.creates()) == 1 and not standin.refused()
    # a bigger disk: one resize task; a smaller one is refused, naming the field
    vmid = int(p["vmid"])
    site.hosts["ha"].guest["disk"] = 12
    proxmox.ensure_guests(site, list(site.hosts), say=lines.append, wait=no_wait)
    assert standin.cts[vmid]["config"]["rootfs"].endswith(",size=12G")
    assert "root disk 8 -> 12 GiB" in lines[-1]
    site.hosts["ha"].guest["disk"] = 10
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(site, list(site.hosts), say=lines.append, wait=no_wait)
    assert "host 'ha': disk: vmid" in str(info.value) and "cannot shrink" in str(info.value)
    assert len(standin.creates()) == 1 and not standin.refused()


def test_a_container_abri_did_not_create_is_never_touched(abri, site_dir, standin,
                                                          secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    assert add_guest(abri, site_dir, "ha", "--vmid", "150").code == 0
    standin.cts[150] = {"config": {"hostname": "theirs", "cores": 1, "memory": 512},
                        "status": "stopped"}
    site = Site.load(site_dir)
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    assert "host 'ha': vmid: vmid 150" in str(info.value) and "never touches" in str(info.value)
    assert not [q for q in standin.requests if q["method"] != "GET"
                and q["path"] != "/access/ticket"]


@pytest.mark.parametrize("case, where", [
    ("token", "host 'pve': token:"),
    ("full storage", "host 'ha': disk:"),
    ("wrong credentials", "host 'pve': password:"),
    ("unknown bridge", "host 'ha': bridge:"),
    ("unknown node", "host 'pve': node:"),
    ("ca mismatch", "host 'pve': ca:"),
    ("create task fails", "host 'ha': create:"),
])
def test_guest_errors_name_host_and_field_and_leave_nothing(abri, site_dir, standin,
                                                            secret_files, schema, case, where):
    node_args = (("--token-id", standin.token[0], "--token-secret-file", secret_files["token"])
                 if case == "token" else ())
    site = guests_site(abri, site_dir, standin, secret_files, *node_args)
    other = None
    if case == "full storage":
        standin.storages["local-lvm"].avail = 4 * GIB
    elif case == "wrong credentials":
        site.secrets["pve"]["_proxmox"]["password"] = "changed-on-the-node"
    elif case == "unknown bridge":
        site.hosts["ha"].guest["bridge"] = "vmbr9"
    elif case == "unknown node":
        site.hosts["pve"].proxmox["node"] = "pve2"
    elif case == "ca mismatch":  # another machine answers at the node's address
        other = StandIn(node="pve", schema=schema, password=standin.password).start()
        site.hosts["pve"].proxmox["api_url"] = other.url
    elif case == "create task fails":
        standin.storages["local"].files.append(f"local:vztmpl/{DEBIAN_TEMPLATE}")
        standin.fail_next_task = "unable to create CT - mount failed"
    try:
        with pytest.raises(proxmox.GuestError) as info:
            proxmox.ensure_guests(site, list(site.hosts), wait=no_wait)
    finally:
        if other:
            other.stop()
    assert where in str(info.value), str(info.value)
    assert not standin.cts  # nothing half-created
    if case != "create task fails":
        assert not standin.creates()
    assert not [q for q in standin.refused() if q["status"] == 400]  # never schema-invalid
    assert Site.load(site_dir).hosts["ha"].guest.get("vmid") is None


def test_dhcp_guest_address_comes_from_the_node(abri, site_dir, standin, secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    r = abri("host", "add", "mq", "--kind", "guest", "--parent", "pve", "--ip", "dhcp",
             "--site", site_dir)
    assert r.code == 0, r.err
    line = next(x for x in (site_dir / "inventory.ini").read_text().splitlines()
                if x.startswith("mq "))
    assert "ansible_host" not in line  # known once the node's DHCP gave it one
    standin.launcher = lambda **kw: "10.99.0.77"  # the node's DHCP gave the guest this
    site = Site.load(site_dir)
    proxmox.ensure_guests(site, ["mq"], wait=no_wait)
    assert standin.creates()[0]["params"]["net0"] == "name=eth0,bridge=vmbr0,ip=dhcp"
    again = Site.load(site_dir)
    assert again.hosts["mq"].address == "10.99.0.77" and again.hosts["mq"].guest["vmid"]
    assert not standin.refused()


def test_plan_leaves_a_guest_not_yet_created_out(abri, site_dir, standin, secret_files,
                                                 monkeypatch):
    site = guests_site(abri, site_dir, standin, secret_files)
    site.add_stack("ha", "mosquitto")
    site.save()
    before = fingerprint(site_dir)
    monkeypatch.setattr(proxmox, "ensure_guests",
                        lambda *a, **k: pytest.fail("plan created a guest"))
    r = abri("plan", "--site", site_dir)
    assert r.code == 0, r.err
    assert "guest ha: not created yet on pve; apply creates it" in r.err
    assert not [q for q in standin.requests if q["path"] != "/access/ticket"
                and q["method"] != "GET"]
    assert fingerprint(site_dir) == before


def test_host_set_changes_a_guests_size(abri, site_dir, standin, secret_files):
    guests_site(abri, site_dir, standin, secret_files)
    before = fingerprint(site_dir)
    r = abri("host", "set", "ha", "--cores", "0", "--disk", "4", "--site", site_dir)
    assert r.code == 2 and "host 'ha': cores:" in r.err and "host 'ha': disk:" in r.err
    assert "cannot shrink" in r.err
    r = abri("host", "set", "pve", "--memory", "4096", "--site", site_dir)
    assert r.code == 2 and "host 'pve': memory: only a guest has a size" in r.err
    assert fingerprint(site_dir) == before
    r = abri("host", "set", "ha", "--cores", "4", "--memory", "4096", "--disk", "32",
             "--site", site_dir)
    assert r.code == 0, r.err
    guest = Site.load(site_dir).hosts["ha"].guest
    assert (guest["cores"], guest["memory"], guest["disk"]) == (4, 4096, 32)


def test_destroy_a_guest_abri_created(abri, site_dir, standin, secret_files):
    site = guests_site(abri, site_dir, standin, secret_files)
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    vmid = Site.load(site_dir).hosts["ha"].guest["vmid"]
    before = fingerprint(site_dir)
    r = abri("host", "destroy", "ha", "--confirm", "ah", "--site", site_dir)
    assert r.code == 2 and "host 'ha': --confirm: 'ah' is not the guest's name" in r.err
    r = abri("host", "destroy", "ha", "--site", site_dir)  # no terminal: no question
    assert r.code == 2 and "--confirm ha" in r.err
    r = abri("host", "destroy", "pve", "--confirm", "pve", "--site", site_dir)
    assert r.code == 2 and "host 'pve': kind: only a guest can be destroyed" in r.err
    assert abri("stack", "add", "ha", "mosquitto", "--site", site_dir).code == 0
    before = fingerprint(site_dir)
    r = abri("host", "destroy", "ha", "--confirm", "ha", "--site", site_dir)
    assert r.code == 2 and "host 'ha': backup:" in r.err and "--no-backup" in r.err
    assert fingerprint(site_dir) == before and vmid in standin.cts
    destroyed = []
    standin.on_destroy = destroyed.append
    known = site_dir / ".abri" / "known_hosts"
    known.parent.mkdir(exist_ok=True)
    known.write_text("10.99.0.20 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx9Vsa1zPdbyCXrR6Fe6"
                     "ByGxvpN2kCxnJm0f2ZygkCz\n192.0.2.9 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"
                     "IHx9Vsa1zPdbyCXrR6Fe6ByGxvpN2kCxnJm0f2ZygkCz\n")
    r = abri("host", "destroy", "ha", "--confirm", "ha", "--no-backup", "--site", site_dir)
    assert r.code == 0, r.err
    assert destroyed == [vmid] and vmid not in standin.cts and not standin.refused()
    assert "ha" not in Site.load(site_dir).hosts
    assert known.read_text().startswith("192.0.2.9 ")  # the guest's old key is forgotten
    assert "10.99.0.20" not in known.read_text()


def test_destroy_never_touches_a_foreign_container(abri, site_dir, standin, secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    assert add_guest(abri, site_dir, "ha", "--vmid", "150").code == 0
    standin.cts[150] = {"config": {"hostname": "ha"}, "status": "running"}
    r = abri("host", "destroy", "ha", "--confirm", "ha", "--site", site_dir)
    assert r.code == 1 and "host 'ha': vmid: vmid 150" in r.err and "never destroys" in r.err
    assert 150 in standin.cts and "ha" in Site.load(site_dir).hosts
    assert not [q for q in standin.requests if q["method"] not in ("GET",)
                and q["path"] != "/access/ticket"]


def test_destroy_refuses_a_guest_another_host_still_uses(abri, site_dir, standin,
                                                         secret_files):
    site = guests_site(abri, site_dir, standin, secret_files)
    r = abri("host", "add", "home", "--kind", "guest", "--parent", "pve", "--ip",
             "10.99.0.21/24", "--gateway", "10.99.0.1", "--site", site_dir)
    assert r.code == 0, r.err
    assert abri("stack", "add", "ha", "mosquitto", "--site", site_dir).code == 0
    assert abri("stack", "add", "home", "homeassistant", "--site", site_dir).code == 0
    site = Site.load(site_dir)
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    before = fingerprint(site_dir)
    r = abri("host", "destroy", "ha", "--confirm", "ha", "--no-backup", "--site", site_dir)
    assert r.code == 2 and "mqtt" in r.err, r.err
    assert fingerprint(site_dir) == before and len(standin.cts) == 1


ZIGBEE = "/dev/serial/by-id/usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus-if00-port0"


def test_usb_devices_by_id(abri, site_dir, standin, secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    before = fingerprint(site_dir)
    r = add_guest(abri, site_dir, "ha", "--usb", "/dev/ttyUSB0,mode=0666")
    assert r.code == 2 and "host 'ha': usb:" in r.err  # no property-string injection
    assert fingerprint(site_dir) == before
    assert add_guest(abri, site_dir, "ha", "--usb", ZIGBEE).code == 0
    site = Site.load(site_dir)
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    [create] = standin.creates()
    assert create["params"]["dev0"] == f"path={ZIGBEE}" and not standin.refused()
    # another stick instead: one PUT config, schema-valid
    other = "/dev/serial/by-id/usb-dresden_elektronik_ConBee_II-if00"
    site.hosts["ha"].guest["usb"] = [other]
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    vmid = int(create["params"]["vmid"])
    assert standin.cts[vmid]["config"]["dev0"] == f"path={other}" and not standin.refused()
    site.hosts["ha"].guest["usb"] = []
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    assert "dev0" not in standin.cts[vmid]["config"] and not standin.refused()
    count = len(standin.requests)
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)  # nothing left to change
    assert not [q for q in standin.requests[count:] if q["method"] == "PUT"]


def test_usb_with_a_token_is_refused_before_the_node_refuses_it(abri, site_dir, standin,
                                                                secret_files):
    assert add_node(abri, site_dir, standin, secret_files, "--token-id", standin.token[0],
                    "--token-secret-file", secret_files["token"]).code == 0
    assert add_guest(abri, site_dir, "ha", "--vmid", "150").code == 0
    standin.cts[150] = {"config": {"hostname": "ha", "cores": 2, "memory": 2048,
                                   "tags": proxmox.site_tag(Site.load(site_dir).site_id),
                                   "rootfs": "local-lvm:vm-150-disk-0,size=8G"},
                        "status": "running"}
    site = Site.load(site_dir)
    site.hosts["ha"].guest["usb"] = [ZIGBEE]
    with pytest.raises(proxmox.GuestError) as info:
        proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    assert "host 'ha': usb:" in str(info.value) and "API token" in str(info.value)
    assert not [q for q in standin.requests if q["method"] != "GET"]


def test_apply_stops_before_ansible_with_the_host_and_field(abri, site_dir, standin,
                                                            secret_files, monkeypatch):
    import ansible_runner

    guests_site(abri, site_dir, standin, secret_files)
    assert abri("stack", "add", "ha", "mosquitto", "--site", site_dir).code == 0
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: pytest.fail("Ansible ran"))
    standin.storages["local-lvm"].avail = 2 * GIB
    r = abri("apply", "--site", site_dir)
    assert r.code == 1, (r.out, r.err)
    assert "abri: error: host 'ha': disk: storage local-lvm on node pve has 2.0 GiB free; " \
           "the guest needs 8 GiB" in r.err
    assert "Traceback" not in r.err and standin.password not in r.err + r.out
    assert not standin.cts and not standin.creates()


def test_host_set_usb_replaces_a_guests_devices(abri, site_dir, standin, secret_files):
    site = guests_site(abri, site_dir, standin, secret_files)
    proxmox.ensure_guests(site, ["ha"], wait=no_wait)
    vmid = Site.load(site_dir).hosts["ha"].guest["vmid"]
    before = fingerprint(site_dir)
    r = abri("host", "set", "ha", "--usb", "/dev/ttyUSB0,mode=0666", "--site", site_dir)
    assert r.code == 2 and "host 'ha': usb:" in r.err  # no property-string injection
    r = abri("host", "set", "ha", "--usb", ZIGBEE, "--usb", ZIGBEE, "--site", site_dir)
    assert r.code == 2 and "host 'ha': usb: names a device twice" in r.err
    r = abri("host", "set", "pve", "--usb", ZIGBEE, "--site", site_dir)
    assert r.code == 2 and "host 'pve': usb: only a guest" in r.err
    assert fingerprint(site_dir) == before
    r = abri("host", "set", "ha", "--usb", ZIGBEE, "--site", site_dir)
    assert r.code == 0, r.err
    assert Site.load(site_dir).hosts["ha"].guest["usb"] == [ZIGBEE]
    proxmox.ensure_guests(Site.load(site_dir), ["ha"], wait=no_wait)
    assert standin.cts[vmid]["config"]["dev0"] == f"path={ZIGBEE}" and not standin.refused()
    # --usb '' passes none: the next apply takes dev0 away
    assert abri("host", "set", "ha", "--usb", "", "--site", site_dir).code == 0
    assert "usb" not in Site.load(site_dir).hosts["ha"].guest
    proxmox.ensure_guests(Site.load(site_dir), ["ha"], wait=no_wait)
    assert "dev0" not in standin.cts[vmid]["config"] and not standin.refused()


def test_host_set_usb_is_refused_for_a_vm(abri, site_dir, standin, secret_files):
    assert add_node(abri, site_dir, standin, secret_files).code == 0
    assert add_guest(abri, site_dir, "vm", "--type", "vm").code == 0
    before = fingerprint(site_dir)
    r = abri("host", "set", "vm", "--usb", ZIGBEE, "--site", site_dir)
    assert r.code == 2 and "host 'vm': usb: passing USB devices into a VM" in r.err
    assert fingerprint(site_dir) == before
