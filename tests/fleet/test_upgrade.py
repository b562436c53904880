"""`abri upgrade` on one Debian 13 fleet host (prepared by abri's own engine step), through
the CLI, against the test registry as the site's mirror:

* Home Assistant 2026.2.3 (the last release on Debian 13's Python) and Mosquitto deployed, as
  a site of an older abri pins them; state made through the real API: an automation, a
  second user, a state the recorder writes to its database;
* `abri upgrade --dry-run` shows 2026.2.3 -> 2026.11.0, found in the registry (whose tag
  list also holds 2.0 and 2 for Mosquitto, which are not newer than 2.0.21), and changes
  nothing;
* `abri upgrade` killed (SIGKILL of its process group) right after its snapshot, while the
  new release is deployed; `abri apply` then refuses (the upgrade is unfinished), and
  `abri upgrade` again completes it: Home Assistant reports 2026.11.0, its recorder
  database passes PRAGMA integrity_check (its schema version is no older), the state is
  all there, the site pins 2026.11.0 by digest, verify passes, a second apply has
  changed=0;
* a release that starts but never becomes healthy (it migrates the database to schema 999
  and never answers) is put in the registry as 2026.11.1: `abri upgrade --patch --timeout
  60` finds it; killed while it takes its snapshot, run again, it deploys 2026.11.1, fails
  its gate, and is killed while it rolls back; `abri upgrade` again ends the rollback:
  exit code 3 (rolled back), 2026.11.0 serves on the database from before the upgrade (the
  same schema version, not 999), the state is there, the site still pins 2026.11.0, verify
  passes, and a second apply has changed=0;
* Home Assistant 2026.11.0 makes a backup with its own websocket API (SecureTar v3, a
  password): the automation is deleted afterwards; `abri import-ha-backup` shows it as
  v3, refuses a wrong password with exit 2 and nothing changed, and imports it: the
  automation is back, with the rest of the state, and a second apply has changed=0;
* no secret appears in any output.

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import re
import secrets as _random
import subprocess
import time
from pathlib import Path

import harness
import pytest
import yaml
from test_backup import (
    _backup_head,
    _http,
    _killed_at,
    _make_backup,
    _owner_logs_in,
    _run,
    _second_user,
    _users,
)
from test_deploy import _CONFIG_HOME, NESTED_ENGINE_OPTIONS, _abri, _env, _recap, _secrets, _tool

pytestmark = pytest.mark.fleet

OLD, NEW, BROKEN = harness.UPGRADE_FROM, harness.HA_VERSION, "2026.11.1"
REPO = "homeassistant/home-assistant"
HA_CONFIG = "/opt/abri/homeassistant/config"
SENSOR = "sensor.abri_upgrade_probe"
AUTOMATION_ID = "abri_upgrade_probe"

#: run on the host: the recorder database's integrity, newest schema version and the
#: states recorded for an entity
DB_CHECK = r"""
import json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
schema = db.execute("SELECT MAX(schema_version) FROM schema_changes").fetchone()[0]
rows = db.execute("SELECT s.state FROM states s JOIN states_meta m ON s.metadata_id = "
                  "m.metadata_id WHERE m.entity_id = ?", (sys.argv[2],)).fetchall()
