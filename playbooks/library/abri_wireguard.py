#!/usr/bin/python
"""abri's WireGuard step: the remote-access tunnel between a vps and the home hosts."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_wireguard
short_description: Converge abri's WireGuard tunnel interface (wg-quick)
description:
  - Installs Debian's wireguard-tools, and wireguard-go (the userspace implementation) when
    the kernel makes no WireGuard device; writes /etc/wireguard/INTERFACE.conf (mode 0600,
    the private key from the vault) and enables and starts wg-quick@INTERFACE, restarting it
    when the configuration changed.
  - Idempotent (changed=false when converged); check mode reports what would change. The
    private key is never printed (no_log option, diffs show it masked).
options:
  wireguard:
    description: The host's abri_state.wireguard (interface, address, listen_port,
      private_key_ref, peers with name, public_key, allowed_ips, endpoint, keepalive).
    type: dict
    required: true
  secrets:
    description: Secret values by reference (the private key).
    type: dict
    default: {}
author: abri
"""

EXAMPLES = r"""
- name: Converge the remote-access tunnel
  abri_wireguard:
    wireguard: "{{ abri_state.wireguard }}"
    secrets: "{{ abri_state.wireguard | abri_secrets(hostvars) }}"
"""

RETURN = r"""
changes:
  description: What changed, one line each.
  type: list
  returned: always
"""

from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.abri_wireguard_core import WireGuard
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec={
            "wireguard": {"type": "dict", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    spec = module.params["wireguard"]
    for key in ("interface", "address", "private_key_ref"):
        if not spec.get(key):
            module.fail_json(msg=f"wireguard.{key} is missing")
    key = (module.params["secrets"] or {}).get(spec["private_key_ref"])
    if not key:
        module.fail_json(msg=f"wireguard: the secret {spec['private_key_ref']} is missing from "
                         "the site's vault (run abri once to generate it)")
    wg = WireGuard(module, spec, key)
    with host_lock(module, "wireguard"):
        changes = wg.converge()
    result = {"changed": bool(changes), "changes": changes}
    if wg.diff is not None:
        result["diff"] = wg.diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
