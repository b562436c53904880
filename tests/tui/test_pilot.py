"""Pilot tests: each screen's main path and its validation errors, asserting on what the real
engine wrote to the site directory. Only Ansible runs are recorded events (conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from textual.widgets import DataTable, Input, ProgressBar, RichLog, Select, Static

from tests.tui.conftest import RecordedRunner, make_site, opened, pick
from tui.app.messages import RunProgress
from tui.app.screens.broken import BrokenSiteScreen
from tui.app.screens.dialogs import ConfirmScreen, ErrorScreen, PasswordScreen, QuitScreen
from tui.app.screens.host_editor import HostEditor
from tui.app.screens.overview import OverviewScreen
from tui.app.screens.review import ReviewScreen
from tui.app.screens.run import RunScreen
from tui.app.screens.stacks import StackPicker, StackSettingsScreen
from tui.app.screens.welcome import WelcomeScreen
from tui.core import inventory, validate
from tui.core.errors import AbriError, Problem

SIZE = (80, 24)


def host_vars(site_dir, host="home") -> dict:
    return yaml.safe_load((site_dir / "host_vars" / host / "abri.yml").read_text())


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def type_into(pilot, selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.value = ""
    field.focus()
    if len(text) > 10:  # long paths: set at once (still an Input.Changed, as typing sends)
        field.value = text
    elif text:
        await pilot.press(*text)
    await pilot.pause()


# ---------------------------------------------------------------- first run
async def test_empty_folder_welcome_this_machine_with_both_stacks(tmp_path, new_app):
    site_dir = tmp_path / "site"
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        assert "no abri site" in text_of(app, "#welcome-lead")
        await pilot.press("enter")  # "This machine" is highlighted
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        assert app.screen.query_one("#name", Input).value == "home"
        assert app.screen.query_one("#kind", Select).value == "local"
        assert not app.screen.query_one("#address-row").display  # a local host has none
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, StackPicker)  # straight on to the catalog
        await pick(pilot, "homeassistant", open_picker=False)
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)  # it needs mqtt: offer Mosquitto
        assert "Mosquitto" in str(app.screen.query_one(".dialog-text", Static).render())
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, StackSettingsScreen)
        assert not site_dir.exists()  # nothing written before save
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        assert app.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not app.dirty
    hosts = inventory.parse(site_dir / "inventory.ini")
    assert list(hosts) == ["home"] and hosts["home"].kind == "local"
    data = host_vars(site_dir)
    assert data["abri_host_kind"] == "local"
    assert list(data["abri_stacks"]) == ["mosquitto", "homeassistant"]  # deploy order
    assert data["abri_stacks"]["homeassistant"]["port"] == 8123
    assert (site_dir / "host_vars" / "home" / "vault.yml").read_text().startswith("$ANSIBLE_VAULT")
    assert (site_dir / "site.yml").is_file() and (site_dir / "ansible.cfg").is_file()


async def test_empty_site_shows_welcome_and_another_machine(tmp_path, new_app):
    site_dir = tmp_path / "site"
    from tui.core.site import Site
    Site.init(site_dir).save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        assert "no hosts yet" in text_of(app, "#welcome-lead")
        await pilot.press("o")
        await pilot.pause()
        assert app.screen.query_one("#kind", Select).value == "ssh"
        assert app.screen.query_one("#address-row").display


# ---------------------------------------------------------------- host editor
async def test_host_editor_validates_as_typed_and_writes_ssh_host(tmp_path, new_app, ssh_key):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, OverviewScreen)
        await pilot.press("a")
        await pilot.pause()
        editor = app.screen
        assert editor.query_one("#kind", Select).value == "ssh"  # the site has a local host

        checks = {"#name": ("-pi", validate.host_name), "#address": ("300.1.1.1", None),
                  "#port": ("70000", validate.port), "#user": ("Root", validate.ssh_user),
                  "#key": (str(tmp_path / "missing"), validate.key_path)}
        for selector, (bad, fn) in checks.items():
            await type_into(pilot, selector, bad)
            error = text_of(app, f"{selector}-error")
            assert error, f"no message next to {selector}"
            if fn is not None:
                with pytest.raises(ValueError) as exc:
                    fn(bad)
                assert error == str(exc.value)
            assert editor.query_one(f"{selector}-row").has_class("-invalid")
        await type_into(pilot, "#name", "home")
        assert "already in this site" in text_of(app, "#name-error")

        # fix everything but leave the address empty: the engine says it is required
        await type_into(pilot, "#name", "pi")
        await type_into(pilot, "#address", "")
        await type_into(pilot, "#port", "2222")
        await type_into(pilot, "#user", "pi")
        await type_into(pilot, "#key", str(ssh_key))
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        assert "is required for" in text_of(app, "#address-error")  # the engine's words
        assert "ssh host" in text_of(app, "#address-error")
        assert not text_of(app, "#port-error") and not text_of(app, "#key-error")
        assert "pi" not in app.site.hosts

        await type_into(pilot, "#address", "192.168.1.20")
        assert not text_of(app, "#address-error")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        table = app.screen.query_one("#hosts", DataTable)
        assert table.row_count == 2
        assert not (site_dir / "host_vars" / "pi").exists()  # not before save
        await pilot.press("ctrl+s")
        await pilot.pause()
    hosts = inventory.parse(site_dir / "inventory.ini")
    pi = hosts["pi"]
    assert (pi.kind, pi.address, pi.port, pi.user, pi.key) == (
        "ssh", "192.168.1.20", 2222, "pi", str(ssh_key))
    assert host_vars(site_dir, "pi")["abri_address"] == "192.168.1.20"


async def test_edit_host_keeps_its_stacks(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=())
    site.add_host("pi", "ssh", "10.0.0.5")
    site.add_stack("pi", "mosquitto")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("down", "e")
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        assert app.screen.query_one("#name", Input).disabled
        await type_into(pilot, "#address", "10.0.0.6")
        await pilot.press("enter", "ctrl+s")
        await pilot.pause()
    assert inventory.parse(site_dir / "inventory.ini")["pi"].address == "10.0.0.6"
    assert list(host_vars(site_dir, "pi")["abri_stacks"]) == ["mosquitto"]


async def test_test_connection_shows_the_ping_result(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("a")
        await pilot.pause()
        await type_into(pilot, "#name", "pi")
        await type_into(pilot, "#address", "192.0.2.7")
        await pilot.press("ctrl+t")
        await settle(pilot)
        ping = app.screen.query_one("#ping", Static)
        assert ping.has_class("-failed")
        assert "Connection refused" in str(ping.render())
        assert "pi" not in app.site.hosts  # testing adds nothing
        await pilot.press("escape")
        await pilot.press("e")  # the local host
        await pilot.pause()
        await pilot.press("ctrl+t")
        await settle(pilot)
        ping = app.screen.query_one("#ping", Static)
        assert ping.has_class("-ok") and "pong" in str(ping.render())


# ---------------------------------------------------------------- stacks
async def test_port_collision_is_flagged_on_the_field_before_saving(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=("mosquitto",))
    before = (site_dir / "host_vars" / "home" / "abri.yml").read_text()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "homeassistant")  # mqtt is provided: no question
        await pilot.pause()
        form = app.screen
        assert isinstance(form, StackSettingsScreen)
        await type_into(pilot, "#set-port", "1883")
        assert "already used by mosquitto" in text_of(app, "#error-port")
        assert form.query_one("#row-port").has_class("-invalid")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.screen is form  # refused
        assert "homeassistant" not in app.site.hosts["home"].stacks
        await type_into(pilot, "#set-country", "germany")
        assert "'germany' is not" in text_of(app, "#error-country")  # the engine's words
        await type_into(pilot, "#set-country", "AT")
        await type_into(pilot, "#set-port", "8124")
        assert not text_of(app, "#error-port")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        assert (site_dir / "host_vars" / "home" / "abri.yml").read_text() == before
        await pilot.press("ctrl+s")
        await pilot.pause()
    ha = host_vars(site_dir)["abri_stacks"]["homeassistant"]
    assert (ha["port"], ha["country"]) == (8124, "AT")


async def test_secrets_are_masked_with_a_reveal_toggle(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=("mosquitto",))
    secret = site.secrets["home"]["mosquitto"]["admin_password"]
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("tab", "enter")  # the stacks table: open mosquitto's settings
        await pilot.pause()
        field = app.screen.query_one("#set-admin_password", Input)
        assert field.password and field.value == secret
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not field.password
        await type_into(pilot, "#set-admin_password", "short")
        assert "at least 12 characters" in text_of(app, "#error-admin_password")
        assert "short" not in text_of(app, "#error-admin_password")  # never echoed
        await type_into(pilot, "#set-admin_password", "a-much-longer-secret-1")
        await pilot.press("ctrl+o", "ctrl+s")
        await pilot.pause()
    from tui.core.site import Site
    assert Site.load(site_dir).secrets["home"]["mosquitto"]["admin_password"] == \
        "a-much-longer-secret-1"
    assert "a-much-longer-secret-1" not in (site_dir / "host_vars/home/vault.yml").read_text()


async def test_declining_the_dependency_is_refused_by_the_engine(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "homeassistant")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert "needs mqtt" in text_of(app, "#stack-problems")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, StackSettingsScreen)
        assert not app.site.hosts["home"].stacks


async def test_remove_stack_and_host(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir)
    site.add_host("pi", "ssh", "10.0.0.5")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("tab", "x", "y")  # mosquitto, still needed by homeassistant
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)
        assert "needs mqtt" in str(app.screen.query_one("#error-problems", Static).render())
        await pilot.press("escape", "down", "x", "y")  # homeassistant
        await pilot.pause()
        assert list(app.site.hosts["home"].stacks) == ["mosquitto"]
        await pilot.press("shift+tab", "down", "d", "y")  # the host pi
        await pilot.pause()
        assert list(app.site.hosts) == ["home"]
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert list(host_vars(site_dir)["abri_stacks"]) == ["mosquitto"]
    assert list(inventory.parse(site_dir / "inventory.ini")) == ["home"]
    assert not (site_dir / "host_vars" / "pi" / "abri.yml").exists()


# ---------------------------------------------------------------- leaving, broken sites
async def test_quit_with_unsaved_changes_asks_first(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    before = (site_dir / "inventory.ini").read_text()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "mosquitto")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.dirty
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen) and app.is_running
        await pilot.press("q", "d")  # discard
        await pilot.pause()
    assert (site_dir / "inventory.ini").read_text() == before
    assert "abri_stacks: {}" in (site_dir / "host_vars/home/abri.yml").read_text()

    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "mosquitto")
        await pilot.press("ctrl+o", "q", "s")  # save and quit
        await pilot.pause()
    assert list(host_vars(site_dir)["abri_stacks"]) == ["mosquitto"]
    assert app.return_code == 0


@pytest.mark.parametrize("breakage, expected", [
    (("host_vars/home/abri.yml", "abri_stacks: [unclosed\n"),
     ["host_vars/home/abri.yml", "is not valid YAML at line"]),
    (("host_vars/home/abri.yml", "abri_stacks:\n  nosuch: {}\n"),
     ["host 'home', stack 'nosuch'", "'nosuch' is not in the catalog"]),
])
async def test_broken_site_explains_what_and_where(tmp_path, new_app, breakage, expected):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=("mosquitto",))
    good = (site_dir / breakage[0]).read_text()
    (site_dir / breakage[0]).write_text(breakage[1])
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, BrokenSiteScreen)
        text = text_of(app, "#broken-list")
        for part in expected:
            assert part in text
        (site_dir / breakage[0]).write_text(good)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)


# ---------------------------------------------------------------- review and plan
async def test_review_shows_files_and_plan_lists_changes(tmp_path, new_app, runner):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        texts = app.screen.texts
        assert texts["inventory.ini"][0] == (site_dir / "inventory.ini").read_text()
        assert "home ansible_connection=local" in texts["inventory.ini"][0]
        assert texts["site.yml"][0] == (site_dir / "site.yml").read_text()
        assert "mosquitto:" in texts["host_vars"][0]
        shown = app.screen.query_one("#tab-inventory-text", Static).visual
        assert "[abri_local]" in str(getattr(shown, "_renderable", shown).code)
        await pilot.press("p")
        await settle(pilot)
        assert runner.calls == [("plan", site_dir, ["home"])]
        changes = text_of(app, "#plan-changes")
        assert "home: 1 task(s) would change" in changes
        assert "~ Write the compose file" in changes
        assert "apply would change 1 task(s)" in text_of(app, "#plan-status")
        assert app.screen.query_one("#plan-bar", ProgressBar).percentage == 1.0
        await pilot.press("escape")
        await pilot.pause()
        assert "plan: 1 to change" in str(app.screen.query_one("#hosts", DataTable)
                                          .get_row("home")[-1])


# ---------------------------------------------------------------- runs
async def test_apply_with_a_failed_task_shows_its_message_and_recap(tmp_path, runner, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    runner.by_mode["apply"] = "apply-failed.json"
    percents: list[float] = []

    def hook(message):
        if isinstance(message, RunProgress):
            percents.append(message.progress.percent)

    app = new_app(site_dir)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await opened(pilot)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.has_class("-failed")
        assert not screen.has_class("-running")
        row = screen.query_one("#run-hosts", DataTable).get_row("home")
        assert [str(c) for c in row[:2]] == ["home", "failed"]
        assert [str(c) for c in row[3:]] == ["1", "1", "1", "0", "0"]
        log = "\n".join(line.text for line in screen.query_one("#run-log", RichLog).lines)
        assert "TASK Wait for the broker to answer" in log
        assert "TASK Write the compose file\n  ~ home: changed" in log
        flat = " ".join(log.split())  # the log wraps long lines
        assert "home: Wait for the broker to answer: Timeout when waiting for 127.0.0.1:1" in flat
        assert "Traceback" not in log
        recap = text_of(app, "#run-recap")
        assert "ok=2 changed=1 failed=1 unreachable=0" in recap
        assert "1 task(s) failed" in text_of(app, "#run-task")
        assert screen.query_one("#run-bar", ProgressBar).percentage == 1.0
        await pilot.press("escape")
        await pilot.pause()
        assert "apply failed" in str(app.screen.query_one("#hosts", DataTable).get_row("home")[-1])
    assert percents == sorted(percents) and percents  # never backwards


async def test_cancel_stops_the_run_cleanly(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    runner = RecordedRunner(pause_after=4)
    from tests.tui.conftest import fake_pinger, fake_verifier
    from tui.app.app import make_app
    app = make_app(site_dir, runner=runner, verifier=fake_verifier, pinger=fake_pinger,
                   blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("g", "y")
        await pilot.pause()
        assert runner.paused.wait(5)
        await pilot.pause()
        screen = app.screen
        assert screen.has_class("-running")
        await pilot.press("escape")  # refuses to leave a running run
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("c")
        await settle(pilot)
        assert screen.has_class("-canceled") and not screen.has_class("-running")
        assert "canceled" in text_of(app, "#run-task")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)


async def test_apply_ok_then_verify_report_per_check(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("g", "y")
        await settle(pilot)
        assert app.screen.has_class("-ok")
        assert "every host is deployed" in text_of(app, "#run-task")
        await pilot.press("v")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.mode == "verify"
        table = screen.query_one("#run-hosts", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert ["home", "mqtt anonymous login refused", "ok",
                "connection refused: not authorised"] in rows
        assert ["home", "homeassistant API answers", "FAILED",
                "HTTP 502 from http://127.0.0.1:8123/api/"] in rows
        assert screen.has_class("-failed")
        assert "1 check(s) failed" in text_of(app, "#run-task")


async def test_a_failing_worker_becomes_a_modal_not_a_traceback(tmp_path):
    site_dir = tmp_path / "site"
    make_site(site_dir)

    def broken_runner(*args, **kwargs):
        raise AbriError(Problem("ansible", "", "ansible-playbook was not found on PATH"))

    def crashing_verifier(site, host):
        raise RuntimeError("socket exploded")

    from tui.app.app import make_app
    app = make_app(site_dir, runner=broken_runner, verifier=crashing_verifier, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("g", "y")
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        assert "ansible-playbook was not found" in text_of(app, "#error-problems")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.has_class("-failed")
        await pilot.press("escape", "v")
        await settle(pilot)
        assert isinstance(app.screen, ErrorScreen)
        assert "internal error: RuntimeError: socket exploded" in text_of(app, "#error-problems")
        assert app.is_running


async def test_progress_messages_collapse():
    from tui.core.events import Progress
    a, b = RunProgress(Progress(percent=1)), RunProgress(Progress(percent=2))
    assert b.can_replace(a)


async def test_theme_toggle_and_command_palette(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir)
    site.add_host("pi", "ssh", "10.0.0.5")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert app.current_theme.dark
        await pilot.press("f2")
        assert not app.current_theme.dark
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Save the site", "Quit", "Add a host", "Edit host home", "Remove host home",
                "Add a stack to home", "Settings of mosquitto on home",
                "Remove stack mosquitto from home", "Review the files and plan",
                "Apply the site", "Verify the services"} <= titles
        # the palette acts on the selection: pi, then its removal
        await pilot.press("down", "ctrl+p")
        await pilot.pause()
        await pilot.press(*"remove host pi")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, ConfirmScreen)
        assert "Remove pi from the site?" in text_of(app, ".dialog-text")


async def test_no_site_in_a_folder_with_a_foreign_inventory(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "inventory.ini").write_text("[web]\nexample.org\n")
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)
        assert "was not made by abri" in text_of(app, "#error-problems")
    assert (site_dir / "inventory.ini").read_text() == "[web]\nexample.org\n"


# ---------------------------------------------------------------- what a new user hit (issue 9)
def kit_with_bracket_help(tmp_path, monkeypatch) -> str:
    """The real catalog, but Home Assistant's `name` help holds square brackets."""
    import shutil
    from pathlib import Path

    kit = tmp_path / "kit"
    shutil.copytree(Path(__file__).resolve().parents[2] / "stacks", kit / "stacks")
    manifest = kit / "stacks" / "homeassistant" / "stack.yml"
    data = yaml.safe_load(manifest.read_text())
    help_text = "Name of the home [shown in the interface], e.g. [Home]"
    for setting in data["settings"]:
        if setting["key"] == "name":
            setting["help"] = help_text
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("ABRI_KIT_DIR", str(kit))
    return help_text


