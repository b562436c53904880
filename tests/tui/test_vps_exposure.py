"""Issue 12 in the installer: a vps's provider, region and hardening in the host editor,
written as 'abri host add/set' writes them, and each published port shown with where it is
reachable from on its host (tui.core.exposure)."""

from __future__ import annotations

import yaml
from textual.content import Content
from textual.widgets import DataTable, Input, Select, Static, Switch

from tests.tui.conftest import make_site, opened, until
from tui.app.screens.host_editor import HostEditor
from tui.app.screens.overview import OverviewScreen
from tui.app.screens.stacks import StackSettingsScreen
from tui.core import hosting

SIZE = (80, 24)


def host_vars(site_dir, host) -> dict:
    return yaml.safe_load((site_dir / "host_vars" / host / "abri.yml").read_text())


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def select_host(pilot, name: str) -> None:
    """Highlight a host in the overview (the inventory lists hosts by kind)."""
    pilot.app.screen.query_one("#hosts", DataTable).move_cursor(
        row=list(pilot.app.site.hosts).index(name))
    await pilot.pause()


async def open_editor(pilot, kind: str) -> HostEditor:
    await pilot.press("a")
    await until(pilot, lambda: isinstance(pilot.app.screen, HostEditor))
    await pilot.pause()
    editor = pilot.app.screen
    editor.query_one("#kind", Select).value = kind
    await pilot.pause()
    return editor


async def test_host_editor_adds_a_vps_with_provider_region_and_hardening(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        editor = await open_editor(pilot, "ssh")
        assert not editor.query_one("#provider-row").display  # a vps's only
        assert editor.query_one("#hardening-row").display
        assert editor.query_one("#hardening", Switch).value is False  # off for ssh
        editor.query_one("#kind", Select).value = "vps"
        await pilot.pause()
        assert editor.query_one("#provider-row").display
        assert editor.query_one("#hardening", Switch).value is True  # on for a vps
        editor.query_one("#name", Input).value = "vps1"
        editor.query_one("#address", Input).value = "203.0.113.10"
        editor.query_one("#provider", Select).value = "hetzner"
        await pilot.pause()
        region = editor.query_one("#region", Select)
        # the provider's regions only, each with its country; outside Europe said so
        labels = {value: str(label) for label, value in region._options if value != Select.NULL}
        assert set(labels) == set(hosting.providers()["hetzner"]["regions"])
        assert labels["fsn1"] == "fsn1: Germany (DE)"
        assert "outside Europe" in labels["ash"]
        region.value = "fsn1"
        editor.query_one("#hardening", Switch).value = False  # chosen: written
        await pilot.pause()
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        # the hosts list shows the hardening as it is
        hosts = app.screen.query_one("#hosts", DataTable)
        assert [str(c) for c in hosts.get_row("vps1")][:3] == ["vps1", "vps", "off"]

        # a second vps left at the kind's default: on, and nothing written for it
        editor = await open_editor(pilot, "vps")
        editor.query_one("#name", Input).value = "vps2"
        editor.query_one("#address", Input).value = "203.0.113.11"
        editor.query_one("#provider", Select).value = "scaleway"
        await pilot.pause()
        editor.query_one("#region", Select).value = "nl-ams"
        await pilot.pause()
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        hosts = app.screen.query_one("#hosts", DataTable)
        assert [str(c) for c in hosts.get_row("vps2")][:3] == ["vps2", "vps", "on"]
        await pilot.press("ctrl+s")
        await pilot.pause()
    one, two = host_vars(site_dir, "vps1"), host_vars(site_dir, "vps2")
    assert one["abri_vps"] == {"provider": "hetzner", "region": "fsn1"}
    assert one["abri_hardening"] is False
    assert two["abri_vps"] == {"provider": "scaleway", "region": "nl-ams"}
    assert "abri_hardening" not in two  # the kind's default, as 'abri host add' leaves it


async def test_an_invalid_region_is_refused_next_to_the_region_field(tmp_path, new_app):
    site_dir = tmp_path / "site"
    make_site(site_dir, stacks=())
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        editor = await open_editor(pilot, "vps")
        editor.query_one("#name", Input).value = "vps1"
        editor.query_one("#address", Input).value = "203.0.113.10"
        editor.query_one("#provider", Select).value = "other"  # any well-formed name
        await pilot.pause()
        assert not editor.query_one("#region", Select).display
        field = editor.query_one("#region_name", Input)
        assert field.display
        field.value = "par 1!"
        await pilot.pause()
        message = text_of(app, "#region-error")
        assert message.startswith("'par 1!' is not a region name; use 1-32 lowercase")
        assert "(e.g. fr-par)" in message
        assert editor.query_one("#region-row").has_class("-invalid")
        await pilot.press("ctrl+o")  # the engine refuses it too, on the same field
        await pilot.pause()
        assert isinstance(app.screen, HostEditor)
        assert "not a region name" in text_of(app, "#region-error")
        assert "vps1" not in app.site.hosts
        field.value = "par1"
        await pilot.pause()
        assert not text_of(app, "#region-error")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        assert app.site.hosts["vps1"].vps == {"provider": "other", "region": "par1"}


async def test_editing_a_host_shows_and_changes_its_hardening(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=())
    site.add_host("vps1", "vps", "203.0.113.10", provider="ovhcloud", region="gra")
    site.add_host("pi", "ssh", "192.168.1.20")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await select_host(pilot, "vps1")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, HostEditor))
        editor = app.screen
        assert editor.query_one("#provider", Select).value == "ovhcloud"
        assert editor.query_one("#region", Select).value == "gra"
        assert editor.query_one("#hardening", Switch).value is True
        await pilot.press("ctrl+o")  # unchanged: still nothing written for hardening
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        await select_host(pilot, "pi")
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, HostEditor))
        assert app.screen.query_one("#hardening", Switch).value is False
        app.screen.query_one("#hardening", Switch).value = True
        await pilot.pause()
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen))
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert "abri_hardening" not in host_vars(site_dir, "vps1")
    assert host_vars(site_dir, "vps1")["abri_vps"] == {"provider": "ovhcloud", "region": "gra"}
    assert host_vars(site_dir, "pi")["abri_hardening"] is True


