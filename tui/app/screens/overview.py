"""The site at a glance: hosts, the stacks on the highlighted host, and every action."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from tui.app.screens.dialogs import ConfirmScreen
from tui.core.errors import AbriError

STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red",
                "unreachable": "bold red", "canceled": "magenta"}


def host_address(host) -> str:
    if host.kind == "local":
        return "this machine"
    address = host.address or "-"
    if host.port:
        address += f":{host.port}"
    if host.user:
        address = f"{host.user}@{address}"
    return address


def settings_summary(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v not in ("", None))


class OverviewScreen(Screen):
    BINDINGS = [
        Binding("a", "add_host", "Add host"),
        Binding("e", "edit_host", "Edit host", show=False),
        Binding("d", "remove_host", "Remove host", show=False),
        Binding("s", "add_stack", "Add stack"),
        Binding("x", "remove_stack", "Remove stack", show=False),
        Binding("r", "review", "Review"),
        Binding("g", "apply", "Apply"),
        Binding("v", "verify", "Verify"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="overview"):
            yield Static(id="summary")
            hosts = DataTable(id="hosts", cursor_type="row", zebra_stripes=True)
            hosts.border_title = "Hosts  (a add · e edit · d remove)"
            yield hosts
            stacks = DataTable(id="stacks", cursor_type="row")
            stacks.border_title = "Stacks  (s add · enter settings · x remove)"
            yield stacks
        yield Footer()

    def on_mount(self) -> None:
        hosts = self.query_one("#hosts", DataTable)
        hosts.add_columns("Host", "Kind", "Address", "Stacks", "Last run")
        self.query_one("#stacks", DataTable).add_columns("Stack", "Title", "Settings")
        self.refresh_view()

    def on_screen_resume(self) -> None:
        self.refresh_view()

    # ------------------------------------------------------------------ view
    def refresh_view(self) -> None:
        site = self.app.site
        if site is None:
            return
        table = self.query_one("#hosts", DataTable)
        keep = self.selected_host()
        table.clear()
        for host in site.hosts.values():
            status, label = self.app.last_run.get(host.name, ("", "not run yet"))
            table.add_row(host.name, host.kind, host_address(host),
                          ", ".join(host.stacks) or "-",
                          Text(label, style=STATUS_STYLE.get(status, "dim")),
                          key=host.name)
        names = list(site.hosts)
        if keep in names:
            table.move_cursor(row=names.index(keep))
        count = len(names)
        stacks = sum(len(h.stacks) for h in site.hosts.values())
        summary = f"{count} host{'s' * (count != 1)}, {stacks} stack{'s' * (stacks != 1)}"
        if not count:
            summary = "No hosts yet: press a to add one (this machine or another)."
        elif self.app.dirty:
            summary += ": unsaved changes (ctrl+s saves)"
        else:
            summary += ": saved"
        summary_widget = self.query_one("#summary", Static)
        summary_widget.update(summary)
        summary_widget.set_class(self.app.dirty, "-dirty")
        self.show_stacks()

    def show_stacks(self) -> None:
        table = self.query_one("#stacks", DataTable)
        table.clear()
        name = self.selected_host()
        site = self.app.site
        if site is None or name is None:
            return
        host = site.hosts[name]
        table.border_title = f"Stacks on {name}  (s add · enter settings · x remove)"
        for stack, values in host.stacks.items():
            title = site.catalog[stack].title if stack in site.catalog else "?"
            table.add_row(stack, title, settings_summary(values), key=stack)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "hosts":
            self.show_stacks()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "hosts":
            self.action_edit_host()
        else:
            host = self.selected_host()
            if host and event.row_key.value:
                self.open_settings(host, str(event.row_key.value), [])

    def _key(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if not table.row_count:
            return None
        row = min(max(table.cursor_row, 0), table.row_count - 1)
        return table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    def selected_host(self) -> str | None:
        return self._key("hosts")

    def selected_stack(self) -> str | None:
        return self._key("stacks")

    # ------------------------------------------------------------------ hosts
    def action_add_host(self) -> None:
        from tui.app.screens.host_editor import HostEditor

        self.app.push_screen(HostEditor(kind="ssh" if self._has_local() else "local"),
                             self._after_host)

    def _has_local(self) -> bool:
        return any(h.kind == "local" for h in self.app.site.hosts.values())

    def _after_host(self, name: str | None) -> None:
        self.refresh_view()
        if name:
            names = list(self.app.site.hosts)
            self.query_one("#hosts", DataTable).move_cursor(row=names.index(name))

    def action_edit_host(self) -> None:
        from tui.app.screens.host_editor import HostEditor

        name = self.selected_host()
        if name:
            self.app.push_screen(HostEditor(host=name), self._after_host)

    def action_remove_host(self) -> None:
        name = self.selected_host()
        if not name:
            return

        self._confirm_change(
            f"Remove {name} from the site? Nothing on the machine is touched; its files in "
            "the site are dropped when you save.",
            lambda trial: trial.remove_host(name), f"{name} cannot be removed")

    def _confirm_change(self, question: str, change, failure: str) -> None:
        """Ask, then apply the change to a trial copy of the site; keep it only if the
        engine accepts the whole site, otherwise show its problems."""

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            trial = self.app.site.copy()
            try:
                change(trial)
                trial.check()
            except AbriError as exc:
                self.app.show_problems(failure, exc.problems)
                return
            self.app.commit(trial)
            self.refresh_view()

        self.app.push_screen(ConfirmScreen(question, yes="Remove", no="Keep"), confirmed)

    # ------------------------------------------------------------------ stacks
    def action_add_stack(self) -> None:
        name = self.selected_host()
        if name is None:
            self.notify("Add a host first (a).", severity="warning")
            return
        self.pick_stack(name)

    def pick_stack(self, host: str) -> None:
        from tui.app.screens.stacks import StackPicker

        def picked(stack: str | None) -> None:
            if stack:
                self.configure_stack(host, stack)

        self.app.push_screen(StackPicker(host), picked)

    def configure_stack(self, host_name: str, stack_name: str) -> None:
        """Open the settings form; first offer the stacks it depends on."""
        site = self.app.site
        stack = site.catalog[stack_name]
        missing = site.missing_providers(host_name, stack_name)
        offers = [providers[0] for providers in missing.values() if providers]
        if not offers:
            self.open_settings(host_name, stack_name, [])
            return
        titles = " and ".join(site.catalog[o].title for o in offers)

        def answered(yes: bool | None) -> None:
            self.open_settings(host_name, stack_name, offers if yes else [])

        self.app.push_screen(ConfirmScreen(
            f"{stack.title} needs {', '.join(missing)}, which no stack on {host_name} provides. "
            f"Add {titles} to {host_name} as well?", yes="Add both", no="Only " + stack.title),
            answered)

    def open_settings(self, host: str, stack: str, extra: list[str]) -> None:
        from tui.app.screens.stacks import StackSettingsScreen

        self.app.push_screen(StackSettingsScreen(host, stack, extra),
                             lambda _: self.refresh_view())

    def action_remove_stack(self) -> None:
        host, stack = self.selected_host(), self.selected_stack()
        if not host or not stack:
            self.notify("No stack selected.", severity="warning")
            return

        self._confirm_change(
            f"Take {stack} off {host}? The next apply stops it; its data stays on the host.",
            lambda trial: trial.remove_stack(host, stack),
            f"{stack} cannot be removed from {host}")

    # ------------------------------------------------------------------ runs
    def action_review(self) -> None:
        from tui.app.screens.review import ReviewScreen

        self.app.push_screen(ReviewScreen())

    def action_apply(self) -> None:
        from tui.app.screens.run import RunScreen

        if not self.app.site.hosts:
            self.notify("Add a host first (a).", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes and self.app.save_site():
                self.app.push_screen(RunScreen("apply"))

        self.app.push_screen(ConfirmScreen(
            "Apply saves the site, then deploys it onto "
            f"{len(self.app.site.hosts)} host(s). Continue?", yes="Apply", no="Cancel"),
            confirmed)

    def action_verify(self) -> None:
        from tui.app.screens.run import RunScreen

        self.app.push_screen(RunScreen("verify"))
