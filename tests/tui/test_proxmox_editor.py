"""The host editor adds Proxmox nodes and guests with the engine's own functions (those of
'abri host add'), against the Proxmox API stand-in running in this process on loopback
(strict about the published schema): a node's certificate is read and its fingerprint shown
to be confirmed, its credentials are masked and go to the vault only; a guest's bridge and
storage are chosen from the lists the node gives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Select, Static

from tests.tui.conftest import make_site, opened, until
from tui.app.screens.host_editor import HostEditor

sys.path.insert(0, str(Path(__file__).parents[1] / "fleet"))

import pve_schema

if pve_schema.find_schema() is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true and the Proxmox API schema is missing (../shared/data)")
    pytest.skip("the Proxmox API schema is not here (../shared/data beside the clone)",
                allow_module_level=True)

from proxmox_standin import StandIn

SIZE = (100, 50)


@pytest.fixture(scope="module")
def schema():
    return pve_schema.Schema.load()


@pytest.fixture
def standin(schema):
    s = StandIn(node="pve", schema=schema, task_delay=0.02).start()
    yield s
    s.stop()


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def put(app, selector: str, value: str) -> None:
    app.screen.query_one(selector, Input).value = value


async def node_form(pilot, standin, password: str) -> None:
    app = pilot.app
    await pilot.press("a")
    await until(pilot, lambda: isinstance(app.screen, HostEditor))
    app.screen.query_one("#kind", Select).value = "proxmox"
    await pilot.pause()
    put(app, "#name", "pve")
    put(app, "#api_url", standin.url)
    put(app, "#node", "pve")
    put(app, "#pve_user", "root@pam")
    put(app, "#password", password)
    await pilot.pause()


async def test_editor_adds_a_node_once_its_fingerprint_is_confirmed(tmp_path, new_app,
                                                                    standin):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await node_form(pilot, standin, "not-the-password")
        editor = app.screen
        # the SSH fields are not a node's; the password is masked
        assert not editor.query_one("#address-row").display
        assert editor.query_one("#password", Input).password
        assert editor.query_one("#token_secret", Input).password
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "read the certificate" in text_of(app, "#ca_fingerprint-error")
        assert not [q for q in standin.requests if q["path"] == "/access/ticket"]
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert text_of(app, "#cert-seen") == f"SHA-256 {standin.certs.leaf_fingerprint}"
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "confirm" in text_of(app, "#ca_fingerprint-error")
        assert not [q for q in standin.requests if q["path"] == "/access/ticket"]
        editor.query_one("#cert-ok", Checkbox).value = True
        await pilot.pause()
        # a wrong password: refused by the node, named at its field, nothing added
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert isinstance(app.screen, HostEditor)
        assert "refused the credentials of root@pam" in text_of(app, "#password-error")
        assert "pve" not in app.site.hosts
        put(app, "#password", standin.password)
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert not isinstance(app.screen, HostEditor)
        node = app.site.hosts["pve"]
        assert node.kind == "proxmox" and node.proxmox["ca_pem"] == standin.certs.ca_pem
        assert node.proxmox["user"] == "root@pam" and "password" not in node.proxmox
        assert app.site.secrets["pve"]["_proxmox"] == {"password": standin.password}
        assert app.dirty
        assert app.save_site()
    for f in site_dir.rglob("*"):
        if f.is_file() and ".abri" not in f.parts:
            assert standin.password not in f.read_text(errors="replace"), f
    assert not [q for q in standin.refused() if q["status"] == 400]


async def test_editor_refuses_a_fingerprint_read_from_another_url(tmp_path, new_app,
                                                                  standin, schema):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    other = StandIn(node="pve", schema=schema, password=standin.password).start()
    app = new_app(site_dir)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await opened(pilot)
            await node_form(pilot, standin, standin.password)
            await pilot.press("ctrl+r")
            await settle(pilot)
            app.screen.query_one("#cert-ok", Checkbox).value = True
            put(app, "#api_url", other.url)  # the confirmation was for the first URL
            await pilot.pause()
            assert app.screen.query_one("#cert-ok", Checkbox).value is False
            await pilot.press("ctrl+o")
            await settle(pilot)
            assert "read the certificate" in text_of(app, "#ca_fingerprint-error")
            assert "pve" not in app.site.hosts
    finally:
        other.stop()


def site_with_node(site_dir, standin):
    from tui.core import proxmox

    site = make_site(site_dir, stacks=())
    proxmox.add_node(site, "pve", api_url=standin.url, node="pve",
                     creds=proxmox.Credentials(user="root@pam", password=standin.password),
                     ca_fingerprint=standin.certs.leaf_fingerprint)
    site.save()
    return site


async def guest_form(pilot) -> HostEditor:
    app = pilot.app
    await pilot.press("a")
    await until(pilot, lambda: isinstance(app.screen, HostEditor))
    editor = app.screen
    editor.query_one("#kind", Select).value = "guest"
    await pilot.pause()
    put(app, "#name", "mq-vm")
    editor.query_one("#parent", Select).value = "pve"
    await settle(pilot)
    return editor


async def test_editor_adds_a_vm_guest_with_the_nodes_bridge_and_storage(tmp_path, new_app,
                                                                        standin):
    site_dir = tmp_path / "site"
    site_with_node(site_dir, standin)
    standin.bridges["vmbr1"] = "10.98.0.1/24"
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        editor = await guest_form(pilot)
        bridge = editor.query_one("#bridge", Select)
        storage = editor.query_one("#storage", Select)
        assert [o[1] for o in bridge._options if o[1] != Select.NULL] == ["vmbr0", "vmbr1"]
        assert bridge.value == "vmbr0"
        offered = [o[1] for o in storage._options if o[1] != Select.NULL]
        assert offered[1:] == ["local-lvm"]  # the one storage for guest disks
        editor.query_one("#type", Select).value = "vm"
        storage.value = "local-lvm"
        bridge.value = "vmbr1"
        put(app, "#ip", "dhcp")
        await pilot.pause()
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "a VM needs a fixed address" in text_of(app, "#ip-error")
        put(app, "#ip", "10.98.0.30/24")
        put(app, "#gateway", "10.97.0.1")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "is not in the guest's network" in text_of(app, "#gateway-error")
        assert "mq-vm" not in app.site.hosts
        put(app, "#gateway", "10.98.0.1")
        put(app, "#cores", "4")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert not isinstance(app.screen, HostEditor)
        host = app.site.hosts["mq-vm"]
        assert host.parent == "pve" and host.user == "abri"
        assert host.guest == {"type": "vm", "cores": 4, "memory": 2048, "disk": 16,
                              "bridge": "vmbr1", "storage": "local-lvm",
                              "ip": "10.98.0.30/24", "gateway": "10.98.0.1"}
    # only reads went to the node: apply creates the guest
    assert not [q for q in standin.requests if q["method"] != "GET"
                and q["path"] != "/access/ticket"]


async def test_editor_says_when_the_node_cannot_be_read(tmp_path, new_app, standin):
    site_dir = tmp_path / "site"
    site = site_with_node(site_dir, standin)
    site.secrets["pve"]["_proxmox"]["password"] = "changed-on-the-node"
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await guest_form(pilot)
        assert "host 'pve': password:" in text_of(app, "#parent-error")
        put(app, "#ip", "dhcp")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "choose one of the node's bridges" in text_of(app, "#bridge-error")
        assert "mq-vm" not in app.site.hosts


async def test_editor_changes_a_guests_size_as_host_set_does(tmp_path, new_app, standin):
    from tui.core import proxmox
    from tui.core.site import Site

    site_dir = tmp_path / "site"
    site = site_with_node(site_dir, standin)
    proxmox.add_guest(site, "ha", "pve", {"ip": "dhcp", "disk": "16"})
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        overview = app.screen
        overview.hosts_table.move_cursor(row=list(app.site.hosts).index("ha"))
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, HostEditor)
                    and app.screen.query("#disk"))
        assert app.screen.query_one("#disk", Input).value == "16"
        put(app, "#disk", "8")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert "Proxmox cannot shrink" in text_of(app, "#disk-error")
        assert app.site.hosts["ha"].guest["disk"] == 16
        put(app, "#disk", "32")
        put(app, "#cores", "4")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert not isinstance(app.screen, HostEditor)
        assert app.save_site()
    guest = Site.load(site_dir).hosts["ha"].guest
    assert (guest["cores"], guest["memory"], guest["disk"]) == (4, 2048, 32)
    assert guest["ip"] == "dhcp"


async def test_a_guest_takes_the_hardening_switch_when_added_and_edited(tmp_path, new_app,
                                                                        standin):
    """Off by default for a guest; switched on it is written as 'abri host set NAME
    --hardening on' writes it, when the guest is added and when it is edited."""
    from textual.widgets import Switch

    from tui.core.site import Site

    site_dir = tmp_path / "site"
    site_with_node(site_dir, standin)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        editor = await guest_form(pilot)
        switch = editor.query_one("#hardening", Switch)
        assert editor.query_one("#hardening-row").display and switch.value is False
        switch.value = True
        put(app, "#ip", "dhcp")
        await pilot.pause()
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert not isinstance(app.screen, HostEditor)
        assert app.site.hosts["mq-vm"].hardening is True
        app.screen.hosts_table.move_cursor(row=list(app.site.hosts).index("mq-vm"))
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, HostEditor))
        switch = app.screen.query_one("#hardening", Switch)
        assert switch.value is True
        switch.value = False
        await pilot.pause()
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert not isinstance(app.screen, HostEditor)
        assert app.save_site()
    assert Site.load(site_dir).hosts["mq-vm"].hardening is False
