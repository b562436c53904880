"""The sovereignty audit (what `abri audit` prints): every outside endpoint of the site's
stacks, its operator and jurisdiction, the mitigation in force, and the fix of the selected
finding. Read-only: the fixes are site settings the user sets."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static

from tui.app.widgets import KeyBar, TitleBar

COLUMNS = (("host", "Host"), ("stack", "Stack"), ("endpoint", "Endpoint"), ("when", "When"),
           ("country", "Country"), ("state", "Used"))


class AuditScreen(Screen):
    BINDINGS = [Binding("l", "reload", "Reload"),
                Binding("escape", "close", "Back")]

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="audit"):
            yield Static(id="audit-summary", markup=False)
            yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="audit-detail", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        table = self.query_one("#audit-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.action_reload()

    def action_reload(self) -> None:
        from tui.core import audit

        self.report = audit.report(self.app.site)
        s = self.report["summary"]
        self.query_one("#audit-summary", Static).update(
            f"Sovereignty {self.report['sovereignty']}: {s['endpoints']} outside endpoints, "
            f"{s['cloud_act']} under the US CLOUD Act; US in use: "
            f"{len(s['us_in_use_run'])} at run time, {len(s['us_in_use_build'])} at build time")
        table = self.query_one("#audit-table", DataTable)
        table.clear()
        for i, f in enumerate(self.report["findings"]):
            table.add_row(f["host"], f["stack"], f["endpoint"], f["when"], f["country"],
                          "yes" if f["in_use"] else "no", key=str(i))
        self.show(0)

    def show(self, index: int) -> None:
        from tui.core.audit import MITIGATION_TEXT

        findings = self.report["findings"]
        detail = self.query_one("#audit-detail", Static)
        if not findings:
            detail.update("No stack yet: nothing outside the home is reached.")
            return
        f = findings[min(index, len(findings) - 1)]
        law = ", US CLOUD Act" if f["cloud_act"] else ""
        detail.update(f"{f['purpose']}\n{f['operator']}{law}\n"
                      f"Mitigation: {MITIGATION_TEXT[f['mitigation']]}\n"
                      f"Fix: {f['fix'] or 'none needed'}")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value is not None:
            self.show(int(event.row_key.value))

    def action_close(self) -> None:
        self.app.pop_screen()
