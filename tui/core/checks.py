"""The checks after a deploy, driven by the manifests: which stack gets which check is declared
in its manifest (``checks:``), and the wiring comes from the resolved bindings, so a broker on
one host and Home Assistant on another are checked together. No code here names a service.

Every connection to a deployed service goes through ``endpoints(site, host, ports)``, which
gives the address and port this machine reaches a service port of a host at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tui.core import events, paths, resolve, verify

if TYPE_CHECKING:
    from tui.core.site import Site


def _deployed_file(site: Site):
    return paths.config_home() / "runs" / site.site_id / "deployed.json"


def deployed_hosts(site: Site) -> set[str]:
    try:
        return set(json.loads(_deployed_file(site).read_text()))
    except (OSError, ValueError, TypeError):
        return set()


def mark_deployed(site: Site, hosts: list[str]) -> None:
    file = _deployed_file(site)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(sorted(deployed_hosts(site) | set(hosts))))


def host_variables(site: Site, name: str) -> dict:
    """A host's inventory variables as Ansible's INI parser reads them (its groups' vars, then
    its own), with abri's known hosts file: what the tunnel needs to reach it as Ansible does."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    from tui.core import inventory

    inventory._init_ansible()
    manager = InventoryManager(loader=DataLoader(), sources=[str(site.path / "inventory.ini")])
    host = manager.get_host(name)
    variables: dict = {}
    if host is not None:
        for group in sorted(host.get_groups(), key=lambda g: g.depth):
            variables.update(group.get_vars())
        variables.update(host.get_vars())
    return variables


class Endpoints:
    """One SSH tunnel per host (opened on first use, with every service port of the host's
    stacks), shared by all checks of a run; closed with the context."""

    def __init__(self, site: Site):
        self.site = site
        self.stack = contextlib.ExitStack()
        self.open: dict[str, dict[int, tuple[str, int]]] = {}

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def ports_of(self, name: str) -> list[int]:
        ports = set()
        for stack in self.site.hosts[name].stacks:
            if stack in self.site.catalog:
                values = _values(self.site, name, stack)
                for _port, number in self.site.catalog[stack].active_ports(values):
                    ports.add(number)
        return sorted(ports)

    def get(self, name: str, ports: list[int]) -> dict[int, tuple[str, int]]:
        from tui.core import tunnel

        have = self.open.get(name, {})
        if all(p in have for p in ports):
            return have
        wanted = sorted(set(self.ports_of(name)) | set(ports))
        variables = host_variables(self.site, name)
        known = self.site.path.resolve() / ".abri" / "known_hosts"
        conn = tunnel.Connection.from_ansible_vars(variables, name=name,
                                                   base_dir=self.site.path.resolve())
        if not conn.local:
            conn = dataclasses.replace(
                conn, known_hosts_file=str(known),
                ssh_args=("-o", "StrictHostKeyChecking=accept-new", *conn.ssh_args))
        forwards = self.stack.enter_context(tunnel.forward(conn, wanted))
        self.open[name] = dict(forwards)
        return self.open[name]


_current: list[Endpoints] = []


@contextlib.contextmanager
def endpoints(site: Site, host_name: str, ports: list[int]
              ) -> Iterator[dict[int, tuple[str, int]]]:
    """Where this machine reaches each service port of a host: through the host's own SSH
    connection (one tunnel per host and run), or directly for this machine."""
    if _current and _current[-1].site is site:
        yield _current[-1].get(host_name, ports)
        return
    with Endpoints(site) as ep:
        _current.append(ep)
        try:
            yield ep.get(host_name, ports)
        finally:
            _current.pop()


@contextlib.contextmanager
def session(site: Site) -> Iterator[Endpoints]:
    """Share the tunnels of every check inside the block."""
    with Endpoints(site) as ep:
        _current.append(ep)
        try:
            yield ep
        finally:
            _current.pop()


def _values(site: Site, host: str, stack: str) -> dict:
    return dict(site.catalog[stack].defaults()) | dict(site.hosts[host].stacks.get(stack) or {})


