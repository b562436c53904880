"""SVG snapshots of every screen at 80x24, including error states and finished runs.

Paths shown on screen are fixed (the site folder, and a copy of the catalog as the kit folder,
since site.yml names the kit's playbook path), the cursor does not blink, ansible runs are
recorded events. Update with:  pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
from textual.widgets import Input

from tests.tui.conftest import (
    RecordedRunner,
    fake_pinger,
    fake_verifier,
    make_site,
    opened,
    pick,
    until,
)
from tui.app.app import make_app

ROOT = Path("/tmp/abri-snapshots")
SITE = ROOT / "site"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fixed_paths(monkeypatch):
    # The folder is fixed (it is on screen), so two test runs on one machine take turns.
    with open(f"{ROOT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(ROOT, ignore_errors=True)
        (ROOT / "kit").mkdir(parents=True)
        shutil.copytree(REPO / "stacks", ROOT / "kit" / "stacks")
        monkeypatch.setenv("ABRI_KIT_DIR", str(ROOT / "kit"))
        yield
        shutil.rmtree(ROOT, ignore_errors=True)


def app_for(runner: RecordedRunner | None = None):
    return make_app(SITE, runner=runner or RecordedRunner(), verifier=fake_verifier,
                    pinger=fake_pinger, blink=False)


def ready(then=None):
    """A run_before that first waits for the site to load (it is read after the first
    frame), then runs `then`; keys given with press= come after both."""

    async def run_before(pilot) -> None:
        await opened(pilot)
        if then is not None:
            await then(pilot)

    return run_before


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    # the worker's last messages may still be queued on a busy machine: wait (bounded) until
    # no widget shows a run in progress any more
    for _ in range(250):
        await pilot.pause(0.02)
        if not pilot.app.screen.query(".-running") and not pilot.app.screen.has_class("-running"):
            break
    await pilot.pause()
    await pilot.pause()


def two_hosts() -> None:
    site = make_site(SITE)
    site.add_host("pi", "ssh", "192.168.1.20", 2222, "pi")
    site.add_stack("pi", "mosquitto", {"bind": "loopback"})
    site.save()


def test_welcome(snap_compare):
    assert snap_compare(app_for(), run_before=ready())


def test_host_editor_errors(snap_compare):
    make_site(SITE, stacks=())

    async def run_before(pilot):
        await pilot.press("a")
        await until(pilot, lambda: pilot.app.screen.query("#name"))
        screen = pilot.app.screen
        screen.query_one("#name", Input).value = "-pi"
        screen.query_one("#address", Input).value = "300.1.1"
        screen.query_one("#port", Input).value = "70000"
        screen.query_one("#user", Input).value = "Pi"

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_host_editor_connection_failed(snap_compare):
    make_site(SITE, stacks=())

    async def run_before(pilot):
        await pilot.press("a")
        await until(pilot, lambda: pilot.app.screen.query("#name"))
        pilot.app.screen.query_one("#name", Input).value = "pi"
        pilot.app.screen.query_one("#address", Input).value = "192.0.2.7"
        await pilot.press("ctrl+t")
        await settle(pilot)

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_host_editor_guest_with_the_nodes_lists(snap_compare):
    """A guest being added: its node chosen, the bridges and storages the node gave (the
    Proxmox API stand-in in this process), a VM with a fixed address."""
    import sys

    sys.path.insert(0, str(REPO / "tests" / "fleet"))
    import pve_schema

    if pve_schema.find_schema() is None:
        pytest.skip("the Proxmox API schema is not here (../shared/data beside the clone)")
    from proxmox_standin import StandIn

    from tui.core import proxmox

    standin = StandIn(node="pve", schema=pve_schema.Schema.load(), task_delay=0.02,
                      bridges={"vmbr0": "192.168.1.5/24", "vmbr1": "10.0.0.1/24"}).start()
    try:
        site = make_site(SITE, stacks=())
        proxmox.add_node(site, "pve", api_url=standin.url, node="pve",
                         creds=proxmox.Credentials(user="root@pam", password=standin.password),
                         ca_fingerprint=standin.certs.leaf_fingerprint)
        site.save()

        async def run_before(pilot):
            await pilot.press("a")
            await until(pilot, lambda: pilot.app.screen.query("#name"))
            screen = pilot.app.screen
            screen.query_one("#kind").value = "guest"
            screen.query_one("#name", Input).value = "ha-vm"
            screen.query_one("#parent").value = "pve"
            await settle(pilot)
            screen.query_one("#type").value = "vm"
            screen.query_one("#ip", Input).value = "192.168.1.40/24"
            screen.query_one("#gateway", Input).value = "192.168.1.1"
            screen.query_one("#storage").focus()
            await settle(pilot)

        assert snap_compare(app_for(), run_before=ready(run_before))
    finally:
        standin.stop()


def test_host_editor_vps(snap_compare):
    """A vps being added: its provider, the provider's regions with their countries, and
    the hardening switch on (the kind's default)."""
    make_site(SITE, stacks=())

    async def run_before(pilot):
        await pilot.press("a")
        await until(pilot, lambda: pilot.app.screen.query("#name"))
        screen = pilot.app.screen
        screen.query_one("#kind").value = "vps"
        screen.query_one("#name", Input).value = "vps1"
        screen.query_one("#address", Input).value = "203.0.113.10"
        screen.query_one("#user", Input).value = "root"
        screen.query_one("#provider").value = "hetzner"
        await pilot.pause()
        screen.query_one("#region").value = "fsn1"
        screen.query_one("#hardening-row").scroll_visible(animate=False)
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_overview_vps_ports_on_the_internet(snap_compare):
    """A vps with its hardening off: its broker's ports are reachable from the internet."""
    site = make_site(SITE, stacks=())
    site.add_host("vps1", "vps", "203.0.113.10", user="root", provider="hetzner",
                  region="fsn1")
    site.set_hosting("vps1", hardening="off")
    site.add_stack("vps1", "mosquitto", {"tls": "true"})
    site.save()

    async def run_before(pilot):
        await pilot.press("down")
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_stack_picker(snap_compare):
    make_site(SITE, stacks=())
    assert snap_compare(app_for(), run_before=ready(), press=["s"])


def test_dependency_offer(snap_compare):
    make_site(SITE, stacks=())
    async def run_before(pilot):
        await pick(pilot, "homeassistant")

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_stack_settings_port_collision(snap_compare):
    make_site(SITE, stacks=("mosquitto",))

    async def run_before(pilot):
        await pick(pilot, "homeassistant")
        await pilot.pause()
        pilot.app.screen.query_one("#set-port", Input).value = "1883"
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_stack_settings_secret_masked(snap_compare):
    make_site(SITE, stacks=())

    async def run_before(pilot):
        await pick(pilot, "mosquitto")
        await pilot.pause()
        pilot.app.screen.query_one("#set-admin_password", Input).value = "short"
        pilot.app.screen.query_one("#stack-form").scroll_end(animate=False)
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_overview(snap_compare):
    two_hosts()
    assert snap_compare(app_for(), run_before=ready())


def test_overview_light_unsaved(snap_compare):
    two_hosts()
    assert snap_compare(app_for(), run_before=ready(), press=["down", "tab", "x", "y", "f2"])


def test_review_inventory(snap_compare):
    two_hosts()
    assert snap_compare(app_for(), run_before=ready(), press=["r"])


def test_review_plan_done(snap_compare):
    make_site(SITE)

    async def run_before(pilot):
        await pilot.press("r", "p")
        await settle(pilot)

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_run_apply_failed(snap_compare):
    make_site(SITE)
    runner = RecordedRunner(by_mode={"apply": "apply-failed.json"})

    async def run_before(pilot):
        await pilot.press("g", "y")
        await settle(pilot)

    assert snap_compare(app_for(runner), run_before=ready(run_before))


def test_run_apply_ok(snap_compare):
    make_site(SITE)

    async def run_before(pilot):
        await pilot.press("g", "y")
        await settle(pilot)

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_run_apply_running(snap_compare):
    make_site(SITE)
    runner = RecordedRunner(pause_after=6)

    async def run_before(pilot):
        await pilot.press("g", "y")
        await pilot.pause()
        runner.paused.wait(5)
        await pilot.pause(0.2)

    try:
        assert snap_compare(app_for(runner), run_before=ready(run_before))
    finally:
        runner.release.set()


def test_verify_report(snap_compare):
    two_hosts()

    async def run_before(pilot):
        await pilot.press("v")
        await settle(pilot)

    assert snap_compare(app_for(), run_before=ready(run_before))


def test_broken_site(snap_compare):
    make_site(SITE, stacks=("mosquitto",))
    (SITE / "host_vars" / "home" / "abri.yml").write_text("abri_stacks:\n  nosuch: {}\n")
    assert snap_compare(app_for(), run_before=ready())


def test_error_modal(snap_compare):
    make_site(SITE)
    assert snap_compare(app_for(), run_before=ready(), press=["tab", "x", "y"])


def test_quit_with_unsaved_changes(snap_compare):
    make_site(SITE)
    assert snap_compare(app_for(), run_before=ready(), press=["tab", "down", "x", "y", "q"])


def test_audit_screen(snap_compare):
    # the overview's 'o': every outside endpoint, its jurisdiction and the selected one's fix
    two_hosts()
    assert snap_compare(app_for(), run_before=ready(), press=["o"])


def test_import_screen_shows_the_backup(snap_compare, tmp_path):
    # the overview's 'i': a protected Supervisor backup read with its password, what it
    # holds and what becomes of its add-ons (Node-RED's data into the host's nodered)
    from tests.unit.test_ha_backup import PASSWORD, _addon_backup

    site = make_site(SITE)
    site.add_stack("home", "nodered")
    site.save()
    backup = ROOT / "backup.tar"
    _addon_backup(tmp_path, 2).rename(backup)

    async def run_before(pilot) -> None:
        await pilot.press("i")
        await until(pilot, lambda: pilot.app.screen.query("#import-file"))
        pilot.app.screen.query_one("#import-file", Input).value = str(backup)
        pilot.app.screen.query_one("#import-password", Input).value = PASSWORD
        await until(pilot, lambda: pilot.app.screen.checked is not None)
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before), terminal_size=(100, 40))


def test_remote_access_acme_without_domain(snap_compare):
    # the overview's 'w': a vps picked, acme chosen and saved without its domain: the
    # engine's refusal next to the domain field, the HMAC key masked, nothing written
    from tui.core import remote

    site = make_site(SITE)
    site.add_host("vps1", "vps", "203.0.113.10")
    remote.enable(site, "vps1")
    site.set_stack("vps1", remote.proxy_stack(site), {
        "certificate": "acme", "domain": "home.example.eu",
                                     "acme_directory": "https://acme.example.eu/directory",
                                     "eab_key_id": "kid-1", "eab_hmac_key": "hmac-" + "k" * 20})
    site.save()

    async def run_before(pilot) -> None:
        await pilot.press("w")
        await until(pilot, lambda: pilot.app.screen.query("#remote-domain"))
        pilot.app.screen.query_one("#remote-domain", Input).value = ""
        pilot.app.screen.query_one("#remote-eab_hmac_key", Input).value = "typed-" + "x" * 20
        await pilot.pause()
        await pilot.press("ctrl+o")
        await pilot.pause()

    assert snap_compare(app_for(), run_before=ready(run_before), terminal_size=(100, 40))
