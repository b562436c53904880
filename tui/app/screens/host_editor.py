"""Add or edit a host. Each field is checked as it is typed with the engine's validators;
the engine's own problems land next to the field they name.

A local host (this machine) takes no connection fields: address, port, user and key are
hidden and never written for it. The name of an existing host cannot change (it names the
host's host_vars folder and its vault); the form says so and how to get the same effect.

A new proxmox node takes its API URL, node name and credentials (password or token secret in
masked fields, kept in the vault only); "Read certificate" shows the fingerprint of the
certificate the node presents, to compare with the node's own before confirming it, and OK
pins the node's CA and checks the credentials (tui.core.proxmox, in a worker, as 'abri host
add' does). A new guest takes its node, type, size and address; its bridge and storage are
chosen from the lists the node gives once it is chosen (read in a worker).

A vps takes its provider and region (the regions of the chosen provider, each with its
country, from tui/data/endpoints.yml; any well-formed name for 'other'). Every host abri
deploys to remotely (ssh, vps, guest) has a hardening switch, on by default for a vps only;
left at the kind's default it is not written, as with 'abri host add'. Both go through the
engine's checks (Site.add_host, Site.set_hosting), the ones the CLI uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static, Switch

from tui.app.messages import PingResult
from tui.app.screens.base import WorkerScreen
from tui.app.screens.dialogs import problems_text
from tui.app.widgets import KeyBar, TitleBar
from tui.core import hosting, proxmox, validate
from tui.core.errors import AbriError, Problem
from tui.core.inventory import KINDS
from tui.core.iso3166 import COUNTRIES
from tui.core.site import Site

KIND_LABELS = {
    "local": "local: this machine",
    "ssh": "ssh: a machine reached over SSH",
    "vps": "vps: a rented server (hardened by default)",
    "proxmox": "proxmox: a Proxmox VE node",
    "guest": "guest: a container or VM on a Proxmox node",
}
VALIDATORS = {"name": validate.host_name, "address": validate.address, "port": validate.port,
              "user": validate.ssh_user, "key": validate.key_path,
              "api_url": proxmox.split_url,
              "node": validate.pve_node, "pve_user": validate.pve_user,
              "token_id": validate.pve_token_id, "cores": validate.guest_cores,
              "memory": validate.guest_memory, "disk": validate.guest_disk,
              "ip": validate.guest_ip}
FIELDS = ("name", "kind", "address", "port", "user", "key", "parent", "api_url", "node",
          "pve_user", "password", "token_id", "token_secret", "ca_fingerprint", "type",
          "cores", "memory", "disk", "bridge", "storage", "ip", "gateway", "provider", "region",
          "hardening")
REMOTE_ONLY = ("address", "port", "user", "key")  # connection fields: none for local
NODE_FIELDS = ("api_url", "node", "pve_user", "password", "token_id", "token_secret",
               "ca_fingerprint")
GUEST_FIELDS = ("type", "cores", "memory", "disk", "bridge", "storage", "ip", "gateway")
#: the engine names a node's user 'user'; here that is the SSH user's row
PVE_FIELD = {"user": "pve_user"}
ANY_STORAGE = "(the one with the most free space)"
#: the kinds with a hardening switch: those abri deploys to over SSH (Site.set_hosting)
HARDENABLE = ("ssh", "vps", "guest")
RENAME_NOTE = ("The name cannot be changed: it names this host's folder host_vars/{name}/ "
               "and its vault of secrets. To rename, add a new host and move the stacks.")
HARDENING_HELP = ("Admin user abri with your key, SSH by key only, no root login, security "
                  "upgrades, a default-deny firewall: on the next apply. Off undoes nothing.")


def provider_options() -> list[tuple[str, str]]:
    return [(f"{name}: {entry['operator']}"
             + (f" ({entry['country']})" if entry["country"] != "unknown" else ""), name)
            for name, entry in hosting.providers().items()]


def region_options(provider: str) -> list[tuple[str, str]]:
    """The provider's regions, each with the country of its data centres."""
    regions = hosting.providers().get(provider, {}).get("regions") or {}
    return [(f"{region}: {COUNTRIES.get(code, code)} ({code})"
             + ("" if code in hosting.EUROPE else ", outside Europe"), region)
            for region, code in regions.items()]


