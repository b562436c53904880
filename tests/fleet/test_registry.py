"""The local registry serves the service images under their upstream paths, and a fleet host's
own Docker engine pulls and runs them from there."""

from __future__ import annotations

import json
import time
import urllib.request

import harness
import pytest

pytestmark = pytest.mark.fleet


def test_registry_mirrors_upstream_paths(fleet_registry):
    reg = fleet_registry
    assert reg.refs["mosquitto"] == f"{reg.address}/library/eclipse-mosquitto:2.0.21"
    ha = f"{reg.address}/homeassistant/home-assistant:{harness.HA_VERSION}"
    assert reg.refs["homeassistant"] == ha
    assert reg.upstream["mosquitto"] == "docker.io/library/eclipse-mosquitto:2.0.21"
    with urllib.request.urlopen(f"http://{reg.address}/v2/_catalog", timeout=10) as resp:
        catalog = json.loads(resp.read())["repositories"]
    assert "library/eclipse-mosquitto" in catalog
    assert "homeassistant/home-assistant" in catalog
    # pushing again is a no-op
    again = harness.ensure_registry(harness.build_images())
    assert again.pushed == dict.fromkeys(again.pushed, False)


def test_host_pulls_and_runs_mosquitto_from_the_registry(fleet, fleet_registry):
    (host,) = fleet(1)
    ref = fleet_registry.refs["mosquitto"]
    host.exec(f"docker pull -q {ref}", timeout=300)
    conf = "listener 1883\\nallow_anonymous true\\n"
    host.exec(
        "mkdir -p /srv/mq/config"
        f" && printf '{conf}' > /srv/mq/config/mosquitto.conf"
        " && docker run -d --name mq -p 1883:1883"
        f" -v /srv/mq/config:/mosquitto/config {ref}"
    )
    deadline = time.monotonic() + 60
    while True:
        proc = host.exec(
            "docker exec mq mosquitto_sub -h 127.0.0.1 -t abri/test -C 1 -W 10 & sleep 1;"
            " docker exec mq mosquitto_pub -h 127.0.0.1 -t abri/test -m hello; wait",
            check=False,
        )
        if proc.stdout.strip() == "hello" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert proc.stdout.strip() == "hello", proc.stdout + proc.stderr + host.exec(
        "docker logs mq 2>&1 | tail -20", check=False).stdout
    # the broker drops to uid 1883 and the entrypoint handed /mosquitto to it
    assert host.exec("docker exec mq sh -c 'stat -c %u /mosquitto/config/mosquitto.conf'"
                     ).stdout.strip() == "1883"
    assert host.exec("ps -o uid= -C mosquitto").stdout.split() == ["1883"]
