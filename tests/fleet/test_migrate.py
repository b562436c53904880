"""Migration from one Debian 13 fleet host to another, through an SFTP repository, with the
abri CLI (two hosts prepared by abri's own engine step):

* Mosquitto + Home Assistant on h1; the site's backup repository is an SFTP folder on h2
  (`sftp:root@h2:/srv/abri-backup`, the site host name standing for its address);
* state made through the real APIs (an automation, a state in the recorder's database, a
  retained MQTT message);
* `abri backup`: h1's snapshots go to h2 over SFTP with the key abri made for h1 (0600 root
  on h1, let in on h2 restricted to SFTP), h2's host key pinned on h1 (no
  StrictHostKeyChecking=no); `abri backups --json` lists them;
* `abri migrate h1 h2`: copy while h1 runs, stop, copy what changed, restore on h2 from h1's
  snapshots, start, verify; the downtime is printed;
* on h2: the automation, the retained message, the owner's login with the same password,
  the recorded state in a database that passes PRAGMA integrity_check; the broker's admin
  password is h1's; on h1: the containers exist, stopped, and the data is kept;
* a second apply of the whole site changes nothing (changed=0 on both hosts) and does not
  start h1's stacks;
* back to h1 (an automation made on h2 meanwhile): `abri migrate h2 h1` SIGKILLed while
  h2's stacks stop for the last copy; h2's data is intact; the same command again completes
  the migration: both automations, the retained message and the owner's login on h1, h1
  running and h2 stopped, and a third apply has changed=0;
* no secret appears in any output.

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import re
import secrets as _random
import shlex
import time

import pytest
from test_backup import (
    _http,
    _killed_at,
    _owner_logs_in,
    _retained,
    _run,
    _wait_recorded,
)
from test_backup_faults import _restic
from test_deploy import _CONFIG_HOME, NESTED_ENGINE_OPTIONS, _abri, _recap, _secrets

from tui.core.resolve import BACKUP_SECRET

pytestmark = pytest.mark.fleet

AUTOMATION_ID = "abri_migrate"
CONTAINERS = ("abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1")


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def _states(host) -> dict[str, str]:
    out = host.exec("docker ps -a --format '{{.Names}} {{.State}}'").stdout.split("\n")
    return dict(line.split(" ", 1) for line in out if " " in line)


def test_migrate_through_an_sftp_repository(fleet, fleet_registry, tmp_path):
    began = time.monotonic()
    h1, h2 = fleet(2, image="prepared").hosts
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    for name, host in (("h1", h1), ("h2", h2)):
        _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
              "--user", host.ssh_user, "--key", str(host.key_path), name)
    for stack in ("mosquitto", "homeassistant"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true", "backup_repository=sftp:root@h2:/srv/abri-backup")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    h2.exec("mkdir -p /srv")

    first, _ = _run(site, "apply")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    outputs = [first]

    # ---- state, through the real APIs
    secrets = _secrets(site, "h1")
    token = secrets["homeassistant"]["token"]
    owner_pw = secrets["homeassistant"]["owner_password"]
    admin = secrets["mosquitto"]["admin_password"]
    base1 = f"http://{h1.address}:8123"
    automation = {"alias": "Migration", "description": "made by test_migrate",
                  "triggers": [{"trigger": "time", "at": "06:45:00"}],
                  "conditions": [], "actions": [{"delay": {"seconds": 1}}], "mode": "single"}
    status, answer = _http(base1, "POST", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token, automation)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)
    status, _ = _http(base1, "POST", "/api/states/sensor.abri_backup_probe", token,
                      {"state": "42.5", "attributes": {"unit_of_measurement": "°C"}})
    assert status in (200, 201), status
    topic, message = "abri/test/migrated", f"kept-{_random.token_hex(4)}"
    h1.exec(f"docker exec abri-mosquitto-mosquitto-1 mosquitto_pub -h 127.0.0.1 -u admin "
            f"-P '{admin}' -t '{topic}' -m '{message}' -r -q 1")
    assert _retained(h1, admin, topic) == message
    assert "42.5" in _wait_recorded(h1)["states"], "the recorder did not write the state"

    # ---- a backup into the SFTP repository on h2
    made, _ = _run(site, "backup")
    outputs.append(made)
    assert made.returncode == 0, made.stdout[-6000:] + made.stderr[-3000:]
    print(made.stdout.split("Changed:")[-1])
    assert f"create the repository sftp:root@{h2.address}:/srv/abri-backup/h1" in made.stdout
    assert h1.exec("stat -c '%a %U' /etc/abri/backup/sftp_key").stdout.strip() == "600 root"
    pinned = h1.exec("cat /etc/abri/backup/known_hosts").stdout
    h2_key = h2.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    assert h2_key in pinned, pinned
    authorized = h2.exec("cat /root/.ssh/authorized_keys").stdout
    line = next(ln for ln in authorized.splitlines() if "abri-backup@h1" in ln)
    assert line.startswith('restrict,command="internal-sftp" ssh-ed25519 '), line
    assert h2.exec("test -f /srv/abri-backup/h1/config && stat -c %a /srv/abri-backup"
                   ).stdout.strip() == "700"
    assert h1.exec("test -e /var/backups/abri", check=False).returncode != 0
    listed, _ = _run(site, "backups", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted((r["host"], r["stack"]) for r in rows) == [
        ("h1", "homeassistant"), ("h1", "mosquitto")], rows

    # ---- the repository's host unreachable (its SSH server stopped): a clear error
    h2.exec("systemctl stop ssh.socket ssh", check=False)
    try:
        down, _ = _run(site, "backup")
        outputs.append(down)
        said = down.stdout + down.stderr
        assert down.returncode != 0, said[-4000:]
        assert "Traceback" not in said, said[-4000:]
        line = next((ln for ln in said.splitlines() if "could not be reached" in ln), "")
        assert f"sftp:root@{h2.address}:/srv/abri-backup/h1" in line, said[-4000:]
        assert f"{h2.address} port 22 did not answer" in line, line
        assert all(_states(h1).get(c) == "running" for c in CONTAINERS), _states(h1)
        assert not h1.exec("ls /var/lib/abri/backup-stopped 2>/dev/null", check=False
                           ).stdout.strip()
        assert h1.exec("test -s /opt/abri/homeassistant/config/home-assistant_v2.db && "
                       "test -s /opt/abri/mosquitto/data/mosquitto.db", check=False
                       ).returncode == 0
    finally:
        h2.exec("systemctl start ssh", check=False)
    # back again: the next backup works, and the repository checks clean
    again, _ = _run(site, "backup")
    outputs.append(again)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    password = _secrets(site, "h1")[BACKUP_SECRET[0]][BACKUP_SECRET[1]]
    ssh = (f"ssh -i /etc/abri/backup/sftp_key -o IdentitiesOnly=yes -o BatchMode=yes "
           f"-o UserKnownHostsFile=/etc/abri/backup/known_hosts -o StrictHostKeyChecking=yes "
           f"-o HostKeyAlias=abri-repository-{h2.address}-22 root@{h2.address} -s sftp")
    checked = _restic(h1, password, f"-o {shlex.quote('sftp.command=' + ssh)} check",
                      check=False, repo=f"sftp:root@{h2.address}:/srv/abri-backup/h1")
    assert checked.returncode == 0 and "no errors were found" in checked.stdout, (
        checked.stdout[-2000:] + checked.stderr[-2000:])
    assert all(_states(h1).get(c) == "running" for c in CONTAINERS), _states(h1)

    # ---- the migration
    moved, seconds = _run(site, "migrate", "h1", "h2")
    outputs.append(moved)
    assert moved.returncode == 0, moved.stdout[-10000:] + moved.stderr[-3000:]
    downtime = re.search(r"^Downtime: .*$", moved.stdout, re.M)
    assert downtime, moved.stdout[-3000:]
    print(f"[test_migrate] abri migrate h1 h2: {seconds:.1f}s; {downtime.group(0)}")
    # the live copy was put in place on h2 before the stop, and the last restore only
    # brought it up to date: no safety snapshot of a seed, nothing of h2's own overwritten
    for stack in ("homeassistant", "mosquitto"):
        assert (f"{stack}: holds the live copy seeded from h1 before the stop; brought up "
                "to date") in moved.stdout, moved.stdout[-6000:]
    assert "saved first as safety snapshot" not in moved.stdout, moved.stdout[-6000:]
    assert not h2.exec("ls /var/lib/abri/seed", check=False).stdout.strip()
    # the data was set up through Home Assistant's API on h1 (the snapshot says so): h2
    # starts it on the network at once, with no loopback-only first start and restart
    assert "leave the loopback-only start" not in moved.stdout, moved.stdout[-6000:]
    assert "verify: " in moved.stdout and " 0 failed" in moved.stdout, moved.stdout[-4000:]
    assert not (site / ".abri" / "migration.json").exists()

    # ---- on h2: the same state, the same credentials
    assert _secrets(site, "h2")["mosquitto"]["admin_password"] == admin
    base2 = f"http://{h2.address}:8123"
    status, config = _http(base2, "GET", f"/api/config/automation/config/{AUTOMATION_ID}",
                           token)
    assert status == 200 and config["alias"] == "Migration", (status, config)
    assert _retained(h2, admin, topic) == message
    assert _owner_logs_in(base2, "owner", owner_pw)
    db = _wait_recorded(h2)
    assert db["integrity"] == "ok" and "42.5" in db["states"], db

    # ---- on h1: stopped, containers and data kept
    states = _states(h1)
    assert all(states.get(c) == "exited" for c in CONTAINERS), states
    assert h1.exec("test -s /opt/abri/homeassistant/config/home-assistant_v2.db && "
                   "test -s /opt/abri/mosquitto/data/mosquitto.db", check=False
                   ).returncode == 0
    assert all(_states(h2).get(c) == "running" for c in CONTAINERS), _states(h2)

    # ---- a second apply: nothing to change, h1's stacks stay stopped
    second, _ = _run(site, "apply")
    outputs.append(second)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    for name in ("h1", "h2"):
        recap = _recap(second.stdout, name)
        assert recap["changed"] == 0, (name, recap, second.stdout.split("Recap:")[0][-3000:])
    assert all(_states(h1).get(c) == "exited" for c in CONTAINERS), _states(h1)

    # ---- back to h1, killed once while h2's stacks stop and their last copy is made
    automation2 = dict(automation, alias="Made on h2")
    status, answer = _http(base2, "POST", f"/api/config/automation/config/{AUTOMATION_ID}_2",
                           token, automation2)
    assert status == 200 and answer == {"result": "ok"}, (status, answer)
    killed = _killed_at(site, "migration.json", "final", "migrate", "h2", "h1", delay=3.0)
    outputs.append(killed)
    record = json.loads((site / ".abri" / "migration.json").read_text())
    assert (record["source"], record["target"], record["phase"]) == ("h2", "h1", "final")
    # h2's data is intact whatever the kill stopped: its database opens and checks clean
    assert _wait_recorded(h2, timeout=1)["integrity"] == "ok"
    back, seconds = _run(site, "migrate", "h2", "h1")
    outputs.append(back)
    assert back.returncode == 0, back.stdout[-10000:] + back.stderr[-3000:]
    assert "completing the migration of" in back.stdout, back.stdout[-3000:]
    print(f"[test_migrate] abri migrate h2 h1 (completing a killed one): {seconds:.1f}s")
    assert not (site / ".abri" / "migration.json").exists()
    for made_id, alias in ((AUTOMATION_ID, "Migration"), (f"{AUTOMATION_ID}_2", "Made on h2")):
        status, config = _http(base1, "GET", f"/api/config/automation/config/{made_id}", token)
        assert status == 200 and config["alias"] == alias, (made_id, status, config)
    assert _retained(h1, admin, topic) == message
    assert _owner_logs_in(base1, "owner", owner_pw)
    assert all(_states(h1).get(c) == "running" for c in CONTAINERS), _states(h1)
    assert all(_states(h2).get(c) == "exited" for c in CONTAINERS), _states(h2)
    third, _ = _run(site, "apply")
    outputs.append(third)
    assert third.returncode == 0, third.stdout[-8000:] + third.stderr[-3000:]
    for name in ("h1", "h2"):
        recap = _recap(third.stdout, name)
        assert recap["changed"] == 0, (name, recap, third.stdout.split("Recap:")[0][-3000:])

    # ---- no secret in any output
    values = [v for host in ("h1", "h2") for stack in _secrets(site, host).values()
              for v in stack.values()]
    text = "".join(r.stdout + r.stderr for r in outputs)
    leaked = [v[:6] for v in values if len(v) >= 8 and v in text]
    assert not leaked, leaked
    print(f"[test_migrate] whole test: {time.monotonic() - began:.0f}s")
