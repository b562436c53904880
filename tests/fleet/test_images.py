"""Images are built once per recipe hash: asking again is a cache hit."""

from __future__ import annotations

import harness
import pytest

pytestmark = pytest.mark.fleet


def test_second_build_is_a_cache_hit(fleet_images):
    # fleet_images built (or reused) everything once this session; a second round reuses all
    again = harness.build_images()
    for first, second in zip(fleet_images.all(), again.all(), strict=True):
        assert second.ref == first.ref
        assert second.built is False, f"{second.name} was rebuilt although its recipe is unchanged"
        assert second.reused
    assert not again.any_built


def test_recipe_hash_follows_the_recipe(tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "Dockerfile").write_text("FROM scratch\n")
    first = harness.recipe_hash(recipe, "base:1")
    assert harness.recipe_hash(recipe, "base:1") == first
    assert harness.recipe_hash(recipe, "base:2") != first
    (recipe / "Dockerfile").write_text("FROM scratch\nLABEL x=1\n")
    assert harness.recipe_hash(recipe, "base:1") != first


def test_service_images_have_the_official_shape(fleet_images):
    mosq = fleet_images.mosquitto.ref
    cfg = harness.docker("image", "inspect", "-f",
                         "{{json .Config.Cmd}} {{json .Config.ExposedPorts}}", mosq).stdout
    assert '["/usr/sbin/mosquitto","-c","/mosquitto/config/mosquitto.conf"]' in cfg
    assert "1883/tcp" in cfg
    out = harness.docker(
        "run", "--rm", "--entrypoint", "sh", mosq, "-c",
        "id -u mosquitto; id -g mosquitto; stat -c %u:%g /mosquitto/data /mosquitto/log;"
        " test -f /mosquitto/config/mosquitto.conf && echo conf",
    ).stdout.split()
    assert out == ["1883", "1883", "1883:1883", "1883:1883", "conf"]

    ha = fleet_images.homeassistant.ref
    cfg = harness.docker("image", "inspect", "-f",
                         "{{json .Config.Cmd}} {{json .Config.Volumes}} {{.Config.WorkingDir}}",
                         ha).stdout
    assert '["python3","-m","homeassistant","--config","/config"]' in cfg
    assert '"/config"' in cfg
    out = harness.docker(
        "run", "--rm", "-e", "TZ=Europe/Berlin", ha, "sh", "-c",
        "date +%Z; python3 -c 'import homeassistant.const as c; print(c.__version__)'",
    ).stdout.split()
    assert out[0] in ("CET", "CEST")
    assert out[1] == harness.HA_VERSION


def test_a_new_build_prunes_the_earlier_builds_of_its_image(fleet_images):
    ref = fleet_images.host.ref
    repo = ref.rpartition(":")[0]
    stale = f"{repo}:000000000000"
    harness.docker("tag", ref, stale)
    harness._prune_old_builds(ref)
    listed = harness.docker("image", "ls", repo, "--format", "{{.Repository}}:{{.Tag}}")
    tags = listed.stdout.split()
    assert stale not in tags and ref in tags
