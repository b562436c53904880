"""The overview's two panels. Imported once the site has been read: the first frame shows
only their frames (DataTable is the heaviest widget abri uses)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable


class StackTable(DataTable):
    """The stacks of the highlighted host. It shows its own keys in the footer instead of
    the host keys, which still work here."""

    BINDINGS = [
        Binding("s", "screen.add_stack", "Add"),
        Binding("enter", "select_cursor", "Settings"),
        Binding("x", "screen.remove_stack", "Remove"),
        Binding("a", "screen.add_host", "Add host", show=False),
        Binding("e", "screen.edit_host", "Edit host", show=False),
        Binding("d", "screen.remove_host", "Remove host", show=False),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "select_cursor":
            return True if self.row_count else None
        return True


def tables(hosts_title: str, stacks_title: str) -> ComposeResult:
    hosts = DataTable(id="hosts", cursor_type="row", zebra_stripes=True)
    hosts.border_title = hosts_title
    hosts.add_columns("Host", "Kind", "Hardening", "Address", "Stacks", "Last run")
    yield hosts
    stacks = StackTable(id="stacks", cursor_type="row")
    stacks.border_title = stacks_title
    yield stacks
