"""S3-compatible object storage as the site's backup repository, on the controller: the
setting (provider presets and any endpoint), the storage keys in the vault (`abri secrets
s3`, never printed, never in the site in plaintext), the resolved state, and the refusals
(exit 2, the field named, nothing changed). The fleet test (tests/fleet/test_s3_backup.py)
backs up and restores through a real S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import fingerprint
from tui.core import backup, resolve, validate
from tui.core.site import Site

ACCESS, SECRET = "AKEXAMPLE7QZ3", "s3cret-Example-Key-0123456789abcdef"


def _site(tmp_path: Path, repository: str | None = None) -> Site:
    site = Site.init(tmp_path / "site")
    site.add_host("h1", "ssh", "192.0.2.10", None, "root")
    site.add_host("h2", "ssh", "192.0.2.11", None, "root")
    site.add_stack("h1", "mosquitto", {})
    if repository:
        site.settings.set("backup_repository", repository)
    site.save()
    return Site.load(tmp_path / "site")


@pytest.mark.parametrize(("value", "endpoint", "bucket", "prefix"), [
    ("s3:scaleway:fr-par/my-home", "https://s3.fr-par.scw.cloud", "my-home", ""),
    ("s3:ovhcloud:gra/my-home/abri", "https://s3.gra.io.cloud.ovh.net", "my-home", "abri"),
    ("s3:hetzner:fsn1/my-home/a/b/", "https://fsn1.your-objectstorage.com", "my-home", "a/b"),
    ("s3:https://s3.example.eu/backups", "https://s3.example.eu", "backups", ""),
    ("s3:http://192.0.2.5:9000/abri-lan/x", "http://192.0.2.5:9000", "abri-lan", "x"),
])
def test_presets_and_endpoints_resolve_to_one_repository_per_host(tmp_path, value, endpoint,
                                                                  bucket, prefix):
    site = _site(tmp_path, value)
    assert site.settings.backup_repository == value.rstrip("/")
    access = resolve.repository_of(site, "h1")
    path = "/".join(p for p in (bucket, prefix, "h1") if p)
    assert access["repository"] == f"s3:{endpoint}/{path}"
    assert access["s3"] == {"endpoint": endpoint,
                            "access_key_ref": "h1/_backup/s3_access_key_id",
                            "secret_key_ref": "h1/_backup/s3_secret_access_key"}
    state = resolve.resolve_host(site, "h1")["backup"]
    assert state["repository"] == access["repository"] and state["s3"] == access["s3"]
    assert "sftp" not in state


@pytest.mark.parametrize(("bad", "said"), [
    ("s3:aws:us-east-1/my-home", "not a provider abri knows"),
    ("s3:hetzner:ash/my-home", "not a region of hetzner"),
    ("s3:scaleway:fr-par/My_Bucket", "not a bucket name"),
    ("s3:https://s3.example.eu/ab", "not a bucket name"),
    ("s3:https://s3.example.eu/bucket/../up", "not a folder in the bucket"),
    ("s3:https://s3.example.eu:70000/bucket", "not a port"),
    ("s3:ftp://s3.example.eu/bucket", "not an S3 repository"),
    ("s3:https://bad host/bucket", "not an S3 repository"),
    ("s3:scaleway:fr-par", "not an S3 repository"),
])
def test_bad_s3_repositories_name_the_field_and_change_nothing(abri, site_dir, bad, said):
    before = fingerprint(site_dir)
    r = abri("site", "set", f"backup_repository={bad}", "--site", site_dir)
    assert r.code == 2 and "backup_repository" in r.err and said in r.err, (bad, r.err)
    assert "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    with pytest.raises(ValueError):
        validate.backup_repository(bad)


def test_keys_go_to_every_vault_and_are_never_printed(abri, tmp_path):
    site = _site(tmp_path, "s3:hetzner:fsn1/my-home")
    (tmp_path / "access").write_text(ACCESS + "\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    r = abri("secrets", "s3", "--access-key-file", tmp_path / "access", "--secret-key-file",
             tmp_path / "secret", "--site", site.path)
    assert r.code == 0, r.err
    assert "h1" in r.out and "h2" in r.out
    assert ACCESS not in r.out + r.err and SECRET not in r.out + r.err
    loaded = Site.load(site.path)
    for host in ("h1", "h2"):
        assert loaded.secrets[host]["_backup"]["s3_access_key_id"] == ACCESS
        assert loaded.secrets[host]["_backup"]["s3_secret_access_key"] == SECRET
    for file in Path(site.path).rglob("*"):
        if file.is_file():
            text = file.read_text(errors="replace")
            assert SECRET not in text and ACCESS not in text, file
    again = abri("secrets", "s3", "--access-key-file", tmp_path / "access",
                 "--secret-key-file", tmp_path / "secret", "--site", site.path)
    assert again.code == 0 and "already" in again.out
    # a host added later gets them when a backup run needs them
    loaded.add_host("h3", "ssh", "192.0.2.12", None, "root")
    loaded.save()
    later = Site.load(site.path)
    backup.prepare(later, ["h1"])
    assert later.secrets["h3"]["_backup"]["s3_secret_access_key"] == SECRET
    state = resolve.resolve_host(later, "h1")["backup"]
    assert SECRET not in json.dumps(state) and ACCESS not in json.dumps(state)


@pytest.mark.parametrize(("content", "field"), [
    ("", "--access-key-file"), ("two words\n", "--access-key-file"),
    ("ok\x07bell\n", "--access-key-file")])
def test_bad_key_files_are_refused(abri, tmp_path, content, field):
    site = _site(tmp_path, "s3:hetzner:fsn1/my-home")
    (tmp_path / "access").write_text(content)
    (tmp_path / "secret").write_text(SECRET + "\n")
    before = fingerprint(site.path)
    r = abri("secrets", "s3", "--access-key-file", tmp_path / "access", "--secret-key-file",
             tmp_path / "secret", "--site", site.path)
    assert r.code == 2 and field in r.err, r.err
    assert SECRET not in r.out + r.err
    assert fingerprint(site.path) == before


def test_a_backup_without_keys_is_refused_before_anything_changes(abri, tmp_path):
    site = _site(tmp_path, "s3:scaleway:nl-ams/my-home")
    before = fingerprint(site.path)
    r = abri("backup", "--site", site.path)
    assert r.code == 2 and "abri secrets s3" in r.err and "S3 keys" in r.err, r.err
    assert fingerprint(site.path) == before
    assert not backup.has_password(Site.load(site.path), "h1")  # no password made either


def test_restore_from_another_host_and_migration_share_the_bucket(tmp_path):
    site = _site(tmp_path, "s3:ovhcloud:sbg/my-home/abri")
    access = backup.source_of(site, "h2", "h1")
    assert access["repository"] == "s3:https://s3.sbg.io.cloud.ovh.net/my-home/abri/h1"
    assert access["s3"]["secret_key_ref"] == "h1/_backup/s3_secret_access_key"
    from tui.core import migrate

    assert migrate.transfer_access(site, "h1", "h2") == resolve.repository_of(site, "h1")
