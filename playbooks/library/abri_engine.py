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
    stopped, never brought down (its containers and data stay), and nothing starts it
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

from ansible.module_utils.abri_engine_core import engine, os_release, supported
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.basic import AnsibleModule


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
    distro, version, refused = supported(os_release())
    if refused:
        module.fail_json(msg=refused, unsupported=True)
    with host_lock(module, "abri_engine"):
        changes = engine(module, distro, version)
    module.exit_json(changed=bool(changes), changes=changes,
                     distribution=f"{distro} {version}")


if __name__ == "__main__":
    main()