async def test_messages_with_square_brackets_are_shown_whole(tmp_path, monkeypatch):
    from tests.tui.conftest import Check
    from tui.app.app import make_app

    help_text = kit_with_bracket_help(tmp_path, monkeypatch)
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=("mosquitto",))

    def pinger(site, name):
        return False, "[sudo] password is required for [pi]"

    def verifier(site, host):
        return [Check("[mosquitto] answers", False, "refused: not authorised [code 5]")]

    app = make_app(site_dir, runner=RecordedRunner(), verifier=verifier, pinger=pinger,
                   blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        # a manifest's help, and the engine's message echoing what was typed
        await pick(pilot, "homeassistant")
        await pilot.pause()
        assert isinstance(app.screen, StackSettingsScreen)
        assert text_of(app, "#row-name .field-help") == help_text
        typed = "[Berlin]"
        await type_into(pilot, "#set-time_zone", typed)
        with pytest.raises(ValueError) as exc:
            app.site.catalog["homeassistant"].setting("time_zone").convert(typed)
        assert typed in str(exc.value)
        assert text_of(app, "#error-time_zone") == str(exc.value)
        await pilot.press("escape", "a")
        await pilot.pause()
        # the host editor's validators
        await type_into(pilot, "#name", "[pi]")
        with pytest.raises(ValueError) as exc:
            validate.host_name("[pi]")
        assert text_of(app, "#name-error") == str(exc.value)
        assert "'[pi]'" in text_of(app, "#name-error")
        # what a connection test answered
        await type_into(pilot, "#name", "pi")
        await type_into(pilot, "#address", "192.0.2.7")
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert "[sudo] password is required for [pi]" in text_of(app, "#ping")
        await pilot.press("escape", "v")
        await settle(pilot)
        # a check's name and detail, in the table and the log
        table = app.screen.query_one("#run-hosts", DataTable)
        assert [str(c) for c in table.get_row_at(0)] == [
            "home", "[mosquitto] answers", "FAILED", "refused: not authorised [code 5]"]
        log = " ".join(line.text for line in app.screen.query_one("#run-log", RichLog).lines)
        assert "[mosquitto] answers: refused: not authorised [code 5]" in " ".join(log.split())


def footer_keys(app) -> list[tuple[str, str]]:
    """The keys the footer shows, as (key, description); each must be there whole, before
    the command palette's key on the right, within the screen's width."""
    from tui.app.widgets import KeyBar

    bar = app.screen.query_one(KeyBar)
    line = bar.render().plain
    assert len(line) <= SIZE[0], f"the footer is {len(line)} columns wide"
    assert line.rstrip().endswith("▏^p palette"), f"no command palette key in {line!r}"
    shown = bar.shown()
    for binding, _ in shown:
        item = f"{app.get_key_display(binding)} {binding.description}"
        assert item in line and line.index(item) + len(item) < line.index("▏"), \
            f"'{item}' is not shown whole at {SIZE[0]} columns: {line!r}"
    return [(binding.key, binding.description) for binding, _ in shown]


async def test_the_footer_fits_80_columns_and_follows_the_focused_panel(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert app.screen.focused.id == "hosts"
        keys = dict(footer_keys(app))
        assert {"a", "e", "d", "r", "g", "v", "q", "ctrl+s"} <= set(keys)
        assert "x" not in keys  # a stack key: shown in the stacks panel
        await pilot.press("tab")
        await pilot.pause()
        assert app.screen.focused.id == "stacks"
        keys = dict(footer_keys(app))
        assert {"s", "enter", "x", "r", "g", "v", "q", "ctrl+s"} <= set(keys)
        assert keys["enter"] == "Settings"
        for screen_keys in (["s", "down", "enter"], ["escape", "escape", "a"]):
            await pilot.press(*screen_keys)  # the settings form, the host editor
            await pilot.pause()
            assert footer_keys(app)


def cells_fit(table: DataTable) -> None:
    """Every column fits the table's width: nothing is cut off on the right."""
    used = sum(column.get_render_width(table) for column in table.columns.values())
    assert used <= table.scrollable_content_region.width, \
        f"{used} columns of cells in {table.scrollable_content_region.width}"


async def test_stack_settings_and_verify_details_wrap_at_80_columns(tmp_path, new_app):
    from tui.app.screens.overview import settings_summary

    site_dir = tmp_path / "site"
    make_site(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        table = app.screen.query_one("#stacks", DataTable)
        cells_fit(table)
        ha = app.site.hosts["home"].stacks["homeassistant"]
        cell = table.get_row("homeassistant")[-1]
        assert str(cell) == settings_summary(ha)  # all of it, wrapped over lines
        assert table.rows["homeassistant"].height > 1
        assert "tls=false" in str(table.get_row("mosquitto")[-1])  # as typed, not False
        await pilot.press("v")
        await settle(pilot)
        table = app.screen.query_one("#run-hosts", DataTable)
        cells_fit(table)
        details = [str(table.get_row_at(i)[-1]) for i in range(table.row_count)]
        assert "HTTP 502 from http://127.0.0.1:8123/api/" in details
        assert max(row.height for row in table.rows.values()) > 1


async def test_a_local_host_has_no_ssh_fields_and_the_fixed_name_is_explained(tmp_path,
                                                                             new_app):
    site_dir = tmp_path / "site"
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("l")
        await pilot.pause()
        editor = app.screen
        for field in ("address", "port", "user", "key"):
            assert not editor.query_one(f"#{field}-row").display, f"{field} shown for local"
        editor.query_one("#kind", Select).value = "ssh"
        await pilot.pause()
        assert editor.query_one("#user-row").display
        await type_into(pilot, "#user", "pi")
        editor.query_one("#kind", Select).value = "local"
        await pilot.pause()
        assert not editor.query_one("#user-row").display
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.site.hosts["home"].user is None  # typed while ssh, not written for local
        await pilot.press("escape", "ctrl+s", "e")
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        assert app.screen.query_one("#name", Input).disabled
        note = text_of(app, "#name-help")
        assert "host_vars/home/" in note
        assert "To rename, add a new host and move the stacks." in note
    assert inventory.parse(site_dir / "inventory.ini")["home"].user is None


async def test_the_apply_confirmation_focuses_cancel(tmp_path, runner, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.focused.id == "no"
        await pilot.press("enter")  # by habit: nothing is deployed
        await settle(pilot)
        assert isinstance(app.screen, OverviewScreen)
    assert runner.calls == []


async def test_the_welcome_marks_nothing_unsaved_and_quitting_focuses_stay(tmp_path, new_app):
    site_dir = tmp_path / "site"
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen)
        assert not app.dirty and "unsaved" not in app.sub_title
        keys = dict(footer_keys(app))
        assert "ctrl+s" not in keys  # nothing to save
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running  # left at once: there was nothing to ask about
    assert not site_dir.exists()

    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "mosquitto")
        await pilot.press("ctrl+o", "q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen)
        assert app.screen.focused.id == "stay"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen) and app.dirty


async def test_removing_a_host_says_its_secrets_are_kept(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=())
    site.add_host("pi", "ssh", "10.0.0.5")
    site.add_stack("pi", "mosquitto")
    site.save()
    vault_file = site_dir / "host_vars" / "pi" / "vault.yml"
    before = vault_file.read_text()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("down", "d")
        await pilot.pause()
        question = " ".join(text_of(app, ".dialog-text").split())
        assert "secrets stay in host_vars/pi/vault.yml" in question
        assert "adding it back later keeps the same passwords" in question
        assert "'abri secrets purge pi' forgets them" in question
        assert "dropped" not in question
        assert app.screen.focused.id == "no"  # Keep
        await pilot.press("y", "ctrl+s")
        await pilot.pause()
    assert vault_file.read_text() == before
    assert not (site_dir / "host_vars" / "pi" / "abri.yml").exists()


async def test_a_file_is_refused_as_a_site_folder(tmp_path, new_app):
    site_file = tmp_path / "notes.txt"
    site_file.write_text("mine\n")
    app = new_app(site_file)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        lead = " ".join(text_of(app, "#welcome-lead").split())
        assert f"{site_file} is a file, not a folder" in lead
        assert not app.screen.query("#welcome-choices")  # nothing offered
        await pilot.press("l", "o", "enter")
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen) and app.site is None
    assert site_file.read_text() == "mine\n"


async def test_a_folder_with_files_says_what_is_there_and_keeps_them(tmp_path, new_app):
    site_dir = tmp_path / "site"
    (site_dir / "photos").mkdir(parents=True)
    (site_dir / "notes.txt").write_text("mine\n")
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        lead = " ".join(text_of(app, "#welcome-lead").split())
        assert "already holds 2 items (notes.txt and photos/)" in lead
        assert "never overwrites a file it did not write" in lead
        for key in ("l", "enter", "escape", "ctrl+s"):  # this machine, no stack, save
            await pilot.press(key)
            await pilot.pause()
        assert not app.dirty
    assert (site_dir / "notes.txt").read_text() == "mine\n"
    assert list(inventory.parse(site_dir / "inventory.ini")) == ["home"]

    other = tmp_path / "other"
    other.mkdir()
    (other / "site.yml").write_text("# my own playbook\n")
    app = new_app(other)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert "site.yml" in text_of(app, "#welcome-lead")
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)  # refused before anything is written
        assert "site.yml" in text_of(app, "#error-problems")
    assert (other / "site.yml").read_text() == "# my own playbook\n"
    assert sorted(p.name for p in other.iterdir()) == ["site.yml"]


