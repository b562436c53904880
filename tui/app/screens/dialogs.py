"""Small modal dialogs: confirm, quit with unsaved changes, the error modal, a password.

Every text shown here is plain text, never markup: engine messages and names may hold
square brackets ("[Errno 111]", a pattern like "[A-Z]{2}") that markup would swallow."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from tui.core.errors import Problem


def problems_text(problems: list[Problem]) -> Text:
    """Problems as readable lines: where and field in bold, then what is wrong."""
    text = Text()
    for i, p in enumerate(problems):
        if i:
            text.append("\n")
        text.append("• ")
        place = ", ".join(x for x in (p.where, p.field) if x)
        if place:
            text.append(place, style="bold")
            text.append(": ")
        text.append(p.message)
    return text


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question. Enter picks the focused button, Escape means no.

    The safe answer (no) has the focus unless the caller says the other one is safe
    (`focus_yes`, e.g. adding a dependency the stack needs)."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel"),
                Binding("y", "dismiss(True)", "Yes", show=False),
                Binding("n", "dismiss(False)", "No", show=False)]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No",
                 focus_yes: bool = False):
        super().__init__(classes="dialog")
        self.question, self.yes, self.no = question, yes, no
        self.focus_yes = focus_yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(Content(self.yes), id="yes",
                             variant="primary" if self.focus_yes else "default")
                yield Button(Content(self.no), id="no",
                             variant="default" if self.focus_yes else "primary")

    def on_mount(self) -> None:
        self.query_one("#yes" if self.focus_yes else "#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")


class QuitScreen(ModalScreen[str]):
    """Leaving with unsaved changes: save, discard, or stay. Stay has the focus: Enter
    pressed by habit neither writes nor loses anything."""

    BINDINGS = [Binding("escape", "dismiss('stay')", "Stay"),
                Binding("s", "dismiss('save')", "Save and quit", show=False),
                Binding("d", "dismiss('discard')", "Discard", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static("The site has unsaved changes. Save them before leaving?  "
                         "(s save and quit · d discard · esc stay)", classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save and quit", id="save")
                yield Button("Discard", id="discard", variant="error")
                yield Button("Stay", id="stay", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "stay")


class ErrorScreen(ModalScreen[None]):
    """What went wrong, as the engine's problems: never a traceback."""

    BINDINGS = [Binding("escape,enter", "dismiss", "Close")]

    def __init__(self, title: str, problems: list[Problem]):
        super().__init__(classes="dialog -failed")
        self.title_text, self.problems = title, problems

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(problems_text(self.problems), id="error-problems")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss()


class PasswordScreen(ModalScreen["str | None"]):
    """A password for this session only (the SSH user's sudo password): typed hidden, kept
    in memory while abri runs, never written to the site. Escape gives none."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str):
        super().__init__(classes="dialog")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, classes="dialog-text", markup=False)
            yield Input(password=True, id="password", placeholder="password")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Run again", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.answer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.answer()
        else:
            self.dismiss(None)

    def answer(self) -> None:
        value = self.query_one("#password", Input).value
        if value:
            self.dismiss(value)
