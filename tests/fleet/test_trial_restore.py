"""Trial restores (`abri backup --verify`) on one Debian 13 fleet host, through the abri CLI:

* Mosquitto, Home Assistant and Node-RED deployed (from a host prepared by abri's own engine
  step), an automation made through Home Assistant's config API, then `abri backup`;
* `abri backup --verify` restores the newest backup of each stack into a scratch Compose
  project next to the live one and passes for both: Home Assistant answers its health check
  at the scratch container's address, its recorder database passes PRAGMA integrity_check,
  its automations and entities are as many as the live instance's; Mosquitto answers a
  CONNECT as abri's admin user on the restored persistence and logs no persistence error;
  Node-RED (no backup.trial block) answers its health check; cut off from the live stacks
  (its wiring emptied, an internal network), it never logs in at the live broker;
* the live stacks are untouched (the same container ids before and after), and nothing of
  the trial is left: no container, network or volume named abri-trial*, no scratch folder;
* `abri backups` shows when each stack's restore was last proven (table and --json);
* a pack file of the repository damaged in its middle: `abri backup --verify` fails (exit
  1), naming the stack and the reason; again nothing is left and the live stacks are
  untouched, and the last proven restore of the failed stack stays the earlier one;
* no secret appears in any output.

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from test_backup import AUTOMATION_ID, _http, _own_config_home, _run  # noqa: F401
from test_deploy import NESTED_ENGINE_OPTIONS, _abri, _secrets

pytestmark = pytest.mark.fleet

LIVE = ("abri-mosquitto", "abri-homeassistant", "abri-nodered")


def _live_ids(host) -> dict[str, str]:
    """name -> full id of every container of the live stacks."""
    out = {}
    for project in LIVE:
        listed = host.exec(f"docker ps -a --no-trunc --filter "
                           f"label=com.docker.compose.project={project} "
                           "--format '{{.Names}} {{.ID}} {{.State}}'").stdout.split("\n")
        for line in filter(None, listed):
            name, cid, state = line.split()
            assert state == "running", line
            out[name] = cid
    return out


def _left_behind(host) -> dict[str, list[str]]:
    """Whatever of a trial is still on the host."""
    return {
        "containers": host.exec("docker ps -a --filter name=abri-trial --format "
                                "'{{.Names}}'").stdout.split(),
        "networks": host.exec("docker network ls --filter name=abri-trial --format "
                              "'{{.Name}}'").stdout.split(),
        "volumes": host.exec("docker volume ls --filter name=abri-trial --format "
                             "'{{.Name}}'").stdout.split(),
        "labelled": host.exec("docker ps -a --filter label=org.abri.trial --format "
                              "'{{.Names}}'").stdout.split(),
        "scratch": host.exec("ls -A /var/lib/abri/trial 2>/dev/null || true").stdout.split(),
    }


def _nodered_logins(host, since: str = "") -> int:
    """Logins of Node-RED's account at the live broker (its log; since a time)."""
    flag = f"--since {since} " if since else ""
    return int(host.exec(f"docker logs {flag}abri-mosquitto-mosquitto-1 2>&1 | "
                         "grep -c \"u'nodered'\" || true").stdout.strip() or 0)


