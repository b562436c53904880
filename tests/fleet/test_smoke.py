"""Smoke: two Debian 13 hosts boot, see each other, and Ansible reaches them over SSH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def _ansible_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="False")
    return env


def _ansible_ping(inventory: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    ansible = _tool("ansible")
    assert ansible, "ansible is not installed in this environment"
    return subprocess.run(
        [ansible, "-i", str(inventory), "all", "-m", "ansible.builtin.ping", "-o"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_two_hosts_boot_and_reach_each_other(fleet):
    fl = fleet(2)
    a, b = fl.hosts
    assert a.name.startswith("abri-fleet-") and b.name.startswith("abri-fleet-")
    for host in fl:
        state = host.exec("systemctl is-system-running", check=False).stdout.strip()
        assert state in ("running", "degraded"), host.journal_tail()
        assert host.exec(". /etc/os-release; echo $VERSION_ID").stdout.strip() == "13"
        assert host.ssh("id -un").stdout.strip() == "root"
    # by name over the dedicated fleet network, both ways, to sshd
    for src, dst in ((a, b), (b, a)):
        resolved = src.exec(f"getent hosts {dst.name}").stdout.split()[0]
        assert resolved == dst.address
        banner = src.exec(
            f"python3 -c 'import socket; s=socket.create_connection((\"{dst.name}\", 22), 5);"
            " print(s.recv(64).decode())'"
        ).stdout
        assert banner.startswith("SSH-2.0-OpenSSH"), banner
    # the nested engine is there and uses overlay2 on its volume
    assert a.exec("docker info --format '{{.Driver}}'").stdout.strip() == "overlay2"


def test_ansible_reaches_both_hosts(fleet, tmp_path):
    fl = fleet(2, image="plain")
    inventory = fl.inventory(tmp_path / "inventory.ini")
    proc = _ansible_ping(inventory, tmp_path, _ansible_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fl:
        assert f"{host.name} | SUCCESS" in proc.stdout, proc.stdout


def test_abri_cli_registers_hosts_and_ansible_pings_through_the_site(fleet, tmp_path):
    abri = _tool("abri")
    if abri is None:
        pytest.skip("the abri CLI is not installed in this environment")
    fl = fleet(2, image="plain")
    site = tmp_path / "site"

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([abri, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == 0, f"abri {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc

    run("init", "--site", str(site))
    for host in fl:
        run("host", "add", host.name, "--kind", "ssh", "--address", host.ssh_host,
            "--port", str(host.ssh_port), "--user", host.ssh_user, "--key", str(host.key_path),
            "--site", str(site))
    inventory = site / "inventory.ini"
    assert inventory.exists(), sorted(p.name for p in site.iterdir())
    # run where the site's own ansible.cfg applies, unchanged (it trusts new host keys into
    # a site-local known_hosts; every test host makes its own keys on first boot)
    env = _ansible_env()
    env.pop("ANSIBLE_HOST_KEY_CHECKING")
    proc = _ansible_ping(inventory, site, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in fl:
        assert f"{host.name} | SUCCESS" in proc.stdout, proc.stdout