async def test_time_zones_complete_from_the_iana_database():
    from textual.app import App

    from tui.app.screens.stacks import setting_widget
    from tui.core.catalog import Setting

    zone = Setting("time_zone", "timezone", "IANA time zone", default="Europe/Berlin")

    class Form(App):
        def compose(self):
            yield setting_widget(zone, "", "tz")

    app = Form()
    async with app.run_test(size=SIZE) as pilot:
        field = app.query_one("#tz", Input)
        field.focus()
        await pilot.press(*"Europe/Lis")
        await pilot.pause(0.2)
        await pilot.press("right")  # accepts the suggestion
        await pilot.pause()
        assert field.value == "Europe/Lisbon"
        assert "completes as you type" in field.placeholder


async def test_the_real_forms_complete_time_zone_and_country(tmp_path, new_app):
    from tui.core.catalog import Catalog

    typed = {s.type for s in Catalog.load()["homeassistant"].settings}
    if "timezone" not in typed:
        pytest.skip("the catalog has no setting of type timezone yet")
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=("mosquitto",))
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pick(pilot, "homeassistant")
        await pilot.pause()
        form = app.screen
        zone = next(s for s in form.stack.settings if s.type == "timezone")
        assert form.query_one(f"#set-{zone.key}", Input).suggester is not None
        country = [s for s in form.stack.settings if s.type == "country"]
        from tui.app.screens.stacks import country_codes
        if country and country_codes():
            assert form.query_one(f"#set-{country[0].key}", Input).suggester is not None


