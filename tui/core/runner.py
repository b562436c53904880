"""Runs the site's playbooks through ansible-runner and feeds its events to the reducer.

One function, `run_site`, serves the CLI (progress lines on the terminal) and the TUI (a
worker that posts each new Progress to the UI). Artifacts go to abri's config folder, outside
the site, and the last few runs are kept for inspection; tasks touching secrets are no_log,
so no secret reaches them.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.core import events, paths

if TYPE_CHECKING:
    from tui.core.site import Site

KEEP_RUNS = 10


@dataclass
class RunResult:
    mode: str
    status: str  # successful, failed, canceled, timeout
    rc: int
    progress: events.Progress
    artifact_dir: Path
    events: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0 and self.progress.ok


def runs_dir(site: Site) -> Path:
    return paths.config_home() / "runs" / site.site_id


def _total_hint(site: Site, mode: str) -> int:
    try:
        return int(json.loads((runs_dir(site) / f"last-{mode}.json").read_text())["tasks"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _prune(directory: Path) -> None:
    runs = sorted((p for p in directory.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEEP_RUNS]:
        shutil.rmtree(old, ignore_errors=True)


def _stage(site: Site, private: Path) -> Path:
    """A plan must not write the site: it runs on a staged copy (the site's files plus the
    state resolved now) in the run's private folder. The host keys stay the site's."""
    staged = private / "site"
    shutil.copytree(site.path, staged, ignore=shutil.ignore_patterns(".abri", ".git"),
                    symlinks=True)
    copy = site.copy()
    copy.path = staged
    copy.save()
    known = site.path.resolve() / ".abri" / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True)
    known.touch(exist_ok=True)
    (staged / ".abri" / "known_hosts").symlink_to(known)
    return staged


#: ansible-playbook runs in a session of its own (ansible-runner's pexpect, SIGHUP ignored),
#: and Ansible's workers in sessions of theirs: when abri ends (Ctrl+C, its terminal or SSH
#: session closed, killed), nothing reaches them, and the run's current task (a whole loop of
#: stacks) would go on in the background, racing the next apply. This stand-in for
#: ansible-playbook asks the kernel for a SIGTERM when abri ends (PR_SET_PDEATHSIG), on which
#: ansible-playbook stops its workers, then runs the real one.
_GUARD = """#!{python}
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != {parent}:
    sys.exit(143)  # abri ended before the guard was set
os.execv({real!r}, [{real!r}, *sys.argv[1:]])
"""


def _guarded_path(private: Path, path: str) -> str:
    """PATH with a guard for ansible-playbook first (Linux), in the run's private folder."""
    import os

    real = shutil.which("ansible-playbook", path=path)
    if real is None or not sys.platform.startswith("linux"):
        return path
    guard = private / "bin" / "ansible-playbook"
    guard.parent.mkdir(exist_ok=True)
    guard.write_text(_GUARD.format(python=sys.executable, parent=os.getpid(), real=real))
    guard.chmod(0o700)
    return f"{guard.parent}{os.pathsep}{path}"


#: the playbook of each mode that is not the site's own site.yml (kit playbooks, reached
#: through the site's .abri/kit link; they run with plain ansible-playbook too)
KIT_PLAYBOOKS = {"backup": "backup.yml", "restore": "restore.yml", "import": "import.yml"}


