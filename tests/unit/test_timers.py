"""The site's timers: `abri site set upgrade_timer=...` (or verify_timer) writes a systemd
service and timer that systemd's own parser accepts (systemd-analyze verify), running `abri
upgrade --patch` (or `abri backup --verify`) for the site; a calendar expression systemd
refuses is refused with the field named and nothing written; empty removes the units."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import fingerprint

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze (Debian's systemd) is not installed")


@pytest.fixture
def units(tmp_path, monkeypatch):
    directory = tmp_path / "units"
    monkeypatch.setenv("ABRI_SYSTEMD_DIR", str(directory))
    return directory


@pytest.mark.parametrize(("setting", "name", "command"), [
    ("upgrade_timer", "upgrade", "upgrade --patch"),
    ("verify_timer", "verify", "backup --verify"),
    ("backup_timer", "backup", "backup --prune"),
])
def test_the_timer_is_written_verified_and_removed(abri, site_dir, units, setting, name,
                                                   command):
    r = abri("site", "set", f"{setting}=Sun 04:00", "--site", site_dir)
    assert r.code == 0, r.err
    site_id = yaml.safe_load((site_dir / "group_vars/all/abri.yml").read_text())["abri_site_id"]
    name = f"abri-{name}-{site_id}"
    service, timer = units / f"{name}.service", units / f"{name}.timer"
    assert service.is_file() and timer.is_file(), r.err
    assert sorted(p.name for p in units.iterdir()) == [service.name, timer.name]  # this one
    assert "OnCalendar=Sun 04:00" in timer.read_text()
    text = service.read_text()
    assert f'/abri" {command} --site' in text and str(site_dir.resolve()) in text
    assert "ABRI_VAULT_PASSWORD_FILE=" in text
    assert "systemd does not run on this machine" in r.err or "timer runs" in r.err
    assert yaml.safe_load((site_dir / "group_vars/all/abri.yml").read_text())[
        f"abri_{setting}"] == "Sun 04:00"
    # systemd's own unit parser: the python it names exists, the timer's calendar parses
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
                          capture_output=True, text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines()
                if name in line and "not found" not in line]
    assert not problems, proc.stderr
    again = abri("site", "set", f"{setting}=Sun 04:00", "--site", site_dir)
    assert again.code == 0 and "wrote" not in again.err  # unchanged: not rewritten

    off = abri("site", "set", f"{setting}=", "--site", site_dir)
    assert off.code == 0, off.err
    assert not service.exists() and not timer.exists()
    assert "timer is off" in off.err


@pytest.mark.parametrize("bad", ["every sunday", "Sun 25:00", "$(reboot)", "daily\nExecStart=x"])
def test_a_calendar_systemd_refuses_is_refused(abri, site_dir, units, bad):
    before = fingerprint(site_dir)
    r = abri("site", "set", f"upgrade_timer={bad}", "--site", site_dir)
    assert r.code == 2, r.out + r.err
    assert "upgrade_timer" in r.err and "calendar" in r.err and "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    assert not units.exists()
