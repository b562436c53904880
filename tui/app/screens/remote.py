"""Remote access (`w` on the overview, or the command palette): the vps that serves the
site's Home Assistant over HTTPS through the WireGuard tunnel, and the proxy's certificate.

What it shows comes from the engine (tui.core.remote.summary: the URL, what is served, the
certificate's fingerprint); what it changes goes through the functions the CLI uses:
remote.enable ('abri site set remote_access=VPS'), Site.set_stack on the proxy ('abri stack
set VPS proxy --set ...') and remote.read_user_certificate / set_user_certificate ('abri
stack certificate'). The change is made on a copy of the site and written at once, as the
CLI writes it; a refusal lands next to the field it names and nothing is written.

The vps is picked from the site's vps hosts only. The EAB HMAC key is a masked input that is
never filled from the vault, never revealed, and cleared once saved. The proxy stack's name
comes from remote.proxy_stack: nothing here names a service."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Input, Label, Select, Static

from tui.app.screens.dialogs import problems_text
from tui.app.widgets import KeyBar, TitleBar
from tui.core.errors import AbriError, Problem

OFF = "off"
#: the proxy's settings this screen edits, by certificate mode (the manifest's keys)
MODE_SETTINGS = {"self-signed": (), "own": ("domain",),
                 "acme": ("domain", "acme_directory", "acme_email", "eab_key_id")}
SECRET = "eab_hmac_key"
FILES = ("cert_file", "key_file")
FIELDS = ("remote_access", "certificate", "domain", "acme_directory", "acme_email",
          "eab_key_id", SECRET, *FILES)
MODE_HELP = {
    "self-signed": "Made by abri for the vps's address; compare its fingerprint with the "
                   "one your browser shows.",
    "own": "Your certificate (its chain after it) and its key, read from this machine, "
           "checked and kept in the vps's vault.",
    "acme": "From the ACME CA you name, with your external account binding (EAB); port 80 "
            "is opened on the vps for the CA's check.",
}


class RemoteAccessScreen(Screen[bool]):
    BINDINGS = [Binding("ctrl+o", "save", "Save"),
                Binding("escape", "close", "Back")]

    # ------------------------------------------------------------------ site
    @property
    def proxy(self) -> str | None:
        from tui.core import remote

        return remote.proxy_stack(self.app.site)

    def vpses(self) -> list[str]:
        return [h.name for h in self.app.site.hosts.values() if h.kind == "vps"]

    def proxy_values(self) -> dict:
        """The proxy's settings on the vps that serves now (its defaults otherwise)."""
        site, proxy = self.app.site, self.proxy
        if proxy is None or proxy not in site.catalog:
            return {}
        values = dict(site.catalog[proxy].defaults())
        vps = site.settings.remote_access
        if vps in site.hosts:
            values.update(site.hosts[vps].stacks.get(proxy) or {})
        return values

    # ------------------------------------------------------------------ layout
    def field(self, key: str, widget, help_text: str = "") -> ComposeResult:
        with Vertical(id=f"row-{key}", classes="field"):
            with Horizontal(classes="field-line"):
                yield Label(key, classes="field-label", markup=False)
                yield widget
            if help_text:
                yield Static(help_text, id=f"help-{key}", classes="field-help", markup=False)
            yield Static(id=f"error-{key}", classes="field-error", markup=False)

    def compose(self) -> ComposeResult:
        site = self.app.site
        values = self.proxy_values()
        vpses = self.vpses()
        current = site.settings.remote_access or OFF
        options = [(Content("off"), OFF)] + [(Content(f"{v} (vps)"), v) for v in vpses]
        mode = str(values.get("certificate") or "self-signed")
        yield TitleBar()
        with VerticalScroll(id="remote-form", classes="form"):
            yield Static("Remote access: Home Assistant over HTTPS on a vps",
                         classes="form-title", markup=False)
            yield Static(id="remote-now", markup=False)
            yield from self.field("remote_access", Select(
                options, value=current if current in (OFF, *vpses) else OFF,
                allow_blank=False, id="remote-vps", compact=True),
                "The vps that serves it (the home host dials it; nothing at home is "
                "opened)." + ("" if vpses else " No vps in this site yet: add one with a "
                              "on the overview, kind vps."))
            yield from self.field("certificate", Select(
                [(Content(m), m) for m in MODE_HELP], value=mode, allow_blank=False,
                id="remote-certificate", compact=True), MODE_HELP[mode])
            for key, placeholder in (("domain", "home.example.eu"),
                                     ("acme_directory", "https://... (your CA's directory)"),
                                     ("acme_email", "you@example.eu (optional)"),
                                     ("eab_key_id", "the key id your CA gives you")):
                yield from self.field(key, Input(str(values.get(key) or ""), id=f"remote-{key}",
                                                 compact=True, placeholder=placeholder))
            yield from self.field(SECRET, Input(id=f"remote-{SECRET}", password=True,
                                                compact=True))
            yield from self.field("cert_file", Input(
                id="remote-cert_file", compact=True,
                placeholder="path of your certificate (PEM, its chain after it)"))
            yield from self.field("key_file", Input(
                id="remote-key_file", compact=True,
                placeholder="path of its key (PEM, unencrypted)"),
                "Read on save from this machine; the key goes to the vps's vault only.")
            yield Static(id="remote-problems", classes="form-problems")
            with Horizontal(classes="form-buttons"):
                yield Button("Save", id="remote-save", variant="primary", compact=True)
                yield Button("Back", id="remote-back", compact=True)
        yield KeyBar()

    def on_mount(self) -> None:
        self.show_now()
        self.show_fields()
        self.query_one("#remote-vps", Select).focus()

    # ------------------------------------------------------------------ view
    def show_now(self) -> None:
        """What the site says now (as saved): the engine's summary, or what would be
        served once it is on."""
        from tui.core import remote

        site = self.app.site
        vps = site.settings.remote_access
        # the engine's lines for the terminal, without their "remote access: " prefix
        lines = [line.removeprefix("remote access: ") for line in remote.summary(site)]
        if not vps:
            served = ", ".join(f"{s} on {h}" for h, s in remote.upstreams(site))
            lines = ["Remote access is off." + (f" Turned on, a vps serves {served}."
                                                if served else
                                                " Add Home Assistant to a home host first: "
                                                "it is what a vps serves.")]
        else:
            lines.insert(0, f"Remote access is served by {vps}.")
        self.query_one("#remote-now", Static).update("\n".join(lines))

    def vps(self) -> str:
        value = self.query_one("#remote-vps", Select).value
        return value if isinstance(value, str) and value != OFF else ""

    def mode(self) -> str:
        value = self.query_one("#remote-certificate", Select).value
        return value if isinstance(value, str) else "self-signed"

    def show_fields(self) -> None:
        """The certificate's fields for the mode chosen; none while remote access is off."""
        on, mode = bool(self.vps()), self.mode()
        self.query_one("#row-certificate").display = on
        self.query_one("#help-certificate", Static).update(MODE_HELP[mode])
        for key in ("domain", "acme_directory", "acme_email", "eab_key_id", SECRET, *FILES):
            shown = on and (key in MODE_SETTINGS[mode] or (key == SECRET and mode == "acme")
                            or (key in FILES and mode == "own"))
            self.query_one(f"#row-{key}").display = shown
        self.query_one(f"#remote-{SECRET}", Input).placeholder = (
            "kept in the vault: type a new one to replace it" if self.kept_secret()
            else "your CA's EAB HMAC key (kept in the vault, never shown)")
        self.query_one("#remote-cert_file", Input).placeholder = (
            "kept in the vault: give a new one to replace it" if self.kept_certificate()
            else "path of your certificate (PEM, its chain after it)")

    def kept_secret(self) -> bool:
        site, vps, proxy = self.app.site, self.vps(), self.proxy
        return bool(proxy and (site.secrets.get(vps, {}).get(proxy) or {}).get(SECRET))

    def kept_certificate(self) -> bool:
        from tui.core import remote

        site, vps, proxy = self.app.site, self.vps(), self.proxy
        if not proxy or proxy not in site.catalog:
            return False
        mine = site.secrets.get(vps, {}).get(proxy) or {}
        return any(mine.get(remote.cert_keys(c["dest"])["crt"])
                   for c in site.catalog[proxy].certificates
                   if c.get("made_by") == "user" and not c.get("optional"))

    def error(self, key: str, message: str) -> None:
        box = self.query_one(f"#error-{key}", Static)
        box.update(message)
        box.set_class(bool(message), "-shown")
        self.query_one(f"#row-{key}").set_class(bool(message), "-invalid")

    def show_problems(self, problems: list[Problem]) -> None:
        """Each problem next to the field it names (when shown), the rest below."""
        errors: dict[str, list[str]] = {}
        rest = []
        for p in problems:
            key = {"certificate": "cert_file"}.get(p.field, p.field) \
                if self.mode() == "own" else p.field
            if key in FIELDS and self.query_one(f"#row-{key}").display:
                errors.setdefault(key, []).append(p.message)
            else:
                rest.append(p)
        for key in FIELDS:
            self.error(key, "\n".join(errors.get(key, [])))
        box = self.query_one("#remote-problems", Static)
        box.update(problems_text(rest) if rest else "")
        box.set_class(bool(rest), "-shown")

    @on(Select.Changed)
    def changed(self) -> None:
        self.show_fields()
        self.show_problems([])

    @on(Input.Changed)
    def typed(self, event: Input.Changed) -> None:
        """A proxy setting checked as it is typed, with its manifest's check (the one
        'abri stack set' applies); the whole site is checked on save."""
        key = (event.input.id or "").removeprefix("remote-")
        site, proxy = self.app.site, self.proxy
        if key in FILES or key == SECRET or not proxy or proxy not in site.catalog:
            return
        setting = site.catalog[proxy].setting(key)
        if setting is None:
            return
        try:
            setting.convert(event.value.strip())
            self.error(key, "")
        except ValueError as exc:
            self.error(key, str(exc))

    # ------------------------------------------------------------------ save
    def text(self, key: str) -> str:
        return self.query_one(f"#remote-{key}", Input).value.strip()

    def user_certificate(self) -> tuple[str, str] | None:
        """The certificate and key files given, read and checked; None when none is given
        (the one in the vault is kept). AbriError names the file at fault."""
        from tui.core import remote

        cert_path, key_path = self.text("cert_file"), self.text("key_file")
        if not cert_path and not key_path:
            return None
        if not cert_path or not key_path:
            missing = "cert_file" if not cert_path else "key_file"
            raise AbriError(Problem("", missing, "give both files: the certificate and "
                                    "its key"))
        texts = {}
        for key, raw in (("cert_file", cert_path), ("key_file", key_path)):
            path = Path(raw).expanduser()
            try:
                texts[key] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise AbriError(Problem("", key, f"{path} cannot be read "
                                        f"({exc.__class__.__name__}); give a PEM file")
                                ) from None
        try:
            cert_pem, key_pem = remote.read_user_certificate(texts["cert_file"],
                                                             texts["key_file"])
        except ValueError as exc:
            key = "key_file" if str(exc).startswith("the key") else "cert_file"
            raise AbriError(Problem("", key, f"{Path(self.text(key)).expanduser()}: {exc}")
                            ) from None
        assert key_pem is not None
        return cert_pem, key_pem

    def trial(self):
        """The site as it would be written, or the problems that refuse it."""
        from tui.core import remote

        site = self.app.site.copy()
        vps, mode, proxy = self.vps(), self.mode(), self.proxy
        try:
            if vps != (site.settings.remote_access or ""):
                remote.enable(site, vps)
            if vps and proxy and proxy in site.hosts[vps].stacks:
                if mode == "own":
                    given = self.user_certificate()
                    if given is not None:
                        remote.set_user_certificate(site, vps, proxy, *given)
                sets = {"certificate": mode}
                sets.update({key: self.text(key) for key in MODE_SETTINGS[mode]})
                if mode == "acme" and self.text(SECRET):
                    sets[SECRET] = self.text(SECRET)
                site.set_stack(vps, proxy, sets)
            site.check()
        except AbriError as exc:
            return None, exc.problems
        return site, []

    def action_save(self) -> None:
        if self.app.dirty:
            self.notify("Save the site first (ctrl+s): this screen writes the site at once, "
                        "as 'abri site set' does.", severity="warning")
            return
        site, problems = self.trial()
        self.show_problems(problems)
        if site is None:
            self.notify("Nothing was written: see the fields marked in red.",
                        severity="error")
            return
        self.app.commit(site)
        if not self.app.save_site():
            return
        for key in (SECRET, *FILES):  # given once: kept in the vault, never shown again
            self.query_one(f"#remote-{key}", Input).value = ""
        self.show_now()
        self.show_fields()
        self.notify("Saved remote access to the site; apply (g) deploys it.", title="Saved")

    def action_close(self) -> None:
        self.query_one(f"#remote-{SECRET}", Input).value = ""
        self.app.pop_screen()
        refresh = getattr(self.app.screen, "refresh_view", None)
        if refresh is not None:
            refresh()

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_save() if event.button.id == "remote-save" else self.action_close()
