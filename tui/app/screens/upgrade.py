"""Upgrades: per host and stack the release it runs and the newest known (what `abri upgrade
--dry-run` shows), and the upgrade itself with its live progress and what it does step by
step (snapshot, deploy, health gate, rollback). The engine's tui.core.upgrade does the work
in a worker that only posts messages; the app's runner runs the playbooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from tui.app.messages import RunProgress
from tui.app.screens.base import WorkerScreen, screen_report
from tui.app.widgets import KeyBar, TitleBar

COLUMNS = (("host", "Host"), ("stack", "Stack"), ("from", "Runs"), ("to", "Newest"),
           ("found", "Found in"))
OUTCOMES = {0: ("Upgraded: every check passed.", "information"),
            1: ("Nothing was upgraded: the stack did not answer before, or its snapshot "
                "failed (the log says which).", "error"),
            3: ("Rolled back: the new release failed its checks; the old one serves on its "
                "data from before.", "warning"),
            4: ("The rollback failed too: see the log; upgrade again to retry it.", "error")}


class UpgradeScreen(WorkerScreen):
    BINDINGS = [Binding("u", "upgrade", "Upgrade"),
                Binding("l", "reload", "Look again"),
                Binding("escape", "close", "Back")]

    @dataclass
    class Planned(Message):
        moves: list[Any]
        notes: list[str]
        pending: str | None
        error: str | None = None

    @dataclass
    class Said(Message):
        text: str
        style: str = ""

    @dataclass
    class Done(Message):
        code: int

    def __init__(self, hosts: list[str] | None = None, stacks: list[str] | None = None,
                 to: str | None = None) -> None:
        """Every host and stack to the newest release known; or, as the import screen
        offers it, the given stack on the given hosts to release `to`."""
        super().__init__()
        self.hosts, self.stacks, self.to = hosts, list(stacks or []), to
        self.busy = False
        self.moves: list[Any] = []
        self.pending: str | None = None

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="upgrade"):
            yield Static("Upgrades: the release each stack runs, and the newest known",
                         id="upgrade-title")
            yield Static(id="upgrade-status", markup=False)
            yield ProgressBar(total=100, show_eta=False, id="upgrade-bar")
            yield DataTable(id="upgrade-table", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="upgrade-log", wrap=True, markup=False, highlight=False,
                          min_width=20)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#upgrade-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.action_reload()

    def status(self, text: str) -> None:
        self.query_one("#upgrade-status", Static).update(text)

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.set_class(busy, "-running")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("upgrade", "reload"):
            if self.busy:
                return None
            if action == "upgrade":
                return bool(self.moves or self.pending) or None
        if action == "close":
            return not self.busy or None
        return True

    # ------------------------------------------------------------------ plan
    def action_reload(self) -> None:
        self.status("Looking for newer releases…")
        self.set_busy(True)
        self.find(self.app.site.copy())

    @work(thread=True, exclusive=True, exit_on_error=False, group="upgrade")
    def find(self, site) -> None:
        from tui.core import upgrade
        from tui.core.errors import AbriError

        try:
            moves, notes = upgrade.plan(site, self.hosts or list(site.hosts), self.stacks,
                                        to=self.to)
        except AbriError as exc:
            self.post_message(self.Planned([], [], None, "; ".join(map(str, exc.problems))))
            return
        self.post_message(self.Planned(moves, notes, upgrade.unfinished(site)))

    def on_upgrade_screen_planned(self, message: Planned) -> None:
        self.set_busy(False)
        table = self.query_one("#upgrade-table", DataTable)
        table.clear()
        if message.error:
            self.moves = []
            self.status(f"Cannot look for upgrades: {message.error}")
            return
        self.moves, self.pending = message.moves, message.pending
        for m in self.moves:
            table.add_row(m.host, m.stack, m.old_tag, Text(m.new_tag, style="bold"), m.source,
                          key=f"{m.host}/{m.stack}")
        log = self.query_one("#upgrade-log", RichLog)
        for note in message.notes:
            log.write(Text(note, style="dim"))
        if self.pending:
            self.status(f"An upgrade is unfinished: {self.pending}. u completes it.")
        elif self.moves:
            self.status(f"{len(self.moves)} upgrade(s) known. u upgrades them one at a time; "
                        "a stack that fails its checks is rolled back by itself.")
        else:
            self.status("Every stack runs the newest release known: nothing to upgrade.")
        self.refresh_bindings()

    # ------------------------------------------------------------------ upgrade
    def action_upgrade(self) -> None:
        from tui.app.screens.dialogs import ConfirmScreen

        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): an upgrade uses the site as saved.",
                        severity="warning")
            return
        count = len(self.moves)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.query_one("#upgrade-log", RichLog).clear()
                self.set_busy(True)
                self.status("Upgrading…")
                self.run_upgrade(self.app.site, list(self.moves))

        what = (f"Upgrade {count} stack(s)" if count else "Complete the unfinished upgrade")
        self.app.push_screen(ConfirmScreen(
            f"{what}? Each is stopped and its data saved in a snapshot first, then the new "
            "release is deployed and checked; one that fails its checks is rolled back to "
            "its old release and data, and the upgrade stops there.", yes="Upgrade",
            no="Cancel"), confirmed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="upgrade")
    def run_upgrade(self, site, moves: list[Any]) -> None:
        from tui.core import upgrade

        out = screen_report(self, upgrade.Report)()
        self.post_message(self.Done(upgrade.run(site, moves, out=out)))

    def on_upgrade_screen_said(self, message: Said) -> None:
        self.query_one("#upgrade-log", RichLog).write(Text(message.text, style=message.style))

    def on_run_progress(self, message: RunProgress) -> None:
        bar = self.query_one("#upgrade-bar", ProgressBar)
        bar.update(progress=message.progress.percent)
        if message.progress.task:
            self.status(f"Task: {message.progress.task}")

    def on_upgrade_screen_done(self, message: Done) -> None:
        self.set_busy(False)
        self.query_one("#upgrade-bar", ProgressBar).update(progress=0)
        text, severity = OUTCOMES.get(message.code, (f"Ended with code {message.code}.",
                                                     "error"))
        self.notify(text, severity=severity, timeout=15)
        self.action_reload()

    def worker_changed(self, event) -> None:
        if event.worker.group == "upgrade" and event.state.name in ("ERROR", "CANCELLED"):
            self.set_busy(False)
            self.status("The upgrade stopped with an error.")

    def action_close(self) -> None:
        if not self.busy:
            self.app.pop_screen()
