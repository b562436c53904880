"""First run: an empty site, or a folder without one. Offers this machine or another one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option


class WelcomeScreen(Screen):
    BINDINGS = [Binding("l", "choose('local')", "This machine"),
                Binding("o", "choose('ssh')", "Another machine"),
                Binding("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        site = self.app.site
        if site is None:
            lead = (f"There is no abri site in {self.app.site_dir} yet. abri will create one "
                    "there (a plain Ansible project) when you save.")
        else:
            lead = "This site has no hosts yet."
        yield Header()
        with Vertical(id="welcome"):
            yield Static("Welcome to abri", id="welcome-title")
            yield Static(lead + " Where should your smart home run?", id="welcome-lead")
            yield OptionList(
                Option("This machine  — install Home Assistant and Mosquitto right here",
                       id="local"),
                Option("Another machine  — a server or Raspberry Pi reached over SSH",
                       id="ssh"),
                id="welcome-choices")
            yield Static("Nothing is written until you save (ctrl+s).", classes="hint")
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_choose(event.option.id or "local")

    def action_choose(self, kind: str) -> None:
        from tui.app.screens.host_editor import HostEditor

        if self.app.site is None and not self.app.create_site():
            return

        def added(name: str | None) -> None:
            if name:
                self.app.call_later(self.app.show_overview, name)

        self.app.push_screen(HostEditor(kind=kind), added)
