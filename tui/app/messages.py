"""App-wide messages. Workers only post these; screens react in handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:  # not imported before the first frame: see AbriApp.open_site
    from tui.core.errors import Problem
    from tui.core.events import Progress


@dataclass
class SiteLoaded(Message):
    """The site folder was read (after the first frame): the site, or why it cannot open."""

    site: Any  # tui.core.site.Site, or None when there are problems
    problems: list[Problem]


@dataclass
class RunProgress(Message):
    """A new Progress from a running plan/apply. Bursts collapse: only the newest matters."""

    progress: Progress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunProgress)


@dataclass
class RunFinished(Message):
    """ansible-runner returned (successfully, failed or canceled)."""

    result: Any  # tui.core.runner.RunResult (or a test double with the same fields)


@dataclass
class HostVerified(Message):
    """The checks of one host are done."""

    host: str
    checks: list[Any]  # objects with name, ok, detail


@dataclass
class VerifyFinished(Message):
    canceled: bool


@dataclass
class PingResult(Message):
    """The outcome of 'test connection' (an Ansible ping)."""

    host: str
    ok: bool
    detail: str