def _stacks_with(site: Site, check: str) -> list[tuple[str, str]]:
    return [(h.name, s) for h in site.hosts.values() for s in h.stacks
            if s in site.catalog and check in site.catalog[s].checks]


def _broker(site: Site, links, host: str, stack: str):
    """(admin password, port, [(user, password)]) of a provider with accounts."""
    manifest = site.catalog[stack]
    acc = manifest.accounts or {}
    values = _values(site, host, stack)
    admin = (site.secrets.get(host, {}).get(stack) or {}).get(acc.get("admin_secret", ""))
    clients = []
    for b in links:
        if b.provider_host == host and b.provider == stack:
            pw = (site.secrets.get(b.consumer_host, {}).get(b.consumer) or {}).get(
                f"{b.capability}_password")
            if pw:
                clients.append((b.username, pw))
    return admin, int(values.get(acc.get("port_setting", "port"), 0)), clients


def verify_site(site: Site, hosts: list[str]) -> list[tuple[str, list[verify.Check]]]:
    with session(site):
        return _verify_site(site, hosts)


def exposure_checks(site: Site, name: str) -> list[verify.Check]:
    """From where each published port answers, against where it should be reachable from
    (tui.core.exposure): a port meant for the host itself (on loopback, or closed by the
    hardening firewall) that answers from here is a failure; a port closed from here is
    reported, not failed (this machine may sit outside the host's LAN)."""
    from tui.core import exposure, tunnel

    host = site.hosts[name]
    if host.kind == "local":
        return []
    meant_for = {"loopback": "the host only", "closed": "the host only (its firewall closes "
                 "it)", "lan": "the LAN", "public": "the internet"}
    declared: dict[int, tuple[str, str]] = {}
    for stack in host.stacks:
        if stack not in site.catalog:
            continue
        for port in exposure.of_stack(site, host, stack):
            declared[port.number] = (f"{stack} {port.name}", port.reach)
    answers = tunnel.exposure(host.service_address, sorted(declared))
    out = []
    for number, (label, reach) in sorted(declared.items()):
        seen = answers.get(number, False)
        where = "answers" if seen else "is closed"
        local = reach in ("loopback", "closed")
        out.append(verify.Check(
            f"exposure {number}/tcp ({label})", not (local and seen),
            f"{host.service_address}:{number} {where} from this machine; declared for "
            f"{meant_for[reach]}"))
    return out


def _verify_site(site: Site, hosts: list[str]) -> list[tuple[str, list[verify.Check]]]:
    links, _ = resolve.bindings(site)
    deployed = deployed_hosts(site)
    reports: list[tuple[str, list[verify.Check]]] = []
    for name in hosts:
        host = site.hosts[name]
        if not host.stacks:
            continue
        if name not in deployed:
            reports.append((name, [verify.Check(
                "deployed", False, "the stacks of this host are not deployed yet (no apply "
                "from this machine finished on it); run 'abri apply' first")]))
            continue
        checks: list[verify.Check] = []
        for stack in host.stacks:
            kinds = site.catalog[stack].checks if stack in site.catalog else ()
            if "mqtt_broker" in kinds:
                checks.extend(_broker_checks(site, links, name, stack))
            if "homeassistant" in kinds:
                checks.extend(_homeassistant_checks(site, links, name, stack))
            if "http" in kinds:
                checks.append(_http_check(site, name, stack))
            if "heartbeat" in kinds:
                checks.append(_heartbeat_check(site, links, name, stack))
            if "tokens" in kinds:
                checks.extend(_token_checks(site, links, name, stack))
        checks.extend(exposure_checks(site, name))
        from tui.core import remote

        checks.extend(remote.checks(site, name))
        if not checks:
            checks.append(verify.Check("nothing to verify", True,
                                       "no stack with checks on this host"))
        reports.append((name, checks))
    return reports


