#!/usr/bin/python
"""abri's API module: configure a service through its own API, from the host itself."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_api
short_description: Configure a deployed service through its API (onboarding, entries)
description:
  - Runs on the host and talks to the service on the host's loopback, so it works whatever
    the network between controller and host allows.
  - For kind C(homeassistant), in one call, headless onboarding (owner account, core config,
    analytics off, integration step) when still open; the config entries the onboarding
    itself makes that call outside services removed right after onboarding (entries the user
    adds later are theirs); each wanted integration (e.g. the MQTT entry made from the broker
    the stack is wired to) created, and re-created when its broker, port, user or password
    changed (abri keeps a fingerprint, never the password, in the stack's .abri folder).
  - When the owner password was changed in the site, the old one (kept as the secret's
    C(_previous)) logs in and Home Assistant's password is changed to the new one.
  - Does nothing (changed=false) when all is as wanted. Check mode reports what it would do
    and changes nothing.
  - Works while holding the host's abri lock (C(/run/lock/abri.lock)), so that one abri
    module at a time changes the host; a module of an interrupted earlier run that is
    still at work there (it runs on to its end) is waited for, with a warning.
options:
  api:
    description: The api entry of one stack of abri_state (kind, port, owner, integrations).
    type: dict
    required: true
  dir:
    description: The stack's directory on the host (for the .abri state folder).
    type: str
    required: true
  secrets:
    description: Secret values by reference (C(host/stack/key)).
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for the API to answer.
    type: int
    default: 600
author: abri
"""

EXAMPLES = r"""
- name: Configure through the API
  abri_api:
    api: "{{ item.api }}"
    dir: "{{ item.dir }}"
    secrets: "{{ item | abri_secrets(hostvars) }}"
"""

RETURN = r"""
changes:
  description: What changed and why.
  type: list
  returned: always
bootstrap_done:
  description: True when this call finished the API setup (the stack can leave bootstrap).
  type: bool
  returned: always
"""

import os

from ansible.module_utils.abri_api_core import MARKER, ApiError, HomeAssistant
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "api": {"type": "dict", "required": True},
            "dir": {"type": "str", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    api = module.params["api"]
    if api.get("kind") != "homeassistant":
        module.fail_json(msg=f"abri_api knows no API kind {api.get('kind')!r}")
    directory = module.params["dir"]
    if module.check_mode and not os.path.exists(os.path.join(directory, "compose.yml")):
        module.exit_json(changed=True, changes=["configure through the API once it runs"],
                         bootstrap_done=False)
    ha = HomeAssistant(module, api, directory, module.params["secrets"] or {})
    marker = os.path.join(directory, MARKER)
    done_now = False
    with host_lock(module, f"abri_api {directory}"):
        try:
            ha.run(module.params["timeout"])
        except (ApiError, OSError, ValueError, KeyError) as exc:
            module.fail_json(msg=f"Home Assistant API: {exc}", changes=ha.changes)
        if not module.check_mode and not os.path.exists(marker):
            os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
            with open(marker, "w", encoding="utf-8") as fh:
                fh.write("API setup done by abri; Home Assistant may now listen on the "
                         "network.\n")
            done_now = True
            ha.changes.append("API setup done: leave the loopback-only start")
    module.exit_json(changed=bool(ha.changes), changes=ha.changes, bootstrap_done=done_now)


if __name__ == "__main__":
    main()
