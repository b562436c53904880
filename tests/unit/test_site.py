"""Site model questions the installer asks the engine."""

from __future__ import annotations

from tui.core.site import Site


def test_missing_providers_and_provided(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("pi", "ssh", "10.0.0.2")
    assert site.missing_providers("pi", "homeassistant") == {"mqtt": ["mosquitto"]}
    assert site.missing_providers("pi", "mosquitto") == {}
    site.add_stack("pi", "mosquitto")
    assert site.provided("pi") == {"mqtt"}
    assert site.missing_providers("pi", "homeassistant") == {}


def test_copy_is_independent(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("pi", "ssh", "10.0.0.2")
    trial = site.copy()
    trial.add_stack("pi", "mosquitto")
    assert "mosquitto" not in site.hosts["pi"].stacks
    assert "mosquitto" not in site.secrets.get("pi", {})
