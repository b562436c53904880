"""Ansible filters over abri's resolved state (host_vars abri_state).

``{{ stack | abri_secrets(hostvars) }}`` collects every secret reference in one stack of the
state (values of keys ending in ``_ref``, written ``host/stack/key``) and looks each up in that
host's vault variables (``abri_secrets``). The result goes to the kit modules' no_log
``secrets`` option; references to hosts outside the run (a broker on another host) resolve
too, because hostvars holds every host of the inventory.
"""

from __future__ import annotations

import base64

from ansible.errors import AnsibleFilterError


def _refs(value, found):
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).endswith("_ref"):
                if isinstance(item, str) and item:
                    found.add(item)
                elif isinstance(item, dict):
                    found.update(v for v in item.values() if isinstance(v, str) and v)
            else:
                _refs(item, found)
    elif isinstance(value, list):
        for item in value:
            _refs(item, found)
    return found


def abri_secrets(stack, hostvars):
    """Secret values by reference for one stack of abri_state."""
    out = {}
    for ref in sorted(_refs(stack, set())):
        host, _, rest = ref.partition("/")
        name, _, key = rest.partition("/")
        try:
            vault = hostvars[host].get("abri_secrets") or {}
        except KeyError:
            raise AnsibleFilterError(f"secret {ref}: no host {host!r} in the inventory") from None
        value = (vault.get(name) or {}).get(key)
        if not value:
            raise AnsibleFilterError(
                f"secret {ref} is missing from host_vars/{host}/vault.yml; run abri (any "
                "command that saves the site) to generate it")
        out[ref] = str(value)
    return out


def abri_sftp_servers(backup, source=None):
    """The SFTP servers of a backup run that are hosts of the site (the host's own
    repository and the source it reads or writes), once each."""
    out = []
    for access in (backup or {}, source or {}):
        server = access.get("sftp") if isinstance(access, dict) else None
        if server and server.get("site_host") and server not in out:
            out.append(server)
    return out


def abri_host_keys(results):
    """ADDRESS-PORT -> [host key line] from slurped ssh_host_*_key.pub files."""
    out = {}
    for r in results or []:
        if not isinstance(r, dict) or "content" not in r:
            continue
        server = r.get("item") or {}
        line = base64.b64decode(r["content"]).decode("utf-8", "replace").strip()
        out.setdefault(f"{server['address']}-{int(server['port'])}", []).append(line)
    return out


class FilterModule:
    """abri's state filters."""

    def filters(self):
        return {"abri_secrets": abri_secrets, "abri_sftp_servers": abri_sftp_servers,
                "abri_host_keys": abri_host_keys}