def _settled(host, quiet: float = 15, timeout: float = 120) -> None:
    """Until the live Node-RED, restarted by the backup, has logged in again and no new
    login came for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = _nodered_logins(host), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(3)
        now = _nodered_logins(host)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


NOTHING = {"containers": [], "networks": [], "volumes": [], "labelled": [], "scratch": []}


def test_trial_restore_proves_the_backup_and_touches_nothing(fleet, fleet_registry,
                                                             tmp_path):
    host = fleet(1, image="prepared")[0]
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    for stack in ("mosquitto", "homeassistant", "nodered"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true", "backup_repository=/srv/abri-backup")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    host.exec("mkdir -p /srv")

    first, _ = _run(site, "apply")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    outputs = [first]

    # nothing to verify before the first backup: a clear error, nothing run
    early, _ = _run(site, "backup", "--verify")
    outputs.append(early)
    assert early.returncode == 1, early.stdout + early.stderr
    assert "h1: no backup yet, nothing to verify" in early.stderr, early.stderr

    secrets = _secrets(site, "h1")
    token = secrets["homeassistant"]["token"]
    base = f"http://{host.address}:8123"
    automation = {"alias": "Trial restore", "description": "made by test_trial_restore",
                  "triggers": [{"trigger": "time", "at": "06:45:00"}],
                  "conditions": [], "actions": [{"delay": {"seconds": 1}}], "mode": "single"}
    status, answer = _http(base, "POST", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token, automation)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)

    made, backup_seconds = _run(site, "backup")
    outputs.append(made)
    assert made.returncode == 0, made.stdout[-6000:] + made.stderr[-3000:]

    # ---- the trial passes for both stacks, next to the untouched live ones
    before = _live_ids(host)
    assert len(before) == 3, before
    _settled(host)
    since = host.exec("date -u +%Y-%m-%dT%H:%M:%SZ").stdout.strip()
    trial, trial_seconds = _run(site, "backup", "--verify")
    outputs.append(trial)
    print(trial.stdout.split("Trial restores:")[-1])
    print(f"[test_trial_restore] backup {backup_seconds:.1f}s, trial restore "
          f"{trial_seconds:.1f}s")
    assert trial.returncode == 0, trial.stdout[-8000:] + trial.stderr[-3000:]
    ha = re.search(r"^  h1 +homeassistant +passed +snapshot ([0-9a-f]{8}) .*$", trial.stdout,
                   re.M)
    mq = re.search(r"^  h1 +mosquitto +passed +snapshot ([0-9a-f]{8}) .*$", trial.stdout,
                   re.M)
    assert ha and mq, trial.stdout[-4000:]
    assert "home-assistant_v2.db integrity ok" in ha.group(0), ha.group(0)
    assert "1 automations as live" in ha.group(0), ha.group(0)
    assert re.search(r"\d+ entities as live", ha.group(0)), ha.group(0)
    assert re.search(r"health HTTP 200 at \d+\.\d+\.\d+\.\d+", ha.group(0)), ha.group(0)
    assert re.search(r"health CONNACK return code 0 at \d+\.", mq.group(0)), mq.group(0)
    assert "log clean" in mq.group(0) and "log clean" in ha.group(0)
    # a stack without a trial block: its health check alone, at the scratch address
    nr = re.search(r"^  h1 +nodered +passed +snapshot [0-9a-f]{8} .*health HTTP 200 at "
                   r"\d+\.\d+\.\d+\.\d+$", trial.stdout, re.M)
    assert nr, trial.stdout[-4000:]
    # the scratch Node-RED, its wiring emptied on an internal network, never logged in at
    # the live broker (a login with the live one's client id would have thrown it out)
    assert _nodered_logins(host, since) == 0, host.exec(
        f"docker logs --since {since} abri-mosquitto-mosquitto-1 2>&1").stdout[-3000:]
    assert _live_ids(host) == before
    assert _left_behind(host) == NOTHING

    listed, _ = _run(site, "backups", "--json")
    outputs.append(listed)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)
    proven = {r["stack"]: r["last_proven_restore"] for r in rows}
    assert set(proven) == {"homeassistant", "mosquitto", "nodered"}, proven
    assert proven["homeassistant"]["short_id"] == ha.group(1), proven
    assert proven["mosquitto"]["short_id"] == mq.group(1), proven
    table, _ = _run(site, "backups")
    outputs.append(table)
    assert "Last proven restore" in table.stdout, table.stdout
    assert re.search(rf"^  h1 +homeassistant +\d{{4}}-.* UTC, snapshot {ha.group(1)} ",
                     table.stdout, re.M), table.stdout

    # ---- a damaged pack file: the trial fails, naming the stack and the reason
    packs = host.exec("find /srv/abri-backup/data -type f -printf '%s %p\\n' | sort -n"
                      ).stdout.split("\n")
    size, pack = [ln for ln in packs if ln.strip()][-1].split()
    host.exec(f"dd if=/dev/urandom of={pack} bs=1 count=64 seek={int(size) // 2} "
              "conv=notrunc status=none")
    broken, _ = _run(site, "backup", "--verify")
    outputs.append(broken)
    print(broken.stdout.split("Trial restores:")[-1] + broken.stderr)
    assert broken.returncode == 1, broken.stdout[-6000:] + broken.stderr[-3000:]
    failed = re.findall(r"^abri: trial restore failed: h1 (\w+): (.+)$", broken.stderr, re.M)
    assert failed, broken.stderr
    for stack, reason in failed:
        assert stack in ("homeassistant", "mosquitto", "nodered"), failed
        assert "the restore of snapshot" in reason and "failed" in reason, reason
        assert "ciphertext verification failed" in reason, reason
        assert re.search(rf"^  h1 +{stack} +FAILED ", broken.stdout, re.M), broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr
    assert _live_ids(host) == before
    assert _left_behind(host) == NOTHING
    again, _ = _run(site, "backups", "--json")
    outputs.append(again)
    still = {r["stack"]: r["last_proven_restore"] for r in json.loads(again.stdout)}
    for stack, _reason in failed:
        assert still[stack] == proven[stack], (still, proven)

    # ---- no secret in any output
    values = [v for stack in _secrets(site, "h1").values() for v in stack.values()
              if isinstance(v, str) and len(v) >= 8]
    text = "".join(r.stdout + r.stderr for r in outputs)
    for value in values:
        assert value not in text
