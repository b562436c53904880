"""Backup on the controller: the manifests' backup rule, the backup part of the resolved
state, the site settings of the repository and the retention, the repository password in the
vault, and the CLI's refusals (exit 2, the field named, nothing run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import fingerprint
from tui.core import backup, paths, resolve
from tui.core.catalog import Catalog
from tui.core.errors import AbriError
from tui.core.site import Site


def test_every_stack_with_user_data_declares_how_it_is_read():
    catalog = Catalog.load()
    rules = {s.name: s.backup_consistency for s in catalog}
    assert rules["homeassistant"] == "stop" and rules["mosquitto"] == "stop"
    assert rules["esphome"] == "copy"
    for stack in catalog:
        data = yaml.safe_load((stack.path / "stack.yml").read_text())
        if stack.user_data:
            assert data.get("backup", {}).get("why"), stack.name


def test_a_backup_rule_the_engine_does_not_know_is_refused(tmp_path):
    target = tmp_path / "stacks" / "mosquitto"
    shutil.copytree(paths.stacks_dir() / "mosquitto", target)
    data = yaml.safe_load((target / "stack.yml").read_text())
    data["backup"] = {"consistency": "hope"}
    (target / "stack.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    text = str(info.value)
    assert "stack.yml" in text and "backup.consistency" in text and "hope" in text, text


def _site(tmp_path: Path) -> Site:
    site = Site.init(tmp_path / "site")
    site.add_host("h1", "ssh", "192.0.2.10", None, "root")
    site.add_host("bare", "ssh", "192.0.2.11", None, "root")
    site.add_stack("h1", "mosquitto", {})
    site.add_stack("h1", "homeassistant", {})
    site.save()
    return Site.load(tmp_path / "site")


def test_the_backup_state_lists_user_data_folders_and_rules(tmp_path):
    site = _site(tmp_path)
    site.settings.set("backup_repository", "/mnt/usb/abri/")
    site.settings.set("backup_keep_daily", "3")
    state = resolve.resolve_host(site, "h1")["backup"]
    assert state["repository"] == "/mnt/usb/abri"
    assert state["password_ref"] == "h1/_backup/repository_password"
    assert state["keep"] == {"daily": 3, "weekly": 4, "monthly": 6}
    stacks = {s["name"]: s for s in state["stacks"]}
    assert list(stacks) == ["mosquitto", "homeassistant"]  # providers first
    assert stacks["mosquitto"]["paths"] == ["data"]  # config and log hold no user data
    assert stacks["homeassistant"]["paths"] == ["config"]
    assert stacks["homeassistant"]["dir"] == "/opt/abri/homeassistant"
    assert {s["consistency"] for s in stacks.values()} == {"stop"}
    # the health check a restarted stack must pass, by reference only
    assert stacks["mosquitto"]["health"]["password_ref"] == "h1/mosquitto/admin_password"
    text = json.dumps(state)
    for value in site.all_secret_values():
        assert value not in text
    assert backup.hosts_with_data(site, ["h1", "bare"]) == ["h1"]


def test_the_repository_password_is_made_once_and_kept_in_the_vault(tmp_path):
    site = _site(tmp_path)
    assert not backup.has_password(site, "h1")
    assert backup.ensure_passwords(site, ["h1"]) == ["h1"]
    again = Site.load(tmp_path / "site")
    password = again.secrets["h1"]["_backup"]["repository_password"]
    assert len(password) >= 32
    assert backup.ensure_passwords(again, ["h1"]) == []
    assert Site.load(tmp_path / "site").secrets["h1"]["_backup"]["repository_password"] \
        == password
    for file in (tmp_path / "site").rglob("*"):
        if file.is_file() and file.name != "vault.yml":
            assert password not in file.read_text(errors="replace"), file


def test_backup_settings_are_validated_and_kept(abri, site_dir):
    r = abri("site", "set", "backup_repository=/srv/backups", "backup_keep_monthly=12",
             "--site", site_dir)
    assert r.code == 0, r.err
    data = yaml.safe_load((site_dir / "group_vars/all/abri.yml").read_text())
    assert data["abri_backup_repository"] == "/srv/backups"
    assert data["abri_backup_keep_monthly"] == 12
    before = fingerprint(site_dir)
    for bad, field in (("backup_repository=backups", "backup_repository"),
                       ("backup_keep_daily=many", "backup_keep_daily"),
                       ("backup_keep_weekly=-1", "backup_keep_weekly")):
        r = abri("site", "set", bad, "--site", site_dir)
        assert r.code == 2 and field in r.err, (bad, r.err)
    assert fingerprint(site_dir) == before


def test_restore_refusals_run_nothing(abri, site_dir):
    assert abri("host", "add", "h1", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    r = abri("restore", "h1", "--site", site_dir)
    assert r.code == 2 and "no stack with user data" in r.err, r.err
    assert abri("stack", "add", "h1", "mosquitto", "--site", site_dir).code == 0
    r = abri("restore", "nowhere", "--site", site_dir)
    assert r.code == 2 and "host 'nowhere'" in r.err, r.err
    r = abri("restore", "h1", "--site", site_dir)
    assert r.code == 2 and "no backup of it is known" in r.err, r.err
    site = Site.load(site_dir)
    backup.ensure_passwords(site, ["h1"])
    r = abri("restore", "h1", "--snapshot", "latest; rm -rf /", "--site", site_dir)
    assert r.code == 2 and "--snapshot" in r.err and "not a snapshot id" in r.err, r.err


def test_nothing_to_back_up_is_said(abri, site_dir):
    r = abri("backup", "--site", site_dir)
    assert r.code == 0 and "nothing to back up" in r.out, r.out + r.err
    assert abri("host", "add", "h1", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    r = abri("backups", "--json", "--site", site_dir)
    assert r.code == 0 and json.loads(r.out) == [], r.out + r.err


def test_snapshot_table():
    rows = [{"host": "h1", "stack": "homeassistant", "time": "2026-12-02T02:10:11.5Z",
             "id": "ab" * 32, "short_id": "abababab", "kind": "backup", "run": "r",
             "size": 5 * 1024 * 1024, "files": 10, "added": 2048}]
    text = backup.format_snapshots(rows)
    assert "2026-12-02 02:10:11" in text and "5.0 MiB" in text and "2.0 KiB" in text
    assert "abababab" in text
    assert "abri backup" in backup.format_snapshots([])
