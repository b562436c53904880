#!/usr/bin/python
"""abri's lock-out guard: a new SSH session as the admin user, from the controller."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_login
short_description: Prove that a new SSH session as a user works before sshd is tightened
description:
  - Runs on the controller (C(delegate_to: localhost)). Opens a new SSH session (no
    ControlMaster socket of the play) to the host with the user and key given and the same
    connection settings Ansible uses for it (I(ssh_args) from ansible.cfg,
    I(common_args), I(extra_args)), keys only (BatchMode, no password), and runs
    C(sudo -n true) there: the user can log in and become root without a password.
  - Fails, naming the user, the key and ssh's own error, when it cannot; the playbook then
    stops before root login and passwords are switched off.
  - Changes nothing (changed is always false).
options:
  host:
    description: Address of the host (ansible_host).
    type: str
    required: true
  port:
    description: SSH port.
    type: int
    default: 22
  user:
    description: The user to log in as.
    type: str
    required: true
  key:
    description: Private key file (ansible_ssh_private_key_file); empty for ssh's own.
    type: str
    default: ""
  ssh_args:
    description: The ssh connection plugin's ssh_args (ansible.cfg).
    type: str
    default: ""
  common_args:
    description: ansible_ssh_common_args.
    type: str
    default: ""
  extra_args:
    description: ansible_ssh_extra_args.
    type: str
    default: ""
  chdir:
    description: Folder relative paths in the arguments are read from (the site's).
    type: str
    default: ""
  timeout:
    description: Seconds for the whole attempt.
    type: int
    default: 30
author: abri
"""

EXAMPLES = r"""
- name: Log in as the admin user
  abri_login:
    host: 192.0.2.10
    user: abri
    key: ~/.ssh/id_ed25519
  delegate_to: localhost
"""

RETURN = r"""
user:
  description: The user that logged in.
  type: str
  returned: success
"""

import os
import shlex
import subprocess

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "required": True},
            "port": {"type": "int", "default": 22},
            "user": {"type": "str", "required": True},
            "key": {"type": "str", "default": ""},
            "ssh_args": {"type": "str", "default": ""},
            "common_args": {"type": "str", "default": ""},
            "extra_args": {"type": "str", "default": ""},
            "chdir": {"type": "str", "default": ""},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    p = module.params
    # ssh takes the first value of an option: these come before the site's own arguments
    argv = ["ssh", "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
            "-o", "ConnectTimeout=10"]
    if p["key"]:
        argv += ["-o", "IdentitiesOnly=yes", "-i", os.path.expanduser(p["key"])]
    for extra in (p["ssh_args"], p["common_args"], p["extra_args"]):
        argv += shlex.split(extra or "")
    argv += ["-p", str(p["port"]), "-l", p["user"], "--", p["host"], "sudo -n true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=p["timeout"],
                              stdin=subprocess.DEVNULL, cwd=p["chdir"] or None)
    except subprocess.TimeoutExpired:
        module.fail_json(msg=f"lock-out guard: a new SSH session as {p['user']} to "
                         f"{p['host']}:{p['port']} did not finish within {p['timeout']} s; "
                         "nothing was switched off (root login and passwords still work)")
    except OSError as exc:
        module.fail_json(msg=f"lock-out guard: ssh could not be started: {exc}")
    if proc.returncode != 0:
        said = " ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"
        module.fail_json(msg=f"lock-out guard: a new SSH session as the admin user "
                         f"{p['user']} with the key {p['key'] or '(ssh defaults)'} to "
                         f"{p['host']}:{p['port']} failed ({said}); nothing was switched "
                         "off: root login and passwords still work. Give the host the key "
                         "abri reaches it with (abri host set NAME --key PATH, its .pub "
                         "next to it) and apply again")
    module.exit_json(changed=False, user=p["user"])


if __name__ == "__main__":
    main()
