"""Widgets shared by the screens."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class TitleBar(Widget, can_focus=False):
    """The top line: the command palette's icon on the left (a click opens the palette),
    the app's title and subtitle (the site folder, and whether it has unsaved changes)
    centred. One widget where Textual's Header is four, for the same line."""

    DEFAULT_CSS = """
    TitleBar {
        dock: top;
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """
    ICON = "⭘"
    ICON_WIDTH = 3  # the icon with a space either side

    def on_mount(self) -> None:
        self.watch(self.app, "title", lambda _: self.refresh())
        self.watch(self.app, "sub_title", lambda _: self.refresh())

    def render(self) -> Text:
        title = self.screen.title if self.screen.title is not None else self.app.title
        middle = Text(title, end="")
        if self.app.sub_title:
            middle.append(" — ", "dim")
            middle.append(self.app.sub_title, "dim")
        width = self.size.width
        # centred as Textual's Header centres it: between its icon and its clock's space
        left = max(8 + (width - 18 - middle.cell_len) // 2, self.ICON_WIDTH + 1)
        line = Text(f" {self.ICON} ", no_wrap=True, overflow="ellipsis", end="")
        line.append(" " * (left - self.ICON_WIDTH))
        line.append_text(middle)
        line.truncate(width, overflow="ellipsis")
        return line

    async def on_click(self, event: events.Click) -> None:
        if event.x < self.ICON_WIDTH and self.app.ENABLE_COMMAND_PALETTE:
            event.stop()
            await self.run_action("app.command_palette")


class KeyBar(Widget, can_focus=False):
    """The keys that work now, in one line at the bottom: those of the focused panel and the
    screen's, then the command palette's on the right. Keys that cannot act now are dimmed.
    A click on a key presses it.

    It stands in for Textual's Footer, which is one widget per key and rebuilds them all on
    every bindings update (a push, a focus change, a selection): the largest part of abri's
    first frame, and a rebuild on every move between the panels. One line of text costs
    the same for ten keys as for one."""

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        background: $footer-background;
        color: $footer-foreground;
    }
    KeyBar > .keybar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .keybar--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    KeyBar > .keybar--rule {
        color: $foreground 20%;
    }
    """
    COMPONENT_CLASSES = {"keybar--key", "keybar--description", "keybar--rule"}

    def __init__(self) -> None:
        super().__init__()
        self._spans: list[tuple[int, int, str]] = []  # (start, end, key) of each shown key

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        if screen is self.screen:
            self.refresh()

    def shown(self) -> list[tuple[Binding, bool]]:
        """The keys shown on the left, in order, with whether they can act now: one per
        action (the first key bound to it), as Textual's footer does."""
        keys: dict[str, tuple[Binding, bool]] = {}
        for _, binding, enabled, _ in self.screen.active_bindings.values():
            if binding.show and binding.action not in keys:
                keys[binding.action] = (binding, enabled)
        palette = self.app.COMMAND_PALETTE_BINDING
        return [(b, on) for b, on in keys.values() if b.key != palette]

    def palette(self) -> tuple[Binding, bool] | None:
        found = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
        if found is None or not self.app.ENABLE_COMMAND_PALETTE:
            return None
        return found.binding, found.enabled

    def render(self) -> Text:
        key_style = self.get_component_rich_style("keybar--key")
        text_style = self.get_component_rich_style("keybar--description")
        dim = Style(dim=True)
        line = Text(no_wrap=True, overflow="crop", end="")
        spans: list[tuple[int, int, str]] = []

        def add(binding: Binding, enabled: bool) -> None:
            start = len(line)
            extra = Style() if enabled else dim
            line.append(self.app.get_key_display(binding), key_style + extra)
            line.append(f" {binding.description}", text_style + extra)
            spans.append((start, len(line), binding.key))

        for binding, enabled in self.shown():
            if spans:
                line.append(" ")
            add(binding, enabled)
        palette = self.palette()
        if palette is not None:
            right = len(self.app.get_key_display(palette[0])) + len(palette[0].description) + 3
            line.append(" " * max(self.size.width - len(line) - right, 1))
            line.append("▏", self.get_component_rich_style("keybar--rule"))
            add(*palette)
            line.append(" ")
        self._spans = spans
        return line

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
