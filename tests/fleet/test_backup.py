"""Backup and restore round trip on one Debian 13 fleet host, through the abri CLI:

* Mosquitto + Home Assistant deployed (from a host prepared by abri's own engine step);
* state made through the real APIs: an automation through Home Assistant's config API, a
  second user (websocket config/auth/create and config/auth_provider/homeassistant/create),
  a helper with a value (websocket input_number/create, its value set by a service call),
  a state the recorder writes to its database (history), a retained MQTT message published
  with mosquitto_pub as the broker's admin (abri's credentials);
* `abri backup` while both run: each stack (rule stop, from its manifest) is stopped for
  its copy and answers again afterwards; restic came from the host's Debian archive, the
  repository folder is the site setting, its password only in the vault;
* with both stopped, a hash manifest of the user data, then a second `abri backup` (what
  the restore puts back; its added bytes are printed next to the first's);
* `abri backups --json` lists the snapshots per stack;
* the host's data destroyed (compose down, the data folders removed; a stray file left
  where the broker's data was), then `abri restore h1`: the stray data is saved in a safety
  snapshot first, the data comes back, the stacks start and verify passes;
* everything is back: the automation, the retained message (delivered to a new
  subscriber), the owner's login with the same password, the second user (listed, and
  logs in with their password), the helper with its value, the recorded state in a database
  that passes PRAGMA integrity_check, and every other user-data file byte-identical to the
  manifest (a file a service rewrote after the restore started is named and skipped; a
  core set must be untouched);
* a second apply changes nothing (changed=0); no secret appears in any output;
* a repository on a disk that is not mounted, and one on a full disk, are clear errors (no
  traceback); after the full disk, the stacks stopped for their copy run again.

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import harness
import pytest
from test_deploy import (
    _CONFIG_HOME,
    NESTED_ENGINE_OPTIONS,
    _abri,
    _env,
    _recap,
    _secrets,
    _tool,
)

pytestmark = pytest.mark.fleet

HA_CONFIG = "/opt/abri/homeassistant/config"
MQ_DATA = "/opt/abri/mosquitto/data"
DATABASE = ("home-assistant_v2.db", "home-assistant_v2.db-wal", "home-assistant_v2.db-shm")
#: Home Assistant rotates its log when it starts (the restored .log is renamed to .log.1,
#: its mtime kept): its own logs are compared by nothing but their presence
LOGS = ("home-assistant.log", "home-assistant.log.1")
#: files no service rewrites on its own at start: they must come back byte for byte
UNTOUCHED = ("homeassistant/configuration.yaml", "homeassistant/automations.yaml",
             "homeassistant/.storage/auth_provider.homeassistant",
             "homeassistant/.storage/input_number")
AUTOMATION_ID = "abri_backup_round_trip"
SENSOR = "sensor.abri_backup_probe"
HELPER = "input_number.backup_probe_level"
HELPER_VALUE = "37.5"

#: run on the host: relative path -> [sha256, mtime] of every file under the data folders
MANIFEST = r"""
import hashlib, json, os, sys
out = {}
for label, root in (("homeassistant", sys.argv[1]), ("mosquitto", sys.argv[2])):
    for base, dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            out[label + "/" + os.path.relpath(path, root)] = [digest, os.stat(path).st_mtime]
print(json.dumps(out))
"""

DB_CHECK = r"""
import json, sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
rows = db.execute("SELECT s.state FROM states s JOIN states_meta m ON s.metadata_id = "
                  "m.metadata_id WHERE m.entity_id = ?", (sys.argv[2],)).fetchall()