def _broker_checks(site: Site, links, host: str, stack: str) -> list[verify.Check]:
    admin, port, clients = _broker(site, links, host, stack)
    values = _values(site, host, stack)
    ports = [port] + ([int(values["tls_port"])] if values.get("tls") else [])
    with endpoints(site, host, ports) as ep:
        tls = ep[ports[1]] if len(ports) > 1 else None
        return verify.broker_checks(*ep[port], admin, clients, tls=tls)


def _homeassistant_checks(site: Site, links, host: str, stack: str) -> list[verify.Check]:
    manifest = site.catalog[stack]
    values = _values(site, host, stack)
    api = manifest.api or {}
    port = int(values[api.get("port_setting", "port")])
    ha_secrets = dict(site.secrets.get(host, {}).get(stack) or {})
    mqtt = next((b for b in links if b.consumer_host == host and b.consumer == stack
                 and b.capability in (api.get("integrations") or {}).values()), None)
    with endpoints(site, host, [port]) as ep:
        if mqtt is None:
            return verify._homeassistant_checks(*ep[port], values, ha_secrets, None, None, None,
                                                10.0, 60.0)
        admin, mqtt_port, _ = _broker(site, links, mqtt.provider_host, mqtt.provider)
        with endpoints(site, mqtt.provider_host, [mqtt_port]) as mep:
            address, local_port = mep[mqtt_port]
            return verify._homeassistant_checks(*ep[port], values, ha_secrets, admin, address,
                                                local_port, 10.0, 60.0)


def _http_check(site: Site, host: str, stack: str) -> verify.Check:
    """The stack's health check path answers 200 (a GET from this machine, through the
    host's tunnel)."""
    hc = site.catalog[stack].healthcheck
    port = int(_values(site, host, stack)[hc["port_setting"]])
    with endpoints(site, host, [port]) as ep:
        address, local_port = ep[port]
        return verify.http_check(f"{stack} answers http GET {hc['path']} on port {port}",
                                 address, local_port, hc["path"])


def _heartbeat_check(site: Site, links, host: str, stack: str) -> verify.Check:
    """The message the stack publishes by itself (manifest: heartbeat) reaches the broker it
    is wired to, on its account's topic, within the declared seconds. The broker's admin
    watches; the acl lets only the stack's account (and the admin) write there."""
    beat = site.catalog[stack].heartbeat or {}
    cap = beat.get("capability", "")
    wire = next((b for b in links if b.consumer_host == host and b.consumer == stack
                 and b.capability == cap), None)
    if wire is None:
        return verify.Check(f"{stack} heartbeat", False, f"{stack} is wired to no {cap} "
                            "provider")
    topic = beat["topic"].replace("{user}", wire.username)
    name = f"{stack} publishes on {topic} as its own user"
    accounts = site.catalog[wire.provider].accounts or {}
    admin, port, _ = _broker(site, links, wire.provider_host, wire.provider)
    if not admin:
        return verify.Check(name, False, f"no admin password of {wire.provider} on "
                            f"'{wire.provider_host}' in the secrets")
    with endpoints(site, wire.provider_host, [port]) as ep:
        address, local_port = ep[port]
        return verify.heartbeat_check(name, address, local_port,
                                      accounts.get("admin_user", verify.ADMIN_USER), admin,
                                      topic, float(beat["within"]), owner=wire.username)


def _token_checks(site: Site, links, host: str, stack: str) -> list[verify.Check]:
    """For every use of this stack whose provider's API minted it an access token
    (manifest: api.client_tokens), the token as the vault (and so the stack's .env) holds it
    is accepted by the provider's API, and a wrong one is refused."""
    out = []
    for b in links:
        if b.consumer_host != host or b.consumer != stack or not resolve.mints_tokens(site, b):
            continue
        api = site.catalog[b.provider].api or {}
        port = int(_values(site, b.provider_host, b.provider)[api["port_setting"]])
        token = (site.secrets.get(host, {}).get(stack) or {}).get(resolve.token_key(
            b.capability))
        name = f"{stack}'s token for {b.provider} on {b.provider_host} is accepted"
        with endpoints(site, b.provider_host, [port]) as ep:
            out.extend(verify.token_check(name, *ep[port], token))
    return out


