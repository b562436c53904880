"""The site at a glance: hosts, the stacks on the highlighted host, and every action.

The footer shows the keys of the focused panel (hosts or stacks) and the site-wide ones;
every action is also in the command palette (ctrl+p), worded for the current selection."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import Static

from tui.app.widgets import KeyBar, TitleBar
from tui.core.errors import AbriError

if TYPE_CHECKING:
    from textual.widgets import DataTable

STATUS_STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red",
                "unreachable": "bold red", "canceled": "magenta"}
OVERVIEW_PADDING = 2  # #overview's padding around the tables
TABLE_CHROME = 2 + 2  # a table's round border, and the two columns of its vertical scrollbar


def host_address(host) -> str:
    if host.kind == "local":
        return "this machine"
    address = host.address or "-"
    if host.port:
        address = f"[{address}]:{host.port}" if ":" in address else f"{address}:{host.port}"
    if host.user:
        address = f"{host.user}@{address}"
    return address


def show_value(value: object) -> str:
    """A setting's value as the user types it (and YAML writes it): true, not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def release_of(site, host: str, stack: str) -> str:
    """The release the site pins for the stack on host (its image tag)."""
    if stack not in site.catalog:
        return "?"
    ref = site.image_pin(host, stack).partition("@")[0]
    return ref.rpartition(":")[2]


def settings_summary(values: dict) -> str:
    return ", ".join(f"{k}={show_value(v)}" for k, v in values.items() if v not in ("", None))


#: how each reach is shown (tui.core.exposure): what answers from outside stands out
REACH_STYLE = {"loopback": "dim", "closed": "dim", "lan": "", "public": "bold yellow"}


def ports_cell(ports) -> Text:
    """A stack's published ports on its host, one a line, each with where it is reachable
    from (tui.core.exposure); one reachable from the internet says so on a line of its own."""
    text = Text()
    for i, port in enumerate(ports):
        if i:
            text.append("\n")
        text.append(port.label, style="bold red" if port.internet
                    else REACH_STYLE.get(port.reach, ""))
        if port.internet:
            text.append("\n  ⚠ internet", style="bold red")
    return text if ports else Text("-", style="dim")


def hardening_cell(host) -> Text:
    """on or off for a host abri can harden; a vps with it off stands out (its ports are
    on the internet); - for a kind that is not hardened (local, proxmox)."""
    from tui.core.inventory import TARGET_KINDS

    if host.kind == "local" or host.kind not in TARGET_KINDS:
        return Text("-", style="dim")
    if host.hardened:
        return Text("on", style="green")
    return Text("off", style="bold red" if host.kind == "vps" else "")