def sudo_site(tmp_path, runner):
    """A site whose first apply replays a real run where sudo wanted a password."""
    site_dir = tmp_path / "site"
    make_site(site_dir)
    runner.by_mode["apply"] = "apply-sudo.json"
    return site_dir


async def apply_until_the_sudo_question(pilot) -> None:
    await opened(pilot)
    await pilot.press("g", "y")
    await settle(pilot)
    assert isinstance(pilot.app.screen, PasswordScreen)


async def test_sudo_that_asks_for_a_password_is_asked_for_and_never_stored(
        tmp_path, runner, new_app):
    """A real run's events where sudo on the host wanted a password (recorded from the
    fleet's test_become): the TUI asks for it, hidden, runs the apply again with it, and the
    password never reaches the site."""
    site_dir = sudo_site(tmp_path, runner)
    runner.then["apply"] = ["apply-ok.json"]
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await apply_until_the_sudo_question(pilot)
        field = app.screen.query_one("#password", Input)
        assert field.password  # typed hidden
        await pilot.press(*"s3cret-sudo", "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.has_class("-ok"), screen
        assert runner.become_passwords == [None, "s3cret-sudo"]
        await pilot.press("escape")
        await pilot.pause()
    stored = [os.path.join(d, f) for d, _dirs, files in os.walk(site_dir) for f in files
              if b"s3cret-sudo" in Path(d, f).read_bytes()]
    assert not stored


async def test_escape_on_the_sudo_question_runs_nothing_more(tmp_path, runner, new_app):
    site_dir = sudo_site(tmp_path, runner)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await apply_until_the_sudo_question(pilot)
        await pilot.press("escape")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, RunScreen) and screen.has_class("-failed")
        log = " ".join(" ".join(line.text for line in
                                screen.query_one("#run-log", RichLog).lines).split())
        assert "sudo on the host asks for a password" in log
        assert runner.become_passwords == [None]