def store_tokens(site: Site, hosts: list[str], minted: set[str] | None = None,
                 wanted: list[str] | None = None) -> list[events.Failure]:
    """Every host with an API of kind homeassistant keeps a long-lived token in its vault,
    for the checks, and every client of its capability (manifest: api.client_tokens) one of
    its own, named after the client, in the client stack's vault (minted once, replaced only
    when no longer accepted; the token it replaces is revoked). The hosts whose stacks were
    given a new token are added to ``minted``: their stacks must converge again. `hosts`
    are marked deployed; the tokens of `wanted` (default: all of them) are checked or minted,
    and the time of a check that succeeded is kept (.abri/tokens-checked.json)."""
    mark_deployed(site, hosts)
    wanted = hosts if wanted is None else wanted
    if not wanted:
        return []
    with session(site):
        failures = _store_tokens(site, wanted, minted if minted is not None else set())
    failed = {f.host for f in failures}
    _mark_checked(site, [h for h in wanted if h not in failed])
    return failures


def _token_stacks(site: Site, name: str) -> list[tuple[str, object]]:
    """The stacks of a host whose API is of kind homeassistant, with their manifests."""
    found = []
    for stack in site.hosts[name].stacks:
        manifest = site.catalog.stacks.get(stack)
        if manifest and manifest.api and manifest.api.get("kind") == "homeassistant":
            found.append((stack, manifest))
    return found


TOKENS_RECHECK = 24 * 3600  # seconds after which an untouched host's tokens are checked again


def _checked_file(site: Site):
    return site.path / ".abri" / "tokens-checked.json"


