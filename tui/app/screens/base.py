"""The base of screens that start workers."""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.worker import Worker

from tui.app.messages import RunProgress


class WorkerScreen(Screen):
    """Worker.StateChanged does not bubble, so a screen hands it to the app's one handler
    (which turns an error into a modal) after updating its own state in `worker_changed`."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.worker_changed(event)
        self.app.on_worker_state_changed(event)

    def worker_changed(self, event: Worker.StateChanged) -> None:
        """Override: react to a worker ending (e.g. clear -running)."""


def screen_report(screen: Any, base: type) -> type:
    """A core Report class (an upgrade's, an import's) that tells the screen instead of the
    terminal: its runs go through the app's runner, its progress and lines become the
    screen's RunProgress and Said messages (bold: a step, yellow: a warning, red: a failed
    task of a recap)."""

    class ScreenReport(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.run_site = screen.app.runner
            self.on_progress = lambda p: screen.post_message(RunProgress(p))

        def step(self, text: str) -> None:
            screen.post_message(screen.Said(text, "bold"))

        def info(self, text: str) -> None:
            screen.post_message(screen.Said(text))

        def warn(self, text: str) -> None:
            screen.post_message(screen.Said(text, "yellow"))

        def recap(self, result: Any) -> None:
            for failure in result.progress.failures:
                screen.post_message(screen.Said(
                    f"{failure.host}: {failure.task}: {failure.message}", "red"))

    return ScreenReport
