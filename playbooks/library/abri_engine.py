#!/usr/bin/python
"""abri's engine module: the host's system, Docker engine and unwanted stacks in one pass."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_engine
short_description: Make a host ready for abri's stacks in one round trip
description:
  - Refuses, before any change, a system abri does not support (Debian 13 and Ubuntu 24.04
    are supported), naming what it found.
  - Works while holding the host's abri lock (C(/run/lock/abri.lock)), so that one abri
    module at a time changes the host; a module of an interrupted earlier run that is
    still at work there (it runs on to its end) is waited for, with a warning.
  - Finishes a package installation an earlier run left interrupted (C(dpkg --configure -a)),
    saying so.
  - Installs the Docker engine and the Compose v2 plugin from the distribution's archive when a
    package is missing (one dpkg query when all are there).
  - Keeps C(/etc/docker/daemon.json) the user's. Only the keys abri declares are set, and the
    insecure registries abri adds are merged with the user's own. What abri added before and
    no longer wants is taken out again (abri remembers it in /var/lib/abri/engine.json).
  - Starts and enables the engine, restarting it when daemon.json changed.
  - Brings down (data kept) every Compose project named C(abri-*) that the site no longer
    wants, found with one question to the Docker engine's API (its unix socket).
  - A project in I(stopped) (a stack C(abri migrate) moved to another host) is only
    stopped, never brought down (its containers and data stay),, and nothing starts it
    again until the site wants it here once more.
options:
  packages:
    description: Packages per distribution name (Debian, Ubuntu).
    type: dict
    required: true
  insecure_registries:
    description: Registries abri wants the engine to reach over plain HTTP.
    type: list
    elements: str
    default: []
  daemon_options:
    description: Further daemon.json keys abri sets (e.g. bip, default-address-pools).
    type: dict
    default: {}
  projects:
    description: The Compose projects the site wants on this host; other abri-* projects go.
    type: list
    elements: str
    default: []
  stopped:
    description: Compose projects kept stopped with their containers and data (migrated).
    type: list
    elements: str
    default: []
author: abri
"""

EXAMPLES = r"""
- name: Prepare the host
  abri_engine:
    packages: "{{ abri_state.engine.packages }}"
    projects: "{{ abri_state.projects }}"
"""

RETURN = r"""
changes:
  description: What changed and why, one line each.
  type: list
  returned: always
"""

import json
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.abri_docker import DockerError, compose_projects
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.basic import AnsibleModule

SUPPORTED = "Debian 13 (trixie) and Ubuntu 24.04 (noble)"
STATE_FILE = "/var/lib/abri/engine.json"
DAEMON_JSON = "/etc/docker/daemon.json"


def os_release():
    info = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep:
                    info[key] = value.strip().strip('"')
    except OSError:
        pass
    return info


def run(module, cmd, **kw):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if proc.returncode != 0:
        module.fail_json(msg=f"{' '.join(cmd[:4])} failed: {proc.stderr.strip()[-2000:]}")
    return proc


def write_atomic(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".abri-", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def load_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except ValueError:
        return None


def main():
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "dict", "required": True},
            "insecure_registries": {"type": "list", "elements": "str", "default": []},
            "daemon_options": {"type": "dict", "default": {}},
            "projects": {"type": "list", "elements": "str", "default": []},
            "stopped": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    osr = os_release()
    distro = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(osr.get("ID", ""), osr.get("ID", "?"))
    version = osr.get("VERSION_ID", "?")
    if (distro, version) not in (("Debian", "13"), ("Ubuntu", "24.04")):
        module.fail_json(msg=f"this host runs {distro} {version} ({osr.get('PRETTY_NAME', '?')});"
                             f" abri supports {SUPPORTED} only. Nothing was changed on it.",
                         unsupported=True)

    with host_lock(module, "abri_engine"):
        engine(module, distro, version)


