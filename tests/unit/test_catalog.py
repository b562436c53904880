"""The stack catalog: shipped manifests load; broken ones name the file and the field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tui.core import paths
from tui.core.catalog import Catalog, load_stack
from tui.core.errors import AbriError


def test_shipped_catalog_loads_with_homeassistant_and_mosquitto():
    catalog = Catalog.load()
    assert {"homeassistant", "mosquitto"} <= set(catalog.names())
    ha, mq = catalog["homeassistant"], catalog["mosquitto"]
    assert "mqtt" in ha.uses and "mqtt" in mq.provides
    assert catalog.ordered(["homeassistant", "mosquitto"]) == ["mosquitto", "homeassistant"]
    assert ha.image["tag"] != "latest" and mq.image["tag"] != "latest"
    assert any(v.user_data for v in ha.volumes) and any(v.user_data for v in mq.volumes)
    assert "owner_password" in ha.secret_keys and "mqtt_password" in ha.secret_keys
    assert mq.image_ref("mirror.example.eu:5000") == (
        "mirror.example.eu:5000/library/eclipse-mosquitto:" + mq.image["tag"])


def test_every_stack_folder_has_its_templates():
    for stack in Catalog.load():
        assert (stack.path / "compose.yml.j2").is_file(), stack.name


def _copy_stack(tmp_path: Path, name: str = "mosquitto") -> Path:
    target = tmp_path / "stacks" / name
    shutil.copytree(paths.stacks_dir() / name, target)
    return target / "stack.yml"


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["ports"][0].update(protocol="sctp"), "ports[0].protocol", "sctp"),
        (lambda d: d["image"].update(tag="latest"), "image.tag", "latest"),
        (lambda d: d.pop("healthcheck"), "(top level)", "healthcheck"),
        (lambda d: d["settings"][0].update(default=99999), "settings[0].default", "99999"),
        (lambda d: d["settings"][0].update(type="float"), "settings[0].type", "float"),
        (lambda d: d["ports"][0].update(setting="nope"), "ports[0].setting", "nope"),
        (lambda d: d.update(name="other"), "name", "folder"),
        (lambda d: d["healthcheck"].update(port_setting="missing"), "healthcheck.port_setting",
         "missing"),
        (lambda d: d.update(colour="blue"), "(top level)", "colour"),
    ],
)
def test_broken_manifest_names_file_and_field(tmp_path, mutate, field, fragment):
    manifest = _copy_stack(tmp_path)
    data = yaml.safe_load(manifest.read_text())
    mutate(data)
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    text = str(info.value)
    assert "stack.yml" in text and field in text and fragment in text, text


@pytest.mark.parametrize(("mutate", "field", "fragment"), [
    (lambda a: a.update(volume="nope"), "ha_addon.volume", "not a user-data volume"),
    (lambda a: a.update(secrets={"port": "x"}), "ha_addon.secrets.port", "not a secret"),
    (lambda a: a.update({"from": ["addon:../etc"]}), "ha_addon.from[0]", "does not match"),
    (lambda a: a.update({"from": ["elsewhere:config"]}), "ha_addon.from[0]", "elsewhere"),
    (lambda a: a.update(exclude=["a/../../b"]), "ha_addon.exclude[0]", "no '..'"),
])
def test_broken_ha_addon_mapping_names_the_field(tmp_path, mutate, field, fragment):
    """The add-on data a stack takes on import: a volume that holds user data, secrets that
    are secret settings, paths that stay inside."""
    manifest = _copy_stack(tmp_path, "nodered")
    data = yaml.safe_load(manifest.read_text())
    mutate(data["ha_addon"])
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    text = str(info.value)
    assert "nodered/stack.yml" in text and field in text and fragment in text, text


def test_manifest_that_is_not_yaml(tmp_path):
    manifest = _copy_stack(tmp_path)
    manifest.write_text("name: [unclosed\n")
    with pytest.raises(AbriError, match=r"stack.yml: is not valid YAML at line"):
        load_stack(manifest)


def test_settings_convert_with_helpful_messages():
    mq = Catalog.load()["mosquitto"]
    assert mq.setting("port").convert("1884") == 1884
    assert mq.setting("tls").convert("yes") is True
    with pytest.raises(ValueError, match="1 to 65535"):
        mq.setting("port").convert("70000")
    with pytest.raises(ValueError, match="one of lan, loopback"):
        mq.setting("bind").convert("wan")
    with pytest.raises(ValueError) as info:
        mq.setting("admin_password").convert("short pw")
    assert "short pw" not in str(info.value)  # a secret is never echoed
