"""The stack catalog and a stack's settings form, built from its manifest (stack.yml).

Help texts, placeholders and messages come from manifests and the engine and are shown as
plain text (a pattern such as [A-Z]{2} must not be read as markup). Time zone and country
settings complete as you type from the IANA database and the ISO 3166 list."""

from __future__ import annotations

import functools
import importlib

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.suggester import Suggester, SuggestFromList
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    Input,
    Label,
    OptionList,
    Select,
    Static,
    Switch,
)
from textual.widgets.option_list import Option

from tui.app.screens.dialogs import problems_text
from tui.app.widgets import KeyBar, TitleBar
from tui.core.catalog import Setting, Stack
from tui.core.errors import AbriError, Problem
from tui.core.site import Site


class StackPicker(ModalScreen[str | None]):
    """Pick a stack from the catalog for a host."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, host: str):
        super().__init__(classes="dialog")
        self.host = host

    def compose(self) -> ComposeResult:
        site: Site = self.app.site
        on_host = site.hosts[self.host].stacks
        options = []
        for stack in site.catalog:
            if (stack.remote_access or {}).get("role") == "proxy" and stack.name not in on_host:
                continue  # placed by the site setting remote_access, never picked
            text = Text()
            text.append(stack.title, style="bold")
            text.append(f"  ({stack.name})")
            if stack.name in on_host:
                text.append("  ✔ on this host: edit", style="green")
            if stack.uses:
                text.append(f"  needs {', '.join(stack.uses)}", style="italic")
            text.append("\n" + stack.description.strip(), style="dim")
            options.append(Option(text, id=stack.name))
        with Vertical(classes="dialog-box", id="picker"):
            yield Static(f"Add a stack to {self.host}", classes="dialog-title", markup=False)
            yield OptionList(*options, id="catalog")
            yield Static("enter choose · esc cancel", classes="hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


@functools.cache
def time_zones() -> tuple[str, ...]:
    """IANA time zone names (zoneinfo's database), the usual Area/City ones first."""
    import zoneinfo

    names = zoneinfo.available_timezones()
    return tuple(sorted(names, key=lambda n: ("/" not in n, n.startswith(("Etc/", "SystemV/")),
                                              n)))


@functools.cache
def country_codes() -> tuple[str, ...]:
    """ISO 3166 alpha-2 codes from the engine's list (tui.core.iso3166), if it has one."""
    try:
        countries = importlib.import_module("tui.core.iso3166").COUNTRIES
    except (ImportError, AttributeError):
        return ()
    codes = [c[0] if isinstance(c, tuple | list) else c for c in countries]
    return tuple(sorted(str(c) for c in codes))


def suggester_for(setting: Setting) -> Suggester | None:
    """Completion for settings whose valid values are a known list."""
    if setting.type == "timezone":
        return SuggestFromList(time_zones(), case_sensitive=False)
    if setting.type == "country" and country_codes():
        return SuggestFromList(country_codes(), case_sensitive=False)
    return None


def setting_widget(setting: Setting, value: object, ident: str) -> Widget:
    """The form control for a manifest setting type."""
    if setting.type == "bool":
        return Switch(bool(value), id=ident)
    if setting.type == "choice":
        return Select([(Content(c), c) for c in setting.choices], value=str(value),
                      allow_blank=False, id=ident, compact=True)
    if setting.type == "secret":
        return Input(str(value or ""), password=True, id=ident, compact=True,
                     placeholder="generated when left empty")
    placeholder = setting.describe_valid()
    suggester = suggester_for(setting)
    if suggester is not None:
        placeholder += " (completes as you type; → accepts)"
    return Input("" if value is None else str(value), id=ident, compact=True,
                 placeholder=placeholder, suggester=suggester,
                 type="integer" if setting.type in ("port", "int") else "text")


class StackSettingsScreen(Screen[bool]):
    """Settings of one stack on one host; port collisions are flagged before saving."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("ctrl+o", "ok", "OK"),
                Binding("ctrl+r", "reveal", "Show secrets")]

    def __init__(self, host: str, stack: str, extra: list[str] | None = None):
        super().__init__()
        self.host, self.stack_name, self.extra = host, stack, list(extra or [])

    @property
    def stack(self) -> Stack:
        return self.app.site.catalog[self.stack_name]

    @property
    def existing(self) -> bool:
        return self.stack_name in self.app.site.hosts[self.host].stacks

    def compose(self) -> ComposeResult:
        site: Site = self.app.site
        stack = self.stack
        values = dict(stack.defaults())
        values.update(site.hosts[self.host].stacks.get(self.stack_name, {}))
        secrets = site.secrets.get(self.host, {}).get(self.stack_name, {}) if self.existing \
            else {}
        yield TitleBar()
        with VerticalScroll(id="stack-form", classes="form"):
            verb = "Settings of" if self.existing else "Add"
            yield Static(f"{verb} {stack.title} on {self.host}", classes="form-title",
                         markup=False)
            yield Static(stack.description.strip(), classes="hint", markup=False)
            if self.extra:
                titles = ", ".join(site.catalog[e].title for e in self.extra)
                yield Static(f"Also adds {titles} with its defaults.", classes="note",
                             markup=False)
            if any(s.secret for s in stack.settings):
                yield Checkbox("Show secrets (ctrl+r)", id="reveal", compact=True)
            for setting in stack.settings:
                value = secrets.get(setting.key, "") if setting.secret else values.get(setting.key)
                with Vertical(id=f"row-{setting.key}", classes="field"):
                    with Horizontal(classes="field-line"):
                        yield Label(setting.key, classes="field-label", markup=False)
                        yield setting_widget(setting, value, f"set-{setting.key}")
                    yield Static(setting.help, id=f"help-{setting.key}", classes="field-help",
                                 markup=False)
                    if any(p.setting == setting.key for p in stack.ports):
                        # where the port it sets is reachable from on this host
                        yield Static(id=f"exposure-{setting.key}", classes="field-exposure",
                                     markup=False)
                    yield Static(id=f"error-{setting.key}", classes="field-error",
                                 markup=False)
            yield Static(id="stack-problems", classes="form-problems")
            with Horizontal(classes="form-buttons"):
                yield Button("OK", id="ok", variant="primary", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.query(".field-line > Input, .field-line > Select, .field-line > Switch") \
            .first().focus()
        self.check()

    # ------------------------------------------------------------------ values
    def raw(self, setting: Setting) -> str:
        widget = self.query_one(f"#set-{setting.key}")
        if isinstance(widget, Switch):
            return "true" if widget.value else "false"
        if isinstance(widget, Select):
            return str(widget.value)
        assert isinstance(widget, Input)
        return widget.value

    def sets(self) -> tuple[dict[str, str], dict[str, str]]:
        """(values the engine accepts, field -> message for those it does not)."""
        sets, errors = {}, {}
        for setting in self.stack.settings:
            raw = self.raw(setting)
            if setting.secret and not raw:
                continue  # kept as it is, or generated
            try:
                setting.convert(raw)
            except ValueError as exc:
                errors[setting.key] = str(exc)
                continue
            sets[setting.key] = raw
        return sets, errors

    def trial(self, sets: dict[str, str]) -> tuple[Site | None, list[Problem]]:
        trial = self.app.site.copy()
        try:
            for dep in self.extra:
                if dep not in trial.hosts[self.host].stacks:
                    trial.add_stack(self.host, dep)
            trial.add_stack(self.host, self.stack_name, sets)
        except AbriError as exc:
            return None, exc.problems
        mine = f"host '{self.host}'"
        return trial, [p for p in trial.problems() if p.where.startswith(mine)]

    # ------------------------------------------------------------------ checks
    def check(self) -> tuple[Site | None, bool]:
        """Validate every field (types, then collisions on a trial copy); show messages."""
        sets, errors = self.sets()
        trial, problems = self.trial(sets)
        here = f"host '{self.host}', stack '{self.stack_name}'"
        rest = []
        for p in problems:
            if p.where == here and self.stack.setting(p.field) and p.field not in errors:
                errors[p.field] = p.message
            else:
                rest.append(p)
        for setting in self.stack.settings:
            message = errors.get(setting.key, "")
            error = self.query_one(f"#error-{setting.key}", Static)
            error.update(message)
            error.set_class(bool(message), "-shown")
            self.query_one(f"#row-{setting.key}").set_class(bool(message), "-invalid")
        box = self.query_one("#stack-problems", Static)
        box.update(problems_text(rest) if rest else "")
        box.set_class(bool(rest), "-shown")
        self.show_exposure(sets, errors)
        return trial, not errors and not rest and trial is not None

    def show_exposure(self, sets: dict[str, str], errors: dict[str, str]) -> None:
        """Next to each port setting: where that port is reachable from on this host, with
        the values as typed (tui.core.exposure, as the firewall and verify read it)."""
        from tui.core import exposure

        stack = self.stack
        values = {key: stack.setting(key).convert(raw) for key, raw in sets.items()}
        host = self.app.site.hosts[self.host]
        active = {p.name: p for p in exposure.of_stack(self.app.site, host, stack.name,
                                                         values)}
        for key in {p.setting for p in stack.ports}:
            lines, internet = [], False
            for port in (p for p in stack.ports if p.setting == key):
                if key in errors:
                    continue
                if port.name in active:
                    lines.append(active[port.name].sentence(host))
                    internet = internet or active[port.name].internet
                else:
                    lines.append(f"not published while {port.when} is off ({port.name}, "
                                 f"{port.protocol})")
            widget = self.query_one(f"#exposure-{key}", Static)
            widget.update("\n".join(lines))
            widget.display = bool(lines)
            widget.set_class(internet, "-internet")

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def changed(self) -> None:
        self.check()

    @on(Checkbox.Changed, "#reveal")
    def reveal_changed(self, event: Checkbox.Changed) -> None:
        for setting in self.stack.settings:
            if setting.secret:
                self.query_one(f"#set-{setting.key}", Input).password = not event.value

    def action_reveal(self) -> None:
        for box in self.query("#reveal").results(Checkbox):
            box.toggle()

    def action_ok(self) -> None:
        trial, ok = self.check()
        if not ok or trial is None:
            self.notify("Fix the fields marked in red first.", severity="error")
            return
        self.app.commit(trial)
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_ok()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_ok() if event.button.id == "ok" else self.action_cancel()
