"""The import screen ('i' on the overview): a real backup written with securetar (the helpers
of tests/unit/test_ha_backup.py), checked as the fields are typed, refused next to the field
concerned, and imported through tui.core.ha_import.run with the recorded runner standing in
for Ansible (the import on a real host is tests/fleet/test_ha_import.py)."""

from __future__ import annotations

import base64
import json

import bcrypt
import yaml
from textual.widgets import Button, Checkbox, Input, RichLog, Static

from tests.tui.conftest import make_site, opened, until
from tests.unit.test_ha_backup import CONFIG, PASSWORD, make_backup
from tui.app.screens.dialogs import ConfirmScreen
from tui.app.screens.ha_import import ImportScreen
from tui.app.screens.overview import OverviewScreen
from tui.core.site import Site

OWNER_PASSWORD = "owner-pass-" + "7" * 4


def owned_config() -> dict[str, str]:
    """Home Assistant's configuration with an owner account (jan) and its bcrypt hash."""
    hashed = base64.b64encode(bcrypt.hashpw(OWNER_PASSWORD.encode(), bcrypt.gensalt(4)))
    return {**CONFIG,
            ".storage/auth": json.dumps({"data": {
                "users": [{"id": "u1", "is_owner": True, "name": "Jan"}],
                "credentials": [{"id": "c1", "user_id": "u1",
                                 "auth_provider_type": "homeassistant",
                                 "data": {"username": "jan"}}]}}),
            ".storage/auth_provider.homeassistant": json.dumps({"data": {"users": [
                {"username": "jan", "password": hashed.decode()}]}})}


def text(app, selector: str) -> str:
    return " ".join(str(app.screen.query_one(selector, Static).render()).split())


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


async def fill(pilot, selector: str, value: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.value = value  # an Input.Changed, as typing sends
    await settle(pilot)
    # the check's answer may still be queued on a busy machine
    await until(pilot, lambda: "Reading the backup" not in text(pilot.app, "#import-contents"))
    await pilot.pause()


async def open_import(pilot) -> ImportScreen:
    await opened(pilot)
    await pilot.press("i")
    await until(pilot, lambda: isinstance(pilot.app.screen, ImportScreen))
    await pilot.pause()
    return pilot.app.screen


async def test_the_import_screen_checks_the_backup_as_it_is_typed(tmp_path, new_app):
    """A missing file, a file that is not a tar and a protected backup without or with a
    wrong password are refused next to the field; the right password shows what the backup
    holds (the dry run's text); Import waits for the owner's password; the passwords are
    masked (reveal shows them) and never in the text on screen."""
    site_dir = tmp_path / "site"
    make_site(site_dir)
    backup = make_backup(tmp_path, version=2, files=owned_config(), meta={
        "addons": [{"slug": "core_samba", "name": "Samba share", "version": "12.3"}],
        "folders": ["share"]})
    not_tar = tmp_path / "photo.tar"
    not_tar.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000)
    app = new_app(site_dir)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_import(pilot)
        assert screen.query_one("#import-file", Input).has_focus
        assert not screen.query_one("#row-password").display

        await fill(pilot, "#import-file", str(tmp_path / "nope.tar"))
        assert "nope.tar does not exist" in text(app, "#error-file")
        assert screen.query_one("#row-file").has_class("-invalid")

        await fill(pilot, "#import-file", str(not_tar))
        assert "is not a tar archive" in text(app, "#error-file")

        await fill(pilot, "#import-file", str(backup))
        assert text(app, "#error-file") == ""
        assert screen.query_one("#row-password").display
        assert text(app, "#error-password") == ("is needed: the backup is protected "
                                                "(SecureTar v2); type its password")
        assert "Home Assistant 2026.2.3" in text(app, "#import-contents")
        assert screen.checked is None

        await fill(pilot, "#import-password", "not-the-password")
        assert text(app, "#error-password").startswith("is wrong:")
        assert screen.checked is None

        await fill(pilot, "#import-password", PASSWORD)
        assert text(app, "#error-password") == ""
        shown = text(app, "#import-contents")
        for part in ("Home Assistant 2026.2.3", "Database included",
                     "Encryption password-protected, SecureTar v2",
                     "add-on Samba share (core_samba): not imported",
                     "folder share: not imported; it stays in the backup"):
            assert part in shown, shown
        assert screen.checked is not None and screen.checked.stack == "homeassistant"
        assert screen.check_action("import_backup", ()) is None  # no owner password yet

        await fill(pilot, "#import-owner", OWNER_PASSWORD)
        assert screen.check_action("import_backup", ()) is True
        password = screen.query_one("#import-password", Input)
        owner = screen.query_one("#import-owner", Input)
        assert password.password and owner.password
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert screen.query_one("#reveal", Checkbox).value
        assert not password.password and not owner.password
        on_screen = " ".join(str(w.render()) for w in screen.query(Static))
        assert PASSWORD not in on_screen and OWNER_PASSWORD not in on_screen

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        assert password.value == "" and owner.value == ""  # not kept after the screen


