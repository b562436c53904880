"""The outside world the TUI talks to, as plain callables that make_app can replace.

The defaults are the real engine: `run_site` for plan/apply, `tui.core.verify` for checks and
an Ansible ping for 'test connection'. UI tests pass recorded runs instead; nothing here
holds logic of its own beyond calling the engine.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tui.core.events import Progress
    from tui.core.site import Host, Site


class Runner(Protocol):
    def __call__(self, site: Site, mode: str = "apply", limit: str | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None,
                 become_password: str | None = None,
                 extra_vars: dict[str, Any] | None = None,
                 on_transfer: Callable[[Any], None] | None = None) -> Any: ...


Verifier = Callable[["Site", "Host"], list[Any]]
Pinger = Callable[["Site", str], tuple[bool, str]]


def run_site(site: Site, mode: str = "apply", limit: str | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             cancel: threading.Event | None = None, become_password: str | None = None,
             extra_vars: dict[str, Any] | None = None,
             on_transfer: Callable[[Any], None] | None = None) -> Any:
    from tui.core import runner

    return runner.run_site(site, mode, limit=limit, on_progress=on_progress, cancel=cancel,
                           become_password=become_password, extra_vars=extra_vars,
                           on_transfer=on_transfer)


def verify_host(site: Site, host: Host) -> list[Any]:
    """The manifest-driven checks of one host, through its own connection (tui.core.checks)."""
    from tui.core import checks

    reports = checks.verify_site(site, [host.name])
    return list(reports[0][1]) if reports else []


def ping(site: Site, host_name: str, timeout: int = 60) -> tuple[bool, str]:
    """An Ansible ping of one host, with the inventory and ansible.cfg the site would write
    (rendered by the engine into a scratch folder, so an unsaved host can be tested)."""
    import tempfile

    import ansible_runner

    from tui.core import inventory, render
    from tui.core.events import failure_message

    with tempfile.TemporaryDirectory(prefix="abri-ping-") as tmp:
        work = Path(tmp)
        inv = work / "inventory.ini"
        inv.write_text(inventory.merge(None, [h.entry() for h in site.hosts.values()]))
        cfg = work / "ansible.cfg"
        cfg.write_text(render.ansible_cfg(site))
        render.link_kit(work)
        bindir = Path(sys.executable).parent
        outcome: dict[str, tuple[bool, str]] = {}

        def handler(event: dict[str, Any]) -> bool:
            data = event.get("event_data") or {}
            kind = event.get("event", "")
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                outcome["r"] = (True, f"reachable: Ansible ping answered {res.get('ping', 'pong')}")
            elif kind in ("runner_on_failed", "runner_on_unreachable"):
                what = "unreachable" if kind == "runner_on_unreachable" else "failed"
                outcome["r"] = (False, f"{what}: {failure_message(res)}")
            return True

        result = ansible_runner.run(
            private_data_dir=str(work), inventory=str(inv), host_pattern=host_name,
            module="ansible.builtin.ping", quiet=True, timeout=timeout,
            event_handler=handler,
            envvars={"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_NOCOLOR": "1",
                     "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"},
        )
        if "r" in outcome:
            return outcome["r"]
        if result.status == "timeout":
            return False, f"no answer within {timeout} seconds"
        return False, f"the ping did not run (ansible status {result.status}, rc {result.rc})"
