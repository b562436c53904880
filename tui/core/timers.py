"""Unattended patch upgrades: a systemd timer on this machine (the controller, which holds the
site and its vault password) that runs ``abri upgrade --patch`` for the site, through the
same snapshot, health gate and rollback as by hand.

The site setting ``upgrade_timer`` switches it on with a systemd calendar expression (``Sun
04:00``, ``daily``); empty switches it off. ``abri site set`` then writes (or removes) the
units ``abri-upgrade-<site id>.service`` and ``.timer``: for root in /etc/systemd/system,
otherwise in the user's ``~/.config/systemd/user`` (``ABRI_SYSTEMD_DIR`` overrides, for tests),
and enables them with systemctl when systemd runs here. The units are this machine's (they
name its paths), not the site's: a second controller of the same site sets the timer there
by running the same ``abri site set``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tui.core import paths
from tui.core.atomic import write_atomic

if TYPE_CHECKING:
    from tui.core.site import Site

_CALENDAR = re.compile(r"^[A-Za-z0-9 :*,./~-]{1,64}$")


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


def unit_name(site: Site) -> str:
    return f"abri-upgrade-{site.site_id}"


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


def render(site: Site) -> dict[str, str]:
    """File name -> content of the service and the timer."""
    from tui.core import secrets as vault

    name = unit_name(site)
    where = str(site.path.resolve())
    password = vault.vault_password_file(site.site_id)
    service = (
        "# Written by abri ('abri site set upgrade_timer=...'); it rewrites this file.\n"
        "[Unit]\n"
        f"Description=abri: patch upgrades of the smart-home site in {where}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"Environment={_quoted('ABRI_VAULT_PASSWORD_FILE=' + str(password))}\n"
        f"Environment={_quoted('ABRI_CONFIG_HOME=' + str(paths.config_home()))}\n"
        f"ExecStart={_quoted(_abri())} upgrade --patch --site {_quoted(where)}\n"
        # 0 upgraded, 3 rolled back (the old release serves): both are a finished job
        "SuccessExitStatus=3\n"
    )
    timer = (
        "# Written by abri ('abri site set upgrade_timer=...'); it rewrites this file.\n"
        "[Unit]\n"
        f"Description=abri: patch upgrades of the smart-home site in {where}\n\n"
        "[Timer]\n"
        f"OnCalendar={site.settings.upgrade_timer}\n"
        "Persistent=true\n"
        "RandomizedDelaySec=15min\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def _systemctl(*args: str) -> subprocess.CompletedProcess | None:
    tool = shutil.which("systemctl")
    if tool is None or not Path("/run/systemd/system").is_dir():
        return None  # systemd does not run here
    user = [] if os.geteuid() == 0 or os.environ.get("ABRI_SYSTEMD_DIR") else ["--user"]
    return subprocess.run([tool, *user, *args], capture_output=True, text=True, timeout=60)


def apply(site: Site) -> list[str]:
    """Write and enable the units when the site's upgrade_timer is set, disable and remove
    them when it is empty. Returns what was done, a line each."""
    directory = unit_dir()
    name = unit_name(site)
    said: list[str] = []
    if not site.settings.upgrade_timer:
        present = [directory / f"{name}.{kind}" for kind in ("timer", "service")
                   if (directory / f"{name}.{kind}").exists()]
        if not present:
            return said
        _systemctl("disable", "--now", f"{name}.timer")
        for path in present:
            path.unlink()
        _systemctl("daemon-reload")
        return [f"the patch-upgrade timer is off: removed {', '.join(map(str, present))}"]
    directory.mkdir(parents=True, exist_ok=True)
    for file, text in render(site).items():
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
        said.append(f"the patch-upgrade timer runs '{site.settings.upgrade_timer}': "
                    f"{name}.timer ('abri upgrade --patch', rolled back by itself on failure)")
    return said