def run_site(site: Site, mode: str = "apply", limit: str | None = None,
             on_progress: Callable[[events.Progress], None] | None = None,
             cancel: threading.Event | None = None, extra_args: list[str] | None = None,
             extra_vars: dict[str, Any] | None = None,
             become_password: str | None = None,
             on_transfer: Callable[[Any], None] | None = None) -> RunResult:
    """Run site.yml in mode 'apply' or 'plan' (check mode with diff, on a staged copy), or
    the kit's backup.yml ('backup': back up, list, prune) or restore.yml ('restore': put the
    data back, then deploy). extra_vars go to Ansible as JSON (data, never a template).
    `become_password` is the SSH user's sudo password for this run (the TUI asks for it):
    it goes to Ansible in a file of this run, mode 0600, removed when the run ends, and is
    never stored; without it, ABRI_BECOME_PASSWORD_FILE names such a file. With
    on_transfer, a backup or restore run hands it the live progress of each host's
    transfers (tui.core.transfers.Transfer)."""
    import os
    import secrets as _random

    import ansible_runner

    from tui.core import audit, images
    from tui.core import secrets as vault

    if mode in ("plan", "apply"):
        # before any host is touched: strict refuses (AbriError, exit 2), eu warns
        hosts = site.match_hosts(limit) if limit else None
        held = audit.mirror_check(site, hosts)  # strict with a mirror: does it hold them?
        for line in audit.gate(site, hosts, mirror_missing=held):
            print(f"abri: warning: {line}", file=sys.stderr)
    bundle = None
    if mode in ("plan", "apply", "restore"):
        # this machine's image bundle (hosts with no registry access): checked before any
        # host is touched, handed to the deploy as data
        from tui.core.inventory import TARGET_KINDS

        chosen = site.match_hosts(limit) if limit else list(site.hosts)
        bundle = images.bundle_vars(site, [h for h in chosen
                                           if site.hosts[h].kind in TARGET_KINDS])
        if bundle is not None:
            extra_vars = {**(extra_vars or {}), "abri_image_bundle": bundle}

    if mode == "apply":
        # guests on Proxmox nodes: created, changed and started before Ansible reads the
        # inventory (their vmid and address are recorded in the site)
        chosen = site.match_hosts(limit) if limit else list(site.hosts)
        if any(site.hosts[n].kind == "guest" for n in chosen):
            from tui.core import proxmox

            proxmox.ensure_guests(site, chosen,
                                  say=lambda line: print(f"abri: {line}", file=sys.stderr))
    elif mode == "plan":
        # a guest abri has not created yet cannot be asked what would change: the plan
        # says so and covers the other hosts (nothing is created in a plan)
        chosen = site.match_hosts(limit) if limit else list(site.hosts)
        pending = [n for n in chosen if site.hosts[n].kind == "guest"
                   and not site.hosts[n].guest.get("vmid")]
        for name in pending:
            print(f"abri: guest {name}: not created yet on {site.hosts[name].parent}; apply "
                  "creates it, then deploys its stacks", file=sys.stderr)
        if pending:
            rest = [n for n in chosen if n not in pending]
            if not any(site.hosts[n].stacks for n in rest):
                return RunResult(mode, "successful", 0, events.Progress(finished=True),
                                 Path(), [])
            limit = ",".join(rest)

    base = runs_dir(site)
    base.mkdir(parents=True, exist_ok=True)
    ident = time.strftime("%Y%m%d-%H%M%S") + f"-{mode}-{_random.token_hex(3)}"
    private = base / ident
    private.mkdir()
    if mode == "plan":
        project = _stage(site, private)
    else:
        site.save()  # validates, resolves the state, refreshes the link to this machine's kit
        project = site.path.resolve()
    password_file = private / "vault-pass"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(vault.vault_password(site.site_id) + b"\n")
    cmdline = ["--vault-password-file", str(password_file)]
    become = os.environ.get("ABRI_BECOME_PASSWORD_FILE")
    become_file = private / "become-pass"
    if become_password is not None:
        fd = os.open(become_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(become_password + "\n")
        become = str(become_file)
    if become:  # a sudo that asks for a password: given for this run, never stored
        cmdline += ["--become-password-file", become]
    cmdline += ["--check", "--diff"] if mode == "plan" else []
    cmdline += extra_args or []
    deploy_cmdline = list(cmdline)  # a second converge runs the site's playbook, as it is
    if bundle is not None:
        deploy_cmdline += ["--extra-vars", json.dumps({"abri_image_bundle": bundle})]
    if extra_vars:
        cmdline += ["--extra-vars", json.dumps(extra_vars)]
    bindir = Path(sys.executable).parent
    state = events.Progress(total_hint=_total_hint(site, mode))
    recorded: list[dict[str, Any]] = []
    lock = threading.Lock()
    earlier: list[events.Progress] = []  # the apply's first run, during a second one
    second_tasks = 0

    def handler(event: dict[str, Any]) -> bool:
        nonlocal state
        with lock:
            recorded.append(event)
            new = events.reduce(state, event)
            changed = new is not state
            state = new
        if changed and on_progress:
            on_progress(merge(earlier[0], new) if earlier else new)
        return True

    env = {
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        "PATH": _guarded_path(private, f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    kwargs: dict[str, Any] = {
        "private_data_dir": str(private),
        "project_dir": str(project),
        "playbook": str(project / (f".abri/kit/playbooks/{KIT_PLAYBOOKS[mode]}"
                                   if mode in KIT_PLAYBOOKS else "site.yml")),
        "inventory": str(project / "inventory.ini"),
        "envvars": env,
        "cmdline": " ".join(shlex.quote(a) for a in cmdline),
        "event_handler": handler,
        "cancel_callback": (lambda: cancel.is_set()) if cancel else None,
        "quiet": True,
        "ident": "run",
    }
    if limit:
        kwargs["limit"] = limit
    watching = contextlib.nullcontext()
    if on_transfer is not None and mode in ("backup", "restore"):
        from tui.core import transfers
        from tui.core.inventory import TARGET_KINDS

        chosen = site.match_hosts(limit) if limit else list(site.hosts)
        watching = transfers.watch(site, [h for h in chosen
                                          if site.hosts[h].kind in TARGET_KINDS], on_transfer)
    try:
        with watching:
            result = ansible_runner.run(**{k: v for k, v in kwargs.items() if v is not None})
        status = result.status
        if mode in ("apply", "restore"):
            switch_to_admin(site, recorded)
        if mode in ("apply", "restore") and status == "successful" and state.ok:
            minted: set[str] = set()
            notes = after_apply(site, [h.name for h in state.hosts], minted,
                                changed={host for host, _task in state.changes})
            if minted:
                # a provider's API minted stacks there their access token (the state now
                # references it): those hosts converge once more, in the same apply
                earlier.append(state)
                state = events.Progress()
                kwargs.update(limit=",".join(sorted(minted)), ident="reconverge",
                              playbook=str(project / "site.yml"),
                              cmdline=" ".join(shlex.quote(a) for a in deploy_cmdline))
                result = ansible_runner.run(**{k: v for k, v in kwargs.items()
                                               if v is not None})
                status = result.status
                second_tasks = state.tasks_started
                state = merge(earlier.pop(), state)
            if notes:
                state = replace(state, check_failures=(*state.check_failures, *notes))
    finally:
        password_file.unlink(missing_ok=True)
        become_file.unlink(missing_ok=True)
    tasks = state.tasks_started - second_tasks  # what the next apply's first run expects
    if tasks and status == "successful":
        (base / f"last-{mode}.json").write_text(json.dumps({"tasks": tasks}))
    _prune(base)
    return RunResult(mode, status, result.rc if result.rc is not None else 1, state,
                     private / "artifacts" / "run", recorded)


def switch_to_admin(site: Site, recorded: list[dict[str, Any]]) -> list[str]:
    """Hosts whose sshd the hardening step tightened in this run (root login off) are
    reached as the admin user from now on: the inventory's user becomes it, saved at once,
    whether or not the rest of the run succeeded. Returns the hosts switched."""
    switched = []
    for event in recorded:
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if (event.get("event") == "runner_on_ok" and res.get("switched")
                and str(data.get("task_action", "")).endswith("abri_harden")):
            host = site.hosts.get(data.get("host", ""))
            user = res.get("admin_user")
            if host is not None and user and host.user != user:
                host.user = user
                switched.append(host.name)
    if switched:
        site.save()
        for name in switched:
            print(f"abri: {name}: sshd refuses root and passwords now; abri reaches it as "
                  f"{site.hosts[name].user} (inventory.ini)", file=sys.stderr)
    return switched


def merge(first: events.Progress, again: events.Progress) -> events.Progress:
    """One apply's progress from its run and a second run on some of its hosts: the counts
    of both added up per host, the changes and failures of both."""
    rows = {r.name: r for r in first.hosts}
    for r in again.hosts:
        old = rows.get(r.name)
        if old is None:
            rows[r.name] = r
            continue
        rows[r.name] = replace(r, ok=old.ok + r.ok, changed=old.changed + r.changed,
                               failed=old.failed + r.failed, skipped=old.skipped + r.skipped,
                               unreachable=old.unreachable + r.unreachable)
    recap = {h: dict(c) for h, c in first.recap.items()}
    for h, counts in again.recap.items():
        for k, n in counts.items():
            recap.setdefault(h, {}).setdefault(k, 0)
            recap[h][k] += n
    return replace(again, hosts=tuple(rows.values()), recap=recap,
                   percent=max(first.percent, again.percent),
                   tasks_started=first.tasks_started + again.tasks_started,
                   failures=(*first.failures, *again.failures),
                   check_failures=(*first.check_failures, *again.check_failures),
                   changes=(*first.changes, *again.changes),
                   finished=first.finished and again.finished)


def after_apply(site: Site, hosts: list[str], minted: set[str] | None = None,
                changed: set[str] | None = None) -> list[events.Failure]:
    """After a converged apply: secrets the kit has moved the services off (``*_previous``)
    are forgotten, and every host with Home Assistant gets a long-lived token in its vault
    for the checks, and every client of it that asks for one its own (minted once, replaced
    only when no longer accepted); hosts whose stacks got a new token are added to
    ``minted``. `changed` is the hosts the run changed (None: all of them): a provider host
    whose tokens are all there, with nothing changed on it or its clients, and checked within
    a day, is not contacted (a no-op apply from cron opens no tunnel and rewrites nothing;
    a token revoked by hand is renewed within a day). A check that cannot run is reported
    as such: the deploy itself converged."""
    from tui.core import checks

    failures = []
    dirty = False
    for name in hosts:
        for stack in site.secrets.get(name, {}).values():
            for key in [k for k in stack if k.endswith("_previous")]:
                del stack[key]
                dirty = True
    wanted = checks.due_for_tokens(site, hosts, changed)
    before = json.dumps(site.secrets, sort_keys=True)
    try:
        failures.extend(checks.store_tokens(site, hosts, minted, wanted))
    except Exception as exc:  # a check must never turn a converged deploy into a crash
        failures.append(events.Failure("", "Store a long-lived Home Assistant token",
                                       f"{type(exc).__name__}: {exc}"))
    if dirty or json.dumps(site.secrets, sort_keys=True) != before:
        site.save()
    return failures


# ---------------------------------------------------------------- terminal front end
def _bar(percent: float, width: int = 24) -> str:
    filled = int(width * percent / 100)
    return "#" * filled + "-" * (width - filled)


class TerminalProgress:
    """Prints one line per task with a bar that never goes backwards."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.last_task = None

    def __call__(self, p: events.Progress) -> None:
        if p.task and p.task != self.last_task:
            self.last_task = p.task
            hosts = ", ".join(r.name for r in p.hosts if r.status == events.RUNNING)
            suffix = f"  [{hosts}]" if hosts else ""
            print(f"[{_bar(p.percent)}] {p.percent:5.1f}%  {p.task}{suffix}", file=self.stream,
                  flush=True)


def print_recap(result: RunResult, stream=None) -> None:
    stream = stream or sys.stdout
    p = result.progress
    by_host: dict[str, list[str]] = {}
    for host, task in p.changes:
        by_host.setdefault(host, []).append(task)
    if result.mode == "plan":
        print("\nPlan: what apply would change", file=stream)
        failed = {f.host: f.message for f in p.failures}
        for row in sorted(p.hosts, key=lambda r: r.name not in failed):
            tasks = by_host.get(row.name, [])
            if row.name in failed or row.status in (events.FAILED, events.UNREACHABLE):
                # not "0 changes": this host was not (fully) checked, and why
                print(f"  {row.name}: not checked: {failed.get(row.name, row.status)}",
                      file=stream)
                continue
            print(f"  {row.name}: {len(tasks)} change(s)", file=stream)
            for task in tasks:
                print(f"    ~ {task}", file=stream)
    elif by_host:
        print("\nChanged:", file=stream)
        for row in p.hosts:
            for task in by_host.get(row.name, []):
                print(f"  {row.name}: {task}", file=stream)
    print("\nRecap:", file=stream)
    for host, counts in sorted(p.recap.items()):
        print(f"  {host:<20} ok={counts['ok']} changed={counts['changed']} "
              f"failed={counts['failed']} unreachable={counts['unreachable']} "
              f"skipped={counts['skipped']}", file=stream)
    for f in p.failures:
        print(f"  FAILED {f.host}: {f.task}: {f.message}", file=stream)
    if p.check_failures and p.ok:
        print("  The deploy converged. A check could not run:", file=stream)
    for f in p.check_failures:
        print(f"  CHECK NOT RUN {f.host}: {f.task}: {f.message}", file=stream)
    if result.status == "canceled":
        print("  the run was canceled", file=stream)


def run_cli(site: Site, mode: str, limit: str | None = None, verify: bool = False) -> int:
    from tui.core.proxmox import GuestError

    try:
        result = run_site(site, mode, limit=limit, on_progress=TerminalProgress())
    except GuestError as exc:  # a Proxmox step failed: a failed run, before Ansible
        for problem in exc.problems:
            print(f"abri: error: {problem}", file=sys.stderr)
        return 1
    print_recap(result)
    if not result.ok:
        return 1
    if verify:
        hosts = [r.name for r in result.progress.hosts if r.name in site.hosts]
        return verify_cli(site, hosts=hosts)
    return 1 if result.progress.check_failures else 0


def verify_cli(site: Site, limit: str | None = None, as_json: bool = False,
               hosts: list[str] | None = None) -> int:
    from tui.core import checks, verify

    if hosts is None:
        hosts = site.match_hosts(limit) if limit and hasattr(site, "match_hosts") else [
            h for h in site.hosts if not limit or h == limit]
    reports = checks.verify_site(site, hosts)
    if as_json:
        print(json.dumps([{"host": h, "checks": [c.__dict__ for c in cs]} for h, cs in reports],
                         indent=2))
    else:
        print(verify.format_report(reports))
    return 0 if all(c.ok for _, cs in reports for c in cs) else 1
