"""Remote access in the installer ('w' on the overview; issue 12): the vps picked from the
site's vps hosts and the proxy's certificate, written through the engine's functions the CLI
uses (remote.enable, Site.set_stack, remote.set_user_certificate); refusals next to the field
they name with nothing written; the EAB HMAC key never in the plaintext nor on the screen."""

from __future__ import annotations

import yaml
from textual.widgets import Input, Select, Static

from tests.conftest import fingerprint
from tests.tui.conftest import make_site, opened, until
from tests.unit.test_remote_certificates import HMAC, make_certificate
from tui.app.screens.overview import OverviewScreen
from tui.app.screens.remote import RemoteAccessScreen
from tui.core import remote
from tui.core.site import Site

SIZE = (100, 40)


def host_vars(site_dir, host) -> dict:
    return yaml.safe_load((site_dir / "host_vars" / host / "abri.yml").read_text())


def plaintext(site_dir) -> str:
    return "".join(p.read_text(errors="replace") for p in site_dir.rglob("*")
                   if p.is_file() and p.name != "vault.yml" and ".abri" not in p.parts)


def text(app, selector: str) -> str:
    return " ".join(str(app.screen.query_one(selector, Static).render()).split())


def home_and_vps(site_dir, on: bool = False) -> Site:
    """A home host with Home Assistant, a vps and an ssh host (not a vps)."""
    site = make_site(site_dir)
    site.add_host("vps1", "vps", "203.0.113.10")
    site.add_host("pi", "ssh", "192.168.1.20")
    if on:
        remote.enable(site, "vps1")
    site.save()
    return site


async def open_remote(pilot) -> RemoteAccessScreen:
    await opened(pilot)
    await pilot.press("w")
    await until(pilot, lambda: isinstance(pilot.app.screen, RemoteAccessScreen))
    await pilot.pause()
    return pilot.app.screen


async def choose(pilot, selector: str, value: str) -> None:
    pilot.app.screen.query_one(selector, Select).value = value
    await pilot.pause()


async def fill(pilot, values: dict[str, str]) -> None:
    for key, value in values.items():
        pilot.app.screen.query_one(f"#remote-{key}", Input).value = value
    await pilot.pause()


async def test_turning_remote_access_on_writes_it_and_adds_the_proxy(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir)
    proxy = remote.proxy_stack(Site.load(site_dir))
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        assert text(app, "#remote-now").startswith("Remote access is off. Turned on, a vps "
                                                   "serves homeassistant on home.")
        # only the site's vps hosts can be picked: a home host is not offered
        options = [value for _, value in screen.query_one("#remote-vps", Select)._options]
        assert options == ["off", "vps1"]
        assert not screen.query_one("#row-certificate").display  # off: nothing to certify
        await choose(pilot, "#remote-vps", "vps1")
        assert screen.query_one("#row-certificate").display
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, RemoteAccessScreen)
        assert not app.dirty
        now = text(app, "#remote-now")
        assert now.startswith("Remote access is served by vps1. "
                              "https://203.0.113.10/ serves homeassistant on home")
        assert "certificate self-signed, SHA-256 fingerprint" in now
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
    site = Site.load(site_dir)
    assert site.settings.remote_access == "vps1"
    assert proxy in host_vars(site_dir, "vps1")["abri_stacks"]
    assert proxy not in host_vars(site_dir, "home")["abri_stacks"]
    # what the screen showed is the engine's summary, fingerprint included
    assert all(line.removeprefix("remote access: ") in now for line in remote.summary(site))