def _checked_at(site: Site) -> dict[str, float]:
    try:
        data = json.loads(_checked_file(site).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _mark_checked(site: Site, hosts: list[str]) -> None:
    if not hosts:
        return
    data = _checked_at(site)
    data.update({h: time.time() for h in hosts})
    file = _checked_file(site)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    tmp.replace(file)


def due_for_tokens(site: Site, hosts: list[str], changed: set[str] | None) -> list[str]:
    """The hosts among `hosts` whose API tokens (the checks' and its clients') must be checked
    or minted after an apply: a token is missing, the run changed the host or a client of
    it (None: changed everything), or its tokens were last checked over a day ago."""
    links, _ = resolve.bindings(site)
    checked = _checked_at(site)
    now = time.time()
    due = []
    for name in hosts:
        for stack, _manifest in _token_stacks(site, name):
            clients = [b for b in links if b.provider_host == name and b.provider == stack
                       and resolve.mints_tokens(site, b)]
            missing = not site.secrets.get(name, {}).get(stack, {}).get(resolve.CHECK_TOKEN) or any(
                not site.secrets.get(b.consumer_host, {}).get(b.consumer, {}).get(
                    resolve.token_key(b.capability)) for b in clients)
            touched = changed is None or name in changed or any(
                b.consumer_host in changed for b in clients)
            if missing or touched or now - checked.get(name, 0.0) > TOKENS_RECHECK:
                due.append(name)
                break
    return due


def _store_tokens(site: Site, hosts: list[str], minted: set[str]) -> list[events.Failure]:
    failures = []
    links, _ = resolve.bindings(site)
    for name in hosts:
        for stack, manifest in _token_stacks(site, name):
            values = _values(site, name, stack)
            port = int(values[manifest.api["port_setting"]])
            secrets = site.secrets.setdefault(name, {}).setdefault(stack, {})
            owner = values.get(manifest.api.get("owner_user_setting", ""), "owner")
            password = secrets.get(manifest.api.get("owner_secret", ""))
            wanted = [(resolve.CHECK_TOKEN, secrets, "abri " + time.strftime("%Y-%m-%d %H:%M:%S"),
                       "Store a long-lived Home Assistant token (for the checks)", None)]
            for b in links:
                if b.provider_host == name and b.provider == stack and \
                        resolve.mints_tokens(site, b):
                    wanted.append((resolve.token_key(b.capability),
                                   site.secrets.setdefault(b.consumer_host, {}).setdefault(
                                       b.consumer, {}), resolve.token_client_name(b),
                                   f"Mint {b.consumer} on {b.consumer_host} its access token",
                                   b.consumer_host))
            for key, store, client_name, task, client_host in wanted:
                try:
                    with endpoints(site, name, [port]) as ep:
                        token, new = verify.ensure_access_token(
                            *ep[port], owner, password, store.get(key), client_name)
                except Exception as exc:  # a check never crashes a deploy
                    failures.append(events.Failure(
                        name, task, f"{exc}; the deploy converged, the checks that need the "
                        "token will say so. Run 'abri verify' once the host answers"
                        + (", and 'abri apply' again" if client_host else "")))
                    continue
                store[key] = token
                if new and client_host:
                    minted.add(client_host)
    return failures


# ------------------------------------------------------------------ upgrades
#: where the retained message of an upgrade's gate is left (the admin's topic space)
UPGRADE_TOPIC = "abri/upgrade/"


def _owner_login(site: Site, host: str, stack: str) -> tuple[int, str, str | None]:
    """(API port, owner user name, owner password) of a stack whose API has an owner."""
    values = _values(site, host, stack)
    api = site.catalog[stack].api or {}
    port = int(values[api.get("port_setting", "port")])
    owner = values.get(api.get("owner_user_setting", "owner_username"), "owner")
    password = (site.secrets.get(host, {}).get(stack) or {}).get(
        api.get("owner_secret", "owner_password"))
    return port, owner, password


def upgrade_before(site: Site, host: str, stack: str) -> dict:
    """What an upgrade of stack on host must keep, read before it, by the stack's check
    kinds: Home Assistant's config entries; a retained message left on a broker."""
    import secrets as _random

    kinds = site.catalog[stack].checks
    out: dict = {}
    with session(site):
        if "homeassistant" in kinds:
            port, owner, password = _owner_login(site, host, stack)
            with endpoints(site, host, [port]) as ep:
                out["homeassistant"] = verify.homeassistant_facts(*ep[port], owner, password)
        if "mqtt_broker" in kinds:
            links, _ = resolve.bindings(site)
            admin, port, _ = _broker(site, links, host, stack)
            topic = UPGRADE_TOPIC + _random.token_hex(6)
            payload = _random.token_hex(8)
            with endpoints(site, host, [port]) as ep:
                left = verify.retain_message(*ep[port], verify.ADMIN_USER, admin or "", topic,
                                             payload.encode())
            if not left.ok:
                raise OSError(f"{stack} on {host}: {left.detail}")
            out["mqtt_broker"] = {"topic": topic, "payload": payload}
    return out


def upgrade_gate(site: Site, host: str, stack: str, before: dict, version: str,
                 settle: float = 120.0) -> list[verify.Check]:
    """After an upgrade: what upgrade_before read still holds (Home Assistant at version
    with no config entry worse off; the retained message delivered), then every check of
    the host (verify)."""
    kinds = site.catalog[stack].checks
    checks: list[verify.Check] = []
    with session(site):
        if "homeassistant" in kinds and "homeassistant" in before:
            port, owner, password = _owner_login(site, host, stack)
            with endpoints(site, host, [port]) as ep:
                checks += verify.homeassistant_gate(*ep[port], owner, password,
                                                    before["homeassistant"], version,
                                                    settle=settle)
        if "mqtt_broker" in kinds and "mqtt_broker" in before:
            links, _ = resolve.bindings(site)
            admin, port, _ = _broker(site, links, host, stack)
            left = before["mqtt_broker"]
            with endpoints(site, host, [port]) as ep:
                checks.append(verify.retained_check(*ep[port], verify.ADMIN_USER, admin or "",
                                                    left["topic"], left["payload"].encode()))
        for _name, found in _verify_site(site, [host]):
            checks.extend(found)
    return checks
