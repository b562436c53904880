"""Where each published port can be reached from (tui.core.exposure): the manifest's
exposure made concrete per host, from the stack's settings, the host's kind and hardening.
The firewall (resolve.hardening_state) and the installer read the same answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tui.core import exposure, resolve
from tui.core.catalog import Catalog
from tui.core.site import Site

ROOT = Path(__file__).resolve().parents[2]


def reach(site: Site, host: str) -> dict[str, tuple[str, bool]]:
    return {p.label: (p.reach, p.internet) for p in exposure.of_host(site, site.hosts[host])}


def test_lan_host_loopback_setting_and_when(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("home", "local")
    site.add_stack("home", "mosquitto", {"tls": "true"})
    site.add_stack("home", "esphome")
    assert reach(site, "home") == {
        "1883/tcp lan": ("lan", False), "8883/tcp lan": ("lan", False),
        "6052/tcp lan": ("lan", False),
        "6055/tcp loopback": ("loopback", False)}  # esphome's build_bind default
    site.set_stack("home", "mosquitto", {"bind": "loopback", "tls": "false"})
    assert reach(site, "home")["1883/tcp loopback"] == ("loopback", False)
    assert "8883/tcp lan" not in reach(site, "home")  # tls off: not published


def test_vps_hardened_closes_lan_ports_unhardened_puts_them_on_the_internet(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("v1", "vps", "203.0.113.1", provider="hetzner", region="fsn1")
    site.add_stack("v1", "mosquitto")
    host = site.hosts["v1"]
    [mqtt] = exposure.of_host(site, host)
    assert (mqtt.reach, mqtt.opened, mqtt.internet) == ("closed", False, False)
    assert "firewall drops" in mqtt.sentence(host)
    site.set_hosting("v1", hardening="off")
    [mqtt] = exposure.of_host(site, host)
    assert (mqtt.reach, mqtt.internet) == ("public", True)
    assert "INTERNET" in mqtt.sentence(host) and "hardening is off" in mqtt.sentence(host)
    site.set_stack("v1", "mosquitto", {"bind": "loopback"})
    [mqtt] = exposure.of_host(site, host)
    assert (mqtt.reach, mqtt.internet) == ("loopback", False)


def test_a_hardened_lan_host_opens_its_lan_ports(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("pi", "ssh", "192.168.1.20")
    site.set_hosting("pi", hardening="on")
    site.add_stack("pi", "mosquitto")
    [mqtt] = exposure.of_host(site, site.hosts["pi"])
    assert (mqtt.reach, mqtt.opened, mqtt.internet) == ("lan", True, False)
    assert resolve.hardening_state(site, site.hosts["pi"])["open"] == [
        {"port": 1883, "protocol": "tcp", "why": "mosquitto mqtt"}]


def test_a_public_port_on_a_hardened_vps_is_opened_and_on_the_internet(tmp_path):
    stacks = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks" / "mosquitto", stacks / "mosquitto")
    manifest = stacks / "mosquitto" / "stack.yml"
    data = yaml.safe_load(manifest.read_text())
    data["ports"][0]["exposure"] = "public"
    manifest.write_text(yaml.safe_dump(data))
    site = Site.init(tmp_path / "site", catalog=Catalog.load(stacks))
    site.add_host("v1", "vps", "203.0.113.1")
    site.add_host("pi", "ssh", "192.168.1.20")
    for host in ("v1", "pi"):
        site.add_stack(host, "mosquitto")
    [mqtt] = exposure.of_host(site, site.hosts["v1"])
    assert (mqtt.reach, mqtt.opened, mqtt.internet) == ("public", True, True)
    assert "declared public" in mqtt.sentence(site.hosts["v1"])
    [mqtt] = exposure.of_host(site, site.hosts["pi"])  # behind a router
    assert (mqtt.reach, mqtt.internet) == ("public", False)
    assert "router forwards" in mqtt.sentence(site.hosts["pi"])


def test_verify_fails_a_port_the_firewall_should_close_that_answers(tmp_path, monkeypatch):
    """abri verify's exposure checks read the same answer: on a hardened vps a lan port is
    closed by its firewall, so one that answers from this machine is a failure; on a LAN
    host it is what was declared."""
    from tui.core import checks, tunnel

    site = Site.init(tmp_path / "site")
    site.add_host("v1", "vps", "203.0.113.1")
    site.add_host("pi", "ssh", "192.168.1.20")
    for host in ("v1", "pi"):
        site.add_stack(host, "mosquitto")
    monkeypatch.setattr(tunnel, "exposure", lambda address, ports, timeout=3: {
        p: True for p in ports})
    [vps] = checks.exposure_checks(site, "v1")
    assert not vps.ok
    assert vps.detail == ("203.0.113.1:1883 answers from this machine; declared for the host "
                          "only (its firewall closes it)")
    [lan] = checks.exposure_checks(site, "pi")
    assert lan.ok and lan.detail.endswith("declared for the LAN")
