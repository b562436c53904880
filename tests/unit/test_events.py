"""The reducer from ansible-runner events to progress, on events recorded from a real run
(tests/unit/fixtures/record_events.py re-records them).

Every check names the recorded event it is about and first requires that event to be in
the recording (`_one`), so a re-recording that lost an event fails here instead of passing
for want of it."""

from __future__ import annotations

import json
from pathlib import Path

from tui.core import events

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "events_mixed.json").read_text())

#: every kind of event the reducer acts on; the recording must hold each of them
HANDLED = {"playbook_on_play_start", "playbook_on_task_start", "runner_on_start", "runner_on_ok",
           "runner_on_skipped", "runner_on_failed", "runner_on_unreachable", "playbook_on_stats"}


def _one(kind: str, host: str | None = None, task: str | None = None) -> dict:
    """The one recorded event of this kind (for this host and task); fails when it is missing."""
    found = [e for e in RECORDED if e["event"] == kind
             and (host is None or e["event_data"].get("host") == host)
             and (task is None or e["event_data"].get("task") == task)]
    assert len(found) == 1, f"expected one recorded {kind} ({host}, {task}), found {len(found)}"
    return found[0]


def _upto(event: dict) -> events.Progress:
    """The state after the recorded events up to and including this one."""
    return events.replay(RECORDED[:RECORDED.index(event) + 1])


def test_runner_events_drive_the_rows_before_the_recap():
    # the rows as the runner events leave them, before playbook_on_stats restates the totals
    stats = _one("playbook_on_stats")
    live = events.replay(RECORDED[:RECORDED.index(stats)])
    assert not live.finished
    probe = _one("runner_on_ok", "local1", "Read-only probe")
    change = _one("runner_on_ok", "local1", "Change something")
    skipped = _one("runner_on_skipped", "local1", "Skipped on purpose")
    tolerated = _one("runner_on_failed", "local1", "Tolerated failure")
    real = _one("runner_on_failed", "local1", "Real failure")
    _one("runner_on_unreachable", "gone", "Read-only probe")
    assert not probe["event_data"]["res"].get("changed")
    assert change["event_data"]["res"]["changed"]
    assert tolerated["event_data"]["ignore_errors"] is True
    assert not real["event_data"]["ignore_errors"]

    row = live.row("local1")
    # ok: the probe and the tolerated failure; changed, skipped, failed: one event each
    assert (row.ok, row.changed, row.skipped, row.failed) == (2, 1, 1, 1)
    assert row.status == events.FAILED
    assert _upto(change).row("local1").status == events.CHANGED
    assert _upto(skipped).row("local1").status == events.CHANGED  # a skip does not hide it
    assert _upto(tolerated).row("local1").status == events.CHANGED  # nor a tolerated failure
    assert live.row("gone").status == events.UNREACHABLE
    assert live.row("gone").unreachable == 1
    assert live.changes == (("local1", "Change something"),)
    messages = {(f.host, f.task): f.message for f in live.failures}
    assert set(messages) == {("local1", "Real failure"), ("gone", "Read-only probe")}
    assert messages[("local1", "Real failure")] == "the broker refused the password file"
    assert messages[("gone", "Read-only probe")].startswith("unreachable: ")


def test_recorded_run_reduces_to_the_recap():
    stats = _one("playbook_on_stats")
    before = events.replay(RECORDED[:RECORDED.index(stats)])
    assert not before.recap
    state = events.reduce(before, stats)
    assert state.finished and not state.ok and state.task == ""
    assert state.recap["local1"] == {"ok": 3, "changed": 1, "failed": 1, "unreachable": 0,
                                     "skipped": 1, "rescued": 0, "ignored": 1}
    assert state.recap["gone"]["unreachable"] == 1
    rows = {r.name: r for r in state.hosts}
    assert rows["local1"].status == events.FAILED
    assert rows["gone"].status == events.UNREACHABLE
    assert state.failures == before.failures and state.changes == before.changes


def test_percent_never_goes_backwards_and_ends_at_100():
    stats = _one("playbook_on_stats")
    starts = [e for e in RECORDED if e["event"] == "playbook_on_task_start"]
    assert len(starts) == 5
    for hint in (0, 3, 5, 50):
        state = events.Progress(total_hint=hint)
        last = 0.0
        for event in RECORDED:
            state = events.reduce(state, event)
            assert state.percent >= last
            if event["event"] == "playbook_on_task_start":
                # each task start moves the bar, until it waits at 99% for the recap
                assert state.percent > last or last == 99.0
            if event is not stats:
                assert state.percent < 100.0  # only the recap completes it
            last = state.percent
        assert state.percent == 100.0


def test_reducer_is_pure():
    assert {e["event"] for e in RECORDED} >= HANDLED
    moved = set()
    state = events.Progress()
    for event in RECORDED:
        before, snapshot = repr(state), json.dumps(event, sort_keys=True)
        new = events.reduce(state, event)
        assert repr(state) == before  # the input state is left as it was
        assert json.dumps(event, sort_keys=True) == snapshot  # and so is the event
        if new != state:
            moved.add(event["event"])
        state = new
    assert moved >= HANDLED  # every kind it handles produced a new state


def test_current_task_and_running_hosts_follow_the_events():
    starts = [e for e in RECORDED if e["event"] == "runner_on_start"]
    assert {e["event_data"]["host"] for e in starts} == {"local1", "gone"}
    assert len(starts) == 6  # both hosts on the probe, then local1 on four more tasks
    first = {}
    for event in starts:
        host, task = event["event_data"]["host"], event["event_data"]["task"]
        state = _upto(event)
        assert state.row(host).task == task
        assert state.task == task
        first.setdefault(host, state.row(host).status)
    assert first == {"local1": events.RUNNING, "gone": events.RUNNING}


def test_censored_and_traceback_results_become_one_line():
    assert "no_log" in events.failure_message({"censored": "hidden", "msg": "x"})
    msg = events.failure_message({"module_stderr": "", "msg": "Traceback (most recent call "
                                  "last):\n  File x\nValueError: bad value"})
    assert msg == "ValueError: bad value"