# ---------------------------------------------------------------- backups
async def test_backups_screen_lists_backs_up_and_restores(tmp_path, new_app, runner):
    """b on the overview: the snapshots per host and stack from a recorded `abri backups`
    run of a fleet host; b backs up the selected host, r restores the selected snapshot's
    backup run after a confirmation; the list is read again after each run."""
    from tui.app.screens.backups import BackupsScreen
    from tui.core import backup

    site_dir = tmp_path / "site"
    backup.ensure_passwords(make_site(site_dir, host="h1"), ["h1"])
    runner.by_mode.update({"backup:snapshots": "backups.json", "backup": "backup-ok.json",
                           "restore": "restore-ok.json"})
    app = new_app(site_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert isinstance(app.screen, BackupsScreen)
        assert runner.runs == [("backup:snapshots", "h1", {"abri_backup_action": "snapshots"})]
        table = app.screen.query_one("#backups-table", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        assert sorted(str(r[1]) for r in rows) == ["homeassistant", "homeassistant",
                                                   "mosquitto", "mosquitto"], rows
        assert {str(r[0]) for r in rows} == {"h1"} and {str(r[6]) for r in rows} == {"backup"}
        assert "4 snapshot(s)" in text_of(app, "#backups-status")

        await pilot.press("b")
        await settle(pilot)
        await settle(pilot)
        assert runner.runs[1] == ("backup", "h1", None)
        assert runner.runs[2][0] == "backup:snapshots"  # read again after the backup
        assert isinstance(app.screen, BackupsScreen)

        first = app.screen.selected()
        assert first is not None and first["host"] == "h1"
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert first["short_id"] in str(app.screen.query_one(".dialog-text", Static).render())
        await pilot.press("y")
        await settle(pilot)
        await settle(pilot)
        assert runner.runs[3] == ("restore", "h1", {"abri_backup_snapshot": first["id"]})
        assert runner.runs[4][0] == "backup:snapshots"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)


async def test_upgrade_screen_shows_releases_and_refuses_a_stack_that_does_not_answer(
        tmp_path, new_app, runner):
    """The stacks panel shows each stack's release; u opens the upgrades: per host and stack
    the release it runs and the newest known (no registry mirror: the kit's catalog). An
    upgrade of a Home Assistant that does not answer (nothing listens here) is refused
    before anything runs: no playbook, the pin kept, nothing recorded."""
    from tui.app.screens.upgrade import UpgradeScreen
    from tui.core import upgrade

    site_dir = tmp_path / "site"
    site = make_site(site_dir)
    kit = site.catalog["homeassistant"].image["tag"]
    old = site.image_pins["homeassistant"].replace(f":{kit}", ":2026.2.3")
    site.image_pins["homeassistant"] = old
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=(100, 30)) as pilot:
        await opened(pilot)
        stacks = app.screen.query_one("#stacks", DataTable)
        releases = {str(stacks.get_row_at(i)[0]): str(stacks.get_row_at(i)[1])
                    for i in range(stacks.row_count)}
        assert releases["homeassistant"] == "2026.2.3", releases
        await pilot.press("u")
        await settle(pilot)
        await settle(pilot)
        assert isinstance(app.screen, UpgradeScreen)
        table = app.screen.query_one("#upgrade-table", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [["home", "homeassistant", "2026.2.3", kit, "kit"]], rows
        assert "1 upgrade(s) known" in text_of(app, "#upgrade-status")
        log = app.screen.query_one("#upgrade-log", RichLog)
        assert any("No registry mirror is set" in line.text for line in log.lines)

        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        for _ in range(20):
            await settle(pilot)
            if not app.screen.busy:
                break
        assert isinstance(app.screen, UpgradeScreen)
        said = " ".join(" ".join(line.text for line in app.screen.query_one(
            "#upgrade-log", RichLog).lines).split())  # the log wraps its lines
        assert "does not answer as it should before the upgrade" in said, said
        assert "nothing was changed" in said
    assert runner.runs == []
    assert not upgrade.record_path(site).exists()
    assert yaml.safe_load((site_dir / "group_vars/all/abri.yml").read_text())[
        "abri_images"]["homeassistant"] == old


async def test_backups_screen_shows_proven_restores_and_runs_a_trial(tmp_path, new_app,
                                                                      runner):
    """The snapshot a trial restore proved carries the date in the Proven column; t runs a
    trial restore of the selected host (the backup playbook's trial action) and reads the
    list again; a run that tried no stack is reported as failed and changes no record."""
    from tui.app.screens.backups import BackupsScreen
    from tui.core import backup

    site_dir = tmp_path / "site"
    site = make_site(site_dir, host="h1")
    backup.ensure_passwords(site, ["h1"])
    runner.by_mode.update({"backup:snapshots": "backups.json", "backup:trial": "backup-ok.json"})
    listed = backup.snapshot_rows(runner(site, "backup", limit="h1",
                                         extra_vars={"abri_backup_action": "snapshots"}))
    proved = next(r for r in listed if r["stack"] == "homeassistant")
    backup.record_trials(site, [{"host": "h1", "stack": "homeassistant", "ok": True,
                                 "id": proved["id"], "short_id": proved["short_id"],
                                 "time": proved["time"], "seconds": 12.0, "checks": []}])
    record = backup.proven(site)
    runner.runs.clear()
    app = new_app(site_dir)
    async with app.run_test(size=(110, 30)) as pilot:
        await opened(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert isinstance(app.screen, BackupsScreen)
        table = app.screen.query_one("#backups-table", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        shown = {r[3]: r[7] for r in rows}
        when = record["h1"]["homeassistant"]["time"][:16].replace("T", " ")
        assert shown[proved["short_id"]] == when, rows
        assert sum(1 for r in rows if r[7]) == 1, rows  # only the proven snapshot

        await pilot.press("t")
        await settle(pilot)
        await settle(pilot)
        assert ("backup:trial", "h1", {"abri_backup_action": "trial"}) in runner.runs
        assert runner.runs[-1][0] == "backup:snapshots"  # read again after the trial
        assert isinstance(app.screen, BackupsScreen)
    assert backup.proven(site) == record


async def test_apply_that_hardened_a_host_keeps_its_admin_user(tmp_path):
    """The run works on a copy of the site and writes the admin user into inventory.ini once
    sshd refuses root (tui.core.runner.switch_to_admin): the installer takes it over, so a
    later save does not write root back."""
    from tests.tui.conftest import fake_pinger, fake_verifier
    from tui.app.app import make_app
    from tui.core.site import Site

    site_dir = tmp_path / "site"
    site = make_site(site_dir)
    site.add_host("v1", "vps", "203.0.113.1", user="root")
    site.save()
    recorded = RecordedRunner()

    def runner(copy: Site, mode: str = "apply", **kwargs):
        copy.hosts["v1"].user = "abri"  # as switch_to_admin does after the sshd step
        copy.save()
        return recorded(copy, mode, **kwargs)

    app = make_app(site_dir, runner=runner, verifier=fake_verifier, pinger=fake_pinger,
                   blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("g", "y")
        await settle(pilot)
        assert app.site.hosts["v1"].user == "abri"
        app.site.save()  # what any later edit in the installer does
    assert "v1 ansible_host=203.0.113.1 ansible_user=abri" in \
        (site_dir / "inventory.ini").read_text()
