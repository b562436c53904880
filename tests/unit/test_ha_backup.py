"""Reading and checking Home Assistant's own backups (tui/core/ha_backup.py), on real archives
written by the securetar library itself (the code Home Assistant writes its backups with),
in Home Assistant Core's layout: a plain tar holding backup.json and homeassistant.tar.gz,
whose data/ folder is the configuration."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import securetar

from tui.core import ha_backup, seedmerge
from tui.core.errors import AbriError

PASSWORD = "hunter2-correct-horse"

CONFIG = {
    "configuration.yaml": "default_config:\n\nautomation: !include automations.yaml\n",
    "automations.yaml": "- id: '1'\n  alias: Porch light\n  triggers: []\n  actions: []\n",
    ".storage/core.config_entries": json.dumps({"version": 1, "minor_version": 5, "key":
                                                "core.config_entries", "data": {"entries": []}}),
    "home-assistant_v2.db": "not really sqlite, but bytes all the same\n" * 50,
}


def make_backup(tmp: Path, version: int | None = 2, password: str | None = PASSWORD,
                ha_version: str = "2026.2.3", files: dict[str, str] | None = None,
                meta: dict | None = None, name: str = "backup.tar",
                exclude_database: bool = False, addons: dict[str, dict] | None = None,
                addon_files: dict[str, dict[str, str]] | None = None) -> Path:
    """A backup as Home Assistant Core writes one (backup/util.py): the outer tar by
    securetar's SecureTarArchive, backup.json as ./backup.json, and Home Assistant's member
    made with create_tar + atomic_contents_add(arcname='data')."""
    src = tmp / f"config-src-{name}"
    for rel, text in (files if files is not None else CONFIG).items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    src.mkdir(exist_ok=True)
    protected = version is not None
    data = {"compressed": True, "date": "2026-11-30T10:00:00.000000+00:00",
            "extra": {"instance_id": "abc", "with_automatic_settings": False},
            "homeassistant": {"exclude_database": exclude_database, "version": ha_version},
            "name": "Automatic backup 2026.2.3", "protected": protected,
            "slug": "5f3a9c1e", "type": "partial", "version": 2,
            "folders": [], "addons": []}
    data.update(meta or {})
    path = tmp / name
    kwargs = {"password": password, "create_version": version} if protected else {}
    with securetar.SecureTarArchive(path, "w", **kwargs) as archive:
        raw = json.dumps(data).encode()
        info = tarfile.TarInfo("./backup.json")
        info.size = len(raw)
        archive.tar.addfile(info, io.BytesIO(raw))
        with archive.create_tar("./homeassistant.tar.gz") as inner:
            securetar.atomic_contents_add(tar_file=inner, origin_path=src,
                                          file_filter=lambda _: False, arcname="data")
        # Supervisor's add-on members (addons/addon.py backup): ./<slug>.tar.gz holding
        # addon.json ({user: persist with options, system, version, state}) and data/
        for slug, addon_json in (addons or {}).items():
            folder = tmp / f"addon-src-{name}-{slug}"
            (folder / "data").mkdir(parents=True)
            (folder / "data" / "mosquitto.db").write_bytes(b"\x00persisted")
            (folder / "addon.json").write_text(json.dumps(addon_json))
            # the add-on's files besides: data/... (its /data), config/... (its
            # addon_configs folder, which Supervisor adds as config/)
            for rel, text in ((addon_files or {}).get(slug) or {}).items():
                f = folder / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(text)
            with archive.create_tar(f"./{slug}.tar.gz") as inner:
                securetar.atomic_contents_add(tar_file=inner, origin_path=folder,
                                              file_filter=lambda _: False, arcname=".")
    return path


@pytest.mark.parametrize("version", [2, 3, None])
def test_reads_and_unpacks_real_archives(tmp_path, version):
    path = make_backup(tmp_path, version=version,
                       password=PASSWORD if version else None)
    b = ha_backup.read(path)
    assert (b.ha_version, b.slug, b.protected, b.securetar) == (
        "2026.2.3", "5f3a9c1e", version is not None, version)
    assert b.database is True and b.size == path.stat().st_size
    summary = ha_backup.format_summary(b)
    assert "2026.2.3" in summary and "Database       included" in summary
    assert PASSWORD not in summary
    ha_backup.check_password(b, PASSWORD if version else None)
    out = tmp_path / "out"
    written = ha_backup.extract_config(b, PASSWORD if version else None, out)
    assert "automations.yaml" in written and ".storage/core.config_entries" in written
    assert (out / "automations.yaml").read_text() == CONFIG["automations.yaml"]
    assert (out / "home-assistant_v2.db").read_text() == CONFIG["home-assistant_v2.db"]


def test_database_left_out_when_asked(tmp_path):
    b = ha_backup.read(make_backup(tmp_path, version=3))
    written = ha_backup.extract_config(b, PASSWORD, tmp_path / "out", database=False)
    assert "home-assistant_v2.db" not in written and "configuration.yaml" in written


def test_exclude_database_shown(tmp_path):
    b = ha_backup.read(make_backup(tmp_path, version=None, exclude_database=True))
    assert b.database is False
    assert "Database       not included" in ha_backup.format_summary(b)


@pytest.mark.parametrize("version", [2, 3])
def test_wrong_password_refused(tmp_path, version):
    b = ha_backup.read(make_backup(tmp_path, version=version))
    with pytest.raises(AbriError) as exc:
        ha_backup.check_password(b, "not-the-password")
    text = str(exc.value)
    assert "password: is wrong" in text and str(b.path) in text
    assert "not-the-password" not in text and PASSWORD not in text
    if version == 3:
        assert "validation key" in text


@pytest.mark.parametrize("version", [2, 3])
def test_missing_password_refused(tmp_path, version):
    b = ha_backup.read(make_backup(tmp_path, version=version))
    with pytest.raises(AbriError, match=f"is needed: the backup is protected .SecureTar "
                       f"v{version}.; give it with --password-file"):
        ha_backup.check_password(b, None)


def test_not_a_tar(tmp_path):
    path = tmp_path / "photo.tar"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 2000)
    with pytest.raises(AbriError, match="is not a tar archive"):
        ha_backup.read(path)


def test_missing_file(tmp_path):
    with pytest.raises(AbriError, match="does not exist or is not a file"):
        ha_backup.read(tmp_path / "nope.tar")


def test_truncated(tmp_path):
    path = make_backup(tmp_path, version=2)
    with tarfile.open(path) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith("homeassistant.tar.gz"))
    raw = path.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(raw[: m.offset_data + m.size // 2])  # a download that stopped midway
    with pytest.raises(AbriError, match="is truncated"):
        ha_backup.read(cut)
    cut.write_bytes(raw[:700])  # inside backup.json's header block and data
    with pytest.raises(AbriError, match="truncated"):
        ha_backup.read(cut)


def test_corrupt_inner_member_v3(tmp_path):
    path = make_backup(tmp_path, version=3)
    b = ha_backup.read(path)
    with tarfile.open(path) as tar:
        m = next(m for m in tar.getmembers() if m.name.endswith("homeassistant.tar.gz"))
        start = m.offset_data
    raw = bytearray(path.read_bytes())
    for i in range(start + 200, start + 260):  # past the header, in the ciphertext
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(AbriError, match="is corrupt"):
        ha_backup.check_password(b, PASSWORD)


def test_tar_without_backup_json(tmp_path):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as tar:
        raw = b"hello"
        info = tarfile.TarInfo("readme.txt")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(AbriError, match=r"backup\.json: is missing: this is not a Home "
                       r"Assistant backup"):
        ha_backup.read(path)


def test_backup_json_not_json(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        raw = b"{not json"
        info = tarfile.TarInfo("backup.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(AbriError, match=r"backup\.json: is not valid JSON"):
        ha_backup.read(path)


def test_addons_only_backup_refused(tmp_path):
    path = make_backup(tmp_path, version=None, meta={"homeassistant": None,
                                                     "addons": [{"slug": "core_mosquitto"}]})
    with pytest.raises(AbriError, match="names no Home Assistant version"):
        ha_backup.read(path)


def test_no_homeassistant_member(tmp_path):
    path = tmp_path / "meta-only.tar"
    with tarfile.open(path, "w") as tar:
        raw = json.dumps({"slug": "x", "homeassistant": {"version": "2026.2.3"}}).encode()
        info = tarfile.TarInfo("./backup.json")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(AbriError, match=r"homeassistant\.tar\.gz: is missing"):
        ha_backup.read(path)


def test_supervisor_addons_listed(tmp_path):
    addons = [{"slug": "core_mosquitto", "name": "Mosquitto broker", "version": "6.5.1",
               "size": 0.01}]
    b = ha_backup.read(make_backup(tmp_path, version=2, meta={"addons": addons,
                                                              "folders": ["share", "ssl"]}))
    summary = ha_backup.format_summary(b)
    assert "Mosquitto broker (core_mosquitto, 6.5.1)" in summary
    assert "share, ssl" in summary


@pytest.mark.parametrize("backup_version,pinned,refused", [
    ("2026.11.0", "2026.2.3", True),
    ("2026.2.3", "2026.2.3", False),
    ("2026.2.3", "2026.11.0", False),
    ("2026.3.0b1", "2026.2.3", True),
    ("2026.3.0b1", "2026.3.0", False),
    ("2026.2.3", "latest", False),  # not a version: Home Assistant's own check decides
])
def test_newer_backup_refused(tmp_path, backup_version, pinned, refused):
    b = ha_backup.read(make_backup(tmp_path, version=None, ha_version=backup_version))
    if not refused:
        ha_backup.check_version(b, pinned, "pi")
        return
    with pytest.raises(AbriError) as exc:
        ha_backup.check_version(b, pinned, "pi")
    text = str(exc.value)
    assert f"abri upgrade homeassistant --limit pi --to {backup_version}" in text
    assert pinned in text


def test_password_file(tmp_path):
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    assert ha_backup.read_password_file(f) == PASSWORD
    f.write_text("\n")
    with pytest.raises(AbriError, match="is empty"):
        ha_backup.read_password_file(f)
    with pytest.raises(AbriError, match="cannot be read"):
        ha_backup.read_password_file(tmp_path / "missing")


# ---------------------------------------------------------------- the CLI (read and refuse)
@pytest.fixture
def ha_site(abri, site_dir, ssh_key):
    assert abri("host", "add", "pi", "--kind", "ssh", "--address", "192.168.1.20",
                "--key", ssh_key, "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "mosquitto", "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "homeassistant", "--site", site_dir).code == 0
    return site_dir


def _pw(tmp: Path, value: str = PASSWORD, name: str = "pw") -> Path:
    f = tmp / name
    f.write_text(value + "\n")
    return f


@pytest.mark.parametrize("version", [2, 3, None])
def test_cli_dry_run_shows_the_backup(abri, ha_site, tmp_path, version):
    from tests.conftest import fingerprint

    path = make_backup(tmp_path, version=version, password=PASSWORD if version else None)
    before = fingerprint(ha_site)
    args = ["import-ha-backup", path, "--host", "pi", "--dry-run", "--site", ha_site]
    if version:
        args += ["--password-file", _pw(tmp_path)]
    r = abri(*args)
    assert r.code == 0, r.err
    assert "Home Assistant 2026.2.3" in r.out and "Database       included" in r.out
    assert (f"SecureTar v{version}" if version else "Encryption     none") in r.out
    assert "nothing changed" in r.out and PASSWORD not in r.out + r.err
    assert fingerprint(ha_site) == before
    r = abri(*args, "--json")
    assert r.code == 0 and json.loads(r.out)["homeassistant"] == "2026.2.3"


@pytest.mark.parametrize("case,message", [
    ("wrong", "password: is wrong"),
    ("missing", "password: is needed"),
    ("not-tar", "is not a tar archive"),
    ("truncated", "is truncated"),
    ("not-backup", "backup.json: is missing"),
    ("newer", "abri upgrade homeassistant --limit pi --to 2099.1.0"),
    ("no-owner-password", "--owner-password-file: is needed"),
    ("unknown-host", "host 'nas': --host: is not in this site"),
])
def test_cli_refusals_exit_2_and_change_nothing(abri, ha_site, tmp_path, case, message):
    from tests.conftest import fingerprint

    path = make_backup(tmp_path, version=2, ha_version="2099.1.0" if case == "newer"
                       else "2026.2.3")
    pw = _pw(tmp_path, "wrong-one" if case == "wrong" else PASSWORD)
    args = ["--password-file", pw, "--dry-run"]
    host = "nas" if case == "unknown-host" else "pi"
    if case == "missing":
        args = ["--dry-run"]
    elif case == "not-tar":
        path.write_bytes(b"PK\x03\x04 a zip file, not a tar" * 40)
    elif case == "truncated":
        with tarfile.open(path) as tar:
            m = next(m for m in tar.getmembers() if m.name.endswith("homeassistant.tar.gz"))
        path.write_bytes(path.read_bytes()[: m.offset_data + m.size // 3])
    elif case == "not-backup":
        path.unlink()
        with tarfile.open(path, "w") as tar:
            tar.add(pw, arcname="notes.txt")
    elif case == "no-owner-password":
        args = ["--password-file", pw]  # a real import, refused before anything runs
    before = fingerprint(ha_site)
    r = abri("import-ha-backup", path, "--host", host, *args, "--site", ha_site)
    assert r.code == 2, (r.out, r.err)
    assert message in r.err, r.err
    assert "Traceback" not in r.err and PASSWORD not in r.out + r.err
    assert fingerprint(ha_site) == before


def test_cli_host_without_homeassistant(abri, site_dir, ssh_key, tmp_path):
    abri("host", "add", "box", "--kind", "ssh", "--address", "10.0.0.2", "--key", ssh_key,
         "--site", site_dir)
    r = abri("import-ha-backup", make_backup(tmp_path, version=None), "--host", "box",
             "--dry-run", "--site", site_dir)
    assert r.code == 2 and "abri stack add box homeassistant" in r.err


# ---------------------------------------------------------------- abri's rules on the config
def test_configuration_gets_abri_include_and_loses_cloud():
    from tui.core import ha_import

    text = ("# Loads default set of integrations. Do not remove.\n"
            "default_config:\n\n"
            "frontend:\n  themes: !include_dir_merge_named themes\n\n"
            "cloud:\n  alexa: {}\n"
            "automation: !include automations.yaml\n"
            "sensor:\n  - platform: template\n    sensors: {}\n")
    new, notes = ha_import.fix_configuration(text)
    assert new.startswith("# abri's part")
    assert "\nhomeassistant: !include abri/core.yaml\n" in new
    assert "\n# default_config:\n" in new and "\n# cloud:\n#   alexa: {}\n" in new
    assert "\nfrontend:\n  themes: !include_dir_merge_named themes\n" in new
    assert "\nsensor:\n  - platform: template\n    sensors: {}\n" in new
    assert "\nautomation: !include automations.yaml\n" in new
    assert any("default_config" in n for n in notes) and any("cloud" in n for n in notes)
    again, more = ha_import.fix_configuration(new)
    assert again == new and more == []  # a second pass changes nothing


def test_configuration_with_own_homeassistant_block():
    from tui.core import ha_import

    new, notes = ha_import.fix_configuration(
        "homeassistant:\n  customize: !include customize.yaml\nlight:\n  - platform: x\n")
    assert "# homeassistant:\n#   customize: !include customize.yaml\n" in new
    assert new.count("homeassistant: !include abri/core.yaml") == 1
    assert "\nlight:\n  - platform: x\n" in new
    assert any("homeassistant: block" in n for n in notes)


def test_entries_cloud_removed_and_mqtt_moved():
    from tui.core import ha_import

    store = {"version": 1, "data": {"entries": [
        {"entry_id": "a", "domain": "mqtt", "title": "Mosquitto broker",
         "data": {"broker": "core-mosquitto", "port": 8883, "username": "addons",
                  "password": "old-secret", "certificate": "auto", "discovery": True}},
        {"entry_id": "b", "domain": "cloud", "title": "Home Assistant Cloud", "data": {}},
        {"entry_id": "c", "domain": "met", "title": "Forecast", "data": {}},
        {"entry_id": "d", "domain": "hue", "title": "Hue", "data": {"host": "10.0.0.9"}},
    ]}}
    mqtt = {"broker": "127.0.0.1", "port": 1883, "username": "homeassistant",
            "password": "site-secret"}
    notes = ha_import.fix_entries(store, {"cloud", "met"}, mqtt)
    entries = {e["entry_id"]: e for e in store["data"]["entries"]}
    assert set(entries) == {"a", "d"}
    assert entries["a"]["data"] == {**mqtt, "discovery": True}
    assert not any("secret" in n for n in notes)
    assert any("core-mosquitto:8883" in n and "127.0.0.1:1883" in n for n in notes)


def test_prepare_config_finds_the_owner_and_checks_the_password(tmp_path):
    import base64

    import bcrypt

    from tui.core import ha_import

    config = tmp_path / "config"
    (config / ".storage").mkdir(parents=True)
    (config / "configuration.yaml").write_text("default_config:\n")
    (config / ".storage/cloud").write_text("{}")
    (config / ".storage/auth").write_text(json.dumps({"data": {
        "users": [{"id": "u1", "is_owner": True, "name": "Jan"},
                  {"id": "u2", "is_owner": False, "name": "Kid"}],
        "credentials": [
            {"id": "c2", "user_id": "u2", "auth_provider_type": "homeassistant",
             "data": {"username": "kid"}},
            {"id": "c1", "user_id": "u1", "auth_provider_type": "homeassistant",
             "data": {"username": "jan"}}]}}))
    hashed = base64.b64encode(bcrypt.hashpw(b"owners-pass", bcrypt.gensalt(4))).decode()
    (config / ".storage/auth_provider.homeassistant").write_text(json.dumps({"data": {
        "users": [{"username": "jan", "password": hashed}]}}))
    prepared = ha_import.prepare_config(config, {"cloud"}, None)
    assert prepared.owner == "jan"
    assert not (config / ".storage/cloud").exists()
    assert ha_import.owner_password_fits(config, "jan", "owners-pass") is True
    assert ha_import.owner_password_fits(config, "jan", "nope") is False
    assert ha_import.owner_password_fits(config, "nobody", "nope") is None


def _plain_backup(tmp: Path, members: list[tarfile.TarInfo], payload: bytes = b"x") -> Path:
    """An unencrypted backup whose homeassistant.tar.gz holds exactly members."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for m in members:
            if m.isfile():
                m.size = len(payload)
                tar.addfile(m, io.BytesIO(payload))
            else:
                tar.addfile(m)
    path = tmp / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        for name, raw in (("backup.json", json.dumps({
                "slug": "c", "protected": False,
                "homeassistant": {"version": "2026.2.3"}}).encode()),
                ("homeassistant.tar.gz", inner.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_hard_links_inside_data_are_kept(tmp_path):
    f = tarfile.TarInfo("data/configuration.yaml")
    link = tarfile.TarInfo("data/copy.yaml")
    link.type, link.linkname = tarfile.LNKTYPE, "data/configuration.yaml"
    b = ha_backup.read(_plain_backup(tmp_path, [f, link]))
    out = tmp_path / "out"
    assert ha_backup.extract_config(b, None, out) == ["configuration.yaml", "copy.yaml"]
    assert (out / "copy.yaml").read_bytes() == b"x"


@pytest.mark.parametrize("name,kind,linkname", [
    ("data/../../escaped.txt", tarfile.REGTYPE, ""),
    ("data/evil", tarfile.SYMTYPE, "/etc/passwd"),
    ("data/evil", tarfile.SYMTYPE, "../../../etc"),
])
def test_members_leaving_the_folder_are_refused(tmp_path, name, kind, linkname):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    b = ha_backup.read(_plain_backup(tmp_path, [m]))
    out = tmp_path / "deep" / "out"
    with pytest.raises(AbriError, match="cannot be unpacked"):
        ha_backup.extract_config(b, None, out)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" /
                                                            "escaped.txt").exists()


def test_addons_and_folders_are_said_to_stay_in_the_backup(tmp_path):
    from tui.core import ha_import

    b = ha_backup.read(make_backup(tmp_path, version=None, meta={
        "addons": [{"slug": "core_mosquitto", "name": "Mosquitto broker"}],
        "folders": ["share"]}))
    assert ha_import.left_out(b) == [
        "add-on Mosquitto broker (core_mosquitto): not imported (abri imports no data of "
        "this add-on); its data stays in the backup",
        "folder share: not imported; it stays in the backup"]


def test_cli_dry_run_lists_what_stays_in_the_backup(abri, ha_site, tmp_path):
    path = make_backup(tmp_path, version=None, meta={
        "addons": [{"slug": "a0d7b954_nodered", "name": "Node-RED", "version": "19.0.0"}]})
    r = abri("import-ha-backup", path, "--host", "pi", "--dry-run", "--site", ha_site)
    assert r.code == 0, r.err
    assert "add-on Node-RED (a0d7b954_nodered): not imported" in r.out


# ------------------------------------------------- the Mosquitto add-on of a Supervisor backup
MQ_LOGINS = [{"username": "tasmota", "password": "plug-pass-1"},
             {"username": "shelly_2", "password": "relay pass 2"},
             {"username": "homeassistant", "password": "clash-pass-3"},
             {"username": "bad name", "password": "x-pass-4"}]


def _supervisor_backup(tmp: Path, version: int | None, logins=None) -> Path:
    addon = {"user": {"options": {"logins": MQ_LOGINS if logins is None else logins,
                                  "require_certificate": False, "certfile": "fullchain.pem",
                                  "keyfile": "privkey.pem",
                                  "customize": {"active": False, "folder": "mosquitto"}},
                      "version": "6.4.1", "boot": "auto"},
             "system": {"slug": "mosquitto", "name": "Mosquitto broker"},
             "version": "6.4.1", "state": "started"}
    return make_backup(tmp, version=version, password=PASSWORD if version else None,
                       meta={"type": "full", "addons": [
                           {"slug": "core_mosquitto", "name": "Mosquitto broker",
                            "version": "6.4.1", "size": 0.1},
                           {"slug": "a0d7b954_nodered", "name": "Node-RED",
                            "version": "19.0.0", "size": 1.0}]},
                       addons={"core_mosquitto": addon})


@pytest.mark.parametrize("version", [2, 3, None])
def test_addon_options_of_a_supervisor_backup(tmp_path, version):
    b = ha_backup.read(_supervisor_backup(tmp_path, version))
    assert ha_backup.addon_member(b, "core_mosquitto") == "core_mosquitto.tar.gz"
    options = ha_backup.addon_options(b, "core_mosquitto", PASSWORD if version else None)
    assert options["logins"] == MQ_LOGINS
    if version:
        with pytest.raises(AbriError, match="password: is needed"):
            ha_backup.addon_options(b, "core_mosquitto", None)
        with pytest.raises(AbriError) as wrong:
            ha_backup.addon_options(b, "core_mosquitto", "not-the-password")
        assert "not-the-password" not in str(wrong.value)
    with pytest.raises(AbriError, match="is missing"):
        ha_backup.addon_options(b, "core_nope", PASSWORD)


@pytest.mark.parametrize("version", [2, 3])
def test_mosquitto_logins_become_device_accounts(abri, ha_site, tmp_path, version):
    """The mapping: each login a device account on the broker of pi's Home Assistant, the
    password from the backup into the vault; abri's own name (homeassistant) and an invalid
    one reported and skipped; the other add-on said not imported; no password printed."""
    from tui.core import accounts, ha_import
    from tui.core.site import Site

    path = _supervisor_backup(tmp_path, version)
    site = Site.load(ha_site)
    own = site.secrets["pi"]["homeassistant"]["mqtt_password"]
    checked = ha_import.check(site, path, "pi", PASSWORD, None, dry_run=True)
    assert [(x.host, x.stack, x.name) for x in checked.logins] == [
        ("pi", "mosquitto", "tasmota"), ("pi", "mosquitto", "shelly_2")]
    assert checked.logins[0].acl == ("readwrite #",)  # what the add-on allowed
    lines = ha_import.left_out(checked.backup, checked)
    text = "\n".join(lines)
    assert lines[0] == ("add-on Mosquitto broker (core_mosquitto): logins that become device "
                        "accounts of mosquitto on pi: tasmota, shelly_2")
    assert "login homeassistant skipped: it is the name of one of abri's own users" in text
    assert "login 'bad name' skipped" in text
    assert "add-on Node-RED (a0d7b954_nodered): not imported" in text
    assert "core_mosquitto): not imported" not in text
    assert not any(x["password"] in text for x in MQ_LOGINS)
    # what run() does once the configuration is in place
    for login in checked.logins:
        accounts.add(site, login.host, login.stack, login.name, login.password,
                     list(login.acl))
    site.save()
    again = Site.load(ha_site)
    vault = again.secrets["pi"]["mosquitto"]
    assert vault["account.tasmota"] == "plug-pass-1"
    assert vault["account.shelly_2"] == "relay pass 2"
    assert again.secrets["pi"]["homeassistant"]["mqtt_password"] == own  # not overwritten
    assert "clash-pass-3" not in again.all_secret_values()
    host_vars = (ha_site / "host_vars/pi/abri.yml").read_text()
    assert "plug-pass-1" not in host_vars and "account.tasmota" in host_vars
    # imported again: the accounts exist, kept as they are
    checked = ha_import.check(again, path, "pi", PASSWORD, None, dry_run=True)
    assert checked.logins == []
    assert "login tasmota: already a device account of mosquitto on pi; kept as it is" in \
        "\n".join(ha_import.left_out(checked.backup, checked))


def test_cli_dry_run_names_the_logins_only(abri, ha_site, tmp_path):
    path = _supervisor_backup(tmp_path, 3)
    r = abri("import-ha-backup", path, "--host", "pi", "--dry-run", "--password-file",
             _pw(tmp_path), "--site", ha_site)
    assert r.code == 0, r.err
    assert "device accounts of mosquitto on pi: tasmota, shelly_2" in r.out
    assert not any(x["password"] in r.out + r.err for x in MQ_LOGINS)


def test_logins_go_to_the_broker_of_the_host_elsewhere(abri, site_dir, ssh_key, tmp_path):
    """The broker on another host of the site: the logins land there."""
    from tui.core import ha_import
    from tui.core.site import Site

    for name, address in (("broker", "192.168.1.30"), ("pi", "192.168.1.20")):
        assert abri("host", "add", name, "--kind", "ssh", "--address", address, "--key",
                    ssh_key, "--site", site_dir).code == 0
    assert abri("stack", "add", "broker", "mosquitto", "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "homeassistant", "--site", site_dir).code == 0
    checked = ha_import.check(Site.load(site_dir), _supervisor_backup(tmp_path, None), "pi",
                              None, None, dry_run=True)
    assert {(x.host, x.stack) for x in checked.logins} == {("broker", "mosquitto")}


# --------------------------------------- Node-RED's and ESPHome's add-ons (manifest ha_addon)
NR_SLUG, ESP_SLUG = "a0d7b954_nodered", "5c53de3b_esphome"
NR_KEY = "add-on-credential-key-42"
NR_CREDS = {"f1.broker": {"user": "porch", "password": "porch-broker-pass"}}
NR_FILES = {
    "config/flows.json": '[{"id": "f1", "type": "tab", "label": "Porch"}]',
    "config/flows_cred.json": json.dumps(seedmerge.encrypt_credentials(NR_CREDS, NR_KEY)),
    "config/settings.js": "module.exports = { /* the add-on's, with ingress */ }",
    "config/package.json": '{"dependencies": {"node-red-contrib-home-assistant-websocket": "*"}}',
    "config/.config.runtime.json": '{"instanceId": "abc"}',
    "config/lib/functions/helper.js": "// a library function",
    "data/options.json": "{}",  # the add-on's /data: not what Node-RED keeps
}
ESP_CONFIG = {**CONFIG,
              "esphome/porch.yaml": "esphome:\n  name: porch\n",
              "esphome/secrets.yaml": "wifi_password: not-telling\n",
              "esphome/.esphome/build/porch/firmware.bin": "built",
              "esphome/.esphome/storage/porch.yaml.json": '{"name": "porch"}'}


def _addon_backup(tmp: Path, version: int | None, nodered_files=None, name="backup.tar") -> Path:
    """A Supervisor backup with the Node-RED add-on (its user directory in config/, as the
    add-on's addon_configs folder) and the ESPHome add-on (its configurations in Home
    Assistant's esphome/ folder, the add-on's member holding only its caches)."""
    nr = {"user": {"options": {"credential_secret": NR_KEY, "theme": "default",
                               "ssl": False}, "version": "19.0.0"},
          "system": {"slug": "nodered"}, "version": "19.0.0", "state": "started"}
    esp = {"user": {"options": {}, "version": "2025.8.4"}, "system": {"slug": "esphome"},
           "version": "2025.8.4", "state": "started"}
    return make_backup(tmp, version=version, password=PASSWORD if version else None,
                       files=ESP_CONFIG, name=name,
                       meta={"type": "full", "addons": [
                           {"slug": NR_SLUG, "name": "Node-RED", "version": "19.0.0"},
                           {"slug": ESP_SLUG, "name": "ESPHome Device Builder",
                            "version": "2025.8.4"},
                           {"slug": "core_samba", "name": "Samba share", "version": "12.3"}]},
                       addons={NR_SLUG: nr, ESP_SLUG: esp},
                       addon_files={NR_SLUG: NR_FILES if nodered_files is None
                                    else nodered_files})


@pytest.fixture
def addon_site(abri, ha_site):
    for stack in ("nodered", "esphome"):
        assert abri("stack", "add", "pi", stack, "--site", ha_site).code == 0
    return ha_site


@pytest.mark.parametrize("version", [2, 3, None])
def test_addon_data_is_unpacked_from_where_the_manifest_says(tmp_path, version):
    """Node-RED's from the add-on's config/ folder (settings.js and node_modules left out),
    ESPHome's from esphome/ of Home Assistant's configuration (the build folder left out);
    both decrypted with the backup's password."""
    from tui.core import paths
    from tui.core.catalog import Catalog

    catalog = Catalog.load(paths.stacks_dir())
    b = ha_backup.read(_addon_backup(tmp_path, version))
    pw = PASSWORD if version else None
    nr = catalog["nodered"].ha_addon
    source, written = ha_backup.extract_addon_data(b, NR_SLUG, nr["from"], nr["exclude"], pw,
                                                   tmp_path / "nr")
    assert source == "addon:config"
    assert sorted(p for p in written if "." in p.rsplit("/", 1)[-1]) == [
        ".config.runtime.json", "flows.json", "flows_cred.json", "lib/functions/helper.js",
        "package.json"]
    assert (tmp_path / "nr/flows.json").read_text() == NR_FILES["config/flows.json"]
    assert not (tmp_path / "nr/settings.js").exists()
    assert not (tmp_path / "nr/options.json").exists()  # the add-on's /data is not Node-RED's
    esp = catalog["esphome"].ha_addon
    source, written = ha_backup.extract_addon_data(b, ESP_SLUG, esp["from"], esp["exclude"],
                                                   pw, tmp_path / "esp")
    assert source == "homeassistant:esphome"
    assert (tmp_path / "esp/porch.yaml").read_text() == ESP_CONFIG["esphome/porch.yaml"]
    assert (tmp_path / "esp/.esphome/storage/porch.yaml.json").is_file()
    assert not (tmp_path / "esp/.esphome/build").exists()
    if version:
        with pytest.raises(AbriError, match="password: is wrong"):
            ha_backup.extract_addon_data(b, NR_SLUG, nr["from"], [], "not-it", tmp_path / "x")


def test_addon_data_from_the_older_node_red_location(tmp_path):
    """Add-on releases before addon_configs kept Node-RED's folder in Home Assistant's
    configuration (node-red/): the manifest's second source."""
    from tui.core import paths
    from tui.core.catalog import Catalog

    nr = Catalog.load(paths.stacks_dir())["nodered"].ha_addon
    path = make_backup(tmp_path, version=None, files={
        **CONFIG, "node-red/flows.json": "[]", "node-red/settings.js": "old"},
        meta={"addons": [{"slug": NR_SLUG, "name": "Node-RED"}]},
        addons={NR_SLUG: {"user": {"options": {}}}})
    source, written = ha_backup.extract_addon_data(ha_backup.read(path), NR_SLUG, nr["from"],
                                                   nr["exclude"], None, tmp_path / "nr")
    assert (source, written) == ("homeassistant:node-red", ["flows.json"])


@pytest.mark.parametrize("version", [2, 3])
def test_import_plan_puts_addon_data_into_the_stacks_of_the_host(abri, addon_site, tmp_path,
                                                                 version):
    from tui.core import ha_import
    from tui.core.site import Site

    site = Site.load(addon_site)
    checked = ha_import.check(site, _addon_backup(tmp_path, version), "pi", PASSWORD, None,
                              dry_run=True)
    got = {(a.slug, a.stack, a.volume, a.source, a.owner) for a in checked.addon_data}
    assert got == {(NR_SLUG, "nodered", "data", "addon:config", 1000),
                   (ESP_SLUG, "esphome", "config", "homeassistant:esphome", 0)}
    nr = next(a for a in checked.addon_data if a.stack == "nodered")
    assert nr.secrets == {"credential_key": NR_KEY} and NR_KEY not in repr(nr)
    text = ha_import.describe(checked)
    assert ("add-on Node-RED (a0d7b954_nodered): its data (the add-on's config/ folder, 7 "
            "files and folders) replaces the data volume of nodered on pi") in text, text
    assert "left out: settings.js, node_modules" in text
    assert "its option credential_secret becomes nodered's credential_key" in text
    assert "flows.json: abri's 4 item(s) added" in text
    assert "flows_cred.json: abri's credentials added, encrypted with the stack's key" in text
    assert ("add-on ESPHome Device Builder (5c53de3b_esphome): its data (esphome/ in Home "
            "Assistant's configuration") in text
    assert "add-on Samba share (core_samba): not imported" in text
    assert "a0d7b954_nodered): not imported" not in text
    assert NR_KEY not in text and PASSWORD not in text


def test_addon_whose_stack_is_not_on_the_host_stays_in_the_backup(abri, ha_site, tmp_path):
    r = abri("import-ha-backup", _addon_backup(tmp_path, None), "--host", "pi", "--dry-run",
             "--site", ha_site)
    assert r.code == 0, r.err
    assert ("add-on Node-RED (a0d7b954_nodered): not imported: pi has no nodered stack, which "
            "takes its data; add it ('abri stack add pi nodered') and import again; its data "
            "stays in the backup") in r.out
    assert "abri stack add pi esphome" in r.out


def test_cli_dry_run_says_where_addon_data_goes(abri, addon_site, tmp_path):
    from tests.conftest import fingerprint

    before = fingerprint(addon_site)
    r = abri("import-ha-backup", _addon_backup(tmp_path, 3), "--host", "pi", "--dry-run",
             "--password-file", _pw(tmp_path), "--site", addon_site)
    assert r.code == 0, r.err
    assert "replaces the data volume of nodered on pi" in r.out
    assert "replaces the config volume of esphome on pi" in r.out
    assert NR_KEY not in r.out + r.err
    assert fingerprint(addon_site) == before


def _crafted_addon_backup(tmp: Path, members: list[tarfile.TarInfo]) -> Path:
    """An unencrypted Supervisor backup whose Node-RED member holds exactly members."""
    def gz(entries) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for m in entries:
                if m.isfile():
                    m.size = 1
                    tar.addfile(m, io.BytesIO(b"x"))
                else:
                    tar.addfile(m)
        return buf.getvalue()

    conf = tarfile.TarInfo("data/configuration.yaml")
    path = tmp / "crafted-addon.tar"
    with tarfile.open(path, "w") as tar:
        for name, raw in (("backup.json", json.dumps({
                "slug": "c", "protected": False, "homeassistant": {"version": "2026.2.3"},
                "addons": [{"slug": NR_SLUG, "name": "Node-RED"}]}).encode()),
                ("homeassistant.tar.gz", gz([conf])),
                (f"{NR_SLUG}.tar.gz", gz(members))):
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.mark.parametrize("name,kind,linkname", [
    ("config/../../escaped.txt", tarfile.REGTYPE, ""),
    ("config/evil", tarfile.SYMTYPE, "/etc/passwd"),
    ("config/evil", tarfile.SYMTYPE, "../../../etc"),
    ("config/dev", tarfile.CHRTYPE, ""),
])
def test_addon_members_leaving_the_folder_are_refused(tmp_path, name, kind, linkname):
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    b = ha_backup.read(_crafted_addon_backup(tmp_path, [m]))
    out = tmp_path / "deep" / "out"
    with pytest.raises(AbriError, match="cannot be unpacked"):
        ha_backup.extract_addon_data(b, NR_SLUG, ["addon:config"], [], None, out)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "deep" / "escaped.txt").exists()


def test_addon_with_no_data_says_so(abri, addon_site, tmp_path):
    from tui.core import ha_import
    from tui.core.site import Site

    path = _addon_backup(tmp_path, None, nodered_files={"data/options.json": "{}"})
    checked = ha_import.check(Site.load(addon_site), path, "pi", None, None, dry_run=True)
    assert {a.stack for a in checked.addon_data} == {"esphome"}
    assert ("add-on Node-RED (a0d7b954_nodered): no data found in the backup (looked in the "
            "add-on's config/ folder, node-red/ in Home Assistant's configuration); nothing "
            "imported into nodered") in ha_import.describe(checked)
