#!/usr/bin/python
"""abri's hardening step: admin user, security upgrades, firewall, then sshd."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_harden
short_description: Harden a host (admin user, security upgrades, firewall, keys-only sshd)
description:
  - I(phase=base) converges an admin user with passwordless sudo and abri's key, Debian's
    (or Ubuntu's) unattended upgrades limited to the security archive, and a default-deny
    inbound firewall in an nftables table of its own (C(table inet abri), loaded by
    C(abri-firewall.service), never a C(flush ruleset)) that also filters the forward path,
    so ports Docker publishes are closed unless listed in I(hardening.open). It opens SSH
    (I(hardening.ssh_port) and every port sshd listens on) and the open ports only.
    It returns I(sshd_pending) when the sshd drop-in is not in place yet.
  - I(phase=sshd) installs the sshd drop-in (keys only, no root login, no passwords, local
    forwards only, OpenSSH's own key exchange defaults) after C(sshd -t) accepted the whole
    configuration with it, reloads sshd and checks its effective settings. The playbook runs
    it only after a new SSH session as the admin user succeeded (abri_login).
  - Idempotent; check mode reports what would change.
options:
  hardening:
    description: The host's abri_state.hardening (admin_user, admin_keys, ssh_port, open).
    type: dict
    required: true
  phase:
    description: base or sshd.
    type: str
    default: base
    choices: [base, sshd]
  connect_user:
    description: The user abri connects as now; its authorized_keys go to the admin user
      when I(hardening.admin_keys) is empty.
    type: str
    default: ""
author: abri
"""

EXAMPLES = r"""
- name: Harden the host
  abri_harden:
    hardening: "{{ abri_state.hardening }}"
  register: abri_hardened
"""

RETURN = r"""
changes:
  description: What changed, one line each.
  type: list
  returned: always
sshd_pending:
  description: The sshd drop-in is not installed yet (phase base).
  type: bool
  returned: always
switched:
  description: sshd was tightened in this call (phase sshd): reach the host as admin_user.
  type: bool
  returned: always
admin_user:
  description: The admin user (phase sshd; the playbook and abri reach the host as it).
  type: str
  returned: always
"""

from ansible.module_utils.abri_harden_core import Harden, distro
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "hardening": {"type": "dict", "required": True},
            "phase": {"type": "str", "default": "base", "choices": ["base", "sshd"]},
            "connect_user": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    p = module.params
    spec = p["hardening"]
    for key in ("admin_user",):
        if not spec.get(key):
            module.fail_json(msg=f"hardening.{key} is missing")
    h = Harden(module, spec, p["connect_user"])
    name = distro()
    if name == "?":
        module.fail_json(msg="hardening supports Debian and Ubuntu only; nothing was changed")
    with host_lock(module, "harden"):
        if p["phase"] == "base":
            h.packages(name)
            h.admin()
            h.upgrades(name)
            if module.check_mode:
                h.firewall_check()
            h.firewall()
            pending = h.sshd_pending()
        else:
            h.sshd()
            pending = False
    module.exit_json(changed=bool(h.changes), changes=h.changes, sshd_pending=pending,
                     switched=p["phase"] == "sshd" and bool(h.changes) and not module.check_mode,
                     admin_user=spec["admin_user"],
                     diff={"before": "", "after": "".join(f"{c}\n" for c in h.changes)})


if __name__ == "__main__":
    main()
