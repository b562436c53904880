"""The runner end to end on this machine: ansible-runner drives the real playbooks against
a `local` host. This machine is Debian 12, which abri does not support: the run must stop
at the system check, say what it found and what is supported, and change nothing."""

from __future__ import annotations

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
pytestmark = pytest.mark.skipif(SUPPORTED or platform.system() != "Linux",
                                reason="needs a controller whose own OS abri does not support")


@pytest.fixture
def local_site(abri, site_dir):
    assert abri("host", "add", "here", "--kind", "local", "--site", site_dir).code == 0
    assert abri("stack", "add", "here", "mosquitto", "--site", site_dir).code == 0
    return site_dir


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
    # no secret of the site reaches the runner's output or artifacts (the fleet deploy test
    # scans the artifacts of real applies, where every secret is used)
    texts = [p.read_bytes() for p in result.artifact_dir.parent.rglob("*") if p.is_file()]
    assert texts
    for secret in site.all_secret_values():
        assert not any(secret.encode() in t for t in texts)