def engine(module, distro, version):
    p = module.params
    check = module.check_mode
    changes = []

    # an installation an earlier run left half done (power cut, killed apply)
    pending = os.path.isdir("/var/lib/dpkg/updates") and os.listdir("/var/lib/dpkg/updates")
    if pending:
        changes.append("finish an interrupted package installation (dpkg --configure -a)")
        if not check:
            run(module, ["dpkg", "--configure", "-a"])

    wanted = list(p["packages"].get(distro) or [])
    query = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *wanted],
                           capture_output=True, text=True)
    installed = {line.split()[0] for line in query.stdout.splitlines()
                 if line.endswith(" installed")}
    missing = [pkg for pkg in wanted if pkg not in installed]
    if missing:
        changes.append("install " + ", ".join(missing) + f" from the {distro} archive")
        if not check:
            run(module, ["apt-get", "update", "-q"])
            run(module, ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                         "-o", "DPkg::Lock::Timeout=600",
                         "-o", "Dpkg::Options::=--force-confold", *missing])

    # daemon.json: the user's file, with abri's keys merged in
    current = load_json(DAEMON_JSON)
    if current is None:
        module.fail_json(msg=f"{DAEMON_JSON} is not valid JSON; abri will not overwrite it. "
                             "Fix it (or remove it), then apply again.")
    state = load_json(STATE_FILE) or {}
    ours_before = set(state.get("insecure_registries", []))
    keys_before = set(state.get("daemon_keys", []))
    desired = dict(current)
    for key in keys_before - set(p["daemon_options"]):
        desired.pop(key, None)
    desired.update(p["daemon_options"])
    registries = [r for r in desired.get("insecure-registries", []) if r not in ours_before]
    for reg in p["insecure_registries"]:
        if reg not in registries:
            registries.append(reg)
    if registries:
        desired["insecure-registries"] = registries
    else:
        desired.pop("insecure-registries", None)
    daemon_changed = desired != current
    if daemon_changed:
        changes.append(f"update {DAEMON_JSON} (abri's keys; the others kept)")
        if not check:
            write_atomic(DAEMON_JSON, json.dumps(desired, indent=2) + "\n")
    new_state = {"insecure_registries": sorted(p["insecure_registries"]),
                 "daemon_keys": sorted(p["daemon_options"])}
    if new_state != {k: state.get(k) for k in new_state} and not check:
        write_atomic(STATE_FILE, json.dumps(new_state, indent=2) + "\n", 0o600)

    engine_present = not missing or not check
    if engine_present:
        shown = subprocess.run(["systemctl", "show", "docker", "--no-pager",
                                "--property=ActiveState,UnitFileState"],
                               capture_output=True, text=True).stdout
        unit = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        active = unit.get("ActiveState") == "active"
        enabled = unit.get("UnitFileState") == "enabled"
        if not enabled:
            changes.append("enable the Docker engine at boot")
            if not check:
                run(module, ["systemctl", "enable", "docker"])
        if not active:
            changes.append("start the Docker engine")
            if not check:
                run(module, ["systemctl", "start", "docker"])
        elif daemon_changed:
            changes.append("restart the Docker engine (daemon.json changed)")
            if not check:
                run(module, ["systemctl", "restart", "docker"])

    # projects abri deployed before that the site no longer wants: down, data kept
    if engine_present and shutil.which("docker"):
        try:
            projects = compose_projects()
        except (DockerError, ValueError):
            projects = {}  # an engine that does not answer yet has nothing to bring down
        for name, states in sorted(projects.items()):
            if not name.startswith("abri-") or name in p["projects"]:
                continue
            if name in p["stopped"]:  # migrated away: stopped, containers and data kept
                if any(st in ("running", "restarting", "paused") for st in states):
                    changes.append(f"stop {name} (migrated to another host; containers "
                                   "and data kept)")
                    if not check:
                        run(module, ["docker", "compose", "-p", name, "stop"])
                continue
            if not any(st in ("running", "restarting", "paused", "created") for st in states):
                continue
            changes.append(f"bring down {name} (no longer wanted on this host; data kept)")
            if not check:
                run(module, ["docker", "compose", "-p", name, "down", "--remove-orphans"])
    elif not shutil.which("docker") and not check:
        module.fail_json(msg="the docker command is missing after the install (package "
                             "docker-cli); install it, then apply again")

    module.exit_json(changed=bool(changes), changes=changes,
                     distribution=f"{distro} {version}")


if __name__ == "__main__":
    main()
