"""The Textual installer (placeholder until the TUI issue lands)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class AbriApp(App):
    TITLE = "abri"
    BINDINGS = [("q", "quit", "Quit")]

    def __init__(self, site_dir: Path):
        super().__init__()
        self.site_dir = site_dir

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"abri: site {self.site_dir}")
        yield Footer()


def make_app(site_dir: Path) -> AbriApp:
    return AbriApp(site_dir)
