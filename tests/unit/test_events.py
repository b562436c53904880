"""The reducer from ansible-runner events to progress, on events recorded from a real run
(tests/unit/fixtures/record_events.py re-records them)."""

from __future__ import annotations

import json
from pathlib import Path

from tui.core import events

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "events_mixed.json").read_text())


def test_recorded_run_reduces_to_the_recap():
    state = events.replay(RECORDED)
    assert state.finished and not state.ok
    assert state.recap["local1"] == {"ok": 3, "changed": 1, "failed": 1, "unreachable": 0,
                                     "skipped": 1, "rescued": 0, "ignored": 1}
    assert state.recap["gone"]["unreachable"] == 1
    rows = {r.name: r for r in state.hosts}
    assert rows["local1"].status == events.FAILED
    assert rows["gone"].status == events.UNREACHABLE
    assert rows["local1"].changed == 1
    assert ("local1", "Change something") in state.changes
    messages = {(f.host, f.task): f.message for f in state.failures}
    assert messages[("local1", "Real failure")] == "the broker refused the password file"
    assert messages[("gone", "Read-only probe")].startswith("unreachable: ")
    assert ("local1", "Tolerated failure") not in messages  # ignore_errors is not a failure


def test_percent_never_goes_backwards_and_ends_at_100():
    for hint in (0, 3, 5, 50):
        state = events.Progress(total_hint=hint)
        last = 0.0
        for event in RECORDED:
            state = events.reduce(state, event)
            assert state.percent >= last
            last = state.percent
        assert state.percent == 100.0


def test_reducer_is_pure():
    state = events.Progress()
    before = repr(state)
    for event in RECORDED[:8]:
        new = events.reduce(state, event)
        assert repr(state) == before or new is state
        state, before = new, repr(new)
    event = RECORDED[3]
    snapshot = json.dumps(event, sort_keys=True)
    events.reduce(events.Progress(), event)
    assert json.dumps(event, sort_keys=True) == snapshot


def test_current_task_and_running_hosts_follow_the_events():
    state = events.Progress()
    for event in RECORDED:
        state = events.reduce(state, event)
        if event["event"] == "runner_on_start" and event["event_data"]["host"] == "local1":
            assert state.row("local1").task == event["event_data"]["task"]
            assert state.task == event["event_data"]["task"]
            break


def test_censored_and_traceback_results_become_one_line():
    assert "no_log" in events.failure_message({"censored": "hidden", "msg": "x"})
    msg = events.failure_message({"module_stderr": "", "msg": "Traceback (most recent call "
                                  "last):\n  File x\nValueError: bad value"})
    assert msg == "ValueError: bad value"
