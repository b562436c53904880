"""abri upgrade's rules that need no host: which tag is a newer release, image references
as the site pins them, pins per host lifted to the site's, the plan without a registry, and
what is refused (the fleet test tests/fleet/test_upgrade.py runs the upgrade itself)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import fingerprint
from tui.core import registry, upgrade
from tui.core.errors import AbriError
from tui.core.site import Site

HA = "docker.io/homeassistant/home-assistant"


@pytest.mark.parametrize(("tag", "candidates", "patch", "want"), [
    ("2026.2.3", ["2026.11.0", "2026.2.3", "stable", "latest", "2026.12.0b1"], False,
     "2026.11.0"),
    ("2026.11.0", ["2026.11.1", "2026.12.0", "2026.11.2"], True, "2026.11.2"),
    ("2026.11.0", ["2026.12.0"], True, None),
    ("2.0.21", ["2.0", "2", "2.0.21", "2.0.21-openssl", "2.0.9"], False, None),
    ("2.0.9", ["2.0.10", "2.0.21"], False, "2.0.21"),  # numbers, not text: 21 > 10 > 9
    ("latest", ["2026.11.0"], False, None),  # an unnumbered pin is never moved
    ("2026.11.0", [], False, None),
])
def test_newer_release(tag, candidates, patch, want):
    assert registry.newer(tag, candidates, patch_only=patch) == want


def test_references_split_and_join():
    digest = "sha256:" + "a" * 64
    ref = f"{HA}:2026.11.0@{digest}"
    assert registry.split(ref) == ("docker.io", "homeassistant/home-assistant", "2026.11.0",
                                   digest)
    assert registry.join(*registry.split(ref)) == ref
    assert registry.split("10.0.0.5:5000/library/eclipse-mosquitto:2.0.21") == (
        "10.0.0.5:5000", "library/eclipse-mosquitto", "2.0.21", "")


def _site(tmp_path, hosts=("a", "b")) -> Site:
    site = Site.init(tmp_path / "site")
    for i, name in enumerate(hosts):
        site.add_host(name, "ssh", address=f"192.0.2.{10 + i}")
        site.add_stack(name, "mosquitto")
    site.save()
    return site


def test_a_host_pin_is_kept_apart_until_every_host_runs_it(tmp_path, abri_config_home):
    site = _site(tmp_path)
    old = site.image_pins["mosquitto"]
    new = old.rsplit(":", 1)[0] + ":2.0.22@sha256:" + "b" * 64
    site.pin_image("a", "mosquitto", new)
    site.save()
    again = Site.load(site.path)
    assert again.image_pin("a", "mosquitto") == new
    assert again.image_pin("b", "mosquitto") == old and again.image_pins["mosquitto"] == old
    host_vars = yaml.safe_load((site.path / "host_vars/a/abri.yml").read_text())
    assert host_vars["abri_images"] == {"mosquitto": new}
    from tui.core import resolve
    state = resolve.resolve_host(again, "a")
    assert next(s["image"] for s in state["stacks"] if s["name"] == "mosquitto") == new
    again.pin_image("b", "mosquitto", new)  # now both: the site's pin, no host pins
    again.save()
    last = Site.load(site.path)
    assert last.image_pins["mosquitto"] == new
    assert not last.hosts["a"].images and not last.hosts["b"].images
    assert "abri_images" not in yaml.safe_load((site.path / "host_vars/a/abri.yml").read_text())


def test_a_moved_stack_takes_its_host_pin_along(tmp_path, abri_config_home):
    site = _site(tmp_path, hosts=("a", "b", "c"))
    new = site.image_pins["mosquitto"].rsplit(":", 1)[0] + ":2.0.22"
    site.pin_image("a", "mosquitto", new)
    site.remove_stack("c", "mosquitto")
    site.move_stacks("a", "c", ["mosquitto"])
    assert site.image_pin("c", "mosquitto") == new


@pytest.mark.parametrize("bad", ["docker.io/homeassistant/home-assistant",  # no tag
                                 "homeassistant:2026.11.0",  # no registry
                                 f"{HA}:2026.11.0@sha256:xyz",
                                 f"{HA}:{{{{ lookup('pipe', 'id') }}}}"])
def test_a_bad_pin_in_the_site_is_named(tmp_path, abri_config_home, abri, bad):
    site = _site(tmp_path, hosts=("a",))
    site_vars = site.path / "group_vars/all/abri.yml"
    data = yaml.safe_load(site_vars.read_text())
    data["abri_images"]["mosquitto"] = bad
    site_vars.write_text(yaml.safe_dump(data))
    before = fingerprint(site.path)
    r = abri("upgrade", "--dry-run", "--site", site.path)
    assert r.code == 2, r.out + r.err
    assert "abri_images.mosquitto" in r.err and "is not an image reference" in r.err, r.err
    assert "Traceback" not in r.err
    assert fingerprint(site.path) == before


def test_without_a_mirror_the_kit_release_is_the_newest(tmp_path, abri_config_home, abri):
    site = _site(tmp_path, hosts=("a",))
    site.add_stack("a", "homeassistant")
    site.image_pins["homeassistant"] = f"{HA}:2026.2.3"
    site.save()
    moves, notes = upgrade.plan(Site.load(site.path), ["a"], [])
    assert [(m.host, m.stack, m.old_tag, m.new_tag, m.source) for m in moves] == [
        ("a", "homeassistant", "2026.2.3", site.catalog["homeassistant"].image["tag"], "kit")]
    assert "No registry mirror is set" in notes[0]
    before = fingerprint(site.path)
    r = abri("upgrade", "--dry-run", "--site", site.path)
    assert r.code == 0, r.err
    assert "2026.2.3" in r.out and "kit" in r.out and "mosquitto" not in r.out
    assert fingerprint(site.path) == before


def test_a_mirror_that_does_not_answer_leaves_the_kit_release(tmp_path, abri_config_home):
    site = _site(tmp_path, hosts=("a",))
    site.settings.set("registry_mirror", "127.0.0.1:9")  # nothing listens on port 9
    site.settings.set("registry_insecure", "true")
    site.save()
    moves, notes = upgrade.plan(Site.load(site.path), ["a"], [])
    assert moves == []
    assert any("did not answer" in n for n in notes), notes


@pytest.mark.parametrize(("args", "field"), [
    (["nosuchstack"], "STACK"),
    (["--to", "2.0.22"], "--to"),  # --to wants one stack named
    (["mosquitto", "--to", "2.0;rm"], "--to"),
    (["--timeout", "3"], "--timeout"),
])
def test_refused_before_anything_runs(tmp_path, abri_config_home, abri, args, field):
    site = _site(tmp_path, hosts=("a",))
    before = fingerprint(site.path)
    r = abri("upgrade", *args, "--site", site.path)
    assert r.code == 2, r.out + r.err
    assert field in r.err and "Traceback" not in r.err, r.err
    assert fingerprint(site.path) == before


def test_deploying_commands_refuse_while_an_upgrade_is_unfinished(tmp_path, abri_config_home,
                                                                   abri):
    site = _site(tmp_path, hosts=("a", "b"))
    record = site.path / ".abri" / upgrade.RECORD
    record.write_text(json.dumps({"phase": "switch", "move": {
        "host": "a", "stack": "mosquitto", "old": site.image_pins["mosquitto"],
        "new": site.image_pins["mosquitto"].rsplit(":", 1)[0] + ":2.0.22", "source": "kit"}}))
    for command in (["apply"], ["restore", "a"], ["migrate", "a", "b"]):
        r = abri(*command, "--site", site.path)
        assert r.code == 2, r.out + r.err
        assert "the upgrade of mosquitto on a to 2.0.22 is unfinished" in r.err, r.err
        assert "'abri upgrade'" in r.err and "Traceback" not in r.err
    with pytest.raises(AbriError):
        upgrade.plan(site, ["a"], ["nosuchstack"])