print(json.dumps({"integrity": integrity, "schema": schema, "states": [r[0] for r in rows]}))
"""


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def _database(host) -> dict:
    return json.loads(host.exec(f"python3 - {HA_CONFIG}/home-assistant_v2.db {SENSOR}",
                                input=DB_CHECK).stdout)


def _version(base: str, token: str) -> str:
    status, config = _http(base, "GET", "/api/config", token)
    assert status == 200, status
    return config["version"]


def _pins(site: Path) -> dict[str, str]:
    data = yaml.safe_load((site / "group_vars/all/abri.yml").read_text())
    return data["abri_images"]


def old_ha_site(tmp_path: Path, name: str, host, registry: str, repository: str) -> Path:
    """A site as an older abri made it: Mosquitto and Home Assistant on host (as h1), Home
    Assistant pinned at 2026.2.3, the test registry as mirror, the nested engine's address
    ranges, the backup repository given."""
    site = tmp_path / name
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    for stack in ("mosquitto", "homeassistant"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={registry}",
          "registry_insecure=true", f"backup_repository={repository}")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    site_vars = site / "group_vars" / "all" / "abri.yml"
    site_vars.write_text(site_vars.read_text().replace(f"{REPO}:{NEW}", f"{REPO}:{OLD}"))
    assert _pins(site)["homeassistant"] == f"docker.io/{REPO}:{OLD}"
    return site


def _state_is_there(host, base: str, token: str, owner: str, owner_pw: str, second_id: str,
                    second_pw: str) -> dict:
    status, auto = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}", token)
    assert status == 200 and auto["alias"] == "Upgrade probe", (status, auto)
    assert _owner_logs_in(base, owner, owner_pw)
    assert second_id in _users(base, token)
    assert _owner_logs_in(base, "second", second_pw)
    db = _database(host)
    assert db["integrity"] == "ok", db
    assert "21.5" in db["states"], db
    return db


def test_upgrade_then_a_release_that_never_gets_healthy_rolls_back(
        fleet, fleet_images, fleet_registry, tmp_path):
    registry = fleet_registry.address
    old_image = harness.build_homeassistant_image(version=OLD)
    broken_image = harness.build_homeassistant_broken_image(base=fleet_images.homeassistant)
    harness.push_image(old_image.ref, registry, REPO, [OLD])
    harness.registry_delete(registry, REPO, BROKEN)  # left by an earlier run
    host = fleet(1, image="prepared")[0]
    # a site an older abri made: Home Assistant pinned at 2026.2.3
    site = old_ha_site(tmp_path, "site", host, registry, "/srv/abri-backup")
    host.exec("mkdir -p /srv")

    first, _ = _run(site, "apply")
    outputs = [first]
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]

    # ---- state, through the real API, on 2026.2.3
    secrets = _secrets(site, "h1")
    token = secrets["homeassistant"]["token"]
    owner_pw = secrets["homeassistant"]["owner_password"]
    base = f"http://{host.address}:8123"
    assert _version(base, token) == OLD
    automation = {"alias": "Upgrade probe", "description": "made by test_upgrade",
                  "triggers": [{"trigger": "time", "at": "06:30:00"}],
                  "conditions": [], "actions": [{"delay": {"seconds": 1}}], "mode": "single"}
    status, answer = _http(base, "POST", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token, automation)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)
    second_pw = _random.token_urlsafe(12)
    second_id = _second_user(base, token, second_pw)
    status, _ = _http(base, "POST", f"/api/states/{SENSOR}", token,
                      {"state": "21.5", "attributes": {"unit_of_measurement": "°C"}})
    assert status in (200, 201), status
    deadline = time.monotonic() + 60
    while "21.5" not in _database(host)["states"] and time.monotonic() < deadline:
        time.sleep(2)
    before = _database(host)
    assert "21.5" in before["states"] and before["integrity"] == "ok", before
    print(f"[test_upgrade] {OLD}: recorder schema {before['schema']}")

    # ---- what an upgrade would do, and nothing done
    dry, _ = _run(site, "upgrade", "--dry-run")
    outputs.append(dry)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    row = re.search(rf"^h1 +homeassistant +{re.escape(OLD)} +{re.escape(NEW)} +registry "
                    r"\(sha256:", dry.stdout, re.M)
    assert row, dry.stdout
    assert "mosquitto" not in dry.stdout, dry.stdout  # 2.0 and 2 are not newer than 2.0.21
    assert _pins(site)["homeassistant"] == f"docker.io/{REPO}:{OLD}"
    assert not (site / ".abri" / "upgrade.json").exists()

    # ---- the upgrade, killed while the new release is deployed, then completed
    outputs.append(_killed_at(site, "upgrade.json", "switch", "upgrade"))
    refused = subprocess.run([_tool("abri"), "apply", "--site", str(site)], env=_env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "upgrade of homeassistant on h1" in refused.stderr and "unfinished" in \
        refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    done, _ = _run(site, "upgrade")
    outputs.append(done)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-3000:]
    assert "completing the upgrade of homeassistant on h1" in done.stdout, done.stdout[-3000:]
    assert f"Upgraded homeassistant on h1 to {NEW}" in done.stdout, done.stdout[-3000:]
    print("[test_upgrade] " + re.search(r"^Upgraded .*$", done.stdout, re.M).group(0))
    assert _version(base, token) == NEW
    after = _state_is_there(host, base, token, "owner", owner_pw, second_id, second_pw)
    # 2026.2.3 and 2026.11.0 share the recorder schema (53): the version is recorded, the
    # rollback below is what tells a migrated database from the one of before
    assert after["schema"] >= before["schema"], (before, after)
    pin = _pins(site)["homeassistant"]
    assert re.fullmatch(rf"docker\.io/{REPO}:{re.escape(NEW)}@sha256:[0-9a-f]{{64}}", pin), pin
    running = host.exec("docker inspect -f '{{.Config.Image}}' "
                        "abri-homeassistant-homeassistant-1").stdout.strip()
    assert running == f"{registry}/{REPO}:{pin.split(':', 1)[1]}", running
    assert not (site / ".abri" / "upgrade.json").exists()
    print(f"[test_upgrade] {NEW}: recorder schema {after['schema']}")
    listed = json.loads(subprocess.run(
        [_tool("abri"), "backups", "--json", "--site", str(site)], env=_env(),
        capture_output=True, text=True, timeout=300, check=True).stdout)
    kinds = {(r["stack"], r["kind"]) for r in listed}
    assert ("homeassistant", "upgrade") in kinds, listed
    again, _ = _run(site, "apply")
    outputs.append(again)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert _recap(again.stdout, "h1")["changed"] == 0, again.stdout[-4000:]

    # ---- a release that never becomes healthy: found, failed, rolled back (killed once)
    harness.push_image(broken_image.ref, registry, REPO, [BROKEN])
    try:
        outputs.append(_killed_at(site, "upgrade.json", "snapshot", "upgrade", "--patch",
                                  "--timeout", "60", delay=1.0))
        killed = _killed_at(site, "upgrade.json", "rollback", "upgrade", "--patch",
                            "--timeout", "60")
        outputs.append(killed)
        assert "completing the upgrade of homeassistant on h1" in killed.stdout, \
            killed.stdout[-3000:]
        assert NEW in killed.stdout and BROKEN in killed.stdout, killed.stdout[-3000:]
        back, _ = _run(site, "upgrade", "--patch", "--timeout", "60")
        outputs.append(back)
    finally:
        harness.registry_delete(registry, REPO, BROKEN)
    assert back.returncode == 3, back.stdout[-8000:] + back.stderr[-3000:]
    assert f"Rolled back homeassistant on h1 to {NEW}" in back.stderr, back.stderr[-3000:]
    assert "Traceback" not in back.stderr
    assert _version(base, token) == NEW
    rolled = _state_is_there(host, base, token, "owner", owner_pw, second_id, second_pw)
    assert rolled["schema"] == after["schema"], (after, rolled)  # not 999: the data of before
    assert _pins(site)["homeassistant"] == pin
    running = host.exec("docker inspect -f '{{.Config.Image}}' "
                        "abri-homeassistant-homeassistant-1").stdout.strip()
    assert running.endswith(pin.split(":", 1)[1]), running
    verified = subprocess.run([_tool("abri"), "verify", "--site", str(site)], env=_env(),
                              capture_output=True, text=True, timeout=600)
    outputs.append(verified)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    last, _ = _run(site, "apply")
    outputs.append(last)
    assert last.returncode == 0, last.stdout[-6000:] + last.stderr[-3000:]
    assert _recap(last.stdout, "h1")["changed"] == 0, last.stdout[-4000:]

    # ---- Home Assistant 2026.11's own backup is SecureTar v3, and abri imports it: a real
    # v3 archive made by Home Assistant's backup API (the import tests' own v3 archives are
    # written with the securetar library). The automation is deleted after the backup, so
    # finding it again proves the import put the backup's configuration in place.
    v3_password = "v3-" + _random.token_urlsafe(12)
    backup = _make_backup(base, token, host, tmp_path, v3_password)
    meta, head = _backup_head(backup)
    assert meta["protected"] is True and meta["homeassistant"]["version"] == NEW, meta
    assert head[:9] == b"SecureTar" and head[9] == 3, head  # Home Assistant 2026.11: v3
    status, _ = _http(base, "DELETE", f"/api/config/automation/config/{AUTOMATION_ID}", token)
    assert status == 200, status
    pw, owner_file, wrong = (tmp_path / "v3-password", tmp_path / "owner-password",
                             tmp_path / "wrong-password")
    pw.write_text(v3_password + "\n")
    owner_file.write_text(owner_pw + "\n")
    wrong.write_text("not-the-password\n")
    dry, _ = _run(site, "import-ha-backup", str(backup), "--host", "h1", "--password-file",
                  str(pw), "--dry-run")
    outputs.append(dry)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"Home Assistant {NEW}" in dry.stdout and "SecureTar v3" in dry.stdout, dry.stdout
    refused, _ = _run(site, "import-ha-backup", str(backup), "--host", "h1",
                      "--password-file", str(wrong), "--owner-password-file", str(owner_file))
    outputs.append(refused)
    assert refused.returncode == 2 and "password: is wrong" in refused.stderr, refused.stderr
    status, _ = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}", token)
    assert status == 404, status  # the refusal changed nothing
    imported, seconds = _run(site, "import-ha-backup", str(backup), "--host", "h1",
                             "--password-file", str(pw), "--owner-password-file",
                             str(owner_file))
    outputs.append(imported)
    assert imported.returncode == 0, imported.stdout[-8000:] + imported.stderr[-3000:]
    print(f"[test_upgrade] import of Home Assistant's own v3 backup: {seconds:.1f}s")
    token = _secrets(site, "h1")["homeassistant"]["token"]
    _state_is_there(host, base, token, "owner", owner_pw, second_id, second_pw)
    assert _version(base, token) == NEW
    settled, _ = _run(site, "apply")
    outputs.append(settled)
    assert settled.returncode == 0, settled.stdout[-6000:] + settled.stderr[-3000:]
    assert _recap(settled.stdout, "h1")["changed"] == 0, settled.stdout[-4000:]

    shown = "\n".join(o.stdout + o.stderr for o in outputs)
    assert v3_password not in shown
    for stack, keys in secrets.items():
        for key, value in keys.items():
            if isinstance(value, str) and len(value) >= 8:
                assert value not in shown, f"the secret {stack}/{key} was printed"
