"""A first apply killed with SIGKILL of its whole process group, then re-run (issues 18 and 8).

One bare Debian 13 host (image "plain": no Docker), Mosquitto and Home Assistant, the site
written with the abri CLI as test_deploy writes it. `abri apply` runs in a session of its
own, and the test kills that whole process group with SIGKILL at points it finds from the
run's own events on the host, never after a fixed sleep:

  a. while the engine step installs packages (a dpkg unpacking or configuring on the host);
  b. on the re-run, as the host's engine reports the create of Mosquitto's container;
  c. on the next re-run, as it reports the create of Home Assistant's container.

Then one more re-run, which must converge (failed=0) with its verify passing; `abri verify`
passes on its own; the owner logs in with the password in the vault; a further apply changes
nothing; and the broker's data survived: a retained message published before kill c is still
served afterwards, also after a restart of the broker (so it is on disk).

The kill points, their timings, and what of each killed run was still alive afterwards (on
this machine and on the host) are printed (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets as _random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.fleet.test_deploy import (
    NESTED_ENGINE_OPTIONS,
    _abri,
    _env,
    _own_config_home,
    _recap,
    _tool,
)
from tui.core import verify

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # test_deploy's autouse fixture, shared

HOST = "h1"
RETAINED_TOPIC = "abri/fault-test/retained"

#: inside the host: the pid and command line of the first dpkg that unpacks or configures
#: packages (apt-get runs `dpkg --status-fd N --unpack ...`, `dpkg --configure ...`); dpkg's
#: quick queries (--print-foreign-architectures) do not count. Builtins only in the loop.
DPKG_WATCH = r"""
while :; do
  for d in /proc/[0-9]*; do
    read -r comm 2>/dev/null < "$d/comm" || continue
    [ "$comm" = dpkg ] || continue
    args=$(tr '\0' ' ' 2>/dev/null < "$d/cmdline")
    case "$args" in *--unpack*|*--configure*|*--install*) echo "${d#/proc/} $args"; exit 0;; esac
  done
  sleep 0.1
done
"""

#: inside the host: whatever of an install is running (after a kill)
INSTALL_PROCS = r"""
for d in /proc/[0-9]*; do
  read -r comm 2>/dev/null < "$d/comm" || continue
  case "$comm" in dpkg|apt-get|apt|http) echo "${d#/proc/} $comm";; esac
done
"""


def _secrets(site: Path, host: str) -> dict:
    """The host's vault, opened with the site's vault password file in abri's config home."""
    env = _env()
    site_id = yaml.safe_load((site / "group_vars" / "all" / "abri.yml").read_text())[
        "abri_site_id"]
    password = Path(env["ABRI_CONFIG_HOME"]) / "vault" / f"{site_id}.pass"
    run = subprocess.run([_tool("ansible-vault"), "view", "--vault-password-file",
                          str(password), f"host_vars/{host}/vault.yml"],
                         cwd=site, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)["abri_secrets"]


def _create_watch(project: str, since: int) -> str:
    """docker events inside the host: the name of each container of project created, from
    since on (once the engine answers: it may not be installed yet, or restart meanwhile)."""
    return ("until docker info >/dev/null 2>&1; do sleep 0.3; done;"
            " exec timeout 1800 docker events --since " + str(since)
            + " --filter type=container --filter event=create"
            + f" --filter label=com.docker.compose.project={project}"
            + " --format '{{.Actor.Attributes.name}}'")