async def test_a_newer_backup_is_refused_with_the_upgrade_offered(tmp_path, new_app):
    """A backup made by a newer Home Assistant than the host's: the refusal next to the
    file, and a button that opens the upgrade of that host's Home Assistant to exactly
    that release."""
    from textual.widgets import DataTable

    from tui.app.screens.upgrade import UpgradeScreen

    site_dir = tmp_path / "site"
    make_site(site_dir)
    backup = make_backup(tmp_path, version=None, ha_version="2099.1.0")
    app = new_app(site_dir)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_import(pilot)
        await fill(pilot, "#import-file", str(backup))
        error = text(app, "#error-file")
        assert "made by Home Assistant 2099.1.0" in error, error
        assert "abri upgrade homeassistant --limit home --to 2099.1.0" in error
        assert screen.checked is None
        button = screen.query_one("#import-upgrade", Button)
        assert button.display and "on home to 2099.1.0" in str(button.label)
        button.press()
        await until(pilot, lambda: isinstance(app.screen, UpgradeScreen))
        await settle(pilot)
        await settle(pilot)
        table = app.screen.query_one("#upgrade-table", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [r[:2] + r[3:4] for r in rows] == [["home", "homeassistant", "2099.1.0"]], rows


async def test_a_tar_that_is_not_a_backup_and_a_folder_are_refused(tmp_path, new_app):
    import tarfile

    site_dir = tmp_path / "site"
    make_site(site_dir)
    other = tmp_path / "notes.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(__file__, arcname="notes.txt")
    app = new_app(site_dir)
    async with app.run_test(size=(100, 40)) as pilot:
        await open_import(pilot)
        await fill(pilot, "#import-file", str(other))
        assert "backup.json: is missing: this is not a Home Assistant backup" in text(
            app, "#error-file")
        await fill(pilot, "#import-file", str(tmp_path))
        assert "is a folder, not a backup file" in text(app, "#error-file")


async def test_import_runs_the_engine_and_refuses_a_wrong_owner_password(tmp_path, new_app,
                                                                         runner):
    """Import asks first, then runs tui.core.ha_import.run: a wrong owner password is
    refused next to its field before any playbook runs; the right one runs, in order, the
    apply, the safety snapshot of Home Assistant's data, the import playbook with the
    prepared configuration and the last apply, then the checks; the site learns the owner
    (name in host_vars, password in the vault only). Progress and steps show in the log."""
    site_dir = tmp_path / "site"
    make_site(site_dir)
    backup = make_backup(tmp_path, version=3, files=owned_config())
    runner.by_mode.update({"backup": "backup-ok.json", "import": "apply-ok.json"})
    app = new_app(site_dir)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_import(pilot)
        await fill(pilot, "#import-file", str(backup))
        await fill(pilot, "#import-password", PASSWORD)
        assert screen.checked is not None
        await fill(pilot, "#import-owner", "not-the-owners")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "Import backup.tar into home?" in str(
            app.screen.query_one(".dialog-text", Static).render())
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen)
        for _ in range(50):
            await settle(pilot)
            if not screen.busy:
                break
        assert text(app, "#error-owner") == ("is not the password of the backup's owner "
                                             "jan; give the one you log in to that Home "
                                             "Assistant with")
        assert runner.runs == []  # refused before anything ran

        await fill(pilot, "#import-owner", OWNER_PASSWORD)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen)
        for _ in range(200):
            await settle(pilot)
            if not screen.busy:
                break
        assert not screen.busy
        modes = [(mode, limit) for mode, limit, _ in runner.runs]
        assert modes == [("apply", "home"), ("backup", "home"), ("import", "home"),
                         ("apply", "home")], runner.runs
        assert runner.runs[1][2] == {"abri_backup_only": ["homeassistant"],
                                     "abri_backup_kind": "upgrade",
                                     "abri_backup_keep_stopped": True}
        extra = runner.runs[2][2]
        assert (extra["abri_import_stack"], extra["abri_import_folder"]) == (
            "homeassistant", "config")
        assert extra["abri_import_archive"].endswith("config.tar.gz")
        log = " ".join(line.text for line in screen.query_one("#import-log", RichLog).lines)
        for part in ("[1/5] Unpacking backup.tar", "[3/5] Safety snapshot of homeassistant",
                     "configuration.yaml: default_config: commented out",
                     "owner account kept: jan", "[5/5] Applying home",
                     "FAILED  homeassistant API answers"):
            assert part in log, log
        assert OWNER_PASSWORD not in log and PASSWORD not in log
        # the recorded checks have Home Assistant's API failing: the import says so
        assert "did not pass" in text(app, "#import-status")
    site = Site.load(site_dir)
    assert site.hosts["home"].stacks["homeassistant"]["owner_username"] == "jan"
    assert site.secrets["home"]["homeassistant"]["owner_password"] == OWNER_PASSWORD
    host_vars = (site_dir / "host_vars/home/abri.yml").read_text()
    assert OWNER_PASSWORD not in host_vars
    assert yaml.safe_load(host_vars)  # still a readable file


