"""First run: an empty site, or a folder without one. Offers this machine or another one.

The folder is looked at first: a path that is a file cannot hold a site (said at once, and
nothing is offered), and a folder that already holds files is described briefly, with the
promise abri keeps: it writes its own files next to them and overwrites none of them."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tui.app.widgets import KeyBar, TitleBar

SHOWN_ENTRIES = 4  # names listed from a non-empty folder; the rest are counted


def folder_contents(folder: Path) -> list[str]:
    """The names in a folder (folders end with /), dot-files last; [] if it is missing."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    names = [e.name + ("/" if e.is_dir() else "") for e in entries]
    return sorted(names, key=lambda n: (n.startswith("."), n.lower()))


def describe_contents(names: list[str]) -> str:
    shown = names[:SHOWN_ENTRIES]
    rest = len(names) - len(shown)
    if rest:
        return ", ".join(shown) + f" and {rest} more"
    return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]


class WelcomeScreen(Screen):
    BINDINGS = [Binding("l", "choose('local')", "This machine"),
                Binding("o", "choose('ssh')", "Another machine"),
                Binding("q", "app.quit", "Quit")]

    @property
    def is_file(self) -> bool:
        folder: Path = self.app.site_dir
        return folder.exists() and not folder.is_dir()

    def lead(self) -> str:
        folder: Path = self.app.site_dir
        if self.is_file:
            return (f"{folder} is a file, not a folder, so it cannot hold an abri site. "
                    "Start abri in a new or empty folder, or give one with --site DIR.")
        if self.app.site is not None:
            return "This site has no hosts yet. Where should your smart home run?"
        lead = (f"There is no abri site in {folder} yet. abri will create one there (a plain "
                "Ansible project) when you save.")
        names = folder_contents(folder)
        if names:
            count = len(names)
            lead += (f" The folder already holds {count} item{'s' * (count != 1)} "
                     f"({describe_contents(names)}): abri adds its own files next to "
                     f"{'them' if count != 1 else 'it'} and never overwrites a file it did "
                     "not write.")
        return lead + " Where should your smart home run?"

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="welcome"):
            yield Static("Welcome to abri", id="welcome-title")
            yield Static(self.lead(), id="welcome-lead", markup=False,
                         classes="-refused" if self.is_file else "")
            if not self.is_file:
                yield OptionList(
                    Option("This machine  — install Home Assistant and Mosquitto right here",
                           id="local"),
                    Option("Another machine  — a server or Raspberry Pi reached over SSH",
                           id="ssh"),
                    id="welcome-choices")
                yield Static("Nothing is written until you save (ctrl+s).", classes="hint")
        yield KeyBar()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "choose" and self.is_file)  # a file: nothing to offer

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_choose(event.option.id or "local")

    def action_choose(self, kind: str) -> None:
        from tui.app.screens.host_editor import HostEditor

        created = self.app.site is None
        if created and not self.app.create_site():
            return

        def added(name: str | None) -> None:
            if name:
                self.app.call_later(self.app.show_overview, name)
            elif created:
                self.app.site = None  # back where we were: no site, nothing to save
                self.app.refresh_bindings()

        self.app.push_screen(HostEditor(kind=kind), added)
