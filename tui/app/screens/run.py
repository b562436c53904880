"""A live run: apply (ansible-runner through the engine) or verify (the engine's checks)."""

from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, RichLog, Static

from tui.app.messages import HostVerified, RunFinished, RunProgress, VerifyFinished
from tui.app.screens.base import WorkerScreen
from tui.app.widgets import KeyBar, TitleBar
from tui.core.events import Progress, become_failures, needs_become_password
from tui.core.site import Site

STATUS_STYLE = {"pending": "dim", "running": "cyan", "ok": "green", "changed": "yellow",
                "failed": "bold red", "unreachable": "bold red"}
COUNTS = ("ok", "changed", "failed", "skipped", "unreachable")
RUN_PADDING = 2  # #run's padding around the table
SCROLLBAR = 1  # a column kept for the table's scrollbar, should its rows overflow
DETAIL_MIN = 26  # a check's detail column gets at least this (a URL with a port fits)


class RunScreen(WorkerScreen):
    BINDINGS = [Binding("c", "cancel", "Cancel run"),
                Binding("escape", "close", "Back"),
                Binding("v", "verify", "Verify now")]

    def __init__(self, mode: str = "apply"):
        super().__init__()
        self.mode = mode
        self.running = False
        self.cancel_event = threading.Event()
        self.logged_tasks = 0
        self.logged_failures = 0
        self.logged_changes = 0
        self.last_task: str | None = None
        self.hosts_total = 0
        self.hosts_done = 0
        self.failed_checks = 0
        self.checks: list[tuple[str, str, bool, str]] = []  # host, check, ok, detail

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="run"):
            yield Static(id="run-title", markup=False)
            yield Static(id="run-task", markup=False)
            yield ProgressBar(total=100, show_eta=False, id="run-bar")
            yield DataTable(id="run-hosts", cursor_type="row", zebra_stripes=True)
            yield RichLog(id="run-log", wrap=True, markup=False, highlight=False, min_width=20)
            yield Static(id="run-recap")
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#run-hosts", DataTable)
        site: Site = self.app.site
        if self.mode == "verify":
            self.add_class("-verify")
            self.show_checks()
            targets = [h for h in site.hosts.values() if h.stacks]
            self.hosts_total = len(targets)
            self.title_line(f"Verify: checking the services on {len(targets)} host(s)")
            self.start(self.run_verify, site.copy())
        else:
            table.add_column("Host", key="host")
            # as wide as the longest status from the start: a cell's update does not widen
            # its column, and how far it grew would depend on which progress bursts collapsed
            table.add_column("Status", key="status", width=max(map(len, STATUS_STYLE)))
            table.add_column("Task", key="task", width=24)
            for key in COUNTS:
                table.add_column(key[:4], key=key)
            self.title_line(f"Apply: deploying the site onto {len(site.hosts)} host(s)")
            self.start(self.run_apply, site.copy())

    def title_line(self, text: str) -> None:
        self.query_one("#run-title", Static).update(text)

    def start(self, worker, site: Site) -> None:
        self.running = True
        self.set_class(True, "-running")
        self.query_one("#run-task", Static).update("Starting…  (c cancels)")
        worker(site, self.cancel_event)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.running
        if action == "verify":
            return self.mode == "apply" and not self.running
        return True

    # ------------------------------------------------------------------ apply
    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def run_apply(self, site: Site, cancel: threading.Event) -> None:
        extra = {}
        if self.app.become_password is not None:
            extra["become_password"] = self.app.become_password
        result = self.app.runner(site, "apply", on_progress=lambda p: self.post_message(
            RunProgress(p)), cancel=cancel, **extra)
        self.post_message(RunFinished(result))

    def on_run_progress(self, message: RunProgress) -> None:
        self.show_progress(message.progress)

    def show_progress(self, p: Progress) -> None:
        bar = self.query_one("#run-bar", ProgressBar)
        bar.update(progress=max(p.percent, bar.progress))
        if p.task:
            self.query_one("#run-task", Static).update(f"Task: {p.task}")
        self.write_log(p)
        table = self.query_one("#run-hosts", DataTable)
        for row in p.hosts:
            cells = {"host": Text(row.name),
                     "status": Text(row.status, style=STATUS_STYLE.get(row.status, "")),
                     "task": Text(row.task or ""), **{k: str(getattr(row, k)) for k in COUNTS}}
            if row.name in table.rows:
                for key, value in cells.items():
                    table.update_cell(row.name, key, value)
            else:
                table.add_row(*cells.values(), key=row.name)

    def write_log(self, p: Progress) -> None:
        """Log what is new since the last Progress. Bursts of progress messages collapse,
        so this reads the whole state: every started task, then its changes and failures."""
        log = self.query_one("#run-log", RichLog)
        new_changes = list(p.changes[self.logged_changes:])
        new_failures = list(p.failures[self.logged_failures:])
        self.logged_changes, self.logged_failures = len(p.changes), len(p.failures)
        # what belongs to the task shown last comes under it, whether it arrived in the same
        # burst as its TASK line or a later one, and before any task started since; then the
        # new tasks, each with its own; what is left (an older task's) names its task
        self.write_outcomes(log, self.last_task, new_changes, new_failures)
        for task in list(p.task_names.values())[self.logged_tasks:]:
            self.logged_tasks += 1
            self.last_task = task
            log.write(Text(f"TASK {task}", style="bold"))
            self.write_outcomes(log, task, new_changes, new_failures)
        for host, task in new_changes:
            log.write(Text(f"  ~ {host}: {task} (changed)", style="yellow"))
        for f in new_failures:
            log.write(Text(f"  ✘ {f.host}: {f.task}: {f.message}", style="red"))

    @staticmethod
    def write_outcomes(log: RichLog, task: str | None, changes: list, failures: list) -> None:
        """Write (and take out of the lists) the changes and failures of `task`."""
        for host, changed in [c for c in changes if c[1] == task]:
            changes.remove((host, changed))
            log.write(Text(f"  ~ {host}: changed", style="yellow"))
        for f in [f for f in failures if f.task == task]:
            failures.remove(f)
            log.write(Text(f"  ✘ {f.host}: {f.task}: {f.message}", style="red"))

    def on_run_finished(self, message: RunFinished) -> None:
        result = message.result
        p: Progress = result.progress
        self.take_admin_users()
        self.show_progress(p)
        self.finish(result.status == "canceled", result.ok)
        failed = [f for f in p.failures]
        if result.status == "canceled":
            line = "Apply canceled: the hosts keep what was done so far."
        elif result.ok:
            line = "Apply finished: every host is deployed. Press v to verify."
        elif failed:
            line = f"Apply failed: {len(failed)} task(s) failed; the messages are in the log."
        else:
            line = f"Apply failed (ansible status {result.status}, rc {result.rc})."
        self.query_one("#run-task", Static).update(line)
        recap = Text()
        recap.append("Recap  ", style="bold")
        for host, counts in sorted(p.recap.items()):
            recap.append(f"{host}: ", style="bold")
            for key in ("ok", "changed", "failed", "unreachable"):
                n = counts.get(key, 0)
                style = STATUS_STYLE[key] if n and key != "ok" else ""
                recap.append(f"{key}={n} ", style=style)
            recap.append("  ")
        self.query_one("#run-recap", Static).update(recap)
        for row in p.hosts:
            status = "canceled" if result.status == "canceled" and not row.failed else row.status
            self.app.last_run[row.name] = (status, f"apply {status}")
        if not result.ok and result.status != "canceled" and needs_become_password(p):
            self.ask_become_password(p)

    def take_admin_users(self) -> None:
        """The run (on a copy of the site) wrote the admin user into inventory.ini for hosts
        whose sshd the hardening tightened: the installer's site takes it, or its next save
        would write the old user back, which the host refuses now."""
        from tui.core import inventory
        from tui.core.errors import SiteError
        from tui.core.hosting import ADMIN_USER

        site = self.app.site
        if site is None:
            return
        try:
            entries = inventory.parse(site.path / "inventory.ini")
        except (SiteError, OSError):
            return
        for name, host in site.hosts.items():
            entry = entries.get(name)
            if (entry is not None and host.hardened and entry.user == ADMIN_USER
                    and host.user != ADMIN_USER):
                host.user = ADMIN_USER

    def ask_become_password(self, p: Progress) -> None:
        """sudo on a host asked for a password: ask for it once, run the apply again with it
        (kept in memory for this session, never stored)."""
        from tui.app.screens.dialogs import PasswordScreen

        hosts = sorted(become_failures(p))
        wrong = self.app.become_password is not None
        question = ("sudo refused that password. " if wrong else "") + (
            f"sudo on {', '.join(hosts) or 'the host'} asks for the SSH user's password. "
            "Type it to run the apply again; abri keeps it in memory until you quit and "
            "never stores it.")

        def answered(password: str | None) -> None:
            if password:
                self.app.become_password = password
                self.app.switch_screen(RunScreen("apply"))

        self.app.push_screen(PasswordScreen(question), answered)

    # ------------------------------------------------------------------ verify
    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def run_verify(self, site: Site, cancel: threading.Event) -> None:
        for host in site.hosts.values():
            if cancel.is_set():
                break
            if host.stacks:
                self.post_message(HostVerified(host.name, self.app.verifier(site, host)))
        self.post_message(VerifyFinished(cancel.is_set()))

    def show_checks(self) -> None:
        """The checks so far, one row each. The detail column takes the width left over
        (at least DETAIL_MIN) and wraps, the check column wraps past the rest, so nothing
        is cut."""
        table = self.query_one("#run-hosts", DataTable)
        table.clear(columns=True)
        # each column takes its width plus one cell of padding either side
        width = (table.size.width or self.app.size.width - RUN_PADDING) - SCROLLBAR
        host_w = max([len("Host"), *(len(c[0]) for c in self.checks)])
        result_w = len("FAILED")
        left = width - (host_w + 2) - (result_w + 2) - 4  # for check and detail
        check_w = min(max([len("Check"), *(len(c[1]) for c in self.checks)]),
                      max(left - DETAIL_MIN, left // 2))
        table.add_column("Host", width=host_w)
        table.add_column("Check", width=check_w)
        table.add_column("Result", width=result_w)
        table.add_column("Detail", width=max(left - check_w, 10))
        for host, name, ok, detail in self.checks:
            table.add_row(Text(host), Text(name), Text("ok" if ok else "FAILED",
                                                       style="green" if ok else "bold red"),
                          Text(detail), height=None)

    def on_resize(self) -> None:
        if self.mode == "verify":
            self.show_checks()

    def on_host_verified(self, message: HostVerified) -> None:
        log = self.query_one("#run-log", RichLog)
        failed = 0
        for check in message.checks:
            ok = bool(getattr(check, "ok", False))
            name = str(getattr(check, "name", "check"))
            detail = str(getattr(check, "detail", ""))
            failed += not ok
            self.checks.append((message.host, name, ok, detail))
            mark = "✔" if ok else "✘"
            log.write(Text(f"{mark} {message.host}: {name}: {detail}",
                           style="green" if ok else "red"))
        self.show_checks()
        self.failed_checks += failed
        self.hosts_done += 1
        status = "failed" if failed else "ok"
        self.app.last_run[message.host] = (status, f"verify {status}")
        bar = self.query_one("#run-bar", ProgressBar)
        bar.update(progress=100 * self.hosts_done / max(self.hosts_total, 1))
        self.query_one("#run-task", Static).update(f"Checked {message.host}")

    def on_verify_finished(self, message: VerifyFinished) -> None:
        self.finish(message.canceled, not self.failed_checks)
        if message.canceled:
            line = "Verify canceled."
        elif not self.hosts_total:
            line = "Nothing to verify: no host has stacks yet."
        elif self.failed_checks:
            line = f"Verify: {self.failed_checks} check(s) failed; details in the table."
        else:
            line = "Verify: every check passed."
        self.query_one("#run-task", Static).update(line)
        self.query_one("#run-bar", ProgressBar).update(progress=100)

    # ------------------------------------------------------------------ common
    def finish(self, canceled: bool, ok: bool) -> None:
        self.running = False
        self.set_class(False, "-running")
        self.set_class(not ok and not canceled, "-failed")
        self.set_class(ok and not canceled, "-ok")
        self.set_class(canceled, "-canceled")
        self.refresh_bindings()

    def worker_changed(self, event) -> None:
        if event.worker.group == "run" and event.state.name in ("ERROR", "CANCELLED"):
            self.finish(False, False)
            self.query_one("#run-task", Static).update("The run stopped with an error.")

    def on_unmount(self) -> None:
        self.cancel_event.set()  # leaving the app mid-run stops Ansible cleanly

    def action_cancel(self) -> None:
        if self.running:
            self.cancel_event.set()
            self.query_one("#run-task", Static).update("Canceling… (waiting for Ansible "
                                                       "to stop cleanly)")

    def action_close(self) -> None:
        if self.running:
            self.notify("The run is still going: press c to cancel it first.")
            return
        self.dismiss()

    def action_verify(self) -> None:
        if not self.running:
            self.app.switch_screen(RunScreen("verify"))
