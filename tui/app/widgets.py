"""Widgets shared by the screens."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeyFooter(Footer):
    """Textual's footer, recomposed only when the keys it shows change.

    Textual's own footer rebuilds all its keys on every bindings update (a push, a focus
    change, a selection, the site read): at start-up that is three rebuilds, each the price
    of ten widgets. Here an update that leaves the keys as they are costs nothing. Like
    Textual's, it is empty in the very first frame and shows its keys right after."""

    def __init__(self, *, compact: bool = True) -> None:
        super().__init__(compact=compact)
        self._shown: tuple | None = None
        self._pending = False

    def keys_shown(self) -> tuple:
        return tuple((binding.key, binding.description, enabled)
                     for _, binding, enabled, _ in self.screen.active_bindings.values()
                     if binding.show)

    def compose(self):
        if self._bindings_ready:
            self._shown = self.keys_shown()
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True  # what Footer.bindings_changed does before recomposing
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._pending and self.keys_shown() != self._shown:
            self._pending = True
            self.call_after_refresh(self._recompose)

    async def _recompose(self) -> None:
        self._pending = False
        if self.is_attached and self.keys_shown() != self._shown:  # not once its screen is gone
            await self.recompose()
