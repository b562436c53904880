"""SFTP repositories, restore --from and migrate on the controller: the setting's validation,
what the state holds (no secret), the SSH key in the vault, stacks moved in the site with
their secrets and declared migrated on the source (stopped, never brought down), and the
refusals (exit 2, the field named, nothing run, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import fingerprint
from tui.core import backup, migrate, resolve
from tui.core.errors import AbriError
from tui.core.site import Site


def _site(tmp_path: Path, repository: str | None = None) -> Site:
    site = Site.init(tmp_path / "site")
    site.add_host("h1", "ssh", "192.0.2.10", None, "root")
    site.add_host("h2", "ssh", "192.0.2.11", 2222, "root")
    site.add_stack("h1", "mosquitto", {})
    site.add_stack("h1", "homeassistant", {})
    if repository:
        site.settings.set("backup_repository", repository)
    site.save()
    return Site.load(tmp_path / "site")


@pytest.mark.parametrize("value", ["sftp:backup@nas.home.arpa:/srv/abri",
                                   "sftp:root@h2:/srv/abri/", "sftp:u@192.0.2.7:/b"])
def test_sftp_repositories_are_accepted(tmp_path, value):
    site = _site(tmp_path, value)
    assert site.settings.backup_repository == value.rstrip("/")


def test_bad_repositories_name_the_field_and_change_nothing(abri, site_dir):
    before = fingerprint(site_dir)
    for bad in ("sftp:nas:/srv", "sftp:root@nas:srv", "sftp:Root@nas:/srv",
                "sftp:root@bad host:/srv", "sftp:root@nas:/a/../b", "sftp://root@nas/srv"):
        r = abri("site", "set", f"backup_repository={bad}", "--site", site_dir)
        assert r.code == 2 and "backup_repository" in r.err, (bad, r.err)
    assert fingerprint(site_dir) == before


def test_a_site_host_stands_for_its_address_and_port(tmp_path):
    site = _site(tmp_path, "sftp:root@h2:/srv/abri-backup")
    backup.prepare(site, ["h1"])
    state = resolve.resolve_host(site, "h1")["backup"]
    assert state["repository"] == "sftp:root@192.0.2.11:/srv/abri-backup/h1"
    assert state["sftp"] == {"user": "root", "address": "192.0.2.11", "port": 2222,
                             "path": "/srv/abri-backup", "site_host": "h2"}
    assert state["key"]["private_ref"] == "h1/_backup/sftp_key"
    assert state["key"]["public"].startswith("ssh-ed25519 ")
    private = site.secrets["h1"]["_backup"]["sftp_key"]
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    text = json.dumps(state)
    assert private not in text
    for file in (tmp_path / "site").rglob("*"):
        if file.is_file() and file.name != "vault.yml":
            assert "PRIVATE KEY" not in file.read_text(errors="replace"), file
    # made once, kept
    again = Site.load(tmp_path / "site")
    assert backup.ensure_keys(again, ["h1"]) == []
    assert again.secrets["h1"]["_backup"]["sftp_key"] == private
    other = resolve.sftp_server(site, "sftp:backup@nas.example.eu:/b")
    assert other == {"user": "backup", "address": "nas.example.eu", "port": 22, "path": "/b",
                     "site_host": ""}


def test_restore_from_another_host_needs_a_shared_repository(abri, tmp_path):
    site = _site(tmp_path)
    backup.ensure_passwords(site, ["h1"])
    site.move_stacks("h1", "h2", ["mosquitto", "homeassistant"])
    site.save()
    before = fingerprint(site.path)
    r = abri("restore", "h2", "--from", "h1", "--site", site.path)
    assert r.code == 2 and "--from" in r.err and "cannot read" in r.err, r.err
    r = abri("restore", "h2", "--from", "nowhere", "--site", site.path)
    assert r.code == 2 and "host 'nowhere'" in r.err, r.err
    assert fingerprint(site.path) == before
    site.settings.set("backup_repository", "sftp:root@h2:/srv/b")
    access = backup.source_of(site, "h2", "h1")
    assert access["owner"] == "h1" and access["password_ref"] == "h1/_backup/repository_password"
    assert access["repository"] == "sftp:root@192.0.2.11:/srv/b/h1"


def test_moved_stacks_take_their_secrets_and_stay_stopped_on_the_source(tmp_path):
    site = _site(tmp_path)
    secrets = json.loads(json.dumps(site.secrets["h1"]))
    site.move_stacks("h1", "h2", ["mosquitto", "homeassistant"])
    site.save()
    site = Site.load(tmp_path / "site")
    assert list(site.hosts["h2"].stacks) == ["mosquitto", "homeassistant"]
    assert site.hosts["h1"].stacks == {}
    for stack in ("mosquitto", "homeassistant"):
        assert site.secrets["h2"][stack] == secrets[stack]
        assert site.secrets["h1"][stack] == secrets[stack]  # its kept data's credentials
    data = yaml.safe_load((tmp_path / "site/host_vars/h1/abri.yml").read_text())
    assert data["abri_migrated"] == {"homeassistant": "h2", "mosquitto": "h2"}
    engine = data["abri_state"]["engine"]
    assert engine["stopped"] == ["abri-homeassistant", "abri-mosquitto"]
    assert data["abri_state"]["projects"] == []
    target = yaml.safe_load((tmp_path / "site/host_vars/h2/abri.yml").read_text())
    assert "abri_migrated" not in target and "stopped" not in target["abri_state"]["engine"]
    # and back: h1 wants them again, nothing is declared migrated there any more
    site.move_stacks("h2", "h1", ["mosquitto", "homeassistant"])
    site.save()
    data = yaml.safe_load((tmp_path / "site/host_vars/h1/abri.yml").read_text())
    assert "abri_migrated" not in data and "stopped" not in data["abri_state"]["engine"]
    assert yaml.safe_load((tmp_path / "site/host_vars/h2/abri.yml").read_text())[
        "abri_migrated"] == {"homeassistant": "h1", "mosquitto": "h1"}


def test_migrate_refusals_run_nothing(abri, tmp_path):
    site = _site(tmp_path)
    site.add_stack("h2", "mosquitto", {})
    site.save()
    before = fingerprint(site.path)
    for args, said in ((("h1", "h1"), "is the source"),
                       (("h1", "nowhere"), "host 'nowhere'"),
                       (("h1", "h2"), "already has mosquitto")):
        r = abri("migrate", *args, "--site", site.path)
        assert r.code == 2 and said in r.err, (args, r.err)
    assert fingerprint(site.path) == before
    assert migrate.read_record(site) is None


def test_a_port_taken_on_the_target_is_refused_before_anything_runs(tmp_path):
    site = _site(tmp_path)
    site.add_stack("h2", "nodered", {"port": "8123"})
    site.save()
    with pytest.raises(AbriError) as info:
        migrate.plan(site, "h1", "h2")
    assert "8123" in str(info.value), str(info.value)


def test_an_unfinished_migration_is_named(abri, tmp_path):
    site = _site(tmp_path)
    migrate._write(site, {"source": "h1", "target": "h2", "stacks": ["mosquitto"],
                          "phase": "restore"})
    r = abri("migrate", "h2", "h1", "--site", site.path)
    assert r.code == 2 and "abri migrate h1 h2' to complete it" in r.err, r.err


def test_downtime_is_told_in_parts():
    text = migrate.format_downtime({"source": "h1", "target": "h2", "downtime_from": 100.0,
                                    "copied_at": 110.0, "healthy_at": 130.5})
    assert text.startswith("Downtime: 30.5 s from the stop on h1 to healthy on h2")
    assert "stop and last copy 10.0 s" in text and "start 20.5 s" in text


def test_folder_repositories_migrate_through_a_transfer_repository_on_the_target(tmp_path):
    site = _site(tmp_path)
    access = migrate.transfer_access(site, "h1", "h2")
    assert access["repository"] == "sftp:root@192.0.2.11:/var/backups/abri-transfer/h1"
    assert access["sftp"]["site_host"] == "h2" and access["sftp"]["port"] == 2222
    assert access["password_ref"] == "h1/_backup/repository_password"
    site.settings.set("backup_repository", "sftp:root@h2:/srv/b")
    assert migrate.transfer_access(site, "h1", "h2")["repository"] == \
        "sftp:root@192.0.2.11:/srv/b/h1"  # the site's own: TARGET reads SOURCE's repository
    images = migrate.images_for(site, "h1", "h2", ["mosquitto", "homeassistant"])
    assert len(images) == 2 and any("home-assistant" in i for i in images), images
