#!/usr/bin/python
"""abri's stack module: converge one Compose stack on a host in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_stack
short_description: Converge one abri stack (files, accounts, Compose project, health) at once
description:
  - Takes one stack of the resolved desired state that abri writes into the site
    (C(abri_state.stacks[]) in host_vars) and makes the host match it in a single pass.
  - Directories and files are compared by checksum and written atomically only when they
    differ. C(managed) files are restored when changed by hand (reported as changed);
    C(seed) files are written once and then belong to the user.
  - The account file (a broker's users) is rendered on the host; an existing line is kept
    while its hash still verifies the password, so a second run writes nothing.
  - C(docker compose up) runs only when compose.yml changed, a container is missing or not
    running; a container of the project left half-made (state created or dead, e.g. by an
    interrupted run) is removed first. When only a file the service reads at start changed,
    the project is restarted.
  - Finally the health check proves the service answers (HTTP 200, an MQTT CONNACK 0 as the
    admin user, or a TCP accept), waiting up to its timeout.
  - With I(state=absent) the project is brought down and its data kept.
  - Works while holding the host's abri lock (C(/run/lock/abri.lock)), so that one abri
    module at a time changes the host; a module of an interrupted earlier run that is
    still at work there (it runs on to its end) is waited for, with a warning.
  - Check mode reports what would change; diff mode shows file differences (never those of
    files holding secrets).
options:
  stack:
    description: One entry of abri_state.stacks (name, project, dir, image, dirs, files,
      certificates, accounts, env, health).
    type: dict
    required: true
  secrets:
    description: Secret values by reference (C(host/stack/key)), from the abri_secrets filter.
    type: dict
    default: {}
  state:
    description: present, or absent (bring the project down, data kept).
    type: str
    default: present
    choices: [present, absent]
  wait:
    description: Run the health check.
    type: bool
    default: true
  health_timeout:
    description: Seconds the health check may take, instead of the manifest's (0 keeps
      the manifest's); C(abri upgrade --timeout) sets it for its health gate.
    type: int
    default: 0
  pull:
    description: When C(docker compose up) pulls an image - C(missing) (Compose's default)
      or C(never), for hosts whose images come from an image bundle (a missing image is
      then an error, never a pull).
    type: str
    default: missing
    choices: [missing, never]
author: abri
"""

EXAMPLES = r"""
- name: Converge a stack
  abri_stack:
    stack: "{{ item }}"
    secrets: "{{ item | abri_secrets(hostvars) }}"
  loop: "{{ abri_state.stacks }}"
"""

RETURN = r"""
changes:
  description: What changed and why, one line each.
  type: list
  returned: always
bootstrap:
  description: True when the stack runs its bootstrap files (API setup not done yet).
  type: bool
  returned: always
"""

from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.abri_stack_core import Stack
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "stack": {"type": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
            "wait": {"type": "bool", "default": True},
            "health_timeout": {"type": "int", "default": 0},
            "pull": {"type": "str", "default": "missing", "choices": ["missing", "never"]},
        },
        supports_check_mode=True,
    )
    stack = Stack(module, module.params["stack"], module.params["secrets"] or {},
                  wait=module.params["wait"],
                  health_timeout=module.params["health_timeout"],
                  pull=module.params["pull"])
    bootstrap = False
    with host_lock(module, f"abri_stack {module.params['stack'].get('name')}"):
        if module.params["state"] == "present":
            bootstrap = stack.present()
        else:
            stack.absent()
    result = {"changed": bool(stack.changes), "changes": stack.changes, "bootstrap": bootstrap,
              "stack": module.params["stack"]["name"]}
    if stack.diffs:
        result["diff"] = stack.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