async def test_import_brings_node_reds_addon_data_into_the_hosts_nodered(tmp_path, new_app,
                                                                        runner):
    """A Supervisor backup (SecureTar v3) with the Node-RED add-on, onto a host that has
    nodered: the safety snapshot takes nodered's data too, the import playbook gets, after
    Home Assistant's configuration, the add-on's user directory for nodered's data volume
    (settings.js left out, the whole volume replaced, files given to Node-RED's uid), and
    the add-on's credential secret becomes nodered's credential_key in the vault."""
    import tarfile

    from tests.unit.test_ha_backup import NR_FILES, NR_KEY, _addon_backup

    site_dir = tmp_path / "site"
    site = make_site(site_dir)
    site.add_stack("home", "nodered")
    site.save()
    backup = _addon_backup(tmp_path, 3)
    runner.by_mode.update({"backup": "backup-ok.json", "import": "apply-ok.json"})
    archives: dict[str, list[str]] = {}
    recorded = runner.__call__

    def listing(site, mode="apply", limit=None, on_progress=None, cancel=None,
                become_password=None, extra_vars=None):
        if mode == "import":  # the archive lives only while the import runs: read it now
            with tarfile.open(extra_vars["abri_import_archive"]) as tar:
                archives[extra_vars["abri_import_stack"]] = sorted(
                    m.name.removeprefix("./") for m in tar.getmembers() if m.isfile())
        return recorded(site, mode, limit, on_progress, cancel, become_password, extra_vars)

    app = new_app(site_dir)
    app.runner = listing
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await open_import(pilot)
        await fill(pilot, "#import-file", str(backup))
        await fill(pilot, "#import-password", PASSWORD)
        assert "replaces the data volume of nodered on home" in text(app, "#import-contents")
        await fill(pilot, "#import-owner", "any")  # the backup has no owner account
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "saves the data of homeassistant, nodered" in str(
            app.screen.query_one(".dialog-text", Static).render())
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen)
        for _ in range(200):
            await settle(pilot)
            if not screen.busy:
                break
        assert not screen.busy
    assert [r[0] for r in runner.runs] == ["apply", "backup", "import", "import", "apply"]
    assert runner.runs[1][2]["abri_backup_only"] == ["homeassistant", "nodered"]
    nodered = runner.runs[3][2]
    assert {k: v for k, v in nodered.items() if k != "abri_import_archive"} == {
        "abri_import_stack": "nodered", "abri_import_folder": "data",
        "abri_import_keep": [], "abri_import_owner": 1000}
    assert "abri_import_owner" not in runner.runs[2][2]  # Home Assistant's: as before
    assert archives["nodered"] == [".config.runtime.json", "flows.json", "flows_cred.json",
                                   "lib/functions/helper.js", "package.json"]
    assert "configuration.yaml" in archives["homeassistant"]
    assert set(NR_FILES) >= {f"config/{x}" for x in archives["nodered"]}
    again = Site.load(site_dir)
    assert again.secrets["home"]["nodered"]["credential_key"] == NR_KEY
    assert NR_KEY not in (site_dir / "host_vars/home/abri.yml").read_text()
