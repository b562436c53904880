"""The base of screens that start workers."""

from __future__ import annotations

from textual.screen import Screen
from textual.worker import Worker


class WorkerScreen(Screen):
    """Worker.StateChanged does not bubble, so a screen hands it to the app's one handler
    (which turns an error into a modal) after updating its own state in `worker_changed`."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.worker_changed(event)
        self.app.on_worker_state_changed(event)

    def worker_changed(self, event: Worker.StateChanged) -> None:
        """Override: react to a worker ending (e.g. clear -running)."""
