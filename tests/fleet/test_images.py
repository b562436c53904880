"""Images are built once per recipe hash: asking again is a cache hit."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import harness
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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


# ------------------------------------------------------------------ Node-RED and ESPHome
# Each image is started once on the default bridge and reached on the container's own bridge
# address (nothing is published on the machine).


def _inspect(ref: str) -> dict:
    return json.loads(harness.docker("image", "inspect", ref).stdout)[0]["Config"]


@contextlib.contextmanager
def _started(ref: str, *args: str) -> Iterator[tuple[str, str]]:
    """docker run -d REF (args before the image); yields (container name, bridge address)."""
    name = f"{harness.PREFIX}probe-{secrets.token_hex(3)}"
    harness.docker("run", "-d", "--name", name, "--label", f"{harness.LABEL_PID}={os.getpid()}",
                   *args, ref)
    try:
        ip = harness.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}",
                            name).stdout.strip()
        yield name, ip
    finally:
        harness.docker("rm", "-f", name, check=False)


def _get(url: str, name: str, timeout: float = 120,
         data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """Ask url until it answers (container name for the log when it never does)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        req = urllib.request.Request(url, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            if harness.docker("inspect", "-f", "{{.State.Running}}",
                              name).stdout.strip() != "true":
                break
            time.sleep(0.5)
    logs = harness.docker("logs", "--tail", "60", name, check=False)
    pytest.fail(f"{url} did not answer ({last}); log tail:\n{logs.stdout}{logs.stderr}")


NODERED_SETTINGS = """\
module.exports = {
    flowFile: "flows.json",
    credentialSecret: process.env.NODE_RED_CREDENTIAL_SECRET,
    uiPort: process.env.PORT || 1880,
    logging: { console: { level: "info" } },
};
"""


def test_nodered_image_has_the_official_interface(fleet_images, tmp_path):
    assert fleet_images.nodered is not None
    ref = fleet_images.nodered.ref
    cfg = _inspect(ref)
    assert cfg["User"] == "node-red"
    assert "/data" in cfg["Volumes"]
    assert "1880/tcp" in cfg["ExposedPorts"]
    assert f"NODE_RED_VERSION={harness.NODERED_VERSION}" in cfg["Env"]
    out = harness.docker(
        "run", "--rm", "--entrypoint", "sh", ref, "-c",
        "id -u; id -g; id -un; stat -c %u:%g /data; node-red --version | head -n 1",
    ).stdout.split("\n")
    assert out[:5] == ["1000", "1000", "node-red", "1000:1000",
                       f"Node-RED v{harness.NODERED_VERSION}"]

    # a /data of the kit's own: its settings.js is used, and the credential secret from the
    # environment encrypts flows_cred.json
    data = tmp_path / "data"
    data.mkdir()
    (data / "settings.js").write_text(NODERED_SETTINGS)
    os.chown(data, 1000, 1000)
    secret = secrets.token_hex(16)
    with _started(ref, "-e", f"NODE_RED_CREDENTIAL_SECRET={secret}", "-e", "TZ=Europe/Berlin",
                  "-v", f"{data}:/data") as (name, ip):
        status, body = _get(f"http://{ip}:1880/", name)
        assert status == 200 and b"Node-RED" in body
        flows = [{"id": "b1", "type": "mqtt-broker", "name": "abri probe", "broker": "mqtt",
                  "port": "1883", "credentials": {"user": "abri", "password": "s3cret"}}]
        status, _ = _get(f"http://{ip}:1880/flows", name, data=json.dumps(flows).encode(),
                         headers={"Content-Type": "application/json",
                                  "Node-RED-Deployment-Type": "full"})
        assert status in (200, 204)
        logs = harness.docker("logs", name).stdout
        assert "Settings file  : /data/settings.js" in logs
        stop = time.monotonic()
        harness.docker("stop", "-t", "20", name)
        # node is PID 1 and stops its flows on SIGTERM: a clean exit, not a kill
        assert time.monotonic() - stop < 15
        assert harness.docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert json.loads((data / "flows.json").read_text())[0]["name"] == "abri probe"
    sealed = json.loads((data / "flows_cred.json").read_text())["$"]
    iv, payload = bytes.fromhex(sealed[:32]), base64.b64decode(sealed[32:])
    key = hashlib.sha256(secret.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor()
    plain = json.loads(decryptor.update(payload) + decryptor.finalize())
    assert plain == {"b1": {"user": "abri", "password": "s3cret"}}


ESPHOME_DEVICE = """\
esphome:
  name: abri-probe
esp32:
  board: esp32dev
"""


def test_esphome_image_has_the_official_interface(fleet_images, tmp_path):
    assert fleet_images.esphome is not None
    ref = fleet_images.esphome.ref
    cfg = _inspect(ref)
    assert cfg["Entrypoint"] == ["/entrypoint.sh"]
    assert cfg["Cmd"] == ["dashboard", "/config"]
    assert "/config" in cfg["Volumes"]
    assert cfg["WorkingDir"] == "/config"
    assert "6052/tcp" in cfg["ExposedPorts"]
    # any other command goes to esphome itself
    out = harness.docker("run", "--rm", ref, "version").stdout.strip()
    assert out == f"Version: {harness.ESPHOME_VERSION}"

    config = tmp_path / "config"
    config.mkdir()
    (config / "abri-probe.yaml").write_text(ESPHOME_DEVICE)
    with _started(ref, "-v", f"{config}:/config") as (name, ip):
        status, body = _get(f"http://{ip}:6052/", name)
        assert status == 200 and b"<html" in body.lower()
        status, body = _get(f"http://{ip}:6052/version", name)
        assert status == 200 and json.loads(body) == {"version": harness.ESPHOME_VERSION}
        # the dashboard works on /config: the device file there is listed (the call Home
        # Assistant's ESPHome integration makes)
        status, body = _get(f"http://{ip}:6052/devices", name)
        assert status == 200
        names = [d.get("name") for d in json.loads(body)["configured"]]
        assert "abri-probe" in names, body
