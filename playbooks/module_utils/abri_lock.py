"""One abri module at a time on a host.

An apply whose controller goes away (abri killed, the SSH session or the machine lost) does
not stop what its current module is doing on the host: the module runs on to its end there
(an engine install, a `docker compose up`, a health check). A re-run started meanwhile must
not converge the same things at the same time, so every abri module holds the host's lock
for its whole run, and a second one waits for the first to finish (the kernel releases the
lock of a module that ends in any way).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

LOCK_FILE = "/run/lock/abri.lock"


def _holder(fd):
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    return ""


@contextlib.contextmanager
def host_lock(module, what, timeout=1800):
    """Hold the host's abri lock while the body runs; yields the seconds waited for it.

    Check mode changes nothing and neither takes nor waits for the lock. After waiting for
    another abri run, a warning says so; after timeout seconds, the module fails, naming the
    process that holds the lock."""
    if module.check_mode:
        yield 0.0
        return
    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        start = time.monotonic()
        holder = ""
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd) or holder
                if time.monotonic() - start > timeout:
                    module.fail_json(msg=f"another abri run still works on this host "
                                         f"({holder or 'unknown'}, {LOCK_FILE}) after "
                                         f"{timeout}s; let it finish or end that process, "
                                         "then apply again")
                time.sleep(0.5)
        waited = time.monotonic() - start
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}\n".encode(), 0)
        if waited >= 1:
            module.warn(f"waited {waited:.0f}s for another abri run on this host to finish "
                        f"({holder or 'unknown'}; an interrupted apply's last step goes on to "
                        "its end on the host)")
        yield waited
    finally:
        os.close(fd)
