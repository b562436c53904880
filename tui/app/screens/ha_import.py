"""Import a Home Assistant backup (what `abri import-ha-backup` does), from the installer.

Pick the backup file (checked as it is typed), the host whose Home Assistant receives it
(the hosts with the Home Assistant stack), and the backup's password when it is protected:
the screen then shows what the backup holds and what becomes of each part (the dry run's
text, tui.core.ha_import.describe), or why it is refused, next to the field concerned. With
the owner's password, Import (after a confirmation) runs tui.core.ha_import.run, the
function the CLI runs, in a worker that only posts messages; the runs go through the app's
runner, the checks through its verifier. The passwords live in the inputs and in memory
only: never stored by this screen, never shown unless revealed, cleared on leaving."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, RichLog, Select, Static

from tui.app.messages import RunProgress
from tui.app.screens.base import WorkerScreen, screen_report
from tui.app.widgets import KeyBar, TitleBar
from tui.core.errors import AbriError, Problem

FIELDS = ("file", "host", "password", "owner")


def field_of(problem: Problem) -> str:
    """The field of the screen an engine refusal belongs to."""
    if problem.field == "password":
        return "password"
    if problem.field in ("--host", "stacks"):
        return "host"
    if problem.field in ("--owner-password-file", "owner"):
        return "owner"
    return "file"


def message_of(problem: Problem) -> str:
    """A refusal as one line next to its field (whose label names it): the file's own
    refusals name the file, a member of the archive is named before what is wrong with it."""
    if problem.field == "file":
        return f"{problem.where}: {problem.message}"
    if field_of(problem) == "file":
        return f"{problem.field}: {problem.message}"
    return problem.message


#: seconds of no typing before the backup is checked with what the fields hold
CHECK_AFTER = 0.3

class ImportScreen(WorkerScreen):
    BINDINGS = [Binding("ctrl+o", "import_backup", "Import"),
                Binding("ctrl+r", "reveal", "Show passwords"),
                Binding("escape", "close", "Back")]

    @dataclass
    class Inspected(Message):
        """What the check of the backup found, for the fields it was asked with (key)."""

        key: tuple[str, str, str]
        checked: Any  # tui.core.ha_import.Checked, or None when refused
        text: str  # what the backup holds (and, when checked, what becomes of each part)
        protected: int | None  # the SecureTar version of a protected backup
        problems: list[Problem]
        newer: str | None = None  # the backup's Home Assistant release, when newer

    @dataclass
    class Said(Message):
        text: str
        style: str = ""

    @dataclass
    class Done(Message):
        code: int | None  # None: refused before the host changed (problems say why)
        problems: list[Problem]

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self.checked: Any = None
        self.contents = ""  # the text shown of the backup
        self.newer: str | None = None
        self.key: tuple[str, str, str] | None = None
        self.pending: Any = None  # the timer of the next check (typing waits for a pause)

    # ------------------------------------------------------------------ layout
    def ha_hosts(self) -> list[str]:
        from tui.core import ha_import

        site = self.app.site
        name = ha_import.ha_stack(site).name
        return [h for h, host in site.hosts.items() if name in host.stacks]

    def field(self, key: str, label: str, widget, help_text: str = "") -> ComposeResult:
        with Vertical(id=f"row-{key}", classes="field"):
            with Horizontal(classes="field-line"):
                yield Label(label, classes="field-label")
                yield widget
            if help_text:
                yield Static(help_text, classes="field-help", markup=False)
            yield Static(id=f"error-{key}", classes="field-error", markup=False)

    def compose(self) -> ComposeResult:
        hosts = self.ha_hosts()
        yield TitleBar()
        with Vertical(id="import"):
            with VerticalScroll(id="import-form", classes="form"):
                yield Static("Import a Home Assistant backup", classes="form-title")
                yield Static("The backup Home Assistant gives you (Settings > System > "
                             "Backups > download). Nothing changes until you press Import.",
                             classes="hint", markup=False)
                yield from self.field("file", "Backup file", Input(
                    id="import-file", compact=True,
                    placeholder="path of the .tar file, such as ~/Downloads/backup.tar"))
                options = [(Content(h), h) for h in hosts]
                yield from self.field("host", "Host", Select(
                    options, id="import-host", compact=True, allow_blank=len(hosts) != 1,
                    prompt="the host whose Home Assistant receives it",
                    **({"value": hosts[0]} if len(hosts) == 1 else {})))
                yield from self.field("password", "Password", Input(
                    id="import-password", password=True, compact=True,
                    placeholder="the backup's encryption key"))
                yield Static(id="import-contents", markup=False)
                yield Button("Upgrade Home Assistant", id="import-upgrade", compact=True)
                yield from self.field(
                    "owner", "Owner password", Input(id="import-owner", password=True,
                                                     compact=True),
                    "The password you log in to that Home Assistant with: the backup's "
                    "owner account is kept, and abri logs in as it (kept in the vault).")
                yield Checkbox("Show passwords (ctrl+r)", id="reveal", compact=True)
                yield Checkbox("Bring the history (the database)", True,
                               id="import-database", compact=True)
                with Horizontal(classes="form-buttons"):
                    yield Button("Import", id="import-go", variant="primary", compact=True)
                    yield Button("Back", id="import-back", compact=True)
            with Vertical(id="import-run"):
                yield Static(id="import-status", markup=False)
                yield ProgressBar(total=100, show_eta=False, id="import-bar")
                yield RichLog(id="import-log", wrap=True, markup=False, highlight=False,
                              min_width=20)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#row-password").display = False
        self.query_one("#import-upgrade").display = False
        self.query_one("#import-run").display = False
        if not self.ha_hosts():
            self.error("host", "no host of this site has Home Assistant: add the "
                       "homeassistant stack to one first (s on the overview)")
        self.query_one("#import-file", Input).focus()

    # ------------------------------------------------------------------ fields
    def error(self, key: str, message: str) -> None:
        box = self.query_one(f"#error-{key}", Static)
        box.update(message)
        box.set_class(bool(message), "-shown")
        self.query_one(f"#row-{key}").set_class(bool(message), "-invalid")

    def value(self, ident: str) -> str:
        return self.query_one(f"#{ident}", Input).value

    def host(self) -> str:
        value = self.query_one("#import-host", Select).value
        return value if isinstance(value, str) else ""

    def show(self, text: str, problems: list[Problem], newer: str | None) -> None:
        errors: dict[str, list[str]] = {}
        for p in problems:
            errors.setdefault(field_of(p), []).append(message_of(p))
        for key in ("file", "host", "password"):
            self.error(key, "\n".join(errors.get(key, [])))
        if "owner" in errors:
            self.error("owner", "\n".join(errors["owner"]))
        self.contents = text
        self.query_one("#import-contents", Static).update(text)
        self.newer = newer
        button = self.query_one("#import-upgrade", Button)
        button.display = newer is not None and bool(self.host())
        if newer:
            button.label = f"Upgrade Home Assistant on {self.host()} to {newer}"
        self.refresh_bindings()

    @on(Input.Changed, "#import-file")
    @on(Input.Changed, "#import-password")
    @on(Select.Changed, "#import-host")
    def inspect(self) -> None:
        """Check the backup for the fields as they are now: the cheap checks here, the
        archive, the password and the host's Home Assistant in a worker."""
        self.checked = None
        raw = self.value("import-file").strip()
        if not raw:
            self.key = None
            self.show("", [], None)
            return
        path = Path(raw).expanduser()
        if not path.exists():
            self.key = None
            self.show("", [Problem("", "file", f"{raw} does not exist; give the path of "
                                   "the backup Home Assistant downloaded")], None)
            return
        if not path.is_file():
            self.key = None
            self.show("", [Problem("", "file", f"{raw} is a folder, not a backup file "
                                   "(a .tar)")], None)
            return
        self.key = key = (str(path), self.host(), self.value("import-password"))
        self.query_one("#import-contents", Static).update("Reading the backup…")
        # a pause in the typing first: a SecureTar v3 password is checked with Argon2id,
        # which costs a moment of CPU per try, too much for every key pressed
        if self.pending is not None:
            self.pending.stop()
        self.pending = self.set_timer(CHECK_AFTER, lambda: self.check_now(key))

    def check_now(self, key: tuple[str, str, str]) -> None:
        if key == self.key:  # else the fields changed again: their own timer runs
            self.check_backup(self.app.site.copy(), *key)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import-check")
    def check_backup(self, site, path: str, host: str, password: str) -> None:
        from tui.core import ha_backup, ha_import

        key = (path, host, password)
        try:
            backup = ha_backup.read(Path(path))
        except AbriError as exc:
            self.post_message(self.Inspected(key, None, "", None, exc.problems))
            return
        text = ha_backup.format_summary(backup)
        if backup.securetar and not password:
            self.post_message(self.Inspected(key, None, text, backup.securetar, [Problem(
                "", "password", f"is needed: the backup is protected (SecureTar "
                f"v{backup.securetar}); type its password")]))
            return
        if not host:
            self.post_message(self.Inspected(key, None, text, backup.securetar, [Problem(
                "", "--host", "choose the host whose Home Assistant receives the backup")]))
            return
        try:
            checked = ha_import.check(site, Path(path), host, password or None, None,
                                      dry_run=True)
        except AbriError as exc:
            newer = backup.ha_version if any(p.field == "homeassistant.version"
                                             for p in exc.problems) else None
            self.post_message(self.Inspected(key, None, text, backup.securetar,
                                             exc.problems, newer))
            return
        self.post_message(self.Inspected(key, checked, ha_import.describe(checked),
                                         backup.securetar, []))

    def on_import_screen_inspected(self, message: Inspected) -> None:
        if message.key != self.key:
            return  # the fields changed since: a newer check is on its way
        self.query_one("#row-password").display = message.protected is not None
        self.checked = message.checked
        self.show(message.text, message.problems, message.newer)

    @on(Input.Changed, "#import-owner")
    def owner_changed(self) -> None:
        self.error("owner", "")
        self.refresh_bindings()

    @on(Checkbox.Changed, "#reveal")
    def reveal_changed(self, event: Checkbox.Changed) -> None:
        for ident in ("import-password", "import-owner"):
            self.query_one(f"#{ident}", Input).password = not event.value

    def action_reveal(self) -> None:
        self.query_one("#reveal", Checkbox).toggle()

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "import_backup":
            if self.busy:
                return None
            return (self.checked is not None and bool(self.value("import-owner"))) or None
        if action == "close":
            return not self.busy or None
        return True

    def palette_commands(self):
        from textual.app import SystemCommand

        if self.check_action("import_backup", ()):
            yield SystemCommand("Import the backup", "Into the host's Home Assistant, after "
                                "a safety snapshot (ctrl+o)", self.action_import_backup)
        if self.newer and self.host():
            yield SystemCommand(f"Upgrade Home Assistant on {self.host()} to {self.newer}",
                                "Then import the backup", self.upgrade)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "import-go":
            self.action_import_backup()
        elif event.button.id == "import-back":
            self.action_close()
        elif event.button.id == "import-upgrade":
            self.upgrade()

    def upgrade(self) -> None:
        """The way out of a backup newer than the site's Home Assistant: that release on
        the host, through the upgrade screen (snapshot, deploy, checks, rollback)."""
        from tui.app.screens.upgrade import UpgradeScreen
        from tui.core import ha_import

        if self.newer and self.host():
            self.app.push_screen(UpgradeScreen([self.host()],
                                               [ha_import.ha_stack(self.app.site).name],
                                               to=self.newer))

    def action_import_backup(self) -> None:
        from tui.app.screens.dialogs import ConfirmScreen

        if self.busy:
            return
        if self.checked is None:
            self.notify("The backup is not ready to import: see the fields marked in red.",
                        severity="error")
            return
        owner = self.value("import-owner")
        if not owner:
            self.error("owner", "is needed: the backup brings its own owner account, and "
                       "abri logs in as it; type the password you log in to that Home "
                       "Assistant with")
            return
        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): an import uses the site as saved.",
                        severity="warning")
            return
        checked = dataclasses.replace(self.checked, owner_password=owner)
        host = self.host()
        database = self.query_one("#import-database", Checkbox).value
        stacks = ", ".join([checked.stack, *(a.stack for a in checked.addon_data)])

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.start(checked, host, database)

        self.app.push_screen(ConfirmScreen(
            f"Import {checked.backup.path.name} into {host}? abri deploys {host} as the site "
            f"has it, saves the data of {stacks} in a safety snapshot (which undoes the "
            "import), replaces it with the backup's, then applies and checks.",
            yes="Import", no="Cancel"), confirmed)

    def start(self, checked, host: str, database: bool) -> None:
        self.busy = True
        self.set_class(True, "-running")
        self.query_one("#import-form").disabled = True
        self.query_one("#import-run").display = True
        self.query_one("#import-log", RichLog).clear()
        self.status("Importing…")
        self.refresh_bindings()
        self.run_import(self.app.site, checked, host, database)

    def status(self, text: str) -> None:
        self.query_one("#import-status", Static).update(text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="import")
    def run_import(self, site, checked, host: str, database: bool) -> None:
        from tui.core import ha_import

        screen = self

        class Report(screen_report(self, ha_import.Report)):  # type: ignore[misc]
            def verify(self, site, hosts: list[str]) -> int:
                ok = True
                for name in hosts:
                    for check in screen.app.verifier(site, site.hosts[name]):
                        ok = ok and check.ok
                        screen.post_message(screen.Said(
                            f"{name}: {'ok' if check.ok else 'FAILED'}  {check.name}: "
                            f"{check.detail}", "green" if check.ok else "red"))
                return 0 if ok else 1

        try:
            code = ha_import.run(site, checked, host, keep_database=database, out=Report())
        except AbriError as exc:  # refused before the host changed (the owner's password)
            self.post_message(self.Done(None, exc.problems))
            return
        self.post_message(self.Done(code, []))

    def on_import_screen_said(self, message: Said) -> None:
        if message.style == "bold":
            self.query_one("#import-bar", ProgressBar).update(progress=0)
            self.status(message.text.strip())
        self.query_one("#import-log", RichLog).write(Text(message.text.strip("\n"),
                                                          style=message.style))

    def on_run_progress(self, message: RunProgress) -> None:
        bar = self.query_one("#import-bar", ProgressBar)
        bar.update(progress=max(message.progress.percent, bar.progress))

    def on_import_screen_done(self, message: Done) -> None:
        self.busy = False
        self.set_class(False, "-running")
        self.query_one("#import-form").disabled = False
        if message.code is None:
            self.show(self.contents, message.problems, self.newer)
            self.status("Nothing was imported: " + "; ".join(
                message_of(p) for p in message.problems))
            self.notify("Nothing was imported: see the field marked in red.",
                        severity="error")
        elif message.code == 0:
            self.status("Imported: Home Assistant runs the backup's configuration and every "
                        "check passed.")
            self.notify("Imported: every check passed.", timeout=15)
        else:
            self.status("The import did not pass: see the log (the safety snapshot named "
                        "there undoes it).")
            self.notify("The import did not pass: see the log.", severity="error",
                        timeout=15)
        self.refresh_bindings()

    def worker_changed(self, event) -> None:
        if event.worker.group == "import" and event.state.name in ("ERROR", "CANCELLED"):
            self.busy = False
            self.set_class(False, "-running")
            self.query_one("#import-form").disabled = False
            self.status("The import stopped with an error.")
            self.refresh_bindings()

    def action_close(self) -> None:
        if self.busy:
            return
        for ident in ("import-password", "import-owner"):
            self.query_one(f"#{ident}", Input).value = ""  # the passwords go with the screen
        self.checked = None
        self.app.pop_screen()
        refresh = getattr(self.app.screen, "refresh_view", None)
        if refresh is not None and self.app.site is not None:
            refresh()