class HostStream(threading.Thread):
    """The output lines of a bash script inside the host (docker exec), read as they arrive
    and put on a queue with their arrival time and a label. The script is started again when
    it ends, unless once=True (docker events ends when the engine restarts). Its shell prints
    its pid first, so that stop() ends it by id."""

    def __init__(self, host, label: str, command: str, events: queue.Queue, once=False):
        super().__init__(daemon=True, name=f"stream-{label}")
        self.host, self.label, self.command, self.events = host, label, command, events
        self.once = once
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.inner = ""

    def run(self) -> None:
        while not self.stopping.is_set():
            self.proc = subprocess.Popen(
                ["docker", "exec", self.host.name, "bash", "-c", f"echo $$\n{self.command}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                text=True)
            first = self.proc.stdout.readline().strip()
            self.inner = first if first.isdigit() else ""
            for line in self.proc.stdout:
                self.events.put((time.monotonic(), self.label, line.strip()))
            self.proc.wait()
            if self.once:
                return
            self.stopping.wait(0.3)

    def stop(self) -> None:
        self.stopping.set()
        if self.inner:
            self.host.exec(f"kill {self.inner} 2>/dev/null", check=False, timeout=30)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.join(15)


class Apply:
    """`abri apply` in a session (and process group) of its own, its output in a file."""

    def __init__(self, site: Path, log: Path):
        self.site, self.log = site, log
        self.since = int(time.time()) - 1  # for docker events on the host (same clock)
        self._out = open(log, "w")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([_tool("abri"), "apply", "--site", str(site)], env=_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ended: float | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> float:
        """SIGKILL to the whole process group; returns the seconds since the start."""
        at = time.monotonic() - self.started
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.finish()
        return at

    def finish(self, timeout: float | None = None) -> str:
        self.proc.wait(timeout=timeout)
        if self.ended is None:
            self.ended = time.monotonic() - self.started
            self._out.close()
        return self.output

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Point:
    """A kill point: what was waited for, when it was seen and killed, what lived on."""

    name: str
    what: str
    run: int = 0
    seen_at: float | None = None
    killed_at: float | None = None
    event: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)


def _wait(run: Apply, events: queue.Queue, labels: set[str], timeout: float = 1500):
    """The first event with one of labels; None when the run ended first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            at, label, line = events.get(timeout=0.2)
        except queue.Empty:
            if not run.running():
                return None
            assert time.monotonic() < deadline, f"no {labels} within {timeout}s"
            continue
        if label in labels:
            return at, label, line


def _survivors(site: Path) -> list[str]:
    """Processes on this machine still running for the site's playbook (ansible-playbook
    and its workers), "pid command"."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(site) in cmd and "site.yml" in cmd:
                found.append(f"{proc.name} {cmd.split()[1].rsplit('/', 1)[-1]}")
    return found


def _after_kill(point: Point, site: Path, host) -> None:
    time.sleep(1)  # let the kill settle before looking (a report, not a synchronisation)
    alive = _survivors(site)
    point.notes.append(f"controller processes of the killed run alive 1s later: "
                       f"{len(alive)} ({', '.join(alive) or 'none'})")
    if point.name == "a":
        procs = host.exec(INSTALL_PROCS, check=False).stdout.split("\n")
        procs = [p for p in procs if p.strip()]
        point.notes.append("install processes on the host 1s later: "
                           + (", ".join(procs) or "none"))


class Publisher(threading.Thread):
    """Publishes one retained message as the broker's admin as soon as the broker takes it."""

    def __init__(self, address: str, port: int, password: str, payload: str):
        super().__init__(daemon=True, name="retained-publisher")
        self.address, self.port, self.password, self.payload = address, port, password, payload
        self.stopping = threading.Event()
        self.published_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            client = verify._Mqtt(self.address, self.port, verify.ADMIN_USER, self.password,
                                  5.0)
            try:
                ok, _ = client.connect()
                if ok and client.publish(RETAINED_TOPIC, self.payload, retain=True):
                    self.published_at = time.monotonic()
                    self.done.set()
                    return
            finally:
                with contextlib.suppress(Exception):
                    client.close()
            self.stopping.wait(0.3)


def _retained(address: str, port: int, password: str) -> bytes | None:
    """The retained message the broker serves on RETAINED_TOPIC (None when none comes)."""
    client = verify._Mqtt(address, port, verify.ADMIN_USER, password, 10.0)
    try:
        ok, reason = client.connect()
        assert ok, f"the admin cannot connect to the broker: {reason}"
        assert client.subscribe(RETAINED_TOPIC)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = [p for t, p in client.messages if t == RETAINED_TOPIC]
            if got:
                return got[-1]
            time.sleep(0.2)
        return None
    finally:
        client.close()


def _report(points: list[Point], runs: list[tuple[str, float, int]]) -> None:
    print("\n[test_interrupted] kill points:")
    for p in points:
        if p.skipped:
            print(f"  {p.name}. {p.what}: SKIPPED ({p.skipped})")
            continue
        if p.killed_at is None:
            print(f"  {p.name}. {p.what}: not reached")
            continue
        print(f"  {p.name}. {p.what}: run {p.run}, seen {p.seen_at:.1f}s after its start "
              f"({p.event}), process group killed at {p.killed_at:.1f}s")
        for note in p.notes:
            print(f"       {note}")
    print("[test_interrupted] runs:")
    for label, seconds, rc in runs:
        print(f"  {label}: {seconds:.1f}s, rc={rc}")


def test_first_apply_killed_at_three_points_then_converges(fleet, fleet_registry, tmp_path):
    fl = fleet(1, image="plain")
    host = fl.hosts[0]
    assert host.exec("command -v docker", check=False).returncode != 0, "not a bare host"

    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--port", "22", "--user", host.ssh_user, "--key", str(host.key_path), HOST)
    _abri("stack", "add", "--site", str(site), HOST, "mosquitto")
    _abri("stack", "add", "--site", str(site), HOST, "homeassistant")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    vault = _secrets(site, HOST)
    admin_password = vault["mosquitto"]["admin_password"]
    owner_password = vault["homeassistant"]["owner_password"]
    payload = f"kept-{_random.token_hex(6)}"

    points = [Point("a", "engine step installing packages (dpkg on the host)"),
              Point("b", "Mosquitto's container being created"),
              Point("c", "Home Assistant's container being created")]
    runs: list[tuple[str, float, int]] = []
    started: list[Apply] = []
    streams: list[HostStream] = []

    def start(label: str) -> tuple[Apply, queue.Queue]:
        run = Apply(site, tmp_path / f"run{len(started) + 1}-{label}.log")
        started.append(run)
        return run, queue.Queue()

    def watch(run: Apply, events: queue.Queue, label: str, command: str, once=False) -> None:
        stream = HostStream(host, label, command, events, once=once)
        streams.append(stream)
        stream.start()

    def stop_streams() -> None:
        while streams:
            streams.pop().stop()

    def kill(run: Apply, point: Point, hit) -> None:
        point.seen_at = hit[0] - run.started
        point.event = hit[2][:100]
        point.run = len(started)
        point.killed_at = run.kill()
        stop_streams()
        runs.append((f"run {point.run}, killed at {point.name}", run.ended, run.proc.returncode))
        _after_kill(point, site, host)

    publisher: Publisher | None = None
    try:
        # a: the first apply, killed while dpkg installs the engine's packages. Should the
        # install slip by unseen, the point is skipped and this run is killed at b instead.
        run, events = start("a")
        watch(run, events, "dpkg", DPKG_WATCH, once=True)
        watch(run, events, "mosquitto", _create_watch("abri-mosquitto", run.since))
        hit = _wait(run, events, {"dpkg", "mosquitto"})
        assert hit is not None, "the first apply ended before any kill point:\n" + run.output
        if hit[1] == "dpkg":
            kill(run, points[0], hit)
            run, events = start("b")
            watch(run, events, "mosquitto", _create_watch("abri-mosquitto", run.since))
            hit = _wait(run, events, {"mosquitto"})
        else:
            points[0].skipped = ("the engine's install ended before a dpkg unpacking or "
                                 "configuring was seen on the host")
        assert hit is not None, "the run ended before Mosquitto was created:\n" + run.output
        kill(run, points[1], hit)

        # c: killed as Home Assistant's container is created; the broker holds a retained
        # message of the user's by then (the broker is converged before Home Assistant)
        run, events = start("c")
        publisher = Publisher(host.address, 1883, admin_password, payload)
        publisher.start()
        watch(run, events, "homeassistant", _create_watch("abri-homeassistant", run.since))
        hit = _wait(run, events, {"homeassistant"})
        assert hit is not None, "the run ended before Home Assistant was created:\n" + run.output
        waited = time.monotonic()
        assert publisher.done.wait(30), "the broker took no message before kill c"
        if publisher.published_at > hit[0]:
            points[2].notes.append(f"the retained message went out {time.monotonic() - waited:.1f}s"
                                   " after the create event, before the kill")
        kill(run, points[2], hit)
        points[2].notes.append(f"retained message published "
                               f"{publisher.published_at - run.started:.1f}s into run "
                               f"{len(started)}")

        # the re-run after the last kill converges and verifies
        run, _ = start("final")
        out = run.finish(timeout=1800)
        runs.append((f"run {len(started)}, the re-run after the kills", run.ended,
                     run.proc.returncode))
        assert run.proc.returncode == 0, out[-8000:]
        assert _recap(out, HOST)["failed"] == 0, out[-6000:]
        assert "FAIL" not in out.split("Recap:")[-1], out[-6000:]

        check = subprocess.run([_tool("abri"), "verify", "--json", "--site", str(site)],
                               env=_env(), capture_output=True, text=True, timeout=600)
        assert check.returncode == 0, check.stdout + check.stderr
        checks = json.loads(check.stdout)[0]["checks"]
        assert checks and all(c["ok"] for c in checks), check.stdout
        assert _secrets(site, HOST)["homeassistant"]["owner_password"] == owner_password

        # the owner logs in with the password in the vault (Home Assistant's login flow)
        ha = verify._Http(f"http://{host.address}:8123", 15.0)
        refresh = ha.login("owner", owner_password)
        status, api = ha.request("GET", "/api/")
        assert status == 200 and api.get("message") == "API running.", api
        ha.revoke(refresh)
        assert host.exec("test -s /opt/abri/homeassistant/config/.storage/auth",
                         check=False).returncode == 0

        # a further apply changes nothing
        run, _ = start("noop")
        out = run.finish(timeout=1800)
        runs.append((f"run {len(started)}, no-op", run.ended, run.proc.returncode))
        assert run.proc.returncode == 0, out[-8000:]
        recap = _recap(out, HOST)
        changed = [line for line in out.splitlines() if line.startswith("changed:")]
        assert recap["changed"] == 0 and recap["failed"] == 0, (recap, changed, out[-6000:])

        # the user's data: the retained message published before kill c is still served,
        # and still after the broker restarted (it is in the broker's data on disk)
        assert _retained(host.address, 1883, admin_password) == payload.encode()
        host.exec("docker restart abri-mosquitto-mosquitto-1", timeout=120)
        deadline = time.monotonic() + 60
        while True:
            try:
                kept = _retained(host.address, 1883, admin_password)
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the broker did not come back"
                time.sleep(1)
        assert kept == payload.encode(), kept
        running = set(host.exec("docker ps --format '{{.Names}}'").stdout.split())
        assert {"abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1"} <= running
        stale = host.exec("docker ps -a --filter status=created --filter status=dead "
                          "--format '{{.Names}}'").stdout.split()
        assert not stale, f"half-made containers left: {stale}"
    finally:
        _report(points, runs)
        if publisher is not None:
            publisher.stopping.set()
        stop_streams()
        for run in started:
            if run.running():
                os.killpg(run.proc.pid, signal.SIGKILL)
                run.finish()
        # what a killed run left running on this machine ends with the test
        for line in _survivors(site):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
