"""Where each published port of a host can be reached from: the exposure a manifest declares
(lan, local, public) made concrete for one host, from the stack's settings, the host's kind
and its hardening.

One place for every consumer: the ports the hardening firewall opens
(tui.core.resolve.hardening_state), the exposure checks of verify (tui.core.checks) and the
installer's port columns. The rules, as the kit binds and filters today:

- a port declared ``local``, or whose stack's ``loopback_setting`` is ``loopback``, is bound
  to 127.0.0.1: ``loopback``, reachable from the host only, never opened by the firewall;
- any other port is bound to every address of the host. On a hardened host abri's firewall
  opens it when the host opens its exposure (a vps: ``public`` only; another host: ``public``
  and ``lan``), else it is ``closed`` to everything outside the host;
- what is bound to every address of a vps and not closed is reachable from the internet:
  ``public`` (a vps has no LAN), whatever the manifest declared. Elsewhere it is what the
  manifest declared: ``lan``, or ``public`` (from the internet only where the router forwards
  it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: what the firewall of a hardened host opens, by host kind (any other kind: the second)
OPENED = {"vps": ("public",)}
OPENED_DEFAULT = ("public", "lan")


@dataclass(frozen=True)
class PortExposure:
    stack: str
    name: str  # the manifest's name of the port (mqtt, http)
    number: int
    protocol: str
    purpose: str
    declared: str  # the manifest's exposure: lan, local or public
    #: loopback (127.0.0.1), lan, public, or closed (bound to every address, but the
    #: hardening firewall drops what comes from outside)
    reach: str
    #: hardened host only: whether its firewall opens the port
    opened: bool
    #: reachable from the internet (a vps port that is neither on loopback nor closed)
    internet: bool

    @property
    def label(self) -> str:
        """Short form for a table cell: 1883/tcp lan."""
        return f"{self.number}/{self.protocol} {self.reach}"

    def sentence(self, host: Any) -> str:
        """What the reach means on this host, in words, with the way to change it."""
        where = "this machine" if host.kind == "local" else host.name
        port = f"{self.number}/{self.protocol}"
        if self.reach == "loopback":
            return f"{port} loopback: bound to 127.0.0.1 of {where}; only the host itself " \
                   "reaches it"
        if self.reach == "closed":
            return (f"{port} closed: bound to every address of {where}, but its hardening "
                    f"firewall drops connections from outside (a {host.kind} host opens only "
                    f"{' and '.join(OPENED.get(host.kind, OPENED_DEFAULT))} ports)")
        if self.internet:
            why = ("declared public" if self.declared == "public" else
                   f"declared {self.declared}, but a vps has no LAN"
                   + ("" if host.hardened else " and its hardening is off"))
            return (f"{port} public: reachable from the INTERNET on every address of {where} "
                    f"({why})")
        if self.reach == "public":
            return (f"{port} public: bound to every address of {where}; reachable from the "
                    "internet where your router forwards it")
        return f"{port} lan: bound to every address of {where}; its LAN reaches it"


def of_stack(site: Any, host: Any, stack: str, values: dict[str, Any] | None = None
             ) -> list[PortExposure]:
    """The published ports of one stack on host, with its settings (the host's, or values)."""
    manifest = site.catalog[stack]
    if values is None:
        values = host.stacks.get(stack) or {}
    values = {**manifest.defaults(), **values}
    hardened = host.hardened and host.kind != "local"
    opened_kinds = OPENED.get(host.kind, OPENED_DEFAULT)
    out = []
    for port, number in manifest.active_ports(values):
        loopback = port.exposure == "local" or (
            port.loopback_setting is not None
            and values.get(port.loopback_setting) == "loopback")
        opened = hardened and not loopback and port.exposure in opened_kinds
        if loopback:
            reach = "loopback"
        elif hardened and not opened:
            reach = "closed"
        elif host.kind == "vps":
            reach = "public"
        else:
            reach = port.exposure
        out.append(PortExposure(stack, port.name, number, port.protocol, port.purpose,
                                port.exposure, reach, opened,
                                internet=host.kind == "vps" and reach == "public"))
    return out


def of_host(site: Any, host: Any) -> list[PortExposure]:
    """Every published port of host, its stacks in deploy order."""
    names = site.catalog.ordered([s for s in host.stacks if s in site.catalog])
    return [p for name in names for p in of_stack(site, host, name)]
