"""The backups: snapshots per host and stack (what `abri backups` lists) with when a restore
of each was last proven, and backup, restore and trial restore of the selected host. The
runs go through the engine (tui.core.backup and the runner) in workers that only post
messages; the list is read again after each run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, ProgressBar, Static

from tui.app.messages import RunProgress
from tui.app.screens.base import WorkerScreen
from tui.app.widgets import KeyBar, TitleBar
from tui.core.site import Site

COLUMNS = (("host", "Host"), ("stack", "Stack"), ("date", "Date (UTC)"), ("id", "ID"),
           ("size", "Size"), ("added", "Added"), ("kind", "Kind"), ("proven", "Proven"))


class BackupsScreen(WorkerScreen):
    BINDINGS = [Binding("b", "backup", "Back up"),
                Binding("r", "restore", "Restore"),
                Binding("t", "trial", "Trial restore"),
                Binding("l", "reload", "Reload"),
                Binding("escape", "close", "Back")]

    @dataclass
    class Listed(Message):
        """The snapshots run returned."""

        result: Any  # tui.core.runner.RunResult

    @dataclass
    class Done(Message):
        """A backup or restore run returned."""

        what: str
        host: str
        result: Any

    @dataclass
    class Moving(Message):
        """A transfer's live progress (tui.core.transfers.Transfer): bursts collapse."""

        transfer: Any

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, BackupsScreen.Moving)

    def __init__(self) -> None:
        super().__init__()
        self.busy = False
        self.rows: dict[str, dict[str, Any]] = {}  # table row key -> snapshot row

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="backups"):
            yield Static("Backups: snapshots per host and stack", id="backups-title")
            yield Static(id="backups-status", markup=False)
            yield ProgressBar(total=100, show_eta=False, id="backups-bar")
            yield DataTable(id="backups-table", cursor_type="row", zebra_stripes=True)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#backups-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.action_reload()

    # ------------------------------------------------------------------ state
    def targets(self) -> list[str]:
        from tui.core import backup
        from tui.core.inventory import TARGET_KINDS

        site: Site = self.app.site
        return backup.hosts_with_data(site, [n for n, h in site.hosts.items()
                                             if h.kind in TARGET_KINDS])

    def status(self, text: str) -> None:
        self.query_one("#backups-status", Static).update(text)

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one("#backups-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.rows.get(str(key))

    def set_busy(self, busy: bool) -> None:
        self.busy = busy
        self.set_class(busy, "-running")
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("backup", "restore", "reload", "trial"):
            if self.busy:
                return None
            if action in ("restore", "trial"):
                return self.selected() is not None or None
        return True

    # ------------------------------------------------------------------ list
    def action_reload(self) -> None:
        from tui.core import backup

        known = [n for n in self.targets() if backup.has_password(self.app.site, n)]
        if not self.targets():
            self.status("No host has a stack with user data: nothing to back up.")
            return
        if not known:
            self.status("No backup yet: press b to make the first one.")
            return
        self.status(f"Reading the snapshots of {', '.join(known)}…")
        self.set_busy(True)
        self.list_snapshots(self.app.site.copy(), known)

    @work(thread=True, exclusive=True, exit_on_error=False, group="backups")
    def list_snapshots(self, site: Site, hosts: list[str]) -> None:
        result = self.app.runner(site, "backup", limit=",".join(hosts),
                                 extra_vars={"abri_backup_action": "snapshots"})
        self.post_message(self.Listed(result))

    def on_backups_screen_listed(self, message: Listed) -> None:
        from tui.core import backup

        self.set_busy(False)
        result = message.result
        if not result.ok:
            self.status("Listing the snapshots failed: "
                        + "; ".join(f.message for f in result.progress.failures)[:300])
            return
        table = self.query_one("#backups-table", DataTable)
        table.clear()
        self.rows = {}
        rows = backup.with_proven(self.app.site, backup.snapshot_rows(result))
        for r in rows:
            key = f"{r['host']}/{r['id']}"
            self.rows[key] = r
            style = "dim" if r["kind"] != "backup" else ""
            # the proven restore shows on the snapshot it was proven with
            proof = r["last_proven_restore"] or {}
            proven = (str(proof.get("time", ""))[:16].replace("T", " ")
                      if proof.get("snapshot") == r["id"] else "")
            table.add_row(r["host"], r["stack"] or "-",
                          str(r["time"] or "")[:19].replace("T", " "), r["short_id"],
                          backup.human_size(r["size"]), backup.human_size(r["added"]),
                          Text(str(r["kind"]), style=style), Text(proven, style="green"),
                          key=key)
        self.status(f"{len(rows)} snapshot(s). b backs up the selected host (all when none), "
                    "r restores the selected snapshot's backup run, t proves the selected "
                    "host's newest backups in a trial restore."
                    if rows else "No snapshots yet: press b to make one.")
        self.refresh_bindings()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()

    # ------------------------------------------------------------------ runs
    def action_backup(self) -> None:
        from tui.core import backup

        row = self.selected()
        hosts = [row["host"]] if row else self.targets()
        if not hosts:
            self.notify("No host has a stack with user data.", severity="warning")
            return
        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): a backup uses the site as saved.",
                        severity="warning")
            return
        backup.ensure_passwords(self.app.site, hosts)  # the first backup's password (saved)
        self.status(f"Backing up {', '.join(hosts)}…")
        self.set_busy(True)
        self.run_backup(self.app.site.copy(), "backup", ",".join(hosts), None)

    def action_restore(self) -> None:
        from tui.app.screens.dialogs import ConfirmScreen

        row = self.selected()
        if row is None:
            return
        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): a restore deploys the site as saved.",
                        severity="warning")
            return
        host, ident = row["host"], row["id"]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.status(f"Restoring {host} from the backup of snapshot {row['short_id']}…")
                self.set_busy(True)
                self.run_backup(self.app.site.copy(), "restore", host,
                                {"abri_backup_snapshot": ident})

        self.app.push_screen(ConfirmScreen(
            f"Restore {host} from the backup run of snapshot {row['short_id']} "
            f"({str(row['time'])[:19].replace('T', ' ')} UTC)? Its stacks stop, the data on "
            "the host is saved first in a safety snapshot, then the backup is put back and "
            "the stacks are deployed again.", yes="Restore", no="Cancel"), confirmed)

    def action_trial(self) -> None:
        row = self.selected()
        if row is None:
            return
        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): a trial restore uses the site as saved.",
                        severity="warning")
            return
        self.status(f"Trial restore of {row['host']}'s newest backups into a scratch copy…")
        self.set_busy(True)
        self.run_backup(self.app.site.copy(), "trial", row["host"],
                        {"abri_backup_action": "trial"})

    @work(thread=True, exclusive=True, exit_on_error=False, group="backups")
    def run_backup(self, site: Site, mode: str, limit: str, extra: dict | None) -> None:
        result = self.app.runner(site, "backup" if mode == "trial" else mode, limit=limit,
                                 extra_vars=extra,
                                 on_progress=lambda p: self.post_message(RunProgress(p)),
                                 on_transfer=lambda t: self.post_message(self.Moving(t)))
        self.post_message(self.Done(mode, limit, result))

    def on_run_progress(self, message: RunProgress) -> None:
        bar = self.query_one("#backups-bar", ProgressBar)
        bar.update(progress=max(message.progress.percent, bar.progress))
        if message.progress.task:
            self.status(f"Task: {message.progress.task}")

    def on_backups_screen_moving(self, message: Moving) -> None:
        self.status(f"Copying: {message.transfer.line()}")

    def on_backups_screen_done(self, message: Done) -> None:
        from tui.core import backup

        self.set_busy(False)
        self.query_one("#backups-bar", ProgressBar).update(progress=0)
        result = message.result
        if message.what == "trial":
            trials = backup.trial_rows(result)
            backup.record_trials(self.app.site, trials)
            failed = [t for t in trials if not t["ok"]]
            if trials and not failed and result.ok:
                self.notify(f"Trial restore of {message.host} passed: "
                            + ", ".join(t["stack"] for t in trials) + ".")
            else:
                said = "; ".join(f"{t['stack']}: {t['reason']}" for t in failed) or "; ".join(
                    f.message for f in result.progress.failures) or "no stack was tried"
                self.notify(f"Trial restore of {message.host} failed: {said[:300]}",
                            severity="error", timeout=15)
            self.action_reload()
            return
        what = "Backup" if message.what == "backup" else "Restore"
        if result.ok:
            made = backup.made_rows(result)
            self.notify(f"{what} of {message.host} finished"
                        + (f": {len(made)} snapshot(s) made." if made else "."))
        else:
            failures = "; ".join(f.message for f in result.progress.failures)
            self.notify(f"{what} of {message.host} failed: {failures[:300]}",
                        severity="error", timeout=15)
        self.action_reload()

    def worker_changed(self, event) -> None:
        if event.worker.group == "backups" and event.state.name in ("ERROR", "CANCELLED"):
            self.set_busy(False)
            self.status("The run stopped with an error.")

    def action_close(self) -> None:
        if not self.busy:
            self.app.pop_screen()
