"""Live progress of the long transfers (backup, restore, a migration's copies): bytes done of
the total, the rate and the time left, while the run goes on.

On the host, abri's backup module keeps the running restic's last status in
``/run/abri/transfer.json`` (a stack's name and byte counts, no secret; see
playbooks/library/abri_backup.py). Here, one reader per host follows that file for the length
of a run, twice a second: over the host's own SSH connection (built as the checks' tunnels
are, so ProxyJump and the rest carry over: one ``ssh`` that prints the file), or straight
from the file for a host that is this machine. Each change becomes a :class:`Transfer` handed to the
caller (the CLI prints a line, the installer shows it). A host that cannot be read shows no
progress; the run itself never depends on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui.core.site import Site

TRANSFER_FILE = "/run/abri/transfer.json"
#: printed by the reader on the host once a second: the file's line, or an empty line
_REMOTE = (f"while :; do cat {TRANSFER_FILE} 2>/dev/null; echo; sleep 0.5; done")


@dataclass(frozen=True)
class Transfer:
    host: str
    stack: str
    action: str  # backup or restore
    bytes_done: int
    total_bytes: int
    seconds_elapsed: float
    seconds_remaining: int
    done: bool = False  # restic's summary: the copy has ended

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.bytes_done / self.seconds_elapsed if self.seconds_elapsed > 0 else 0.0

    def line(self) -> str:
        total = f" of {size(self.total_bytes)}" if self.total_bytes else ""
        left = (f", {duration(self.seconds_remaining)} left"
                if self.seconds_remaining and self.bytes_done < self.total_bytes
                and not self.done else "")
        return (f"{self.host} {self.stack} {self.action}: {size(self.bytes_done)}{total}, "
                f"{size(self.rate)}/s{left}{', done' if self.done else ''}")


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def duration(seconds: int) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes
                                                      else f"{secs}s")


def parse(host: str, text: str) -> Transfer | None:
    """One line of the host's file, or None for an empty or foreign line."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("stack"), str):
        return None
    try:
        return Transfer(host=host, stack=data["stack"][:64],
                        action=str(data.get("action", ""))[:16],
                        bytes_done=max(0, int(data.get("bytes_done") or 0)),
                        total_bytes=max(0, int(data.get("total_bytes") or 0)),
                        seconds_elapsed=max(0.0, float(data.get("seconds_elapsed") or 0)),
                        seconds_remaining=max(0, int(data.get("seconds_remaining") or 0)),
                        done=data.get("done") is True)
    except (TypeError, ValueError):
        return None


class _Reader(threading.Thread):
    def __init__(self, host: str, argv: list[str] | None, path: Path | None,
                 emit: Callable[[Transfer], None], stop: threading.Event):
        super().__init__(name=f"abri-transfer-{host}", daemon=True)
        self.host, self.argv, self.path, self.emit, self.stop = host, argv, path, emit, stop
        self.proc: subprocess.Popen | None = None
        self.last: str | None = None
        self.first = True

    def seen(self, text: str) -> None:
        text = text.strip()
        first, self.first = self.first, False
        if first or text == self.last:
            # the first read is what an earlier run left (this run's module starts seconds
            # after the reader): never shown; each later line once
            self.last = text
            return
        self.last = text
        got = parse(self.host, text)
        if got is not None:
            with contextlib.suppress(Exception):  # the caller's display never stops a run
                self.emit(got)

    def run(self) -> None:
        if self.path is not None:  # this machine: read the file itself
            while True:
                try:
                    self.seen(self.path.read_text(encoding="utf-8"))
                except OSError:
                    self.seen("")
                if self.stop.wait(0.5):
                    return
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, start_new_session=True)
        except OSError:
            return
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if self.stop.is_set():
                break
            self.seen(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextlib.contextmanager
def watch(site: Site, hosts: list[str], emit: Callable[[Transfer], None]) -> Iterator[None]:
    """Follow the transfers of hosts while the body runs (see the module docstring)."""
    from tui.core import checks, tunnel

    stop = threading.Event()
    readers = []
    for name in hosts:
        try:
            conn = tunnel.Connection.from_ansible_vars(checks.host_variables(site, name),
                                                       name=name,
                                                       base_dir=site.path.resolve())
        except (ValueError, OSError):
            continue
        if conn.local:
            readers.append(_Reader(name, None, Path(TRANSFER_FILE), emit, stop))
            continue
        known = site.path.resolve() / ".abri" / "known_hosts"
        conn = dataclasses.replace(conn, known_hosts_file=str(known),
                                   ssh_args=("-o", "StrictHostKeyChecking=accept-new",
                                             *conn.ssh_args))
        readers.append(_Reader(name, tunnel.ssh_command(conn, [], remote=_REMOTE), None, emit,
                               stop))
    for reader in readers:
        reader.start()
    try:
        yield
    finally:
        stop.set()
        for reader in readers:
            reader.close()
        for reader in readers:
            reader.join(timeout=5)


class TerminalTransfers:
    """Prints a transfer's line when it changes, at most every few seconds per host and
    stack, and always its first and its last (done) line."""

    def __init__(self, stream=None, every: float = 5.0):
        import sys
        import time

        self.stream = stream or sys.stdout
        self.every = every
        self.clock = time.monotonic
        self.shown: dict[tuple[str, str, str], float] = {}
        self.lock = threading.Lock()

    def __call__(self, t: Transfer) -> None:
        key = (t.host, t.stack, t.action)
        now = self.clock()
        with self.lock:
            if not t.done and key in self.shown and now - self.shown[key] < self.every:
                return
            self.shown[key] = now
        print(f"  {t.line()}", file=self.stream, flush=True)
