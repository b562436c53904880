"""The runner end to end on this machine: ansible-runner drives the real playbooks against
a `local` host. On a controller whose own system abri does not support (Debian 12 here), the
run must stop at the system check, say what it found and what is supported, and change
nothing. The secret scan runs on every Linux controller, supported or not: a plan from the
stack step on, in check mode, where every secret of the site is handed to the kit modules."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest

from tui.core import runner
from tui.core.site import Site


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


OS = _os_release()
SUPPORTED = (OS.get("ID"), OS.get("VERSION_ID", "").strip('"')) in (("debian", "13"),
                                                                      ("ubuntu", "24.04"))
pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="runs Ansible locally")
unsupported_only = pytest.mark.skipif(
    SUPPORTED, reason="needs a controller whose own OS abri does not support")
#: the first task after the engine step: from there on a plan needs no supported system
STACK_TASK = "Converge each stack, providers first"


@pytest.fixture
def local_site(abri, site_dir):
    assert abri("host", "add", "here", "--kind", "local", "--site", site_dir).code == 0
    assert abri("stack", "add", "here", "mosquitto", "--site", site_dir).code == 0
    return site_dir


@unsupported_only
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_unsupported_system_is_refused_before_any_change(abri, local_site, command):
    result = abri(command, "--site", local_site)
    assert result.code == 1, result.out + result.err
    version = OS.get("VERSION_ID", "").strip('"')
    assert f"runs Debian {version}" in result.out
    assert "Debian 13 (trixie) and Ubuntu 24.04 (noble)" in result.out
    assert "changed=0" in result.out and "failed=1" in result.out
    assert "Traceback" not in result.out + result.err
    assert not Path("/opt/abri").exists()


@unsupported_only
def test_run_result_carries_progress_and_artifacts(local_site, abri_config_home):
    site = Site.load(local_site)
    seen = []
    result = runner.run_site(site, "plan", on_progress=seen.append)
    assert result.status == "failed" and not result.ok
    assert seen and [p.percent for p in seen] == sorted(p.percent for p in seen)
    assert result.progress.finished and result.progress.percent == 100.0
    assert result.progress.failures[0].task == "Prepare the system and the Docker engine"
    assert result.artifact_dir.is_relative_to(abri_config_home)
    assert not result.artifact_dir.is_relative_to(local_site)


@pytest.fixture
def secret_site(abri, local_site, tmp_path):
    """The local host with every stack whose secrets the kit modules get: broker users,
    the Home Assistant owner, Node-RED's keys (the Home Assistant token comes only from a
    real apply; the fleet deploy test scans those). Its stacks root is a folder of the test,
    which a plan must not create."""
    assert abri("site", "set", f"stacks_root={tmp_path / 'stacks'}", "--site",
                local_site).code == 0
    for stack in ("homeassistant", "nodered", "esphome"):
        assert abri("stack", "add", "here", stack, "--site", local_site).code == 0
    return local_site


def test_no_secret_reaches_the_artifacts_of_a_run_that_uses_them(secret_site, tmp_path):
    site = Site.load(secret_site)
    secrets = site.all_secret_values()
    assert len(secrets) >= 6 and all(len(s) >= 16 for s in secrets)
    result = runner.run_site(site, "plan", extra_args=["--start-at-task", STACK_TASK])
    assert result.status == "successful" and result.progress.ok, result.progress.failures
    # the secrets were used: each stack's module built its secret files from them (it
    # fails when one is missing), e.g. the broker's password file with every client's hash
    converged = [e["event_data"]["res"] for e in result.events if e["event"] == "runner_on_ok"
                 and e["event_data"].get("task") == STACK_TASK]
    assert len(converged) == 1
    changes = {item["stack"]: item["changes"] for item in converged[0]["results"]}
    assert set(changes) == {"mosquitto", "homeassistant", "nodered", "esphome"}
    assert "create config/passwd (users: admin, homeassistant, nodered)" in changes["mosquitto"]
    assert "create .env" in changes["nodered"] and "create .env" in changes["esphome"]
    assert any(e["event"] == "runner_on_ok" and e["event_data"].get("task", "").startswith(
        "Configure each stack") for e in result.events)  # the owner password's consumer
    assert f"create {tmp_path / 'stacks'}/" in changes["mosquitto"]
    assert not (tmp_path / "stacks").exists()  # check mode wrote nothing
    # and none of them reached the runner's output, its artifacts or its events
    files = [p for p in result.artifact_dir.parent.rglob("*") if p.is_file()]
    assert any(p.name == "stdout" for p in files) and any(p.parent.name == "job_events"
                                                          for p in files)
    texts = [p.read_bytes() for p in files] + [json.dumps(result.events).encode()]
    for secret in secrets:
        leaks = [str(p) for p, t in zip(files, texts, strict=False) if secret.encode() in t]
        assert not leaks and secret.encode() not in texts[-1], leaks
