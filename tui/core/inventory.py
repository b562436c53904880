"""Hosts and host kinds in inventory.ini: read with Ansible's own INI parser, written as INI.

abri owns the block between the BEGIN/END marker lines and rewrites only that; whatever a
user adds outside it (their own groups, hosts, comments) is kept as it was.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tui.core.errors import Problem, SiteError

KINDS = ("local", "ssh", "proxmox", "guest", "vps")
TARGET_KINDS = ("local", "ssh", "vps", "guest")  # kinds that get stacks deployed
BEGIN = "# BEGIN abri managed hosts (abri rewrites this block; edit outside it)"
END = "# END abri managed hosts"
HEADER = """\
# abri site inventory. Hosts abri manages are in the block below, grouped by kind
# (abri_local, abri_ssh, abri_vps, abri_guest, abri_proxmox); abri_targets is every host
# that gets stacks. Add your own groups and hosts outside the block: abri keeps them.
"""


@dataclass
class HostEntry:
    """What inventory.ini says about one abri host."""

    name: str
    kind: str
    address: str | None = None
    port: int | None = None
    user: str | None = None
    key: str | None = None
    parent: str | None = None  # guest: the proxmox node that owns it


def parse(path: Path) -> dict[str, HostEntry]:
    """Parse inventory.ini with ansible-core's INI inventory plugin; return abri's hosts.

    Importing Ansible's inventory code costs a good part of a second, on every command: the
    hosts of a file parsed before are kept in abri's cache (machine-local, under the config
    home), keyed by the file's bytes, this parser's source and ansible-core's version, so
    the same file gives the same hosts without the import. A file Ansible refused is never
    cached."""
    import hashlib
    import json

    from tui.core import atomic, paths

    try:
        raw = path.read_bytes()
    except OSError:
        raw = None
    cache = key = None
    if raw is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ansible_version = version("ansible-core")
        except PackageNotFoundError:
            ansible_version = "?"
        key = hashlib.sha256(raw + Path(__file__).read_bytes()
                             + ansible_version.encode()).hexdigest()
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        cache = paths.config_home() / "cache" / f"inventory-{where}.json"
        try:
            kept = json.loads(cache.read_text(encoding="utf-8"))
            if kept.get("key") == key:
                return {h["name"]: HostEntry(**h) for h in kept["hosts"]}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            pass
    hosts = _parse(path)
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_atomic(cache, json.dumps(
                {"key": key, "hosts": [vars(h) for h in hosts.values()]}), 0o600)
        except OSError:
            pass  # a cache that cannot be written is no cache
    return hosts


def _parse(path: Path) -> dict[str, HostEntry]:
    from ansible.errors import AnsibleError
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.inventory.ini import InventoryModule

    _init_ansible()
    plugin = InventoryModule()
    data = InventoryData()
    try:
        plugin.parse(data, DataLoader(), str(path), cache=False)
    except AnsibleError as exc:
        message = str(getattr(exc, "message", exc)).splitlines()[0]
        raise SiteError(Problem(str(path), "", f"Ansible cannot parse it: {message}")) from None
    hosts: dict[str, HostEntry] = {}
    for kind in KINDS:
        group = data.groups.get(f"abri_{kind}")
        if group is None:
            continue
        for host in group.get_hosts():
            if host.name in hosts:
                raise SiteError(Problem(str(path), f"host '{host.name}'",
                                        f"is in two kind groups (abri_{hosts[host.name].kind} "
                                        f"and abri_{kind}); keep it in one"))
            v = host.vars
            port = v.get("ansible_port")
            try:
                port = int(port) if port is not None else None
            except (TypeError, ValueError):
                raise SiteError(Problem(str(path), f"host '{host.name}', ansible_port",
                                        f"{port!r} is not a port number")) from None
            hosts[host.name] = HostEntry(
                name=host.name, kind=kind,
                address=None if kind == "local" else _opt(v.get("ansible_host")),
                port=port, user=_opt(v.get("ansible_user")),
                key=_opt(v.get("ansible_ssh_private_key_file")),
                parent=_opt(v.get("abri_parent")),
            )
    return hosts


_ANSIBLE_READY = False


def _init_ansible() -> None:
    """ansible-core's plugin loader must be set up once before its parsers are used."""
    global _ANSIBLE_READY
    if not _ANSIBLE_READY:
        from ansible.plugins.loader import init_plugin_loader

        init_plugin_loader()
        _ANSIBLE_READY = True


def _opt(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def render_block(hosts: list[HostEntry]) -> str:
    lines = [BEGIN]
    for kind in KINDS:
        lines.append(f"[abri_{kind}]")
        for h in sorted((h for h in hosts if h.kind == kind), key=lambda h: h.name):
            parts = [h.name]
            if h.kind == "local":  # the system's Python: apt and friends need its modules
                parts.append("ansible_connection=local ansible_python_interpreter=/usr/bin/python3")
            if h.address:
                parts.append(f"ansible_host={h.address}")
            if h.port:
                parts.append(f"ansible_port={h.port}")
            if h.user:
                parts.append(f"ansible_user={h.user}")
            if h.key:
                # a path may hold spaces, quotes or '#' (a comment to Ansible's INI parser)
                parts.append(f"ansible_ssh_private_key_file={shlex.quote(h.key)}")
            if h.parent:
                parts.append(f"abri_parent={h.parent}")
            lines.append(" ".join(parts))
        lines.append("")
    lines.append("[abri_targets:children]")
    lines.extend(f"abri_{k}" for k in TARGET_KINDS)
    lines.append(END)
    return "\n".join(lines) + "\n"


def merge(existing: str | None, hosts: list[HostEntry]) -> str:
    """The new inventory.ini text: abri's block replaced, everything else kept."""
    block = render_block(hosts)
    if not existing:
        return HEADER + "\n" + block
    start, end = existing.find(BEGIN), existing.find(END)
    if start < 0 or end < start:
        raise SiteError(Problem("inventory.ini", "", "has no abri block (the BEGIN/END abri "
                                "marker lines); abri only edits inventories it created. "
                                "Start a site with 'abri init' in a new folder"))
    end = existing.find("\n", end)
    tail = "" if end < 0 else existing[end + 1:]
    return existing[:start] + block + tail
