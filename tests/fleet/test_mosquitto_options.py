"""Mosquitto's listener settings on a real host: the TLS listener, and a broker bound to
the host's loopback only; and a device account added with 'abri stack user add'. Each change
is applied, verified, and re-applied with changed=0. The host is a prepared one (abri's engine
step ran on it earlier in the session): this test is about the broker, not about a fresh
host."""

from __future__ import annotations

import json
import re
import socket

import pytest

from tests.fleet.test_deploy import NESTED_ENGINE_OPTIONS, _abri, _apply, _own_config_home, _secrets

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # the test module's autouse fixture, shared


def _verify(site) -> dict[str, dict]:
    import subprocess

    from tests.fleet.test_deploy import _env, _tool

    run = subprocess.run([_tool("abri"), "verify", "--json", "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    checks = {c["name"]: c for c in json.loads(run.stdout)[0]["checks"]}
    assert run.returncode == 0, run.stdout
    return checks


def _changed(out: str) -> int:
    match = re.search(r"^\s*broker\s+ok=\d+ changed=(\d+) failed=0", out, re.M)
    assert match, out[-4000:]
    return int(match.group(1))


def _device_publishes(site, address: str) -> list[tuple[str, str]]:
    """What an admin subscribed to # receives when the device account plug publishes on
    elsewhere/x (outside its topics) and then tasmota/plug/state; a wrong password is
    refused."""
    import time
    import uuid

    import paho.mqtt.client as mqtt

    # the vault password is in this test's own config home (the CLI's), read with the CLI's
    # ansible-vault: not through this process's ABRI_CONFIG_HOME, which conftest points elsewhere
    admin_password = _secrets(site, "broker")["mosquitto"]["admin_password"]

    def client(user, password):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        c.username_pw_set(user, password)
        got: dict = {"msgs": []}
        c.on_connect = lambda cl, u, f, rc, p: got.setdefault("rc", rc)
        c.on_subscribe = lambda cl, u, mid, rcs, p: got.setdefault("sub", rcs)
        c.on_message = lambda cl, u, m: got["msgs"].append((m.topic, m.payload.decode()))
        c.connect(address, 1883)
        c.loop_start()
        deadline = time.monotonic() + 10
        while "rc" not in got and time.monotonic() < deadline:
            time.sleep(0.05)
        return c, got

    admin, seen = client("admin", admin_password)
    plug, mine = client("plug", "Plug-Password-7")
    wrong, bad = client("plug", "not-its-password")
    try:
        assert not seen["rc"].is_failure and not mine["rc"].is_failure, (seen, mine)
        assert bad.get("rc") is not None and bad["rc"].is_failure
        admin.subscribe("#", qos=1)
        deadline = time.monotonic() + 10
        while "sub" not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        plug.publish("elsewhere/x", "no", qos=1).wait_for_publish(10)
        plug.publish("tasmota/plug/state", "on", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 10
        while not seen["msgs"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # in order: a denied message would have come first
        return [m for m in seen["msgs"] if not m[0].startswith("$SYS")]
    finally:
        for c in (admin, plug, wrong):
            c.loop_stop()
            c.disconnect()


def _open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_tls_listener_then_loopback_only(fleet, fleet_registry, tmp_path):
    host = fleet(1, image="prepared")[0]
    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "broker", "--kind", "ssh", "--address", host.address, "--user",
          host.ssh_user, "--key", str(host.key_path), "--site", str(site))
    _abri("stack", "add", "broker", "mosquitto", "--set", "tls=true", "--set", "tls_port=8884",
          "--site", str(site))
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\ndocker_engine_daemon_options: " + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")

    first, _ = _apply(site)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    checks = _verify(site)
    tls = [c for name, c in checks.items() if "TLS" in name]
    assert tls and all(c["ok"] for c in tls), checks
    assert _open(host.address, 8884) and _open(host.address, 1883)
    # a device account added with the CLI: after the apply it logs in from this machine and
    # publishes on its topics (an admin subscriber sees it), not outside them
    (tmp_path / "plug.pw").write_text("Plug-Password-7\n")
    _abri("stack", "user", "add", "broker", "mosquitto", "plug", "--password-file",
          str(tmp_path / "plug.pw"), "--topics", "readwrite tasmota/#", "--site", str(site))
    added, _ = _apply(site, "apply", "--no-verify")
    assert added.returncode == 0 and _changed(added.stdout) > 0, added.stdout[-6000:]
    assert "Plug-Password-7" not in added.stdout + added.stderr
    assert _device_publishes(site, host.address) == [("tasmota/plug/state", "on")]
    again, _ = _apply(site, "apply", "--no-verify")
    assert again.returncode == 0 and _changed(again.stdout) == 0, again.stdout[-6000:]

    _abri("stack", "set", "broker", "mosquitto", "--set", "bind=loopback", "--set", "tls=false",
          "--site", str(site))
    moved, _ = _apply(site)
    assert moved.returncode == 0, moved.stdout[-6000:] + moved.stderr
    assert _changed(moved.stdout) > 0
    assert not _open(host.address, 1883) and not _open(host.address, 8884)
    checks = _verify(site)
    exposure = checks["exposure 1883/tcp (mosquitto mqtt)"]
    assert exposure["ok"] and "is closed from this machine" in exposure["detail"], checks
    # on the host itself the broker still answers, and still refuses anonymous clients
    pub = host.exec("docker exec abri-mosquitto-mosquitto-1 mosquitto_pub -h 127.0.0.1 -t x "
                    "-m y", check=False)
    assert pub.returncode != 0 and "not authori" in (pub.stdout + pub.stderr).lower()
    again, _ = _apply(site, "apply", "--no-verify")
    assert again.returncode == 0 and _changed(again.stdout) == 0, again.stdout[-6000:]
