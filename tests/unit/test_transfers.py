"""Live transfer progress on the controller: the host's status line parsed (foreign or broken
lines ignored), the line a person reads (bytes of the total, rate, time left), the CLI's
throttling, and the reader of a host that is this machine following the real file while a
body runs. The SSH reader is exercised by the fleet test (tests/fleet/test_s3_backup.py),
where `abri backup` and `abri restore` print these lines for a real restic run."""

from __future__ import annotations

import io
import json
import threading
import time

from tui.core import transfers
from tui.core.site import Site


def _status(**over) -> str:
    data = {"stack": "homeassistant", "action": "backup", "bytes_done": 120_000_000,
            "total_bytes": 400_000_000, "seconds_elapsed": 4, "seconds_remaining": 9,
            "percent": 0.3}
    data.update(over)
    return json.dumps(data)


def test_a_status_line_becomes_what_a_person_reads():
    t = transfers.parse("h1", _status())
    assert t is not None and t.rate == 30_000_000
    assert t.line() == "h1 homeassistant backup: 120.0 MB of 400.0 MB, 30.0 MB/s, 9s left"
    done = transfers.parse("h1", _status(bytes_done=400_000_000, seconds_remaining=0))
    assert done.line().endswith("400.0 MB of 400.0 MB, 100.0 MB/s")  # nothing left to say
    slow = transfers.parse("h2", _status(action="restore", bytes_done=2_500_000_000,
                                         total_bytes=9_000_000_000, seconds_elapsed=100,
                                         seconds_remaining=3725))
    assert slow.line() == ("h2 homeassistant restore: 2.5 GB of 9.0 GB, 25.0 MB/s, "
                           "1h02m left")


def test_foreign_and_broken_lines_are_ignored():
    for text in ("", "\n", "not json", "[]", '{"stack": 3}', _status(bytes_done="many"),
                 '{"bytes_done": 5}'):
        assert transfers.parse("h1", text) is None, text
    negative = transfers.parse("h1", _status(bytes_done=-5, seconds_elapsed=0))
    assert negative.bytes_done == 0 and negative.rate == 0.0


def test_the_cli_prints_a_stack_at_most_every_few_seconds():
    out = io.StringIO()
    shown = transfers.TerminalTransfers(stream=out, every=5)
    clock = iter([0.0, 1.0, 2.0, 6.0, 6.5])
    shown.clock = lambda: next(clock)
    first = transfers.parse("h1", _status(bytes_done=1_000_000))
    shown(first)                                      # 0.0: shown
    shown(transfers.parse("h1", _status(bytes_done=2_000_000)))   # 1.0: too soon
    shown(transfers.parse("h1", _status(stack="mosquitto")))       # 2.0: another stack
    shown(transfers.parse("h1", _status(bytes_done=3_000_000)))   # 6.0: shown
    shown(transfers.parse("h1", _status(bytes_done=4_000_000)))   # 6.5: too soon
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[0].strip() for ln in lines] == [
        "h1 homeassistant backup", "h1 mosquitto backup", "h1 homeassistant backup"]
    assert "1.0 MB of" in lines[0] and "3.0 MB of" in lines[2]
    clock = iter([7.0])
    shown.clock = lambda: next(clock)
    shown(transfers.parse("h1", _status(bytes_done=5_000_000, done=True)))  # 7.0: the end
    assert out.getvalue().splitlines()[-1].endswith("5.0 MB of 400.0 MB, 1.2 MB/s, done")


def test_a_local_host_is_followed_from_the_file(tmp_path, monkeypatch):
    site = Site.init(tmp_path / "site")
    site.add_host("here", "local", None, None, None)
    site.save()
    site = Site.load(tmp_path / "site")
    status = tmp_path / "transfer.json"
    monkeypatch.setattr(transfers, "TRANSFER_FILE", str(status))
    seen: list[transfers.Transfer] = []
    got = threading.Event()

    def emit(t):
        seen.append(t)
        if t.bytes_done == 2_000_000:
            got.set()

    # what an earlier run left: the reader's first read, never shown
    status.write_text(_status(bytes_done=9_000_000, done=True, run="earlier"))
    with transfers.watch(site, ["here"], emit):
        time.sleep(1.5)  # the reader has read the file (at once, then every 0.5 s)
        status.write_text(_status(bytes_done=1_000_000))
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            time.sleep(0.1)
        status.write_text(_status(bytes_done=2_000_000))
        assert got.wait(20), seen
        status.write_text(_status(bytes_done=4_000_000, done=True))
        deadline = time.monotonic() + 20
        while not seen[-1].done and time.monotonic() < deadline:
            time.sleep(0.1)
    assert [t.bytes_done for t in seen] == [1_000_000, 2_000_000, 4_000_000]  # once each
    assert all(t.host == "here" for t in seen) and seen[-1].done
    assert seen[-1].line().endswith(", done")
