"""The vps kind on a bare Debian 13 host (issue 12, first half): hardened by default.

One host, the broker on it (bind lan, not public). First the lock-out guard: with an admin
key that cannot log in (the key's .pub, which abri authorizes for the admin user, is another
key's) the apply fails before sshd changes, saying why, and root still gets in. Then the
real apply, and from the controller: SSH as the admin user works (with sudo), root and
passwords are refused, a bounded port scan of the host's address shows SSH only, MQTT is
closed from outside while the broker answers on the host's loopback; the rules hold after
`systemctl restart nftables` and after a restart of the host; a second apply changes
nothing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fleet.harness import SSH_OPTS, FleetError, docker
from tests.fleet.test_deploy import NESTED_ENGINE_OPTIONS, _abri, _apply, _own_config_home, _recap

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # the test module's autouse fixture, shared

ADMIN = "abri"
#: the ports the scan tries: the first 1024 and the services' own
SCANNED = (*range(1, 1025), 1883, 8123)


def _ssh(host, user: str, cmd: str, *opts: str) -> subprocess.CompletedProcess:
    """A new SSH session from the controller to the host's own address, port 22."""
    return subprocess.run(["ssh", *SSH_OPTS, *opts, "-i", str(host.key_path), "-p", "22",
                           f"{user}@{host.address}", cmd],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def _open_ports(address: str) -> set[int]:
    """TCP connects to the test host's address only, 1 s each, 64 at a time."""

    def probe(port: int) -> int | None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            return port if s.connect_ex((address, port)) == 0 else None

    with ThreadPoolExecutor(max_workers=64) as pool:
        return {p for p in pool.map(probe, SCANNED) if p is not None}


def _broker_on_loopback(host) -> bool:
    return host.exec("timeout 5 bash -c '</dev/tcp/127.0.0.1/1883'",
                     check=False).returncode == 0


def _wait_for_admin(host, timeout: float = 180) -> None:
    """After a restart of the host: systemd up, then SSH as the admin user (root is refused
    now, so the harness's own wait does not apply)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = docker("exec", host.name, "systemctl", "is-system-running", check=False,
                       timeout=30).stdout.strip()
        if state in ("running", "degraded") and _ssh(host, ADMIN, "true").returncode == 0:
            return
        time.sleep(1)
    raise FleetError(f"{host.name} did not come back as {ADMIN}:\n{host.journal_tail()}")


def _wait_for(check, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(1)
    return False


def test_vps_hardened_from_bare(fleet, fleet_registry, tmp_path):
    host = fleet(1, image="plain")[0]
    key = tmp_path / "vps_ed25519"  # the site's own copy of the key abri reaches it with
    shutil.copy(host.key_path, key)
    key.chmod(0o600)
    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "vps1", "--kind", "vps", "--address", host.address, "--user", "root",
          "--key", str(key), "--provider", "hetzner", "--region", "fsn1", "--site", str(site))
    _abri("stack", "add", "vps1", "mosquitto", "--site", str(site))
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\ndocker_engine_daemon_options: " + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")
    audit = _abri("audit", "--site", str(site))
    assert "vps vps1: hetzner, Hetzner Online GmbH, DE" in audit, audit
    assert "region fsn1 (DE)" in audit, audit

    # a plan on the bare host: what hardening would do, nothing done
    plan, plan_s = _apply(site, "plan")
    print(f"\n[vps] plan on the bare host: rc {plan.returncode}, {plan_s:.1f}s")
    assert plan.returncode == 0, plan.stdout[-6000:] + plan.stderr[-3000:]
    assert "vps1: 0 change(s)" not in plan.stdout and "vps1: not checked" not in plan.stdout, \
        plan.stdout[-3000:]
    assert host.exec(f"id {ADMIN}", check=False).returncode != 0
    assert host.exec("command -v nft", check=False).returncode != 0

    # the lock-out guard: the admin user gets a key that is not the one abri logs in with
    other = tmp_path / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    own = site / "host_vars" / "vps1" / "admin.yml"
    own.write_text("---\nabri_admin_keys: " + json.dumps([Path(f"{other}.pub").read_text()
                                                          .strip()]) + "\n")
    guarded, guarded_s = _apply(site)
    print(f"[vps] guarded apply: rc {guarded.returncode}, {guarded_s:.1f}s")
    assert guarded.returncode != 0, guarded.stdout[-4000:]
    assert "lock-out guard: a new SSH session as the admin user abri" in guarded.stdout, \
        guarded.stdout[-4000:]
    assert "nothing was switched off" in guarded.stdout
    assert "Traceback" not in guarded.stdout + guarded.stderr
    assert host.exec("test -e /etc/ssh/sshd_config.d/00-abri-hardening.conf",
                     check=False).returncode != 0
    assert "permitrootlogin without-password" in host.exec("sshd -T").stdout
    assert _ssh(host, "root", "id -un").stdout.strip() == "root"  # reachable as before
    assert "ansible_user=root" in (site / "inventory.ini").read_text()

    # the admin key is the one abri logs in with again: hardened, the broker deployed
    own.unlink()
    first, first_s = _apply(site)
    print(f"[vps] first apply: rc {first.returncode}, {first_s:.1f}s")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    assert f"ansible_user={ADMIN}" in (site / "inventory.ini").read_text()
    assert ", 0 failed" in first.stdout, first.stdout[-3000:]

    # SSH: the admin user with the key (and sudo without a password); not root, no passwords
    assert _ssh(host, ADMIN, "sudo -n id -un").stdout.strip() == "root"
    root = _ssh(host, "root", "true")
    assert root.returncode != 0 and "Permission denied" in root.stderr, root.stderr
    password = _ssh(host, ADMIN, "true", "-o", "PreferredAuthentications=password,"
                    "keyboard-interactive", "-o", "PubkeyAuthentication=no")
    assert password.returncode != 0, password.stderr
    # the server offers public keys only (before hardening it offered password too)
    assert "Permission denied (publickey)." in password.stderr, password.stderr
    effective = host.exec("sshd -T").stdout
    for line in ("permitrootlogin no", "passwordauthentication no",
                 "kbdinteractiveauthentication no", "allowtcpforwarding local",
                 "x11forwarding no", "maxauthtries 3"):
        assert line in effective, line
    assert "mlkem768x25519-sha256" in effective  # OpenSSH's own key exchange kept

    # security upgrades only, from Debian
    apt = host.exec("apt-config dump Unattended-Upgrade::Origins-Pattern").stdout
    patterns = [line for line in apt.splitlines() if "Origins-Pattern::" in line]
    assert len(patterns) == 1 and "Debian-Security" in patterns[0], apt
    assert 'APT::Periodic::Unattended-Upgrade "1"' in host.exec("apt-config dump").stdout

    # the firewall: SSH only from outside, the broker runs and answers on the host itself
    assert host.exec("docker ps --format '{{.Names}}'").stdout.split() == [
        "abri-mosquitto-mosquitto-1"]
    assert _broker_on_loopback(host)
    assert _open_ports(host.address) == {22}
    # what the checks said about it: the round trip went through the SSH tunnel
    assert "ok   mqtt round trip" in first.stdout.split("Recap:")[-1], first.stdout[-3000:]

    # nftables restarted (its nftables.conf flushes the whole ruleset): abri's table is back
    host.exec("systemctl restart nftables")
    assert host.exec("nft list table inet abri", check=False).returncode == 0, \
        host.exec("systemctl status abri-firewall --no-pager", check=False).stdout
    assert _open_ports(host.address) == {22}
    assert _broker_on_loopback(host)

    # the host restarted: the firewall is loaded at boot, before Docker
    docker("restart", host.name, timeout=300)
    _wait_for_admin(host)
    assert host.exec("nft list table inet abri", check=False).returncode == 0
    assert _wait_for(lambda: _broker_on_loopback(host)), host.journal_tail()
    assert _open_ports(host.address) == {22}

    again, again_s = _apply(site, "apply", "--no-verify")
    print(f"[vps] second apply: rc {again.returncode}, {again_s:.1f}s")
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert _recap(again.stdout, "vps1")["changed"] == 0, again.stdout[-6000:]
    # the plan (check mode) of the hardened host, reached as the admin user: nothing to do
    plan, plan_s = _apply(site, "plan")
    print(f"[vps] plan: rc {plan.returncode}, {plan_s:.1f}s")
    assert plan.returncode == 0, plan.stdout[-6000:] + plan.stderr[-3000:]
    assert "vps1: 0 change(s)" in plan.stdout, plan.stdout[-3000:]
