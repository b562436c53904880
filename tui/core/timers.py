"""The site's timers: systemd timers on this machine (the controller, which holds the site
and its vault password) that run an abri command for the site unattended:

* ``upgrade_timer``: ``abri upgrade --patch``, through the same snapshot, health gate and
  rollback as by hand (a rolled-back run, exit 3, is a finished job);
* ``verify_timer``: ``abri backup --verify``, the trial restores that prove the backups;
* ``backup_timer``: ``abri backup --prune``, the scheduled backup of every host, then the
  retention. It runs here, not on each host: the hosts' repository passwords (and S3 keys)
  stay in the vault, which only this machine opens, and the stop/copy rule of each stack is
  the one abri's module applies by hand too.

Each site setting holds a systemd calendar expression (``Sun 04:00``, ``weekly``); empty
switches the timer off. ``abri site set`` then writes (or removes) the units
``abri-<name>-<site id>.service`` and ``.timer``: for root in /etc/systemd/system, otherwise in
the user's ``~/.config/systemd/user`` (``ABRI_SYSTEMD_DIR`` overrides, for tests), and enables
them with systemctl when systemd runs here. The units are this machine's (they name its
paths), not the site's: a second controller of the same site sets the timer there by running
the same ``abri site set``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tui.core import paths
from tui.core.atomic import write_atomic

if TYPE_CHECKING:
    from tui.core.site import Site

_CALENDAR = re.compile(r"^[A-Za-z0-9 :*,./~-]{1,64}$")


@dataclass(frozen=True)
class Timer:
    setting: str  # the site setting that holds its calendar
    name: str  # abri-<name>-<site id>
    command: tuple[str, ...]  # abri's arguments
    what: str
    success: tuple[int, ...] = ()  # exit codes besides 0 that end the job as done


TIMERS = (
    Timer("upgrade_timer", "upgrade", ("upgrade", "--patch"), "patch upgrades", (3,)),
    Timer("verify_timer", "verify", ("backup", "--verify"), "trial restores of the backups"),
    Timer("backup_timer", "backup", ("backup", "--prune"), "backups (then the retention)"),
)
SETTINGS = tuple(t.setting for t in TIMERS)


def check_calendar(value: str) -> str:
    """A systemd calendar expression (OnCalendar=), checked by systemd's own parser when it is
    installed here; empty means off."""
    value = str(value or "").strip()
    if not value:
        return ""
    if not _CALENDAR.match(value):
        raise ValueError(f"{value!r} is not a systemd calendar expression; use e.g. daily, "
                         "'Sun 04:00' or '*-*-* 03:30:00', or empty to switch the timer off")
    tool = shutil.which("systemd-analyze")
    if tool:
        proc = subprocess.run([tool, "calendar", value], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            said = (proc.stderr.strip().splitlines() or ["refused"])[-1]
            raise ValueError(f"{value!r} is not a calendar expression systemd accepts ({said}); "
                             "use e.g. daily, 'Sun 04:00' or '*-*-* 03:30:00'")
    return value


def unit_name(site: Site, timer: Timer) -> str:
    return f"abri-{timer.name}-{site.site_id}"


def unit_dir() -> Path:
    override = os.environ.get("ABRI_SYSTEMD_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def _quoted(text: str) -> str:
    """A word of a unit's command line: double-quoted, % doubled (systemd's specifiers)."""
    if any(c in text for c in '"\\\n\r'):
        raise ValueError(f"{text!r} holds a quote, backslash or line break, which a systemd "
                         "unit cannot carry; move the site to a plainer path")
    return '"' + text.replace("%", "%%") + '"'


def _abri() -> str:
    """This abri's command (the console script next to its Python)."""
    script = Path(sys.executable).parent / "abri"
    return str(script) if script.exists() else shutil.which("abri") or "abri"


def render(site: Site, timer: Timer) -> dict[str, str]:
    """File name -> content of the timer's service and timer units."""
    from tui.core import secrets as vault

    name = unit_name(site, timer)
    where = str(site.path.resolve())
    password = vault.vault_password_file(site.site_id)
    note = f"# Written by abri ('abri site set {timer.setting}=...'); it rewrites this file.\n"
    title = f"Description=abri: {timer.what} of the smart-home site in {where}\n"
    service = (
        note + "[Unit]\n" + title +
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"Environment={_quoted('ABRI_VAULT_PASSWORD_FILE=' + str(password))}\n"
        f"Environment={_quoted('ABRI_CONFIG_HOME=' + str(paths.config_home()))}\n"
        f"ExecStart={_quoted(_abri())} {' '.join(timer.command)} --site {_quoted(where)}\n"
        + (f"SuccessExitStatus={' '.join(map(str, timer.success))}\n" if timer.success else "")
    )
    unit = (
        note + "[Unit]\n" + title + "\n"
        "[Timer]\n"
        f"OnCalendar={getattr(site.settings, timer.setting)}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=15min\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": unit}


def _systemctl(*args: str) -> subprocess.CompletedProcess | None:
    tool = shutil.which("systemctl")
    if tool is None or not Path("/run/systemd/system").is_dir():
        return None  # systemd does not run here
    user = [] if os.geteuid() == 0 or os.environ.get("ABRI_SYSTEMD_DIR") else ["--user"]
    return subprocess.run([tool, *user, *args], capture_output=True, text=True, timeout=60)


def apply(site: Site, settings: list[str] | tuple[str, ...] = SETTINGS) -> list[str]:
    """For each timer whose setting is named: write and enable its units when the site's
    setting holds a calendar, disable and remove them when it is empty. Returns what was
    done, a line each."""
    said: list[str] = []
    for timer in TIMERS:
        if timer.setting in settings:
            said += _apply(site, timer)
    return said


def _apply(site: Site, timer: Timer) -> list[str]:
    directory = unit_dir()
    name = unit_name(site, timer)
    calendar = getattr(site.settings, timer.setting)
    said: list[str] = []
    if not calendar:
        present = [directory / f"{name}.{kind}" for kind in ("timer", "service")
                   if (directory / f"{name}.{kind}").exists()]
        if not present:
            return said
        _systemctl("disable", "--now", f"{name}.timer")
        for path in present:
            path.unlink()
        _systemctl("daemon-reload")
        return [f"the {timer.what} timer is off: removed {', '.join(map(str, present))}"]
    directory.mkdir(parents=True, exist_ok=True)
    for file, text in render(site, timer).items():
        path = directory / file
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
            said.append(f"wrote {path}")
    if _systemctl("daemon-reload") is None:
        said.append(f"systemd does not run on this machine: the timer is written, not enabled "
                    f"(where systemd runs: systemctl{'' if os.geteuid() == 0 else ' --user'} "
                    f"enable --now {name}.timer)")
        return said
    enabled = _systemctl("enable", "--now", f"{name}.timer")
    if enabled is not None and enabled.returncode != 0:
        said.append(f"systemctl could not enable {name}.timer: "
                    f"{(enabled.stderr.strip().splitlines() or ['no reason given'])[-1]}")
    else:
        said.append(f"the {timer.what} timer runs '{calendar}': {name}.timer "
                    f"('abri {' '.join(timer.command)}')")
    return said
