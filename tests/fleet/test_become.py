"""A host reached as an ordinary user whose sudo asks for a password, as many servers are
set up: without the password abri stops at the first task and says how to give it; with a
wrong one it says so; with the right one (a file given on the command line, never stored)
the broker is deployed, verified, and re-applied with changed=0. The host is a prepared one
(abri's engine step ran on it earlier in the session): this test is about sudo, not about a
fresh host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fleet.test_deploy import NESTED_ENGINE_OPTIONS, _abri, _apply, _own_config_home, _recap

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # the test module's autouse fixture, shared

USER = "deploy"


def test_sudo_that_asks_for_a_password(fleet, fleet_registry, tmp_path):
    host = fleet(1, image="prepared")[0]
    password = "sudo-password-of-" + host.name[-6:]
    host.exec(f"useradd -m -s /bin/bash -G sudo {USER} && chpasswd && "
              f"install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh && "
              f"install -m 600 -o {USER} -g {USER} /root/.ssh/authorized_keys "
              f"/home/{USER}/.ssh/authorized_keys", input=f"{USER}:{password}\n")
    # Debian's own sudoers: the sudo group may run anything, after its password
    probe = host.exec(f"su - {USER} -c 'sudo -n true'", check=False)
    assert probe.returncode != 0 and "password" in (probe.stdout + probe.stderr)

    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "box", "--kind", "ssh", "--address", host.address, "--user", USER,
          "--key", str(host.key_path), "--site", str(site))
    _abri("stack", "add", "box", "mosquitto", "--site", str(site))
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\ndocker_engine_daemon_options: " + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")

    missing, _ = _apply(site)
    assert missing.returncode != 0
    assert "sudo on the host asks for a password: give it with --become-password-file" \
        in missing.stdout, missing.stdout[-4000:]
    assert "Traceback" not in missing.stdout + missing.stderr

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    refused, _ = _apply(site, "apply", "--become-password-file", str(wrong))
    assert refused.returncode != 0
    assert "sudo on the host refused the password" in refused.stdout, refused.stdout[-4000:]

    given = tmp_path / "become"
    given.write_text(password + "\n")
    given.chmod(0o600)
    first, _ = _apply(site, "apply", "--become-password-file", str(given))
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr
    assert "verify:" in first.stdout and ", 0 failed" in first.stdout, first.stdout[-3000:]
    again, _ = _apply(site, "apply", "--no-verify", "--become-password-file", str(given))
    assert again.returncode == 0 and _recap(again.stdout, "box")["changed"] == 0, \
        again.stdout[-4000:]
    # the password is never stored or printed
    for run in (missing, refused, first, again):
        assert password not in run.stdout + run.stderr
    stored = [Path(d, f) for d, _dirs, files in os.walk(site) for f in files
              if password.encode() in Path(d, f).read_bytes()]
    assert not stored, stored
