"""Add or edit a host. Each field is checked as it is typed with the engine's validators;
the engine's own problems land next to the field they name.

A local host (this machine) takes no connection fields: address, port, user and key are
hidden and never written for it. The name of an existing host cannot change (it names the
host's host_vars folder and its vault); the form says so and how to get the same effect."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from tui.app.messages import PingResult
from tui.app.screens.base import WorkerScreen
from tui.app.screens.dialogs import problems_text
from tui.app.widgets import KeyBar, TitleBar
from tui.core import validate
from tui.core.errors import AbriError, Problem
from tui.core.inventory import KINDS
from tui.core.site import Site

KIND_LABELS = {
    "local": "local: this machine",
    "ssh": "ssh: a machine reached over SSH",
    "vps": "vps: a rented server (hardened)",
    "proxmox": "proxmox: a Proxmox VE node",
    "guest": "guest: a container on a Proxmox node",
}
VALIDATORS = {"name": validate.host_name, "address": validate.address, "port": validate.port,
              "user": validate.ssh_user, "key": validate.key_path}
FIELDS = ("name", "kind", "address", "port", "user", "key", "parent")
REMOTE_ONLY = ("address", "port", "user", "key")  # connection fields: none for local
RENAME_NOTE = ("The name cannot be changed: it names this host's folder host_vars/{name}/ "
               "and its vault of secrets. To rename, add a new host and move the stacks.")


class HostEditor(WorkerScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("ctrl+o", "ok", "OK"),
                Binding("ctrl+t", "test", "Test connection")]

    def __init__(self, host: str | None = None, kind: str = "local"):
        super().__init__()
        self.editing = host
        self.initial_kind = kind

    def compose(self) -> ComposeResult:
        site: Site = self.app.site
        host = site.hosts.get(self.editing) if self.editing else None
        kind = host.kind if host else self.initial_kind
        name = host.name if host else ("home" if kind == "local" and "home" not in site.hosts
                                       else "")
        nodes = [(h.name, h.name) for h in site.hosts.values() if h.kind == "proxmox"]
        yield TitleBar()
        with VerticalScroll(id="host-form", classes="form"):
            title = f"Edit host {self.editing}" if self.editing else "Add a host"
            yield Static(title, classes="form-title", markup=False)
            yield from self.row("name", "Name", Input(
                name, placeholder="e.g. home-server", id="name", compact=True,
                disabled=bool(self.editing)),
                help=RENAME_NOTE.format(name=self.editing) if self.editing else "")
            yield from self.row("kind", "Kind", Select(
                [(KIND_LABELS[k], k) for k in KINDS], value=kind, allow_blank=False,
                id="kind", compact=True))
            yield from self.row("address", "Address", Input(
                host.address or "" if host else "", placeholder="IP or DNS name, e.g. "
                "192.168.1.20", id="address", compact=True))
            yield from self.row("port", "SSH port", Input(
                str(host.port) if host and host.port else "", placeholder="22",
                id="port", compact=True))
            yield from self.row("user", "SSH user", Input(
                host.user or "" if host else "", placeholder="e.g. root or pi (optional)",
                id="user", compact=True))
            yield from self.row("key", "SSH key", Input(
                host.key or "" if host else "", placeholder="~/.ssh/id_ed25519 (optional)",
                id="key", compact=True))
            yield from self.row("parent", "Proxmox", Select(
                nodes, value=host.parent if host and host.parent else Select.NULL,
                prompt="the node that owns this guest" if nodes else "no proxmox host yet",
                id="parent", compact=True))
            yield Static(id="host-problems", classes="form-problems")
            yield Static(id="ping", classes="ping", markup=False)
            with Horizontal(classes="form-buttons"):
                yield Button("OK", id="ok", variant="primary", compact=True)
                yield Button("Test connection", id="test", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield KeyBar()

    def row(self, field: str, label: str, widget: Widget, help: str = ""):
        with Vertical(id=f"{field}-row", classes="field"):
            with Horizontal(classes="field-line"):
                yield Label(label, classes="field-label")
                yield widget
            if help:
                yield Static(help, id=f"{field}-help", classes="field-help", markup=False)
            yield Static(id=f"{field}-error", classes="field-error", markup=False)

    def on_mount(self) -> None:
        kind = self.query_one("#kind", Select).value
        self.show_kind(kind)
        if not self.editing:
            self.query_one("#name", Input).focus()
        else:  # the name is fixed: start at the first field that can change
            self.query_one("#kind" if kind == "local" else "#address").focus()

    # ------------------------------------------------------------------ as you type
    def show_kind(self, kind: object) -> None:
        for field in REMOTE_ONLY:
            self.query_one(f"#{field}-row").display = kind != "local"
        self.query_one("#parent-row").display = kind == "guest"

    @on(Select.Changed, "#kind")
    def kind_changed(self, event: Select.Changed) -> None:
        self.show_kind(event.value)
        self.set_error("kind", "")

    @on(Input.Changed)
    def field_changed(self, event: Input.Changed) -> None:
        field = event.input.id or ""
        value = event.value.strip()
        message = ""
        if value and field in VALIDATORS:
            try:
                VALIDATORS[field](value)
            except ValueError as exc:
                message = str(exc)
        if field == "name" and not message and not self.editing and value in self.app.site.hosts:
            message = "is already in this site; choose another name"
        self.set_error(field, message)

    def set_error(self, field: str, message: str) -> None:
        error = self.query_one(f"#{field}-error", Static)
        error.update(message)
        error.set_class(bool(message), "-shown")
        self.query_one(f"#{field}-row").set_class(bool(message), "-invalid")

    # ------------------------------------------------------------------ engine
    def values(self) -> dict[str, str | None]:
        kind = self.query_one("#kind", Select).value
        out: dict[str, str | None] = {"kind": str(kind)}
        for field in ("name", "address", "port", "user", "key"):
            out[field] = self.query_one(f"#{field}", Input).value.strip() or None
        parent = self.query_one("#parent", Select).value
        out["parent"] = str(parent) if kind == "guest" and parent != Select.NULL else None
        if kind == "local":
            out.update({field: None for field in REMOTE_ONLY})
        return out

    def trial(self) -> tuple[Site | None, list[Problem]]:
        """The site with this host added (or replaced), and what the engine says about it."""
        v = self.values()
        trial = self.app.site.copy()
        order = list(trial.hosts)
        old = trial.hosts.pop(self.editing) if self.editing else None
        if old is None and v["kind"] in ("proxmox", "guest"):
            # a node needs its certificate confirmed and its credentials checked, a guest
            # its size and address: the CLI does both; this editor does not yet
            return None, [Problem(f"host '{v['name'] or ''}'", "kind",
                                  f"add {'a proxmox node' if v['kind'] == 'proxmox' else 'a guest'}"
                                  " with the CLI for now: abri host add NAME --kind "
                                  f"{v['kind']} ... (README: Proxmox VE guests)")]
        try:
            new = trial.add_host(v["name"] or "", v["kind"] or "", v["address"], v["port"],
                                 v["user"], v["key"], v["parent"])
        except AbriError as exc:
            return None, exc.problems
        if old is not None:
            new.stacks = old.stacks
            new.proxmox, new.guest = old.proxmox, old.guest
            # provider, region and hardening are set with the CLI for now: an edit keeps them
            new.hardening = old.hardening
            if new.kind == old.kind == "vps":
                new.vps = old.vps
            trial.hosts = {n: trial.hosts[n] for n in order}
        mine = f"host '{new.name}'"
        return trial, [p for p in trial.problems() if p.where.startswith(mine)]

    def show_problems(self, problems: list[Problem]) -> None:
        for field in FIELDS:
            self.set_error(field, "")
        rest = []
        for p in problems:
            row = self.query(f"#{p.field}-row")
            if p.field in FIELDS and row and row.first().display:
                self.set_error(p.field, p.message)
            else:
                rest.append(p)
        box = self.query_one("#host-problems", Static)
        box.update(problems_text(rest) if rest else "")
        box.set_class(bool(rest), "-shown")

    def action_ok(self) -> None:
        trial, problems = self.trial()
        if problems or trial is None:
            self.show_problems(problems)
            return
        self.app.commit(trial)
        self.dismiss(self.values()["name"])

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_ok()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        {"ok": self.action_ok, "test": self.action_test,
         "cancel": self.action_cancel}[event.button.id or "cancel"]()

    # ------------------------------------------------------------------ test connection
    def action_test(self) -> None:
        trial, problems = self.trial()
        if problems or trial is None:
            self.show_problems(problems)
            return
        self.show_problems([])
        ping = self.query_one("#ping", Static)
        ping.update(f"Testing the connection to {self.values()['name']}…")
        ping.set_classes("ping -running")
        self.ping(trial, str(self.values()["name"]))

    @work(thread=True, exclusive=True, exit_on_error=False, group="ping")
    def ping(self, site: Site, name: str) -> None:
        ok, detail = self.app.pinger(site, name)
        self.post_message(PingResult(name, ok, detail))

    def on_ping_result(self, message: PingResult) -> None:
        ping = self.query_one("#ping", Static)
        mark = "✔" if message.ok else "✘"
        ping.update(f"{mark} {message.host}: {message.detail}")
        ping.set_classes("ping " + ("-ok" if message.ok else "-failed"))

    def worker_changed(self, event) -> None:
        if event.worker.group == "ping" and event.state.name == "ERROR":
            ping = self.query_one("#ping", Static)
            ping.update("✘ the connection test could not run")
            ping.set_classes("ping -failed")
