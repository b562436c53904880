"""A pure reducer from ansible-runner events to run progress.

`reduce(state, event) -> state` never mutates its input and does no I/O, so it is tested on
recorded event JSON and shared by the CLI's progress lines and the TUI's run screen.
Rows are keyed by host; the task names are cached from playbook_on_task_start (as
ansible-navigator does); the percentage never goes backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

PENDING, RUNNING, OK, CHANGED, FAILED, UNREACHABLE = (
    "pending", "running", "ok", "changed", "failed", "unreachable")


@dataclass(frozen=True)
class HostRow:
    name: str
    status: str = PENDING
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0


@dataclass(frozen=True)
class Failure:
    host: str
    task: str
    message: str


@dataclass(frozen=True)
class Progress:
    play: str = ""
    task: str = ""
    tasks_started: int = 0
    total_hint: int = 0  # tasks expected (from the last run); 0 when unknown
    percent: float = 0.0
    hosts: tuple[HostRow, ...] = ()
    failures: tuple[Failure, ...] = ()
    #: checks after a converged deploy that could not run (the deploy itself is fine)
    check_failures: tuple[Failure, ...] = ()
    changes: tuple[tuple[str, str], ...] = ()  # (host, task: what changed) reported changed
    finished: bool = False
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    task_names: dict[str, str] = field(default_factory=dict)  # task_uuid -> name

    @property
    def ok(self) -> bool:
        return self.finished and not self.failures and not any(
            r.failed or r.unreachable for r in self.hosts)

    def row(self, host: str) -> HostRow | None:
        for r in self.hosts:
            if r.name == host:
                return r
        return None

    def totals(self) -> dict[str, int]:
        keys = ("ok", "changed", "failed", "skipped", "unreachable")
        return {k: sum(getattr(r, k) for r in self.hosts) for k in keys}


def _with_row(state: Progress, host: str, **changes: Any) -> tuple[HostRow, ...]:
    rows = list(state.hosts)
    for i, r in enumerate(rows):
        if r.name == host:
            rows[i] = replace(r, **changes) if changes else r
            return tuple(rows)
    rows.append(replace(HostRow(host), **changes))
    return tuple(rows)


def _bump(state: Progress, host: str, counter: str, status: str) -> tuple[HostRow, ...]:
    row = state.row(host) or HostRow(host)
    new_status = status
    if row.status in (FAILED, UNREACHABLE):
        new_status = row.status
    elif status == OK and row.status == CHANGED:
        new_status = CHANGED
    return _with_row(state, host, status=new_status, **{counter: getattr(row, counter) + 1})


# Ansible's own words for a sudo that wants a password, and what the user can do about it
_BECOME_HINTS = (
    ("Missing sudo password",
     "sudo on the host asks for a password: give it with --become-password-file FILE (or "
     "the ABRI_BECOME_PASSWORD_FILE variable); abri never stores it"),
    ("Incorrect sudo password",
     "sudo on the host refused the password given with --become-password-file (or "
     "ABRI_BECOME_PASSWORD_FILE): put the SSH user's own password in that file"),
)


def become_failures(progress: Progress) -> set[str]:
    """The hosts where sudo asked for a password the run did not have (or refused it)."""
    hints = {hint for _words, hint in _BECOME_HINTS}
    return {f.host for f in progress.failures if any(h in f.message for h in hints)}


def needs_become_password(progress: Progress) -> bool:
    """Whether a run failed because sudo on a host wanted a password it was not given."""
    return bool(become_failures(progress))


def failure_message(res: dict[str, Any]) -> str:
    """The one readable message of a failed task result (never a Python traceback)."""
    text = _failure_text(res)
    for words, hint in _BECOME_HINTS:
        if words in text:
            return hint
    return text


def _failure_text(res: dict[str, Any]) -> str:
    if res.get("censored"):
        return "the task failed; its output is hidden because it handles secrets (no_log)"
    for sub in (res.get("failed_modules") or {}).values():  # gather_facts' sub-results
        if isinstance(sub, dict) and sub.get("failed"):
            inner = sub.get("module_stderr") or sub.get("msg") or ""
            return failure_message({"msg": inner}) if inner else failure_message(sub)
    results = res.get("results")
    if isinstance(results, list):  # a loop: the failed items' own messages
        failed = [item for item in results if isinstance(item, dict) and item.get("failed")]
        if failed:
            return "; ".join(failure_message(item) for item in failed)
    for key in ("msg", "message", "stderr", "module_stderr", "reason", "stdout"):
        value = res.get(key)
        if value:
            text = str(value).strip()
            if "Traceback (most recent call last)" in text:
                text = text.strip().splitlines()[-1]
            return text[:2000]
    results = res.get("results")
    if isinstance(results, list):
        for item in results:
            if isinstance(item, dict) and item.get("failed"):
                return failure_message(item)
    return "the task failed without a message"


def change_details(res: dict[str, Any]) -> list[str]:
    """What a kit module says it changed (its ``changes`` lines), also from loop items."""
    lines = [str(c) for c in res.get("changes") or []]
    for item in res.get("results") or []:
        if isinstance(item, dict) and item.get("changed"):
            prefix = f"{item['stack']}: " if item.get("stack") else ""
            lines += [prefix + str(c) for c in item.get("changes") or []]
    return lines


def _percent(state: Progress, finished_task: bool = False) -> float:
    if state.total_hint > 0:
        value = 100.0 * state.tasks_started / (state.total_hint + 1)
    else:  # unknown length: approach 95% without reaching it
        value = 95.0 * state.tasks_started / (state.tasks_started + 20)
    return max(state.percent, min(value, 99.0))


def reduce(state: Progress, event: dict[str, Any]) -> Progress:
    kind = event.get("event", "")
    data = event.get("event_data") or {}
    host = data.get("host") or data.get("remote_addr")
    if kind == "playbook_on_play_start":
        return replace(state, play=data.get("play") or data.get("name", ""))
    if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
        name = data.get("task") or data.get("name") or ""
        names = dict(state.task_names)
        if data.get("task_uuid"):
            names[data["task_uuid"]] = name
        started = replace(state, task=name, tasks_started=state.tasks_started + 1,
                          task_names=names)
        return replace(started, percent=_percent(started))
    if kind == "runner_on_start" and host:
        name = state.task_names.get(data.get("task_uuid", ""), data.get("task", state.task))
        row = state.row(host)
        status = row.status if row and row.status in (FAILED, UNREACHABLE, CHANGED) else RUNNING
        return replace(state, hosts=_with_row(state, host, task=name, status=status))
    if kind == "runner_on_ok" and host:
        res = data.get("res") or {}
        if res.get("changed"):
            task = state.task_names.get(data.get("task_uuid", ""), data.get("task", ""))
            details = change_details(res)
            label = f"{task}: {'; '.join(details)}" if details else task
            return replace(state, hosts=_bump(state, host, "changed", CHANGED),
                           changes=(*state.changes, (host, label)))
        return replace(state, hosts=_bump(state, host, "ok", OK))
    if kind == "runner_on_skipped" and host:
        return replace(state, hosts=_bump(state, host, "skipped", OK))
    if kind == "runner_on_failed" and host:
        if data.get("ignore_errors"):
            return replace(state, hosts=_bump(state, host, "ok", OK))
        task = state.task_names.get(data.get("task_uuid", ""), data.get("task", ""))
        failure = Failure(host, task, failure_message(data.get("res") or {}))
        return replace(state, hosts=_bump(state, host, "failed", FAILED),
                       failures=(*state.failures, failure))
    if kind == "runner_on_unreachable" and host:
        task = state.task_names.get(data.get("task_uuid", ""), data.get("task", ""))
        failure = Failure(host, task, "unreachable: " + failure_message(data.get("res") or {}))
        return replace(state, hosts=_bump(state, host, "unreachable", UNREACHABLE),
                       failures=(*state.failures, failure))
    if kind == "playbook_on_stats":
        recap: dict[str, dict[str, int]] = {}
        for key, label in (("ok", "ok"), ("changed", "changed"), ("failures", "failed"),
                           ("dark", "unreachable"), ("skipped", "skipped"),
                           ("rescued", "rescued"), ("ignored", "ignored")):
            for h, n in (data.get(key) or {}).items():
                recap.setdefault(h, {}).setdefault(label, 0)
                recap[h][label] = int(n)
        hosts = state.hosts
        for h, counts in recap.items():
            for label in ("ok", "changed", "failed", "unreachable", "skipped", "rescued",
                          "ignored"):
                counts.setdefault(label, 0)
            status = (UNREACHABLE if counts["unreachable"] else FAILED if counts["failed"]
                      else CHANGED if counts["changed"] else OK)
            tmp = replace(state, hosts=hosts)
            hosts = _with_row(tmp, h, status=status, task="")
        return replace(state, hosts=hosts, recap=recap, finished=True, percent=100.0, task="")
    return state


def replay(events: list[dict[str, Any]], total_hint: int = 0) -> Progress:
    state = Progress(total_hint=total_hint)
    for event in events:
        state = reduce(state, event)
    return state