class HostEditor(WorkerScreen):
    BINDINGS = [Binding("escape", "cancel", "Cancel"),
                Binding("ctrl+o", "ok", "OK"),
                Binding("ctrl+t", "test", "Test connection"),
                Binding("ctrl+r", "read_certificate", "Read certificate", show=False)]

    @dataclass
    class CertificateRead(Message):
        """The certificate a node presents: its fingerprint, or why it could not be read."""

        url: str
        fingerprint: str | None
        error: str = ""

    @dataclass
    class NodeChecked(Message):
        """The node was pinned and its credentials worked (site), or its problems."""

        site: Any
        problems: list[Problem]

    @dataclass
    class ResourcesRead(Message):
        """A node's bridges and storages for guest disks, or why they could not be read."""

        node: str
        bridges: list[str]
        storages: list[dict[str, Any]]
        error: str = ""

    def __init__(self, host: str | None = None, kind: str = "local"):
        super().__init__()
        self.editing = host
        self.initial_kind = kind
        #: the fingerprint read from the node, and the URL it was read from
        self.seen: tuple[str, str] | None = None
        self.busy = False
        #: the hardening the user chose (or the host had set); None: the kind's default
        self.hardening_explicit: bool | None = None

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
            yield from self.hosting_rows(host)
            if not self.editing:
                yield from self.node_rows()
                yield from self.guest_rows()
            elif host and host.kind == "guest":  # its size: the next apply changes it
                g = host.guest
                yield from self.row("cores", "Cores", Input(
                    str(g.get("cores", "")), id="cores", compact=True))
                yield from self.row("memory", "Memory MiB", Input(
                    str(g.get("memory", "")), id="memory", compact=True))
                yield from self.row("disk", "Disk GiB", Input(
                    str(g.get("disk", "")), id="disk", compact=True),
                    help="The next apply changes the guest on its node; a disk only grows.")
            yield from self.hardening_row(host)
            yield Static(id="host-problems", classes="form-problems")
            yield Static(id="ping", classes="ping", markup=False)
            with Horizontal(classes="form-buttons"):
                yield Button("OK", id="ok", variant="primary", compact=True)
                yield Button("Test connection", id="test", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield KeyBar()

    def hosting_rows(self, host):
        vps = host.vps if host and host.kind == "vps" else {}
        provider = vps.get("provider") or "other"
        region = vps.get("region") or ""
        yield from self.row("provider", "Provider", Select(
            provider_options(), value=provider, allow_blank=False, id="provider",
            compact=True), help="Who runs the server, and under whose law (abri audit).")
        known = region_options(provider)
        with Vertical(id="region-row", classes="field"):
            with Horizontal(classes="field-line"):
                yield Label("Region", classes="field-label")
                yield Select(known, value=region if region and known else Select.NULL,
                             prompt="not given", id="region", compact=True)
                yield Input(region if not known else "", id="region_name", compact=True,
                            placeholder="the provider's name for it, e.g. fr-par (optional)")
            yield Static(id="region-error", classes="field-error", markup=False)

    def hardening_row(self, host):
        self.hardening_explicit = host.hardening if host else None
        on = hosting.hardened(host.kind, host.hardening) if host else \
            hosting.hardened(self.initial_kind, None)
        yield from self.row("hardening", "Hardening", Switch(on, id="hardening"),
                            help=HARDENING_HELP)

    def node_rows(self):
        def text(field, label, placeholder, password=False, help=""):
            return self.row(field, label, Input(placeholder=placeholder, id=field,
                                                password=password, compact=True), help=help)

        yield from text("api_url", "API URL", "https://192.168.1.5:8006")
        yield from text("node", "Node", "pve (its name in the cluster)")
        yield from text("pve_user", "User", "root@pam (can create containers for Docker)")
        yield from text("password", "Password", "root@pam's password", password=True)
        yield from text("token_id", "API token", "or a token: root@pam!abri (optional)")
        yield from text("token_secret", "Token secret", "the token's secret", password=True,
                        help="A token cannot create LXC guests for Docker: Proxmox lets only "
                        "root@pam with its password set the keyctl feature.")
        with Vertical(id="ca_fingerprint-row", classes="field"):
            with Horizontal(classes="field-line"):
                yield Label("Certificate", classes="field-label")
                yield Button("Read certificate", id="read-cert", compact=True)
            yield Static("", id="cert-seen", classes="field-help", markup=False)
            yield Checkbox("It is the fingerprint the node shows (System > Certificates, "
                           "pve-ssl.pem)", id="cert-ok", compact=True, disabled=True)
            yield Static(id="ca_fingerprint-error", classes="field-error", markup=False)

    def guest_rows(self):
        yield from self.row("type", "Type", Select(
            [("LXC container (Docker inside, keyctl)", "lxc"),
             ("VM (Debian 13 cloud image, cloud-init)", "vm")], value="lxc",
            allow_blank=False, id="type", compact=True))
        yield from self.row("cores", "Cores", Input("2", id="cores", compact=True))
        yield from self.row("memory", "Memory MiB", Input("2048", id="memory", compact=True))
        yield from self.row("disk", "Disk GiB", Input("16", id="disk", compact=True))
        yield from self.row("bridge", "Bridge", Select(
            [], prompt="choose the node first", id="bridge", compact=True))
        yield from self.row("storage", "Storage", Select(
            [], prompt="choose the node first", id="storage", compact=True))
        yield from self.row("ip", "Address", Input(
            placeholder="dhcp, or 192.168.1.50/24 (a VM needs a fixed one)", id="ip",
            compact=True))
        yield from self.row("gateway", "Gateway", Input(
            placeholder="192.168.1.1 (with a fixed address)", id="gateway", compact=True))

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
        adding_pve = not self.editing and kind in ("proxmox", "guest")
        for field in REMOTE_ONLY:
            self.query_one(f"#{field}-row").display = kind != "local" and not adding_pve
        self.query_one("#parent-row").display = kind == "guest"
        self.query_one("#provider-row").display = kind == "vps"
        self.query_one("#region-row").display = kind == "vps"
        self.show_region_widget()
        self.query_one("#hardening-row").display = kind in HARDENABLE
        if self.hardening_explicit is None:  # not chosen: the kind's default
            switch = self.query_one("#hardening", Switch)
            with switch.prevent(Switch.Changed):
                switch.value = hosting.hardened(str(kind), None)
        if self.editing:
            for field in ("cores", "memory", "disk"):
                if self.query(f"#{field}-row"):
                    self.query_one(f"#{field}-row").display = kind == "guest"
        if not self.editing:
            for field in NODE_FIELDS:
                self.query_one(f"#{field}-row").display = kind == "proxmox"
            for field in GUEST_FIELDS:
                self.query_one(f"#{field}-row").display = kind == "guest"
            self.query_one("#test").display = not adding_pve

    @on(Select.Changed, "#kind")
    def kind_changed(self, event: Select.Changed) -> None:
        self.show_kind(event.value)
        self.set_error("kind", "")

    def show_region_widget(self) -> None:
        """A known provider's regions are a list; 'other' takes any well-formed name."""
        known = bool(region_options(str(self.query_one("#provider", Select).value)))
        self.query_one("#region", Select).display = known
        self.query_one("#region_name", Input).display = not known

    @on(Select.Changed, "#provider")
    def provider_changed(self, event: Select.Changed) -> None:
        region = self.query_one("#region", Select)
        before = region.value
        options = region_options(str(event.value))
        region.set_options(options)
        if before in [value for _, value in options]:
            region.value = before
        self.show_region_widget()
        self.set_error("provider", "")
        self.set_error("region", "")

    @on(Select.Changed, "#region")
    def region_changed(self) -> None:
        self.set_error("region", "")

    @on(Switch.Changed, "#hardening")
    def hardening_changed(self, event: Switch.Changed) -> None:
        self.hardening_explicit = event.value
        self.set_error("hardening", "")

    @on(Select.Changed, "#parent")
    def parent_changed(self, event: Select.Changed) -> None:
        if self.editing or event.value == Select.NULL:
            return
        for field in ("bridge", "storage"):
            self.query_one(f"#{field}", Select).set_options([])
            self.query_one(f"#{field}", Select).prompt = "reading the node…"
        self.set_error("parent", "")
        self.read_resources(self.app.site, str(event.value))

    @on(Input.Changed, "#api_url")
    def url_changed(self) -> None:
        # a fingerprint belongs to the URL it was read from
        self.seen = None
        self.query_one("#cert-seen", Static).update("")
        box = self.query_one("#cert-ok", Checkbox)
        box.value = False
        box.disabled = True

    @on(Input.Changed)
    def field_changed(self, event: Input.Changed) -> None:
        field = event.input.id or ""
        value = event.value.strip()
        message = ""
        if field == "region_name":  # a region of a provider abri has no list of
            try:
                if value:
                    hosting.region("other", value)
            except ValueError as exc:
                message = str(exc)
            self.set_error("region", message)
            return
        if value and field in VALIDATORS:
            try:
                VALIDATORS[field](value)
            except ValueError as exc:
                message = str(exc)
        if field == "name" and not message and not self.editing and value in self.app.site.hosts:
            message = "is already in this site; choose another name"
        self.set_error(field, message)

    def set_error(self, field: str, message: str) -> None:
        field = PVE_FIELD.get(field, field) if self.kind() == "proxmox" else field
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
        out["provider"] = out["region"] = None
        if kind == "vps":
            out["provider"] = str(self.query_one("#provider", Select).value)
            out["region"] = (self.choice("region") if self.query_one("#region", Select).display
                             else self.text("region_name"))
        return out

    def set_hardening(self, trial: Site, name: str, old: Any) -> list[Problem]:
        """The switch, written as 'abri host set NAME --hardening' writes it: only when
        chosen, and not when it is the kind's default on a host that had none set."""
        kind = self.kind()
        want = self.hardening_explicit
        if kind not in HARDENABLE or want is None:
            return []
        if want == hosting.hardened(kind, None) and (old is None or old.hardening is None):
            return []
        try:
            trial.set_hosting(name, hardening="on" if want else "off")
        except AbriError as exc:
            return exc.problems
        return []

    def kind(self) -> str:
        return str(self.query_one("#kind", Select).value)

    def text(self, field: str) -> str | None:
        return self.query_one(f"#{field}", Input).value.strip() or None

    def choice(self, field: str) -> str | None:
        value = self.query_one(f"#{field}", Select).value
        return None if value in (Select.NULL, ANY_STORAGE) else str(value)

    def node_check(self) -> tuple[list[Problem], Any]:
        """The offline checks of a new node (the engine's), and its credentials."""
        name = self.text("name") or ""
        problems, creds = proxmox.node_problems(
            self.app.site, name, api_url=self.text("api_url"), node=self.text("node"),
            user=self.text("pve_user"), password=self.query_one("#password", Input).value
            or None, token_id=self.text("token_id"),
            token_secret=self.query_one("#token_secret", Input).value or None)
        if not problems:
            url = str(self.text("api_url"))
            if self.seen is None or self.seen[0] != url:
                problems.append(Problem(f"host '{name}'", "ca_fingerprint", "read the "
                                        "certificate the node presents, and compare its "
                                        "fingerprint with the node's own"))
            elif not self.query_one("#cert-ok", Checkbox).value:
                problems.append(Problem(f"host '{name}'", "ca_fingerprint", "confirm that "
                                        "the fingerprint is the one the node shows"))
        return problems, creds

    def guest_trial(self) -> tuple[Site | None, list[Problem]]:
        trial = self.app.site.copy()
        values = {"type": self.choice("type"), "bridge": self.choice("bridge"),
                  "storage": self.choice("storage")}
        for field in ("cores", "memory", "disk", "ip", "gateway"):
            values[field] = self.text(field)
        if values["bridge"] is None:
            return None, [Problem(f"host '{self.text('name') or ''}'", "bridge", "choose one "
                                  "of the node's bridges (they are read once the node is "
                                  "chosen)")]
        parent = self.choice("parent")
        try:
            proxmox.add_guest(trial, self.text("name") or "", parent, values)
        except AbriError as exc:
            return None, exc.problems
        problems = self.set_hardening(trial, self.text("name") or "", None)
        return (None, problems) if problems else (trial, [])

    def trial(self) -> tuple[Site | None, list[Problem]]:
        """The site with this host added (or replaced), and what the engine says about it."""
        v = self.values()
        trial = self.app.site.copy()
        order = list(trial.hosts)
        old = trial.hosts.pop(self.editing) if self.editing else None
        if old is None and v["kind"] == "guest":
            return self.guest_trial()
        try:
            new = trial.add_host(v["name"] or "", v["kind"] or "", v["address"], v["port"],
                                 v["user"], v["key"], v["parent"], v["provider"], v["region"])
        except AbriError as exc:
            return None, exc.problems
        problems = self.set_hardening(trial, new.name, old)
        if problems:
            return None, problems
        if old is not None:
            new.stacks = old.stacks
            new.proxmox, new.guest = dict(old.proxmox), dict(old.guest)
            trial.hosts = {n: trial.hosts[n] for n in order}
            if old.kind == "guest" and new.kind == "guest" and self.query("#cores"):
                try:  # checked as 'abri host set' checks it (a smaller disk refused)
                    trial.set_guest(new.name, cores=self.text("cores"),
                                    memory=self.text("memory"), disk=self.text("disk"))
                except AbriError as exc:
                    return None, exc.problems
        mine = f"host '{new.name}'"
        return trial, [p for p in trial.problems() if p.where.startswith(mine)]

    def show_problems(self, problems: list[Problem]) -> None:
        for field in FIELDS:
            if self.query(f"#{field}-error"):
                self.set_error(field, "")
        rest = []
        for p in problems:
            field = PVE_FIELD.get(p.field, p.field) if self.kind() == "proxmox" else p.field
            row = self.query(f"#{field}-row")
            if field in FIELDS and row and row.first().display:
                self.set_error(field, p.message)
            else:
                rest.append(p)
        box = self.query_one("#host-problems", Static)
        box.update(problems_text(rest) if rest else "")
        box.set_class(bool(rest), "-shown")

    def action_ok(self) -> None:
        if self.busy:
            return
        if not self.editing and self.kind() == "proxmox":
            problems, creds = self.node_check()
            self.show_problems(problems)
            if not problems:
                self.busy = True
                ping = self.query_one("#ping", Static)
                ping.update(f"Checking the credentials and pinning the CA of "
                            f"{self.text('api_url')}…")
                ping.set_classes("ping -running")
                self.add_node(self.app.site.copy(), self.text("name") or "",
                              self.text("node") or "", creds)
            return
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
        {"ok": self.action_ok, "test": self.action_test, "read-cert":
         self.action_read_certificate,
         "cancel": self.action_cancel}[event.button.id or "cancel"]()

    # ------------------------------------------------------------------ proxmox
    def action_read_certificate(self) -> None:
        if self.editing or self.kind() != "proxmox":
            return
        url = self.text("api_url") or ""
        try:
            proxmox.split_url(url)
        except ValueError as exc:
            self.set_error("api_url", str(exc))
            return
        self.query_one("#cert-seen", Static).update(f"Reading the certificate of {url}…")
        self.read_certificate(url)

    @work(thread=True, exclusive=True, exit_on_error=False, group="pve-cert")
    def read_certificate(self, url: str) -> None:
        try:
            seen = proxmox.fingerprint(proxmox.presented_certificate(url))
        except (OSError, ValueError) as exc:
            self.post_message(self.CertificateRead(url, None, str(exc)))
            return
        self.post_message(self.CertificateRead(url, seen))

    @on(CertificateRead)
    def certificate_read(self, message: CertificateRead) -> None:
        if message.url != (self.text("api_url") or ""):
            return  # the URL changed meanwhile
        box = self.query_one("#cert-ok", Checkbox)
        if message.fingerprint is None:
            self.seen = None
            self.query_one("#cert-seen", Static).update("")
            box.disabled = True
            self.set_error("api_url", f"cannot reach {message.url}: {message.error}")
            return
        self.seen = (message.url, message.fingerprint)
        self.set_error("api_url", "")
        self.query_one("#cert-seen", Static).update(f"SHA-256 {message.fingerprint}")
        box.value = False
        box.disabled = False

    @work(thread=True, exclusive=True, exit_on_error=False, group="pve-node")
    def add_node(self, site: Site, name: str, node: str, creds: Any) -> None:
        assert self.seen is not None
        try:
            proxmox.add_node(site, name, api_url=self.seen[0], node=node, creds=creds,
                             ca_fingerprint=self.seen[1])
        except AbriError as exc:
            self.post_message(self.NodeChecked(None, exc.problems))
            return
        self.post_message(self.NodeChecked(site, []))

    @on(NodeChecked)
    def node_checked(self, message: NodeChecked) -> None:
        self.busy = False
        ping = self.query_one("#ping", Static)
        if message.site is None:
            ping.update("✘ the node refused: nothing was added")
            ping.set_classes("ping -failed")
            self.show_problems(message.problems)
            return
        self.app.commit(message.site)
        self.dismiss(self.text("name"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="pve-resources")
    def read_resources(self, site: Site, node: str) -> None:
        try:
            bridges, storages = proxmox.node_resources(site, node)
        except AbriError as exc:
            self.post_message(self.ResourcesRead(node, [], [], "; ".join(
                str(p) for p in exc.problems)))
            return
        self.post_message(self.ResourcesRead(node, bridges, storages))

    @on(ResourcesRead)
    def resources_read(self, message: ResourcesRead) -> None:
        if self.choice("parent") != message.node:
            return  # another node was chosen meanwhile
        bridge = self.query_one("#bridge", Select)
        storage = self.query_one("#storage", Select)
        if message.error:
            self.set_error("parent", f"cannot read the node's bridges and storages: "
                           f"{message.error}")
            bridge.prompt = storage.prompt = "the node could not be read"
            return
        bridge.set_options([(b, b) for b in message.bridges])
        bridge.prompt = "choose a bridge"
        if "vmbr0" in message.bridges or len(message.bridges) == 1:
            bridge.value = "vmbr0" if "vmbr0" in message.bridges else message.bridges[0]
        storage.set_options([(ANY_STORAGE, ANY_STORAGE)] + [
            (f"{s['storage']} ({s['avail'] / 1024 ** 3:.0f} GiB free; "
             f"{', '.join(s['content'])})", s["storage"]) for s in message.storages])
        storage.value = ANY_STORAGE

    # ------------------------------------------------------------------ test connection
    def action_test(self) -> None:
        if not self.editing and self.kind() in ("proxmox", "guest"):
            return  # a node is checked by OK; a guest does not exist before apply
        trial, problems = self.trial()
        if problems or trial is None:
            self.show_problems(problems)
            return
        self.show_problems([])
        ping = self.query_one("#ping", Static)
        ping.update(f"Testing the connection to {self.values()['name']}…")
        ping.set_classes("ping -running")
        ping.scroll_visible(animate=False)
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
        self.call_after_refresh(ping.scroll_visible, animate=False)

    def worker_changed(self, event) -> None:
        if event.worker.group == "pve-node" and event.state.name == "ERROR":
            self.busy = False
        if event.worker.group == "ping" and event.state.name == "ERROR":
            ping = self.query_one("#ping", Static)
            ping.update("✘ the connection test could not run")
            ping.set_classes("ping -failed")
