"""The engine step of abri's convergence (abri_engine, and abri_host's quick check): the
host's system, its Docker engine and the abri projects the site no longer wants.

`module` is an AnsibleModule or a stand-in with the same few members (check_mode, params,
fail_json); nothing here exits the module on success: engine() returns its changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.abri_docker import DockerError, compose_projects

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


def supported(osr):
    """(distro, version, None) for a supported system, else (distro, version, message)."""
    distro = {"debian": "Debian", "ubuntu": "Ubuntu"}.get(osr.get("ID", ""), osr.get("ID", "?"))
    version = osr.get("VERSION_ID", "?")
    if (distro, version) not in (("Debian", "13"), ("Ubuntu", "24.04")):
        return distro, version, (f"this host runs {distro} {version} "
                                 f"({osr.get('PRETTY_NAME', '?')}); abri supports {SUPPORTED} "
                                 "only. Nothing was changed on it.")
    return distro, version, None


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
            if name in p.get("stopped", ()):  # migrated away: stopped, data kept
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

    return changes