def ports_of(app, stack: str) -> str:
    return str(app.screen.query_one("#stacks", DataTable).get_row(stack)[2])


async def test_the_ports_column_says_where_each_port_is_reachable_from(tmp_path, new_app):
    """The same broker on a LAN host, a hardened vps and a vps with hardening off."""
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=("mosquitto",))
    site.add_host("vps1", "vps", "203.0.113.10", provider="hetzner", region="fsn1")
    site.add_host("vps2", "vps", "203.0.113.11")
    site.set_hosting("vps2", hardening="off")
    for host in ("vps1", "vps2"):
        site.add_stack(host, "mosquitto", {"tls": "true"})
    site.add_stack("vps2", "esphome")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        table = app.screen.query_one("#stacks", DataTable)
        assert table.ordered_columns[2].label.plain == "Ports"
        assert ports_of(app, "mosquitto") == "1883/tcp lan"
        assert not app.screen.query_one("#stacks").border_subtitle
        await select_host(pilot, "vps1")
        # hardened vps: bound to every address, but its firewall opens public ports only
        assert ports_of(app, "mosquitto") == "1883/tcp closed\n8883/tcp closed"
        assert not app.screen.query_one("#stacks").border_subtitle
        await select_host(pilot, "vps2")
        # no firewall on a machine on the internet: said so
        assert ports_of(app, "mosquitto") == (
            "1883/tcp public\n  ⚠ internet\n8883/tcp public\n  ⚠ internet")
        assert ports_of(app, "esphome") == "6052/tcp public\n  ⚠ internet\n6055/tcp loopback"
        subtitle = Content.from_markup(app.screen.query_one("#stacks").border_subtitle).plain
        shown = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        internet = {"mosquitto": "1883/tcp, 8883/tcp", "esphome": "6052/tcp"}
        assert subtitle == "⚠ reachable from the internet: " + ", ".join(
            internet[stack] for stack in shown)  # in the table's order


async def test_the_settings_form_shows_the_exposure_next_to_each_port(tmp_path, new_app):
    site_dir = tmp_path / "site"
    site = make_site(site_dir, stacks=())
    site.add_host("vps2", "vps", "203.0.113.11")
    site.set_hosting("vps2", hardening="off")
    site.add_stack("vps2", "mosquitto")
    site.save()
    app = new_app(site_dir)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await select_host(pilot, "vps2")
        await pilot.press("tab", "enter")
        await until(pilot, lambda: isinstance(app.screen, StackSettingsScreen))
        form = app.screen
        line = form.query_one("#exposure-port", Static)
        assert "1883/tcp public: reachable from the INTERNET" in text_of(app, "#exposure-port")
        assert "hardening is off" in text_of(app, "#exposure-port")
        assert line.has_class("-internet")
        assert text_of(app, "#exposure-tls_port").startswith("not published while tls is off")
        form.query_one("#set-bind", Select).value = "loopback"  # as it is typed
        await pilot.pause()
        assert text_of(app, "#exposure-port").startswith("1883/tcp loopback: bound to "
                                                         "127.0.0.1 of vps2")
        assert not line.has_class("-internet")