async def test_a_refusal_names_remote_access_and_writes_nothing(tmp_path, new_app):
    """A vps with nothing to serve (no Home Assistant at home): the engine's refusal next to
    the remote_access field; the site folder unchanged."""
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=("mosquitto",))
    site.add_host("vps1", "vps", "203.0.113.10")
    site.save()
    before = fingerprint(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        await choose(pilot, "#remote-vps", "vps1")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert screen.query_one("#row-remote_access").has_class("-invalid")
        assert "no stack of this site is served remotely" in text(app, "#error-remote_access")
        assert app.site.settings.remote_access == ""
        assert not app.dirty
    assert fingerprint(site_dir) == before


async def test_acme_without_a_domain_is_refused_on_the_domain_field(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir, on=True)
    before = fingerprint(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        await choose(pilot, "#remote-certificate", "acme")
        for key in ("domain", "acme_directory", "acme_email", "eab_key_id", "eab_hmac_key"):
            assert screen.query_one(f"#row-{key}").display, key
        assert not screen.query_one("#row-cert_file").display
        await fill(pilot, {"acme_directory": "https://acme.example.eu/directory",
                           "eab_key_id": "kid-1", "eab_hmac_key": HMAC})
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert screen.query_one("#row-domain").has_class("-invalid")
        message = text(app, "#error-domain")
        assert "certificate acme needs it" in message and "domain=" in message
        for key in ("acme_directory", "eab_key_id", "eab_hmac_key"):
            assert not text(app, f"#error-{key}"), key
        # a malformed value is shown as it is typed, and refused on save
        await fill(pilot, {"domain": "Home Example!"})
        assert "a DNS name in lowercase" in text(app, "#error-domain")
        await fill(pilot, {"domain": "home.example.eu"})
        assert not text(app, "#error-domain")
        await fill(pilot, {"domain": "Home Example!"})
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert "a DNS name in lowercase" in text(app, "#error-domain")
    assert fingerprint(site_dir) == before
    assert HMAC not in plaintext(site_dir)


async def test_acme_is_saved_and_the_hmac_key_never_shown(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir, on=True)
    proxy = remote.proxy_stack(Site.load(site_dir))
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        await choose(pilot, "#remote-certificate", "acme")
        await fill(pilot, {"domain": "home.example.eu",
                           "acme_directory": "https://acme.example.eu/directory",
                           "acme_email": "me@example.eu", "eab_key_id": "kid-1",
                           "eab_hmac_key": HMAC})
        assert screen.query_one("#remote-eab_hmac_key", Input).password
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert not any(text(app, f"#error-{k}") for k in ("domain", "eab_hmac_key"))
        assert not app.dirty
        field = screen.query_one("#remote-eab_hmac_key", Input)
        assert field.value == ""  # given once: kept in the vault, never shown again
        assert field.placeholder.startswith("kept in the vault")
        shown = "".join(str(w.render()) for w in screen.query(Static))
        assert HMAC not in shown
        assert HMAC not in app.export_screenshot()
        assert "https://home.example.eu/" in text(app, "#remote-now")
    settings = host_vars(site_dir, "vps1")["abri_stacks"][proxy]
    assert settings["certificate"] == "acme" and settings["domain"] == "home.example.eu"
    assert settings["eab_key_id"] == "kid-1"
    assert HMAC not in plaintext(site_dir)
    site = Site.load(site_dir)
    assert site.secrets["vps1"][proxy]["eab_hmac_key"] == HMAC  # in the vault


async def test_own_with_a_key_of_another_certificate_names_the_key_file(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir, on=True)
    proxy = remote.proxy_stack(Site.load(site_dir))
    before = fingerprint(site_dir)
    crt, key = make_certificate(tmp_path, ["home.example.eu"])
    _, other_key = make_certificate(tmp_path, ["home.example.eu"], tag="other")
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        await choose(pilot, "#remote-certificate", "own")
        assert screen.query_one("#row-cert_file").display
        assert not screen.query_one("#row-acme_directory").display
        await pilot.press("ctrl+o")  # no certificate yet: asked for
        await pilot.pause()
        assert "abri stack certificate" in text(app, "#error-cert_file")
        await fill(pilot, {"domain": "home.example.eu", "cert_file": str(crt),
                           "key_file": str(other_key)})
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert screen.query_one("#row-key_file").has_class("-invalid")
        message = text(app, "#error-key_file")
        assert str(other_key) in message and "does not belong to the certificate" in message
        assert not text(app, "#error-cert_file")
        assert fingerprint(site_dir) == before
        # the right key: kept in the vault, its fingerprint shown
        await fill(pilot, {"key_file": str(key)})
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert not text(app, "#error-key_file") and not app.dirty
        assert screen.query_one("#remote-key_file", Input).value == ""
        now = text(app, "#remote-now")
    site = Site.load(site_dir)
    pem = site.secrets["vps1"][proxy]["certificate:certs/own:crt"]
    assert f"certificate own, SHA-256 fingerprint {remote.fingerprint(pem)}" in now
    assert host_vars(site_dir, "vps1")["abri_stacks"][proxy]["certificate"] == "own"
    key_body = key.read_text().splitlines()[1]
    assert key_body not in plaintext(site_dir)


async def test_turning_it_off_takes_the_proxy_off(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir, on=True)
    proxy = remote.proxy_stack(Site.load(site_dir))
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await open_remote(pilot)
        await choose(pilot, "#remote-vps", "off")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert text(app, "#remote-now").startswith("Remote access is off.")
    assert Site.load(site_dir).settings.remote_access == ""
    assert proxy not in (host_vars(site_dir, "vps1").get("abri_stacks") or {})


async def test_the_palette_opens_remote_access(tmp_path, new_app):
    site_dir = tmp_path / "site"
    home_and_vps(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert "Remote access" in {c.title for c in app.get_system_commands(app.screen)}
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"remote access")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RemoteAccessScreen))


async def test_unsaved_changes_are_saved_first(tmp_path, new_app):
    """The screen writes the site at once: with changes made elsewhere and not saved yet it
    asks for ctrl+s first rather than writing them along."""
    site_dir = tmp_path / "site"
    home_and_vps(site_dir)
    before = fingerprint(site_dir)
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_remote(pilot)
        app.dirty = True
        await choose(pilot, "#remote-vps", "vps1")
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert app.site.settings.remote_access == ""
        assert isinstance(app.screen, RemoteAccessScreen) and app.screen is screen
    assert fingerprint(site_dir) == before
