"""A site directory abri cannot open: what is wrong and where, instead of a crash."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from tui.app.screens.dialogs import problems_text
from tui.app.widgets import KeyBar, TitleBar
from tui.core.errors import Problem


class BrokenSiteScreen(Screen):
    BINDINGS = [Binding("r", "reload", "Reload"), Binding("q", "app.quit", "Quit")]

    def __init__(self, problems: list[Problem]):
        super().__init__(classes="-failed")
        self.problems = [self.locate(p) for p in problems]

    @staticmethod
    def locate(problem: Problem) -> Problem:
        """Name the file a host's problem lives in (the engine names the host)."""
        match = re.match(r"host '([^']+)'", problem.where)
        if match:
            in_vars = "stack '" in problem.where or problem.field in ("stacks", "abri_stacks")
            file = f"host_vars/{match.group(1)}/abri.yml" if in_vars else "inventory.ini"
            where = f"{problem.where} (in {file})"
            return Problem(where, problem.field, problem.message)
        return problem

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="broken"):
            yield Static(f"abri cannot open the site in {self.app.site_dir}", id="broken-title",
                         markup=False)
            yield Static("Nothing was changed. Fix the problems below in the files named "
                         "(or restore them from git), then press r to reload.",
                         classes="hint")
            with VerticalScroll(id="broken-problems"):
                yield Static(problems_text(self.problems), id="broken-list")
        yield KeyBar()

    async def action_reload(self) -> None:
        await self.app.open_site()
