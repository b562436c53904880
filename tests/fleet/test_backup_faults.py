"""A killed backup, on one Debian 13 fleet host shared by every step (issue 10, faults):

Mosquitto + Home Assistant deployed from a host prepared by abri's own engine step, a
repository folder on the host (site setting), some user data: 256 MB of generated files in
Home Assistant's config folder (so that restic writes for seconds), a retained MQTT
message. `abri backup` runs in a session of its own and is killed with SIGKILL of its whole
process group at points the test finds on the host, never after a fixed sleep:

  a. while Home Assistant is stopped for its copy (restic reading its folder): only the
     controller is killed. The module on the host runs on to its end (as every abri module
     does, see module_utils/abri_lock.py): it finishes the copy, starts Home Assistant again
     and releases the host's abri lock;
  b. while restic writes Home Assistant's snapshot (a pack file landed in the repository):
     the controller is killed and so are the module and restic on the host (what an OOM
     kill or a crash of the module does). Home Assistant is left stopped, with abri's note
     of it on the host, and restic's lock of the dead run stays in the repository.

After each: `restic check` on the host passes (after a, as it is; after b, once restic's own
plain `unlock` removed the dead run's lock, if the check refuses to run because of it). The
next `abri backup` works, starts the Home Assistant that point b left stopped, and leaves a
repository that `restic check` passes without any unlock. Then the host's data is destroyed
and `abri restore h1` puts back the latest backup whole: the generated files and the files no
service rewrites byte-identical, the owner logs in, the retained message is back, verify
passes; a further apply changes nothing.

Timings and what each kill left are printed (run with -s); nothing asserts on wall-clock time.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets as _random
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_backup import (
    HA_CONFIG,
    MANIFEST,
    MQ_DATA,
    _owner_logs_in,
    _retained,
    _run,
)
from test_deploy import _CONFIG_HOME, NESTED_ENGINE_OPTIONS, _abri, _env, _recap, _secrets, _tool

pytestmark = pytest.mark.fleet

REPO = "/srv/abri-backup"
HA = "abri-homeassistant-homeassistant-1"
MQ = "abri-mosquitto-mosquitto-1"
NOTE = "/var/lib/abri/backup-stopped/abri-homeassistant.json"
GENERATED = f"{HA_CONFIG}/www/generated"
#: files no service rewrites on its own at start: they come back byte for byte
CORE = ("homeassistant/configuration.yaml", "homeassistant/automations.yaml",
        "homeassistant/.storage/auth_provider.homeassistant")

#: inside the host: once a `restic backup` of stack $1 runs, "restic PID PPID RUNNING" (its
#: parent is the module; RUNNING is whether container $4 runs at that moment). With $2=kill,
#: then wait until a pack file lands in the repository's data folder while restic runs, kill
#: the module and restic at once (SIGKILL, from inside the host: no latency to race) and print
#: "killed N" (N pack files landed). Builtins and find only; polls every 50 ms.
WATCH = r"""
stack=$1 mode=$2 repo=$3 container=$4
while :; do
  for d in /proc/[0-9]*; do
    read -r comm 2>/dev/null < "$d/comm" || continue
    [ "$comm" = restic ] || continue
    args=$(tr '\0' ' ' 2>/dev/null < "$d/cmdline")
    case "$args" in *" backup "*"stack=$stack "*) pid=${d#/proc/}; break 2;; esac
  done
  sleep 0.05
done
read -r _ _ _ ppid _ < "/proc/$pid/stat"
packs=$(find "$repo/data" -type f | wc -l)
echo "restic $pid $ppid $(docker inspect -f '{{.State.Running}}' "$container")"
[ "$mode" = kill ] || exit 0
while [ -d "/proc/$pid" ]; do
  now=$(find "$repo/data" -type f | wc -l)
  if [ "$now" -gt "$packs" ]; then
    kill -KILL "$ppid" "$pid"
    echo "killed $((now - packs))"
    exit 0
  fi
  sleep 0.05
done
echo "ended 0"
"""


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


class Backup:
    """`abri backup` in a session (and process group) of its own, its output in a file."""

    def __init__(self, site: Path, log: Path):
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed in kill)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([_tool("abri"), "backup", "--site", str(site)],
                                     env=_env(), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> float:
        at = time.monotonic() - self.started
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._out.close()
        return at


class Watch(threading.Thread):
    """WATCH inside the host; its lines on a queue."""

    def __init__(self, host, stack: str, mode: str):
        super().__init__(daemon=True, name=f"watch-{stack}")
        self.lines: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            ["docker", "exec", host.name, "bash", "-c", WATCH, "watch", stack, mode, REPO, HA],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            text=True)
        self.start()

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.split())
        self.lines.put(None)

    def next(self, run: Backup, timeout: float = 900) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert run.proc.poll() is None, \
                    "the backup ended before the kill point:\n" + run.log.read_text()[-4000:]
                assert time.monotonic() < deadline, "no kill point within the timeout"
                continue
            assert got is not None, "the watch on the host ended"
            return got

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _restic(host, password: str, args: str, check: bool = True,
            repo: str = REPO) -> subprocess.CompletedProcess:
    """restic on the host against the repository (REPO unless given); the password through
    stdin."""
    return host.exec(f'RESTIC_REPOSITORY={shlex.quote(repo)} RESTIC_PASSWORD="$(cat)" '
                     f'restic {args}', input=password, check=check, timeout=900)


def _check(host, password: str, notes: list[str], label: str, unlock_ok: bool) -> None:
    """restic check passes; with unlock_ok, after a plain unlock when a stale lock of the
    killed run keeps it from starting."""
    done = _restic(host, password, "check", check=False)
    if done.returncode != 0 and unlock_ok and "locked" in done.stderr:
        notes.append(f"{label}: restic check refused to start, the killed run's lock is in "
                     "the repository; plain restic unlock, then check")
        _restic(host, password, "unlock")
        done = _restic(host, password, "check", check=False)
    assert done.returncode == 0, (label, done.stdout[-3000:], done.stderr[-3000:])
    assert "no errors were found" in done.stdout, done.stdout[-3000:]
    notes.append(f"{label}: restic check passes")


def _wait_lock_free(host, timeout: float = 900) -> float:
    """Seconds until nothing holds the host's abri lock (flock -n takes and drops it)."""
    start = time.monotonic()
    while host.exec("flock -n /run/lock/abri.lock true", check=False).returncode != 0:
        assert time.monotonic() - start < timeout, "the host's abri lock stays held"
        time.sleep(0.5)
    return time.monotonic() - start


def _running(host) -> set[str]:
    return set(host.exec("docker ps --format '{{.Names}}'").stdout.split())


def _hashes(host) -> dict[str, str]:
    out = json.loads(host.exec(f"python3 - {HA_CONFIG} {MQ_DATA}", input=MANIFEST).stdout)
    return {rel: digest for rel, (digest, _mtime) in out.items()}


def _survivors(site: Path) -> list[int]:
    """Processes on this machine still running the site's playbook (of a killed run)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(site) in cmd and ".yml" in cmd:
                found.append(int(proc.name))
    return found


def test_killed_backups_leave_a_consistent_repository(fleet, fleet_registry, tmp_path):
    began = time.monotonic()
    host = fleet(1, image="prepared")[0]
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    for stack in ("mosquitto", "homeassistant"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true", f"backup_repository={REPO}")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    host.exec("mkdir -p /srv")
    notes: list[str] = []
    watches: list[Watch] = []
    runs: list[Backup] = []

    try:
        first, _ = _run(site, "apply")
        assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
        secrets = _secrets(site, "h1")
        admin = secrets["mosquitto"]["admin_password"]
        owner_pw = secrets["homeassistant"]["owner_password"]
        topic, message = "abri/faults/retained", f"kept-{_random.token_hex(4)}"
        host.exec(f"docker exec {MQ} mosquitto_pub -h 127.0.0.1 -u admin -P '{admin}' "
                  f"-t '{topic}' -m '{message}' -r -q 1")
        # user data that takes restic seconds to write: incompressible, so nothing dedups
        host.exec(f"mkdir -p {GENERATED} && for i in 1 2 3 4; do head -c 64M /dev/urandom "
                  f"> {GENERATED}/blob-$i.bin; done")

        # the first backup makes the repository (its password is in the vault from here)
        made, _ = _run(site, "backup")
        assert made.returncode == 0, made.stdout[-6000:] + made.stderr[-3000:]
        password = _secrets(site, "h1")["_backup"]["repository_password"]
        # new mtimes: restic reads and hashes the files again (seconds), adds nothing
        host.exec(f"echo changed-{_random.token_hex(4)} > {GENERATED}/small.txt && "
                  f"touch {GENERATED}/blob-*.bin")

        # ---- a: the controller killed while Home Assistant is stopped for its copy
        watch = Watch(host, "homeassistant", "reads")
        watches.append(watch)
        run = Backup(site, tmp_path / "backup-a.log")
        runs.append(run)
        _, restic_pid, _, ha_running = watch.next(run)
        killed_at = run.kill()
        reading = host.exec(f"test -d /proc/{restic_pid}", check=False).returncode == 0
        notes.append(f"a: killed {killed_at:.1f}s into the backup, as restic {restic_pid} read "
                     f"Home Assistant's folder (still reading after the kill: {reading})")
        assert ha_running == "false", "Home Assistant ran while restic copied its folder"
        waited = _wait_lock_free(host)
        notes.append(f"a: the module on the host ran on and released the abri lock "
                     f"{waited:.1f}s after the kill")
        assert {HA, MQ} <= _running(host), "the module on the host did not start the stacks"
        assert host.exec(f"test -e {NOTE}", check=False).returncode != 0
        _check(host, password, notes, "a", unlock_ok=False)

        # ---- b: the controller, the module and restic on the host killed as restic writes
        # 128 MB of new data: restic writes pack files for seconds
        host.exec(f"echo changed-{_random.token_hex(4)} > {GENERATED}/small.txt && "
                  f"head -c 128M /dev/urandom > {GENERATED}/blob-5.bin")
        watch = Watch(host, "homeassistant", "kill")
        watches.append(watch)
        run = Backup(site, tmp_path / "backup-b.log")
        runs.append(run)
        _, restic_pid, module_pid, ha_running = watch.next(run)
        module = host.exec(f"tr '\\0' ' ' < /proc/{module_pid}/cmdline", check=False).stdout
        what, packs = watch.next(run)
        killed_at = run.kill()
        assert what == "killed", "restic ended before a pack file landed"
        notes.append(f"b: killed {killed_at:.1f}s into the backup, after {packs} pack file(s) "
                     f"of Home Assistant's snapshot landed; on the host the module "
                     f"({module_pid}: {module.strip()[:50]}) and restic {restic_pid} too")
        assert ha_running == "false"
        assert HA not in _running(host), "Home Assistant runs although its backup was killed"
        assert host.exec(f"test -s {NOTE}", check=False).returncode == 0, "no note left"
        assert _wait_lock_free(host, timeout=60) < 60
        _check(host, password, notes, "b", unlock_ok=True)

        # ---- the next backup works and starts the Home Assistant that b left stopped
        host.exec(f"echo changed-{_random.token_hex(4)} > {GENERATED}/small.txt")
        again, _ = _run(site, "backup")
        assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
        assert "homeassistant: left stopped by an interrupted backup; started again after " \
            "this copy" in again.stdout, again.stdout[-4000:]
        assert {HA, MQ} <= _running(host)
        assert host.exec(f"test -e {NOTE}", check=False).returncode != 0
        _check(host, password, notes, "after the next backup", unlock_ok=False)
        locks = _restic(host, password, "list locks --no-lock").stdout.split()
        assert not locks, locks

        # ---- the latest backup restores whole
        host.exec(f"docker stop -t 60 {HA} {MQ}", timeout=180)
        before = _hashes(host)
        assert "homeassistant/www/generated/blob-5.bin" in before
        for stack in ("homeassistant", "mosquitto"):
            host.exec(f"docker compose -p abri-{stack} -f /opt/abri/{stack}/compose.yml down",
                      timeout=180)
        host.exec(f"rm -rf {HA_CONFIG} {MQ_DATA}")
        restored, _ = _run(site, "restore", "h1")
        assert restored.returncode == 0, restored.stdout[-8000:] + restored.stderr[-3000:]
        assert "verify: " in restored.stdout and " 0 failed" in restored.stdout, \
            restored.stdout[-4000:]
        after = _hashes(host)
        generated = [rel for rel in before if "/www/generated/" in rel]
        assert len(generated) == 6, generated
        for rel in [*generated, *CORE]:
            assert after.get(rel) == before[rel], rel
        base = f"http://{host.address}:8123"
        assert _owner_logs_in(base, "owner", owner_pw)
        assert _retained(host, admin, topic) == message

        second, _ = _run(site, "apply")
        assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
        recap = _recap(second.stdout, "h1")
        assert recap["changed"] == 0, (recap, second.stdout.split("Recap:")[0][-3000:])
    finally:
        for watch in watches:
            watch.stop()
        for run in runs:
            if run.proc.poll() is None:
                run.kill()
        for pid in _survivors(site):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print("\n[test_backup_faults] " + "\n[test_backup_faults] ".join(notes))
        print(f"[test_backup_faults] whole test {time.monotonic() - began:.0f}s")
