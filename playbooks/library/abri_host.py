#!/usr/bin/python
"""abri's host check: is a whole host already converged? One round trip for a no-op apply."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_host
short_description: Tell in one round trip whether a host already matches abri's state
description:
  - Runs, on the host and without changing anything, the same checks as the convergence
    steps that follow it in the kit's deploy playbook, in their check mode - the engine
    (C(abri_engine)), every stack (C(abri_stack)) and every stack's API (C(abri_api)) - and
    one try of every stack's health check.
  - Returns I(converged=true) only when none of them would change anything, every service
    answers its health check and no other abri module holds the host's lock. The playbook
    then skips the steps (a no-op apply costs one module call per host); otherwise they run
    and converge, as without this check, and I(pending) says what they will do.
  - Anything unexpected (a missing secret, an engine that does not answer, an API error)
    makes the host not converged: the step that follows reports it with its own message.
  - Never changes the host (changed is always false), in check mode too.
options:
  state:
    description: The host's abri_state (engine, projects, stacks).
    type: dict
    required: true
  daemon_options:
    description: Further daemon.json keys (as for abri_engine).
    type: dict
    default: {}
  secrets:
    description: Secret values by reference (C(host/stack/key)) of all the host's stacks.
    type: dict
    default: {}
author: abri
"""

EXAMPLES = r"""
- name: Check whether the host is converged already
  abri_host:
    state: "{{ abri_state }}"
    daemon_options: "{{ docker_engine_daemon_options | default({}) }}"
    secrets: "{{ abri_state.stacks | abri_secrets(hostvars) }}"
  register: abri_host
"""

RETURN = r"""
converged:
  description: True when the host matches the state and every service answers.
  type: bool
  returned: always
pending:
  description: Why not, one line each (what the steps that follow would do).
  type: list
  returned: always
"""

import fcntl
import os

from ansible.module_utils.abri_api_core import ApiError, HomeAssistant
from ansible.module_utils.abri_engine_core import engine, os_release, supported
from ansible.module_utils.abri_health import probe
from ansible.module_utils.abri_lock import LOCK_FILE
from ansible.module_utils.abri_stack_core import Stack
from ansible.module_utils.basic import AnsibleModule


class NotConverged(Exception):
    pass


class Look:
    """What the convergence steps need of a module, in check mode, with a failure raised
    instead of exiting: the step that follows reports it."""

    check_mode = True
    _diff = False

    def __init__(self, params):
        self.params = params

    def fail_json(self, msg, **_kw):
        raise NotConverged(msg)

    def warn(self, _msg):
        pass


def lock_free():
    """No other abri module works on the host now (one that does may change what is seen)."""
    try:
        fd = os.open(LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def pending(state, daemon_options, secrets, remember):
    distro, version, refused = supported(os_release())
    if refused:
        return [refused]
    if not lock_free():
        return ["another abri module works on this host"]
    engine_params = {"packages": state["engine"]["packages"],
                     "insecure_registries": state["engine"].get("insecure_registries", []),
                     "daemon_options": daemon_options, "projects": state.get("projects", []),
                     "stopped": state["engine"].get("stopped", [])}
    out = list(engine(Look(engine_params), distro, version))
    if out:
        return out  # the stacks' checks need the engine as it should be
    for spec in state.get("stacks", []):
        stack = Stack(Look({"wait": False}), spec, secrets, wait=False)
        if stack.present():
            out.append(f"{spec['name']}: its API setup is not done")
        out.extend(f"{spec['name']}: {c}" for c in stack.changes)
        hc = spec.get("health") or {}
        if hc.get("kind") and not stack.changes:
            ok, seen = probe(hc, stack.secret)
            if not ok:
                out.append(f"{spec['name']}: its health check does not pass yet ({seen})")
        if spec.get("api") and not out:
            if spec["api"].get("kind") != "homeassistant":
                return [f"{spec['name']}: an API kind abri_api knows not"]
            api = HomeAssistant(Look({}), spec["api"], spec["dir"], secrets,
                                remember=remember)
            try:
                api.run(timeout=5)
            except (ApiError, OSError, ValueError, KeyError) as exc:
                out.append(f"{spec['name']}: its API: {exc}")
            out.extend(f"{spec['name']}: {c}" for c in api.changes)
        if out:
            return out
    return out


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "dict", "required": True},
            "daemon_options": {"type": "dict", "default": {}},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    try:
        found = pending(p["state"], p["daemon_options"] or {}, p["secrets"] or {},
                        remember=not module.check_mode)
    except NotConverged as exc:
        found = [str(exc)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        found = [f"the check could not finish: {type(exc).__name__}: {exc}"]
    module.exit_json(changed=False, converged=not found, pending=[str(x) for x in found])


if __name__ == "__main__":
    main()
