"""Import a REAL Home Assistant backup through `abri import-ha-backup`, on one Debian 13 fleet
host:

* site A deploys Mosquitto + Home Assistant 2026.2.3 (the last release on Debian 13's
  Python; its backups are SecureTar v2), and state is made through the real APIs: an
  automation, a second user with a login, a state the recorder writes to its database;
* Home Assistant makes a password-protected backup with its own websocket API
  (backup/generate to backup.local, the database included), which the test copies out of
  config/backups/;
* the backup is made a Supervisor's with the Node-RED community add-on (its member added,
  SecureTar v2 with the backup's password), and site B has nodered;
* bad input is refused with exit 2 and nothing changed: a wrong password, no owner password;
* the host is wiped (containers, /opt/abri), and site B, a fresh site with other
  credentials, imports the backup onto it: the import deploys B's stacks, takes a safety
  snapshot, puts the configuration and database in place, points the MQTT entry at B's
  broker with B's account, keeps the backup's owner (logging in with the password given),
  applies and verifies;
* on B: the automation, the second user (listed, logs in), the recorded state in a database
  that passes integrity_check, configuration.yaml still including abri's part, the add-on's
  flows in nodered's data next to abri's heartbeat (which verify hears), verify green, and a
  second apply changes nothing.

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import secrets as _random
import tarfile
import time
from pathlib import Path

import harness
import pytest
from test_backup import (
    DB_CHECK,
    _backup_head,
    _http,
    _make_backup,
    _owner_logs_in,
    _run,
    _second_user,
    _users,
)
from test_deploy import _CONFIG_HOME, _abri, _recap, _secrets
from test_upgrade import OLD, old_ha_site

pytestmark = pytest.mark.fleet

REPO = "homeassistant/home-assistant"
HA_CONFIG = "/opt/abri/homeassistant/config"
SENSOR = "sensor.abri_import_probe"
AUTOMATION_ID = "abri_import_probe"
BACKUP_PASSWORD = "import-" + "probe-" * 3

@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def _database(host) -> dict:
    return json.loads(host.exec(f"python3 - {HA_CONFIG}/home-assistant_v2.db {SENSOR}",
                                input=DB_CHECK).stdout)


def _site(tmp_path: Path, name: str, host, registry: str) -> Path:
    return old_ha_site(tmp_path, name, host, registry, f"/srv/abri-backup-{name}")


NR_SLUG = "a0d7b954_nodered"
NR_KEY = "addon-" + "credential-" * 2 + "key"
NR_FLOWS = [{"id": "porch.tab", "type": "tab", "label": "Imported porch"},
            {"id": "porch.inject", "type": "inject", "z": "porch.tab", "name": "porch tick",
             "repeat": "", "once": False, "wires": [[]]}]


def _with_nodered_addon(backup: Path, tmp_path: Path) -> Path:
    """The backup as a Supervisor would have made it with the Node-RED community add-on
    installed: the same members (Home Assistant's as Home Assistant encrypted it), the
    add-on listed in backup.json, and its member ./a0d7b954_nodered.tar.gz (SecureTar v2,
    the backup's password) holding addon.json, data/ (the add-on's /data) and config/ (its
    addon_configs folder: Node-RED's user directory, flows_cred.json encrypted with the
    add-on's credential_secret as Node-RED does)."""
    import io

    import securetar

    from tui.core import seedmerge

    folder = tmp_path / "nodered-addon"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "options.json").write_text(json.dumps({"credential_secret": NR_KEY}))
    (folder / "config" / "lib").mkdir(parents=True)
    (folder / "config" / "flows.json").write_text(json.dumps(NR_FLOWS))
    (folder / "config" / "flows_cred.json").write_text(json.dumps(
        seedmerge.encrypt_credentials({"porch.inject": {"note": "kept"}}, NR_KEY)))
    (folder / "config" / "settings.js").write_text("module.exports = {uiPort: 46836};\n")
    (folder / "config" / "package.json").write_text('{"name": "node-red-project"}\n')
    (folder / "addon.json").write_text(json.dumps({
        "user": {"options": {"credential_secret": NR_KEY, "ssl": False}, "version": "19.0.0"},
        "system": {"slug": "nodered"}, "version": "19.0.0", "state": "started"}))
    out = tmp_path / "supervisor-backup.tar"
    with tarfile.open(backup) as src, securetar.SecureTarArchive(
            out, "w", password=BACKUP_PASSWORD, create_version=2) as archive:
        for member in src.getmembers():
            raw = src.extractfile(member).read() if member.isfile() else b""
            if member.name.endswith("backup.json"):
                meta = json.loads(raw)
                meta["addons"] = [{"slug": NR_SLUG, "name": "Node-RED", "version": "19.0.0",
                                   "size": 0.1}]
                raw = json.dumps(meta).encode()
                member.size = len(raw)
            archive.tar.addfile(member, io.BytesIO(raw) if member.isfile() else None)
        with archive.create_tar(f"./{NR_SLUG}.tar.gz") as inner:
            securetar.atomic_contents_add(tar_file=inner, origin_path=folder,
                                          file_filter=lambda _: False, arcname=".")
    return out


def test_import_a_real_home_assistant_backup(fleet, fleet_registry, tmp_path):
    registry = fleet_registry.address
    old_image = harness.build_homeassistant_image(version=OLD)
    harness.push_image(old_image.ref, registry, REPO, [OLD])
    host = fleet(1, image="prepared")[0]
    host.exec("mkdir -p /srv")

    # ---- site A: Home Assistant 2026.2.3 with state
    a = _site(tmp_path, "a", host, registry)
    first, _ = _run(a, "apply")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    secrets_a = _secrets(a, "h1")
    token = secrets_a["homeassistant"]["token"]
    owner_pw = secrets_a["homeassistant"]["owner_password"]
    base = f"http://{host.address}:8123"
    automation = {"alias": "Import probe", "description": "made by test_ha_import",
                  "triggers": [{"trigger": "time", "at": "05:45:00"}],
                  "conditions": [], "actions": [{"delay": {"seconds": 1}}], "mode": "single"}
    status, answer = _http(base, "POST", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token, automation)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)
    second_pw = _random.token_urlsafe(12)
    second_id = _second_user(base, token, second_pw)
    status, _ = _http(base, "POST", f"/api/states/{SENSOR}", token,
                      {"state": "19.5", "attributes": {"unit_of_measurement": "°C"}})
    assert status in (200, 201), status
    deadline = time.monotonic() + 60
    while "19.5" not in _database(host)["states"] and time.monotonic() < deadline:
        time.sleep(2)
    assert "19.5" in _database(host)["states"]
    # Home Assistant writes its user store a moment after a change (a delayed save) and its
    # backup takes the files as they are on disk: wait until the second user is written there,
    # as a user would have seen it saved before making a backup (under load the save came
    # after a backup taken a second or two later)
    deadline = time.monotonic() + 60
    while (host.exec(f"grep -q {second_id} {HA_CONFIG}/.storage/auth", check=False).returncode
           and time.monotonic() < deadline):
        time.sleep(1)
    assert host.exec(f"grep -q {second_id} {HA_CONFIG}/.storage/auth", check=False
                     ).returncode == 0, "Home Assistant never wrote the second user to disk"
    entries_a = json.loads(host.exec(f"cat {HA_CONFIG}/.storage/core.config_entries").stdout)
    mqtt_a, = [e for e in entries_a["data"]["entries"] if e["domain"] == "mqtt"]

    start = time.monotonic()
    backup = _make_backup(base, token, host, tmp_path, BACKUP_PASSWORD)
    print(f"\n[test_ha_import] Home Assistant made {backup.name} "
          f"({backup.stat().st_size} bytes) in {time.monotonic() - start:.1f}s")
    meta, head = _backup_head(backup)
    assert meta["protected"] is True and meta["homeassistant"]["version"] == OLD, meta
    assert head[:9] == b"SecureTar" and head[9] == 2, head  # Home Assistant 2026.2: v2

    # ---- site B on the same host, wiped first
    host.exec("docker ps -aq --filter label=org.abri.stack | xargs -r docker rm -f",
              timeout=180)
    host.exec("rm -rf /opt/abri /var/lib/abri/backup-stopped")
    b = _site(tmp_path, "b", host, registry)
    # site B has Node-RED too: the backup, as a Supervisor's with the Node-RED add-on, brings
    # the add-on's flows into it (the real Home Assistant member kept as it is)
    _abri("stack", "add", "--site", str(b), "h1", "nodered")
    backup = _with_nodered_addon(backup, tmp_path)
    pw = tmp_path / "backup-password"
    pw.write_text(BACKUP_PASSWORD + "\n")
    owner_file = tmp_path / "owner-password"
    owner_file.write_text(owner_pw + "\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")

    dry, _ = _run(b, "import-ha-backup", str(backup), "--host", "h1", "--password-file",
                  str(pw), "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"Home Assistant {OLD}" in dry.stdout and "SecureTar v2" in dry.stdout, dry.stdout
    assert "Database       included" in dry.stdout, dry.stdout
    assert "replaces the data volume of nodered on h1" in dry.stdout, dry.stdout
    refused, _ = _run(b, "import-ha-backup", str(backup), "--host", "h1", "--password-file",
                      str(wrong), "--owner-password-file", str(owner_file))
    assert refused.returncode == 2 and "password: is wrong" in refused.stderr, refused.stderr
    refused, _ = _run(b, "import-ha-backup", str(backup), "--host", "h1", "--password-file",
                      str(pw))
    assert refused.returncode == 2 and "--owner-password-file: is needed" in refused.stderr
    assert host.exec("test -e /opt/abri", check=False).returncode != 0  # nothing ran

    done, seconds = _run(b, "import-ha-backup", str(backup), "--host", "h1",
                         "--password-file", str(pw), "--owner-password-file",
                         str(owner_file))
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-10000:] + done.stderr[-3000:]
    print(f"[test_ha_import] import: {seconds:.1f}s")
    assert "Safety snapshot" in done.stdout and "snapshot" in done.stdout
    assert "owner account kept: owner" in done.stdout, done.stdout
    for secret in (BACKUP_PASSWORD, owner_pw, second_pw, NR_KEY):
        assert secret not in done.stdout + done.stderr

    # ---- site B holds site A's Home Assistant
    secrets_b = _secrets(b, "h1")
    token_b = secrets_b["homeassistant"]["token"]
    assert secrets_b["homeassistant"]["owner_password"] == owner_pw
    status, auto = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}",
                         token_b)
    assert status == 200 and auto["alias"] == "Import probe", (status, auto)
    assert second_id in _users(base, token_b)
    assert _owner_logs_in(base, "second", second_pw)
    assert _owner_logs_in(base, "owner", owner_pw)
    db = _database(host)
    assert db["integrity"] == "ok" and "19.5" in db["states"], db
    conf = host.exec(f"cat {HA_CONFIG}/configuration.yaml").stdout
    assert "homeassistant: !include abri/core.yaml" in conf, conf
    entries_b = json.loads(host.exec(f"cat {HA_CONFIG}/.storage/core.config_entries").stdout)
    mqtt_b, = [e for e in entries_b["data"]["entries"] if e["domain"] == "mqtt"]
    assert mqtt_b["entry_id"] == mqtt_a["entry_id"]  # the same entry, its devices kept
    assert mqtt_b["data"]["password"] == secrets_b["homeassistant"]["mqtt_password"]
    assert mqtt_b["data"]["password"] != mqtt_a["data"]["password"]
    status, states = _http(base, "GET", "/api/states", token_b)
    assert status == 200
    assert not [s for s in states if s["entity_id"].startswith("binary_sensor.remote_ui")]

    # ---- the Node-RED add-on's flows are nodered's, next to abri's heartbeat, whose broker
    # credentials were added to the add-on's (encrypted) ones: verify hears the heartbeat
    assert secrets_b["nodered"]["credential_key"] == NR_KEY
    data = "/opt/abri/nodered/data"
    flows = json.loads(host.exec(f"cat {data}/flows.json").stdout)
    ids = [x.get("id") for x in flows]
    assert ids[:2] == ["porch.tab", "porch.inject"] and "abri.heartbeat.publish" in ids, ids
    assert "NODE_RED_CREDENTIAL_SECRET" in host.exec(f"cat {data}/settings.js").stdout
    assert host.exec(f"stat -c '%u' {data}/flows.json {data}/lib").stdout.split() == [
        "1000", "1000"]

    checked, _ = _run(b, "verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "nodered publishes on nodered/heartbeat" in checked.stdout, checked.stdout
    again, _ = _run(b, "apply")
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert _recap(again.stdout, "h1")["changed"] == 0, again.stdout[-6000:]