class OverviewScreen(Screen):
    # The host keys (a, e, d) are the screen's: shown unless the stacks panel has the focus,
    # so the footer is right from the first frame, before anything is focused.
    BINDINGS = [
        Binding("a", "add_host", "Add"),
        Binding("e", "edit_host", "Edit"),
        Binding("d", "remove_host", "Remove"),
        Binding("s", "add_stack", "Add stack", show=False),
        Binding("x", "remove_stack", "Remove stack", show=False),
        Binding("r", "review", "Review"),
        Binding("g", "apply", "Apply"),
        Binding("v", "verify", "Verify"),
        Binding("b", "backups", "Backups", show=False),  # in the palette (key bar kept)
        Binding("u", "upgrade", "Upgrade", show=False),
        Binding("o", "audit", "Outside endpoints", show=False),  # in the palette
        Binding("i", "import_backup", "Import a backup", show=False),  # in the palette
        Binding("w", "remote_access", "Remote access", show=False),  # in the palette
        Binding("q", "app.quit", "Quit"),
    ]

    HOSTS_TITLE = "Hosts  (a add · e edit · d remove)"
    STACKS_TITLE = "Stacks  (s add · enter settings · x remove)"

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="overview"):
            reading = self.app.site is None
            yield Static(f"Reading the site in {self.app.site_dir}…" if reading else "",
                         id="summary", markup=False)
            if reading:
                # The first frame, while a worker reads the site (see AbriApp.first_screen):
                # the panels' frames only; the tables replace them once the site is read.
                hosts = Static(id="hosts-reading", classes="reading")
                hosts.border_title = self.HOSTS_TITLE
                yield hosts
                stacks = Static(classes="reading stacks-reading")
                stacks.border_title = self.STACKS_TITLE
                yield stacks
            else:
                yield from self.tables()
        yield KeyBar()

    def tables(self) -> ComposeResult:
        from tui.app.screens.panels import tables

        return tables(self.HOSTS_TITLE, self.STACKS_TITLE)

    @property
    def hosts_table(self) -> DataTable:
        return self.query_one("#hosts")

    @property
    def stacks_table(self) -> DataTable:
        return self.query_one("#stacks")

    @property
    def ready(self) -> bool:
        """The tables are there (the site has been read)."""
        return bool(self.query("#hosts"))

    def on_mount(self) -> None:
        self.refresh_view()

    def show_loading(self) -> None:
        self.query_one("#hosts-reading").loading = True

    async def site_loaded(self) -> None:
        await self.query(".reading").remove()
        await self.query_one("#overview").mount_all(self.tables())
        self.refresh_view()
        self.hosts_table.focus()
        # the stacks and settings columns take the width the tables have once laid out:
        # again after this refresh, in case the first look caught a width still settling
        self.call_after_refresh(self.refresh_view)

    def on_screen_resume(self) -> None:
        self.refresh_view()

    def on_resize(self) -> None:
        if self.ready:
            self.refresh_view()

    # ------------------------------------------------------------------ view
    def refresh_view(self) -> None:
        site = self.app.site
        if site is None or not self.ready:
            return
        table = self.hosts_table
        keep = self.selected_host()
        rows = []
        for host in site.hosts.values():
            status, label = self.app.last_run.get(host.name, ("", "not run yet"))
            rows.append((host.name, host.kind, hardening_cell(host), host_address(host),
                         ", ".join(host.stacks) or "-",
                         Text(label, style=STATUS_STYLE.get(status, "dim"))))
        table.clear(columns=True)
        # every column as wide as its widest cell but Stacks, which takes the width left
        # and wraps, so the hardening column fits at 80 columns
        heads = ("Host", "Kind", "Hardening", "Address", "Last run")
        cols = (0, 1, 2, 3, 5)
        widths = [max(len(h), *(len(str(r[c])) for r in rows)) for h, c in zip(heads, cols,
                                                                              strict=True)]
        width = (table.size.width or self.app.size.width - OVERVIEW_PADDING) - TABLE_CHROME
        stacks_w = max(width - sum(w + 2 for w in widths) - 2,
                       max((len(s) for s in site.catalog.stacks), default=6), len("Stacks"))
        for head, w in zip(heads[:4], widths[:4], strict=True):
            table.add_column(head, width=w)
        table.add_column("Stacks", width=stacks_w)
        table.add_column("Last run", width=widths[4])
        for name, kind, hardening, address, stacks, last in rows:
            table.add_row(Text(name), Text(kind), hardening, Text(address), Text(stacks),
                          last, key=name, height=None)
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
        """The stacks of the highlighted host. The settings column takes the width left and
        wraps, so nothing is cut at 80 columns."""
        table = self.stacks_table
        name = self.selected_host()
        site = self.app.site
        table.clear(columns=True)
        if site is None or name is None:
            table.add_columns("Stack", "Release", "Ports", "Title", "Settings")
            self.refresh_bindings()
            return
        host = site.hosts[name]
        table.border_title = Content(f"Stacks on {name}  (s add · enter settings · x remove)")
        from tui.core import exposure

        published = {stack: exposure.of_stack(site, host, stack) if stack in site.catalog
                     else [] for stack in host.stacks}
        internet = [p for ports in published.values() for p in ports if p.internet]
        table.border_subtitle = Content.styled(
            f"⚠ reachable from the internet: {', '.join(p.label.split()[0] for p in internet)}",
            "bold $error") if internet else None
        rows = [(stack, site.catalog[stack].title if stack in site.catalog else "?",
                 settings_summary(values)) for stack, values in host.stacks.items()]
        ports = {stack: ports_cell(published[stack]) for stack in host.stacks}
        releases = {stack: release_of(site, name, stack) for stack in host.stacks}
        # the same columns for every host: names and titles as wide as the catalog's
        names = [s.name for s in site.catalog] + [r[0] for r in rows]
        titles = [s.title for s in site.catalog] + [r[1] for r in rows]
        # each column takes its width plus one cell of padding either side
        width = (table.size.width or self.app.size.width - OVERVIEW_PADDING) - TABLE_CHROME
        stack_w = max(len(n) for n in ["Stack", *names])
        title_w = max(len(t) for t in ["Title", *titles])
        release_w = max(len(r) for r in ["Release", *releases.values()])
        ports_w = max(len(line) for line in ["Ports", *(line for cell in ports.values()
                                                         for line in cell.plain.split("\n"))])
        left = width - (stack_w + 2) - (release_w + 2) - (ports_w + 2) - (title_w + 2) - 2
        with_title = left >= 50  # the title only where the settings still fit on a line or two
        if not with_title:
            left = width - (stack_w + 2) - (release_w + 2) - (ports_w + 2) - 2
        table.add_column("Stack", width=stack_w)
        table.add_column("Release", width=release_w)
        table.add_column("Ports", width=ports_w)
        if with_title:
            table.add_column("Title", width=title_w)
        table.add_column("Settings", width=max(left, 10))
        for stack, title, summary in rows:
            cells = [Text(stack), Text(releases[stack]), ports[stack]]
            cells += [Text(title), Text(summary)] if with_title else [Text(summary)]
            table.add_row(*cells, key=stack, height=None)
        self.refresh_bindings()

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
        found = self.query(f"#{table_id}")
        if not found:
            return None
        table: DataTable = found.first()
        if not table.row_count:
            return None
        row = min(max(table.cursor_row, 0), table.row_count - 1)
        return table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    def selected_host(self) -> str | None:
        return self._key("hosts")

    def selected_stack(self) -> str | None:
        return self._key("stacks")

    # ------------------------------------------------------------------ keys and palette
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Keys that cannot act now are shown dimmed (None), never hidden: the footer keeps
        its place while the site loads or the selection changes."""
        if self.app.site is None:
            return None
        if action in ("edit_host", "remove_host", "add_stack"):
            return True if self.selected_host() else None
        if action == "remove_stack":
            return True if self.selected_stack() else None
        if action in ("apply", "verify", "backups", "upgrade", "import_backup",
                      "remote_access"):
            return True if self.app.site.hosts else None
        return True

    def palette_commands(self) -> Iterable[SystemCommand]:
        host, stack = self.selected_host(), self.selected_stack()
        commands = [
            ("add_host", "Add a host", "This machine or another one (a)"),
            ("edit_host", f"Edit host {host}", "Address, SSH user and key, kind, "
             "hardening; a vps's provider and region (e)"),
            ("remove_host", f"Remove host {host}", "Take it out of the site; its secrets "
             "are kept (d)"),
            ("add_stack", f"Add a stack to {host}", "Pick a service from the catalog (s)"),
            ("stack_settings", f"Settings of {stack} on {host}", "Open the settings form "
             "(enter in the stacks panel)"),
            ("remove_stack", f"Remove stack {stack} from {host}", "The next apply stops it; "
             "its data stays (x)"),
            ("review", "Review the files and plan", "The files as save writes them, and a "
             "check-mode run (r)"),
            ("apply", "Apply the site", "Save, then deploy onto every host (g)"),
            ("verify", "Verify the services", "Check that every stack answers (v)"),
            ("backups", "Backups", "Snapshots per host and stack; back up, restore (b)"),
            ("upgrade", "Upgrade", "Newer releases; each checked, rolled back on failure (u)"),
            ("import_backup", "Import a Home Assistant backup", "From Home Assistant OS, a "
             "Raspberry Pi or another install, into a host's Home Assistant (i)"),
            ("remote_access", "Remote access", "Home Assistant over HTTPS on a vps: the vps, "
             "the certificate (w)"),
        ]
        for action, title, help_text in commands:
            check = "remove_stack" if action == "stack_settings" else action
            if self.check_action(check, ()):
                yield SystemCommand(title, help_text, getattr(self, f"action_{action}"))

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
            self.hosts_table.move_cursor(row=names.index(name))

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
            f"Remove {name} from the site? Nothing on the machine is touched. When you save, "
            f"its inventory entry and host_vars/{name}/abri.yml go. Its secrets stay in "
            f"host_vars/{name}/vault.yml (the passwords abri generated, such as the Home "
            "Assistant owner's), so adding it back later keeps the same passwords; only "
            f"'abri secrets purge {name}' forgets them.",
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

        from tui.app.screens.dialogs import ConfirmScreen

        self.app.push_screen(ConfirmScreen(question, yes="Remove", no="Keep"), confirmed)

    # ------------------------------------------------------------------ stacks
    def action_add_stack(self) -> None:
        name = self.selected_host()
        if name is None:
            self.notify("Add a host first (a).", severity="warning")
            return
        self.pick_stack(name)

    def action_stack_settings(self) -> None:
        host, stack = self.selected_host(), self.selected_stack()
        if host and stack:
            self.open_settings(host, stack, [])

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

        from tui.app.screens.dialogs import ConfirmScreen

        self.app.push_screen(ConfirmScreen(
            f"{stack.title} needs {', '.join(missing)}, which no stack on {host_name} provides. "
            f"Add {titles} to {host_name} as well?", yes="Add both", no="Only " + stack.title,
            focus_yes=True), answered)

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

        from tui.app.screens.dialogs import ConfirmScreen

        count = len(self.app.site.hosts)
        self.app.push_screen(ConfirmScreen(
            f"Apply saves the site, then deploys it onto {count} host{'s' * (count != 1)}: "
            f"{', '.join(self.app.site.hosts)}. Continue?", yes="Apply", no="Cancel"),
            confirmed)

    def action_backups(self) -> None:
        from tui.app.screens.backups import BackupsScreen

        self.app.push_screen(BackupsScreen())

    def action_audit(self) -> None:
        from tui.app.screens.audit import AuditScreen

        self.app.push_screen(AuditScreen())

    def action_import_backup(self) -> None:
        from tui.app.screens.ha_import import ImportScreen

        self.app.push_screen(ImportScreen())

    def action_remote_access(self) -> None:
        from tui.app.screens.remote import RemoteAccessScreen

        self.app.push_screen(RemoteAccessScreen())

    def action_upgrade(self) -> None:
        from tui.app.screens.upgrade import UpgradeScreen

        self.app.push_screen(UpgradeScreen())

    def action_verify(self) -> None:
        from tui.app.screens.run import RunScreen

        self.app.push_screen(RunScreen("verify"))