print(json.dumps({"integrity": integrity, "states": [r[0] for r in rows]}))
"""


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def _run(site: Path, *args: str, timeout: float = 1800) -> tuple[subprocess.CompletedProcess,
                                                                 float]:
    start = time.monotonic()
    run = subprocess.run([_tool("abri"), *args, "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    print(f"\n[test_backup] abri {' '.join(args)}: {seconds:.1f}s, rc={run.returncode}")
    return run, seconds


def _killed_at(site: Path, record: str, phase: str, *args: str, delay: float = 2.0,
               timeout: float = 900) -> subprocess.CompletedProcess:
    """Start `abri ARGS` in a process group of its own and SIGKILL the whole group once the
    JSON record it keeps in .abri/ (migration.json, upgrade.json) says phase, plus delay.
    Returns what it printed until then (stdout and stderr together)."""
    path = site / ".abri" / record
    log = site.parent / f"killed-{record}-{phase}.log"
    with open(log, "w+") as out:
        proc = subprocess.Popen([_tool("abri"), *args, "--site", str(site)], env=_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if json.loads(path.read_text()).get("phase") == phase:
                        time.sleep(delay)
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.5)
            assert proc.poll() is None, (f"abri {' '.join(args)} ended before '{phase}' "
                                         f"(rc {proc.returncode})")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        out.seek(0)
        text = out.read()
    print(f"\n[fleet] killed abri {' '.join(args)} at '{phase}'")
    return subprocess.CompletedProcess(args, -9, text, "")


def _http(base: str, method: str, path: str, token: str | None = None,
          body: dict | None = None) -> tuple[int, dict | list | None]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _ws(base: str, token: str, *commands: dict) -> list[dict]:
    """Home Assistant's websocket API: each command's answer (success, result, error)."""
    import websocket  # websocket-client

    ws = websocket.create_connection("ws" + base[len("http"):] + "/api/websocket", timeout=30)
    answers = []
    try:
        assert json.loads(ws.recv())["type"] == "auth_required"
        ws.send(json.dumps({"type": "auth", "access_token": token}))
        assert json.loads(ws.recv())["type"] == "auth_ok"
        for ident, body in enumerate(commands, start=1):
            ws.send(json.dumps({"id": ident, **body}))
            while True:
                answer = json.loads(ws.recv())
                if answer.get("id") == ident:
                    answers.append(answer)
                    break
    finally:
        ws.close()
    return answers


def _make_backup(base: str, token: str, host, tmp_path: Path, password: str) -> Path:
    """A protected backup made by Home Assistant itself through its websocket API (the
    database included); copied out of the host."""
    before = set(host.exec(f"ls {HA_CONFIG}/backups 2>/dev/null || true").stdout.split())
    started, = _ws(base, token, {"type": "backup/generate", "agent_ids": ["backup.local"],
                                 "password": password, "name": "abri import probe",
                                 "include_homeassistant": True, "include_database": True})
    assert started["success"], started
    deadline = time.monotonic() + 300
    new: set[str] = set()
    while time.monotonic() < deadline:
        info, = _ws(base, token, {"type": "backup/info"})
        assert info["success"], info
        new = set(host.exec(f"ls {HA_CONFIG}/backups 2>/dev/null || true").stdout.split()
                  ) - before
        if info["result"].get("backups") and new:  # listed once the file is complete
            break
        time.sleep(3)
    assert new, "Home Assistant made no backup file"
    name, = new
    local = tmp_path / name
    harness.docker("cp", f"{host.name}:{HA_CONFIG}/backups/{name}", str(local))
    return local


def _backup_head(backup: Path) -> tuple[dict, bytes]:
    """A Home Assistant backup's backup.json and the first bytes of its homeassistant.tar.gz
    (SecureTar and its version byte when protected)."""
    import tarfile

    with tarfile.open(backup) as tar:
        meta = json.load(tar.extractfile(next(m for m in tar.getmembers()
                                              if m.name.endswith("backup.json"))))
        inner = next(m for m in tar.getmembers() if m.name.endswith("homeassistant.tar.gz"))
        return meta, tar.extractfile(inner).read(10)


def _second_user(base: str, token: str, password: str) -> str:
    """A second (non-admin) user with a login of the homeassistant provider; its user id."""
    made, = _ws(base, token, {"type": "config/auth/create", "name": "Second Person",
                              "group_ids": ["system-users"], "local_only": False})
    assert made["success"], made
    user_id = made["result"]["user"]["id"]
    login, = _ws(base, token, {"type": "config/auth_provider/homeassistant/create",
                               "user_id": user_id, "username": "second",
                               "password": password})
    assert login["success"], login
    return user_id


def _users(base: str, token: str) -> dict[str, str]:
    """user id -> name of every user that is not a system user."""
    listed, = _ws(base, token, {"type": "config/auth/list"})
    assert listed["success"], listed
    return {u["id"]: u["name"] for u in listed["result"] if not u.get("system_generated")}


def _owner_logs_in(base: str, username: str, password: str) -> bool:
    client = base + "/"
    _, flow = _http(base, "POST", "/auth/login_flow", body={
        "client_id": client, "handler": ["homeassistant", None],
        "redirect_uri": client + "?auth_callback=1"})
    _, step = _http(base, "POST", f"/auth/login_flow/{flow['flow_id']}", body={
        "client_id": client, "username": username, "password": password})
    return (step or {}).get("type") == "create_entry"


def _retained(host, admin: str, topic: str) -> str:
    """The retained message a new subscriber gets on topic (empty when none)."""
    return host.exec(f"docker exec abri-mosquitto-mosquitto-1 mosquitto_sub -h 127.0.0.1 "
                     f"-u admin -P '{admin}' -t '{topic}' -C 1 -W 10", check=False
                     ).stdout.strip()


def _manifest(host) -> dict[str, list]:
    out = host.exec(f"python3 - {HA_CONFIG} {MQ_DATA}", input=MANIFEST).stdout
    return json.loads(out)


def _wait_recorded(host, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = json.loads(host.exec(f"python3 - {HA_CONFIG}/home-assistant_v2.db {SENSOR}",
                                   input=DB_CHECK).stdout)
        if "42.5" in got["states"] or time.monotonic() > deadline:
            return got
        time.sleep(2)


def test_backup_and_restore_round_trip(fleet, fleet_registry, tmp_path):
    host = fleet(1, image="prepared")[0]
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    for stack in ("mosquitto", "homeassistant"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true", "backup_repository=/srv/abri-backup")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    host.exec("mkdir -p /srv")
    assert host.exec("command -v restic", check=False).returncode != 0  # abri installs it

    first, _ = _run(site, "apply")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    outputs = [first]

    # ---- state, through the real APIs
    secrets = _secrets(site, "h1")
    token = secrets["homeassistant"]["token"]
    owner_pw = secrets["homeassistant"]["owner_password"]
    admin = secrets["mosquitto"]["admin_password"]
    base = f"http://{host.address}:8123"
    automation = {"alias": "Backup round trip", "description": "made by test_backup",
                  "triggers": [{"trigger": "time", "at": "07:15:00"}],
                  "conditions": [], "actions": [{"delay": {"seconds": 1}}], "mode": "single"}
    status, answer = _http(base, "POST", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token, automation)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)
    status, _ = _http(base, "POST", f"/api/states/{SENSOR}", token,
                      {"state": "42.5", "attributes": {"unit_of_measurement": "°C"}})
    assert status in (200, 201), status
    second_pw = _random.token_urlsafe(12)
    second_id = _second_user(base, token, second_pw)
    assert _owner_logs_in(base, "second", second_pw)
    helper, = _ws(base, token, {"type": "input_number/create", "name": "Backup probe level",
                                "min": 0, "max": 100, "step": 0.5, "mode": "box"})
    assert helper["success"], helper
    status, _ = _http(base, "POST", "/api/services/input_number/set_value", token,
                      {"entity_id": HELPER, "value": float(HELPER_VALUE)})
    assert status == 200, status
    status, state = _http(base, "GET", f"/api/states/{HELPER}", token)
    assert status == 200 and state["state"] == HELPER_VALUE, (status, state)
    topic, message = "abri/test/retained", f"kept-{_random.token_hex(4)}"
    host.exec(f"docker exec abri-mosquitto-mosquitto-1 mosquitto_pub -h 127.0.0.1 -u admin "
              f"-P '{admin}' -t '{topic}' -m '{message}' -r -q 1")
    assert _retained(host, admin, topic) == message
    assert "42.5" in _wait_recorded(host)["states"], "the recorder did not write the state"

    # ---- a backup while both run: stopped for the copy, answering again after it
    made, _ = _run(site, "backup")
    outputs.append(made)
    assert made.returncode == 0, made.stdout[-6000:] + made.stderr[-3000:]
    print(made.stdout.split("Changed:")[-1])
    assert "install restic from the distribution's archive" in made.stdout
    assert "create the repository /srv/abri-backup" in made.stdout
    for stack in ("mosquitto", "homeassistant"):
        assert re.search(rf"^  h1 +{stack} +snapshot [0-9a-f]{{8}} .* stopped \d+s$",
                         made.stdout, re.M), made.stdout
    assert host.exec("restic version").stdout.startswith("restic 0.18")
    assert host.exec("stat -c %a /srv/abri-backup").stdout.strip() == "700"
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert {"abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1"} <= set(running)
    assert _retained(host, admin, topic) == message  # the broker wrote it on its stop
    status, _ = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}", token)
    assert status == 200

    # ---- both stopped: the manifest of what the next backup (and the restore) holds
    host.exec("docker stop -t 60 abri-homeassistant-homeassistant-1 "
              "abri-mosquitto-mosquitto-1", timeout=180)
    before = _manifest(host)
    assert {f"homeassistant/{n}" for n in DATABASE[:1]} <= set(before)
    assert set(UNTOUCHED) | {"mosquitto/mosquitto.db"} <= set(before), sorted(before)
    # a retention of one daily backup (restic keeps the oldest one too while a rule's count
    # is not reached, so the defaults keep both of today's)
    _abri("site", "set", "--site", str(site), "backup_keep_daily=1", "backup_keep_weekly=0",
          "backup_keep_monthly=0")
    again, _ = _run(site, "backup", "--prune")
    outputs.append(again)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    print(again.stdout.split("Changed:")[-1])
    assert "was stopped" in again.stdout  # nothing to stop: it stays as it was
    # the retention keeps the last backup of a day per stack: the first run's two go
    assert "prune: 2 snapshot(s) removed by the retention" in again.stdout, again.stdout

    listed, _ = _run(site, "backups", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted((r["stack"], r["kind"]) for r in rows) == [
        ("homeassistant", "backup"), ("mosquitto", "backup")], rows
    assert all(r["host"] == "h1" and r["size"] > 0 and r["time"] for r in rows), rows
    assert len({r["run"] for r in rows}) == 1
    for r in rows:
        print(f"[test_backup] snapshot {r['stack']:<14} run {r['run']} size {r['size']} "
              f"added {r['added']}")
    table, _ = _run(site, "backups")
    assert "homeassistant" in table.stdout and "DATE (UTC)" in table.stdout, table.stdout

    # ---- the host's data destroyed; a stray file where the broker's data was
    for stack in ("homeassistant", "mosquitto"):
        host.exec(f"docker compose -p abri-{stack} -f /opt/abri/{stack}/compose.yml down",
                  timeout=180)
    host.exec(f"rm -rf {HA_CONFIG} {MQ_DATA} && mkdir -p {MQ_DATA} "
              f"&& echo stray > {MQ_DATA}/stray.txt")
    started = float(host.exec("date +%s.%N").stdout)

    restored, _ = _run(site, "restore", "h1")
    outputs.append(restored)
    assert restored.returncode == 0, restored.stdout[-8000:] + restored.stderr[-3000:]
    print(restored.stdout.split("Changed:")[-1])
    assert "mosquitto: the data on the host saved first as safety snapshot" \
        in restored.stdout
    assert "homeassistant: the data on the host saved first" not in restored.stdout
    for stack in ("mosquitto", "homeassistant"):
        assert f"{stack}: restored snapshot" in restored.stdout
    assert "verify: " in restored.stdout and " 0 failed" in restored.stdout, \
        restored.stdout[-4000:]

    # ---- every piece of the state is back
    status, config = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token)
    assert status == 200 and config["alias"] == "Backup round trip", (status, config)
    assert _retained(host, admin, topic) == message
    assert _owner_logs_in(base, "owner", owner_pw)
    assert not _owner_logs_in(base, "owner", owner_pw + "x")
    assert _users(base, token).get(second_id) == "Second Person"
    assert _owner_logs_in(base, "second", second_pw)
    status, state = _http(base, "GET", f"/api/states/{HELPER}", token)
    assert status == 200 and state["state"] == HELPER_VALUE, (status, state)
    db = _wait_recorded(host)
    assert db["integrity"] == "ok" and "42.5" in db["states"], db
    after = _manifest(host)
    assert "mosquitto/stray.txt" not in after
    missing = sorted(set(before) - set(after))
    assert not missing, missing
    rewritten, same, differ = [], [], []
    for rel, (digest, mtime) in before.items():
        if rel.split("/", 1)[1] in DATABASE + LOGS:
            continue
        new_digest, new_mtime = after[rel]
        if new_mtime >= started:
            rewritten.append(rel)  # written by a service after the restore began
        elif new_digest == digest and new_mtime == mtime:
            same.append(rel)
        else:
            differ.append(rel)
    print(f"[test_backup] {len(same)} user-data files byte-identical, rewritten by the "
          f"services since the restore: {rewritten}")
    assert not differ, (differ, rewritten)
    assert set(UNTOUCHED) <= set(same), (rewritten, same)

    listed, _ = _run(site, "backups", "--json")
    safety = [r for r in json.loads(listed.stdout) if r["kind"] == "safety"]
    assert [r["stack"] for r in safety] == ["mosquitto"], safety
    assert safety[0]["files"] == 1  # the stray file, kept in case it mattered

    second, _ = _run(site, "apply")
    outputs.append(second)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    recap = _recap(second.stdout, "h1")
    assert recap["changed"] == 0, (recap, second.stdout.split("Recap:")[0][-3000:])

    # ---- no secret in any output; the repository password only in the vault
    secrets = _secrets(site, "h1")
    repository_password = secrets["_backup"]["repository_password"]
    values = [v for stack in secrets.values() for v in stack.values()]
    text = "".join(r.stdout + r.stderr for r in outputs)
    for value in values:
        assert value not in text
    grep = subprocess.run(["grep", "-rlF", "--", repository_password, str(site),
                           "--exclude=vault.yml"], capture_output=True, text=True)
    assert grep.stdout == "", grep.stdout

    # ---- a repository that is not there: a clear error, no traceback, nothing made
    _abri("site", "set", "--site", str(site), "backup_repository=/mnt/absent-disk/abri")
    for args, said in ((("backup",), "the folder /mnt/absent-disk for the repository "
                        "/mnt/absent-disk/abri does not exist on h1 (a disk not mounted?)"),
                       (("backups",), "there is no backup repository at "
                        "/mnt/absent-disk/abri on h1")):
        run, _ = _run(site, *args)
        assert run.returncode == 1, run.stdout + run.stderr
        assert said in run.stdout + run.stderr, run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr
    assert host.exec("test -e /mnt/absent-disk", check=False).returncode != 0

    # ---- a full disk: a clear error, and the stacks stopped for their copy run again
    host.exec("mkdir -p /mnt/tiny && mount -t tmpfs -o size=24k tmpfs /mnt/tiny")
    _abri("site", "set", "--site", str(site), "backup_repository=/mnt/tiny/abri")
    full, _ = _run(site, "backup")
    outputs.append(full)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "no space left on device" in full.stdout, full.stdout[-3000:]
    assert "the stack was started again" in full.stdout, full.stdout[-3000:]
    assert "Traceback" not in full.stdout + full.stderr
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert {"abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1"} <= set(running)
    status, config = _http(base, "GET", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token)
    assert status == 200 and config["alias"] == "Backup round trip", (status, config)
    assert _retained(host, admin, topic) == message
