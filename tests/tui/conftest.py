"""TUI test helpers: recorded ansible runs, fake checks and pings, and a factory for the app.

Only Ansible is replaced (by events recorded from real ansible-runner runs, see
fixtures/record.py); the site, catalog, validation and writes are the real engine.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tui.app.app import AbriApp, make_app
from tui.core import events
from tui.core.runner import RunResult
from tui.core.site import Site

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests (Pilot needs a loop) without an async pytest plugin."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        asyncio.run(pyfuncitem.obj(**{n: pyfuncitem.funcargs[n] for n in names}))
        return True
    return None


def load_events(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class RecordedRunner:
    """Plays a recorded ansible-runner run through the engine's reducer, as run_site does.

    `pause_after` stops after that many events until `release` is set or the run is canceled,
    so tests can look at a run in the middle and cancel it."""

    by_mode: dict[str, str] = field(default_factory=lambda: {"apply": "apply-ok.json",
                                                             "plan": "plan.json"})
    pause_after: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, Path, list[str]]] = field(default_factory=list)
    #: the sudo password each call was given (None: none)
    become_passwords: list[str | None] = field(default_factory=list)
    #: fixtures for the calls after the first of a mode (by mode, in order)
    then: dict[str, list[str]] = field(default_factory=dict)
    #: (mode, limit, extra_vars) of each call
    runs: list[tuple[str, str | None, dict[str, Any] | None]] = field(default_factory=list)

    def __call__(self, site: Site, mode: str = "apply", limit: str | None = None,
                 on_progress=None, cancel: threading.Event | None = None,
                 become_password: str | None = None,
                 extra_vars: dict[str, Any] | None = None,
                 on_transfer=None) -> RunResult:
        # the backup playbook's other actions are fixtures of their own ("backup:snapshots")
        action = (extra_vars or {}).get("abri_backup_action")
        mode = f"{mode}:{action}" if action else mode
        earlier = sum(1 for call in self.calls if call[0] == mode)
        self.calls.append((mode, site.path, list(site.hosts)))
        self.become_passwords.append(become_password)
        self.runs.append((mode, limit, extra_vars))
        later = self.then.get(mode, [])
        name = later[earlier - 1] if 0 < earlier <= len(later) else self.by_mode[mode]
        recorded = load_events(name)
        state = events.Progress()
        seen: list[dict[str, Any]] = []
        for i, event in enumerate(recorded["events"]):
            if self.pause_after is not None and i == self.pause_after:
                self.paused.set()
                while not self.release.is_set() and not (cancel and cancel.is_set()):
                    self.release.wait(0.01)
            if cancel is not None and cancel.is_set():
                return RunResult(mode, "canceled", 1, state, Path("."), seen)
            seen.append(event)
            new = events.reduce(state, event)
            if new is not state and on_progress:
                on_progress(new)
            state = new
        return RunResult(mode, recorded["status"], recorded["rc"], state, Path("."), seen)


@dataclass(frozen=True)
class Check:  # the shape of tui.core.verify.Check
    name: str
    ok: bool
    detail: str = ""


def fake_verifier(site: Site, host) -> list[Check]:
    checks = [Check(f"{stack} container is running", True, "up") for stack in host.stacks]
    if "mosquitto" in host.stacks:
        checks.append(Check("mqtt anonymous login refused", True, "connection refused: "
                            "not authorised"))
    if "homeassistant" in host.stacks:
        checks.append(Check("homeassistant API answers", False, "HTTP 502 from "
                            "http://127.0.0.1:8123/api/"))
    return checks


def fake_pinger(site: Site, name: str) -> tuple[bool, str]:
    host = site.hosts[name]
    if host.kind == "local":
        return True, "reachable: Ansible ping answered pong"
    return False, f"unreachable: Failed to connect to the host via ssh: ssh: connect to host " \
                  f"{host.address} port {host.port or 22}: Connection refused"


@pytest.fixture
def runner() -> RecordedRunner:
    return RecordedRunner()


@pytest.fixture
def new_app(runner):
    def factory(site_dir: Path) -> AbriApp:
        return make_app(site_dir, runner=runner, verifier=fake_verifier, pinger=fake_pinger,
                        blink=False)
    return factory


async def opened(pilot) -> None:
    """Wait until the first screen shows the site: abri reads it in a worker after the
    first frame (see AbriApp.open_site)."""
    for _ in range(1000):
        if pilot.app.opened:
            break
        await pilot.pause(0.01)
    else:
        raise AssertionError("the site never finished loading")
    await pilot.pause()
    await pilot.pause()  # the tables' second layout pass (their widths once settled)


async def until(pilot, condition, timeout: float = 10) -> None:
    """Wait (bounded) until condition() holds: a screen pushed by a key may take a few
    message rounds to mount on a busy machine."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"still not true after {timeout} s: {condition}")


async def pick(pilot, stack: str, open_picker: bool = True) -> None:
    """Choose a stack by name in the stack picker (opened with s unless it is open)."""
    from textual.widgets import OptionList

    if open_picker:
        await pilot.press("s")
        await until(pilot, lambda: pilot.app.screen.query("#catalog"))
    catalog = pilot.app.screen.query_one("#catalog", OptionList)
    catalog.highlighted = catalog.get_option_index(stack)
    await pilot.press("enter")
    await pilot.pause()


def make_site(path: Path, stacks: tuple[str, ...] = ("mosquitto", "homeassistant"),
              host: str = "home") -> Site:
    site = Site.init(path)
    site.add_host(host, "local")
    for stack in stacks:
        site.add_stack(host, stack)
    site.save()
    return site
