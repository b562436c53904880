"""The desired state of a site, resolved once on the controller.

For every target host, ``resolve_site`` computes from the manifests and the site what the host
must hold: each stack's settings with their defaults, its image reference (the pin kept in the
site, the registry mirror applied), every file rendered, its accounts, environment and health
check, its API work, and its wiring to the stacks it uses, on the same host or another one
(who is the broker for whom, with which account). Ansible receives this state as data and
converges it with the kit's modules; no Jinja reads a manifest.

Secrets never enter the state: where a value is secret the state holds a reference
``"<host>/<stack>/<key>"`` in a key ending in ``_ref``, and the kit's ``abri_secrets`` filter
resolves references from the hosts' vaults at run time (no_log on the module's side).

Templates are rendered in Jinja's sandbox with StrictUndefined. Every value a user typed goes
through the ``q`` filter (JSON quoting, which YAML reads as a double-quoted string), so a
value renders literally: quotes, backslashes and ``{{ }}`` are data, never syntax.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tui.core import remote
from tui.core.errors import Problem

if TYPE_CHECKING:
    from tui.core.catalog import Stack
    from tui.core.site import Host, Site

#: packages of the Docker engine and the Compose v2 CLI per distribution, from the
#: distribution's own archive. docker-cli is named: docker.io only recommends it on Debian 13.
ENGINE_PACKAGES = {
    "Debian": ["docker.io", "docker-cli", "docker-compose"],
    "Ubuntu": ["docker.io", "docker-compose-v2"],
}


def _q(value: Any) -> str:
    """Quote a value for YAML (and JSON) templates: JSON text, ASCII only."""
    return json.dumps(value, ensure_ascii=True)


def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                        keep_trailing_newline=True, trim_blocks=True,
                                        lstrip_blocks=True)
    env.filters["q"] = _q
    return env


_ENV = None


def render_template(stack: Stack, src: str, context: dict[str, Any]) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    text = (stack.path / src).read_text(encoding="utf-8")
    return _ENV.from_string(text).render(**context)


#: interfaces that are never the LAN: container and VM bridges and their virtual ends
_VIRTUAL = ("docker", "br-", "veth", "virbr", "lxcbr", "lxdbr", "cni", "flannel", "podman",
            "vnet", "tap", "tun", "wg", "zt", "tailscale")


def lan_address() -> str:
    """This machine's LAN address (for a local host's URLs), else loopback: the address of
    the interface the default route leaves by, else the first global IPv4 address outside
    container and VM bridges. Read from the kernel's tables; nothing is sent anywhere."""
    try:
        routes, addrs = (subprocess.run(["ip", "-4", "-o", *args], capture_output=True,
                                        text=True, timeout=5).stdout
                         for args in (["route", "show", "default"],
                                      ["addr", "show", "scope", "global"]))
    except (OSError, subprocess.SubprocessError):
        return "127.0.0.1"
    return pick_lan_address(routes, addrs)


def pick_lan_address(routes: str, addrs: str) -> str:
    """The LAN address from `ip -4 -o route show default` and `ip -4 -o addr show scope
    global` (see lan_address)."""
    found: list[tuple[str, str]] = []  # (interface, address) in the kernel's order
    for line in addrs.splitlines():
        words = line.split()
        if "inet" in words and len(words) > 1:
            addr = words[words.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                found.append((words[1].rstrip(":").split("@")[0], addr))
    for line in routes.splitlines():
        words = line.split()
        if "dev" in words and words.index("dev") + 1 < len(words):
            dev = words[words.index("dev") + 1]
            for interface, addr in found:
                if interface == dev:
                    return addr
    for interface, addr in found:
        if not interface.startswith(_VIRTUAL):
            return addr
    return "127.0.0.1"


@dataclass(frozen=True)
class Binding:
    """A stack's use of a capability: the provider stack it is wired to."""

    capability: str
    consumer_host: str
    consumer: str
    provider_host: str
    provider: str
    username: str


def image_ref(pinned: str, mirror: str) -> str:
    """The pinned upstream reference (registry/repository:tag), the registry replaced by the
    mirror when one is set (the repository path is kept)."""
    if not mirror:
        return pinned
    _, _, rest = pinned.partition("/")
    return f"{mirror}/{rest}"


def bindings(site: Site) -> tuple[list[Binding], list[Problem]]:
    """Wire every use of a capability to a provider: the same host first, else the one host
    of the site that provides it. A capability a stack only wants (manifest: wants) is left
    unwired when no stack of the site provides it; several providers elsewhere are refused
    for it as for a use."""
    out: list[Binding] = []
    problems: list[Problem] = []
    providers: dict[str, list[tuple[str, str]]] = {}
    for host in site.hosts.values():
        for name in host.stacks:
            if name in site.catalog:
                for cap in site.catalog[name].provides:
                    providers.setdefault(cap, []).append((host.name, name))
    for host in site.hosts.values():
        for name in host.stacks:
            if name not in site.catalog:
                continue
            stack = site.catalog[name]
            for cap in (*stack.uses, *stack.wants):
                candidates = providers.get(cap, [])
                local = [c for c in candidates if c[0] == host.name]
                where = f"host '{host.name}', stack '{name}'"
                if local:
                    chosen = local[0]
                elif len(candidates) == 1:
                    chosen = candidates[0]
                elif not candidates and cap in stack.wants:
                    continue  # used when there: this site has none
                elif not candidates:
                    names = site.catalog.providers(cap) or ["(none in the catalog)"]
                    problems.append(Problem(where, "uses", f"needs {cap}, which no stack of "
                                            f"this site provides; add {' or '.join(names)} to "
                                            f"'{host.name}' or another host first"))
                    continue
                else:
                    hosts = ", ".join(sorted(h for h, _ in candidates))
                    problems.append(Problem(where, "uses", f"needs {cap}, which several hosts "
                                            f"provide ({hosts}) and none of them is "
                                            f"'{host.name}'; keep one provider, or put one on "
                                            f"'{host.name}'"))
                    continue
                out.append(Binding(cap, host.name, name, chosen[0], chosen[1], name))
    # account names: the consumer stack's name, or <stack>_<host> where two consumers of
    # the same provider share a stack name
    by_provider: dict[tuple[str, str, str], list[Binding]] = {}
    for b in out:
        by_provider.setdefault((b.provider_host, b.provider, b.capability), []).append(b)
    final: list[Binding] = []
    for group in by_provider.values():
        counts: dict[str, int] = {}
        for b in group:
            counts[b.consumer] = counts.get(b.consumer, 0) + 1
        for b in group:
            user = b.consumer if counts[b.consumer] == 1 else f"{b.consumer}_{b.consumer_host}"
            final.append(Binding(b.capability, b.consumer_host, b.consumer, b.provider_host,
                                 b.provider, user.replace("-", "_")))
    return final, problems


def binding_problems(site: Site, links: list[Binding]) -> list[Problem]:
    """Wiring that cannot work: a provider bound to loopback used from another host."""
    out = []
    for b in links:
        if b.provider_host == b.consumer_host:
            continue
        values = site.hosts[b.provider_host].stacks.get(b.provider) or {}
        if values.get("bind") == "loopback":
            out.append(Problem(f"host '{b.consumer_host}', stack '{b.consumer}'", "uses",
                               f"{b.provider} on '{b.provider_host}' listens on that host's "
                               f"loopback only (bind loopback), so '{b.consumer_host}' cannot "
                               f"reach it; set bind=lan there or add a {b.capability} provider "
                               f"to '{b.consumer_host}'"))
    return out


def _ref(host: str, stack: str, key: str) -> str:
    return f"{host}/{stack}/{key}"


def token_key(capability: str) -> str:
    """The vault key of the access token a provider's API minted for a client stack."""
    return f"{capability}_token"


def token_client_name(b: Binding) -> str:
    """The name a client's access token carries in the provider (unique per client)."""
    return f"abri: {b.consumer} on {b.consumer_host}"


def mints_tokens(site: Site, b: Binding) -> bool:
    """Whether the provider's API mints an access token for this client."""
    api = site.catalog[b.provider].api or {}
    return api.get("client_tokens") == b.capability


def _wiring(site: Site, b: Binding) -> dict[str, Any]:
    provider = site.catalog[b.provider]
    values = dict(provider.defaults()) | dict(site.hosts[b.provider_host].stacks[b.provider]
                                              or {})
    accounts = provider.accounts or {}
    api = provider.api or {}
    setting = accounts.get("port_setting") or api.get("port_setting") or "port"
    port = int(values.get(setting, 0) or 0)
    same = b.provider_host == b.consumer_host
    host = "127.0.0.1" if same else site.hosts[b.provider_host].service_address
    wire: dict[str, Any] = {
        "host": host,
        "provider_host": b.provider_host,
        "local": same,
        "port": port,
        "username": b.username,
    }
    if accounts.get("capability") == b.capability or not (accounts or api):
        wire["password_ref"] = _ref(b.consumer_host, b.consumer, f"{b.capability}_password")
    if api:
        wire["url"] = f"http://{host}:{port}"
    if mints_tokens(site, b):
        # referenced once the provider's API minted it (after the provider's first apply;
        # the apply then converges the client again with it)
        key = token_key(b.capability)
        if (site.secrets.get(b.consumer_host, {}).get(b.consumer) or {}).get(key):
            wire["token_ref"] = _ref(b.consumer_host, b.consumer, key)
    return wire


def _url_address(host: Host) -> str:
    return lan_address() if host.kind == "local" else (host.address or host.name)


def _stack_state(site: Site, host: Host, stack: Stack, links: list[Binding]) -> dict[str, Any]:
    settings = dict(stack.defaults())
    settings.update(host.stacks.get(stack.name) or {})
    root = site.settings.stacks_root
    directory = f"{root}/{stack.name}"
    project = f"abri-{stack.name}"
    pinned = site.image_pin(host.name, stack.name)
    image = image_ref(pinned, site.settings.registry_mirror)
    uses = {b.capability: _wiring(site, b) for b in links
            if b.consumer_host == host.name and b.consumer == stack.name}
    base_ctx = {
        "settings": settings,
        "stack": {"name": stack.name, "project": project, "dir": directory, "image": image},
        "host": {"name": host.name, "address": host.service_address,
                 "url_address": _url_address(host)},
        "uses": {cap: {k: v for k, v in w.items() if not k.endswith("_ref")}
                 for cap, w in uses.items()},
        "remote_access": remote.template_context(site, host.name, stack),
    }
    bootstrap = bool(stack.api and stack.api.get("bootstrap_loopback"))
    files = []
    for f in stack.files:
        if f.when and not settings.get(f.when):
            continue
        content = render_template(stack, f.src, {**base_ctx, "bootstrap": False})
        entry: dict[str, Any] = {"path": f.dest, "content": content, "mode": f.mode,
                                 "owner": f.owner, "policy": f.policy, "restart": f.restart}
        if bootstrap:
            early = render_template(stack, f.src, {**base_ctx, "bootstrap": True})
            if early != content:
                entry["bootstrap_content"] = early
        if f.replaces_marker:
            entry["replaces_marker"] = f.replaces_marker
        files.append(entry)
    compose = render_template(stack, "compose.yml.j2", {**base_ctx, "bootstrap": False})
    files.append({"path": "compose.yml", "content": compose, "mode": "0644", "owner": 0,
                  "policy": "managed", "restart": False})
    state: dict[str, Any] = {
        "name": stack.name, "project": project, "dir": directory, "image": image,
        "dirs": [{"path": v.name, "owner": v.owner, "mode": v.mode} for v in stack.volumes],
        "files": files,
        "certificates": [
            {"path": c["dest"], "owner": c.get("owner", 0), "days": c.get("days", 3650),
             "name": host.service_address if host.kind != "local" else _url_address(host)}
            for c in stack.certificates
            if c.get("made_by", "host") == "host" and remote.when_holds(c.get("when"),
                                                                        settings)],
    }
    # certificates abri made on this machine (kept in the host's vault): the certificate
    # and its fingerprint are data, the key a reference
    # and the user's own (abri stack certificate): the same, kept in the vault
    own = site.secrets.get(host.name, {}).get(stack.name) or {}
    for c in remote.vault_certificates(stack, settings):
        keys = remote.cert_keys(c["dest"])
        if own.get(keys["crt"]):
            entry = {"path": c["dest"], "owner": c.get("owner", 0),
                     "name": own.get(keys["name"]), "crt": own[keys["crt"]],
                     "fingerprint": remote.fingerprint(own[keys["crt"]])}
            if own.get(keys["key"]):  # a CA's root comes alone
                entry["key_ref"] = _ref(host.name, stack.name, keys["key"])
            state["certificates"].append(entry)
    accounts = stack.accounts
    if accounts:
        consumers = sorted((b for b in links if b.provider_host == host.name
                            and b.provider == stack.name
                            and b.capability == accounts["capability"]),
                           key=lambda b: b.username)
        users = {accounts["admin_user"]: _ref(host.name, stack.name, accounts["admin_secret"])}
        acl = [f"user {accounts['admin_user']}", "topic readwrite #", "topic read $SYS/#"]
        for b in consumers:
            users[b.username] = _ref(b.consumer_host, b.consumer, f"{b.capability}_password")
            lines = site.catalog[b.consumer].acl.get(b.capability) or ("readwrite {user}/#",)
            acl += ["", f"user {b.username}"]
            acl += [f"topic {line.replace('{user}', b.username)}" for line in lines]
        # device accounts the user added (abri stack user add; tui.core.accounts)
        for user, spec in sorted((host.accounts.get(stack.name) or {}).items()):
            if user in users:  # a clash with abri's own: refused by the site's checks
                continue
            users[user] = _ref(host.name, stack.name, f"account.{user}")
            acl += ["", f"user {user}"] + [f"topic {line}" for line in spec.get("acl") or ()]
        state["accounts"] = {"format": accounts["format"], "passwd_file": accounts["passwd_file"],
                             "owner": accounts.get("owner", 0), "users_ref": users}
        files.insert(0, {
            "path": accounts["acl_file"], "mode": "0600", "owner": accounts.get("owner", 0),
            "policy": "managed", "restart": True,
            "content": "# Managed by abri: one user per client, each with its own topics.\n"
                       + "\n".join(acl) + "\n"})
    if stack.env:
        env: dict[str, Any] = {}
        for name, spec in sorted(stack.env.items()):
            kind, _, what = spec.partition(":")
            if kind == "secret":
                if what not in stack.generated_keys and not (
                        site.secrets.get(host.name, {}).get(stack.name) or {}).get(what):
                    continue  # the user's to give (an EAB key) and not given: not set
                env[name] = {"value_ref": _ref(host.name, stack.name, what)}
            else:
                cap, _, fieldname = what.partition(".")
                wire = uses.get(cap, {})
                if wire.get(f"{fieldname}_ref"):
                    env[name] = {"value_ref": wire[f"{fieldname}_ref"]}
                else:  # a wanted capability the site lacks, a token not minted yet: empty
                    env[name] = {"value": str(wire.get(fieldname, ""))}
        state["env"] = env
    hc = stack.healthcheck
    health: dict[str, Any] = {"kind": hc["kind"], "port": int(settings[hc["port_setting"]]),
                              "timeout": int(hc["timeout"])}
    if hc["kind"] == "http":
        health["path"] = hc["path"]
    if hc["kind"] == "mqtt" and accounts:
        health["user"] = accounts["admin_user"]
        health["password_ref"] = _ref(host.name, stack.name, accounts["admin_secret"])
    state["health"] = health
    if stack.api:
        api = stack.api
        secrets = site.secrets.get(host.name, {}).get(stack.name, {})
        owner_secret = api.get("owner_secret", "")
        resolved: dict[str, Any] = {
            "kind": api["kind"], "port": int(settings[api["port_setting"]]),
            "bootstrap_loopback": bool(api.get("bootstrap_loopback")),
            "owner_username": str(settings.get(api.get("owner_user_setting", ""), "owner")),
            "owner_name": "Owner",
            "owner_password_ref": _ref(host.name, stack.name, owner_secret),
            "language": str(settings.get(api.get("language_setting", ""), "en")),
            "remove_after_onboarding": list(api.get("remove_after_onboarding", ())),
            "wait_for_entries": list(api.get("wait_for_entries", ())),
            "integrations": [
                {"domain": domain, "capability": cap, **uses[cap]}
                for domain, cap in sorted((api.get("integrations") or {}).items())
                if cap in uses],
        }
        if secrets.get(CHECK_TOKEN):  # the API calls of a no-op need no owner login
            resolved["token_ref"] = _ref(host.name, stack.name, CHECK_TOKEN)
        if secrets.get(f"{owner_secret}_previous"):
            resolved["owner_previous_ref"] = _ref(host.name, stack.name,
                                                  f"{owner_secret}_previous")
        state["api"] = resolved
    return state


#: the vault key of the long-lived token abri mints for itself in a stack with an API (the
#: checks use it, and the API step of a no-op apply instead of the owner's login)
CHECK_TOKEN = "token"

#: where a host's backup repository password lives in its vault (not a stack: the leading
#: underscore keeps it apart from every stack name)
BACKUP_SECRET = ("_backup", "repository_password")


def backup_ref(host: str) -> str:
    return _ref(host, *BACKUP_SECRET)


#: the SSH key pair a host reaches SFTP repositories with (made by abri, in its vault)
SFTP_KEY = ("_backup", "sftp_key")
SFTP_PUBLIC_KEY = ("_backup", "sftp_public_key")


def sftp_server(site: Site, repository: str) -> dict[str, Any] | None:
    """Where an SFTP repository lives: user, address and port (a host of the site stands for
    its address and SSH port), the folder, and the site host it is (to authorize the keys
    there and read its host key) or ""; None for a folder repository."""
    from tui.core import validate

    parts = validate.sftp_parts(repository)
    if parts is None:
        return None
    user, name, path = parts
    host = site.hosts.get(name)
    return {"user": user, "address": (host.address or host.name) if host else name,
            "port": int((host.port if host else None) or 22), "path": path,
            "site_host": name if host else ""}


#: the keys of the site's S3 storage, in the vault of every host that backs up there
S3_ACCESS_KEY = ("_backup", "s3_access_key_id")
S3_SECRET_KEY = ("_backup", "s3_secret_access_key")


def s3_repository(site: Site, owner: str) -> dict[str, Any] | None:
    """owner's repository in the site's S3 storage (one per host, BUCKET/PREFIX/HOST), with
    its password and the storage keys by reference; None when the site's repository is not
    S3."""
    from tui.core import validate

    parts = validate.s3_parts(site.settings.backup_repository)
    if parts is None:
        return None
    path = "/".join(p for p in (parts["bucket"], parts["prefix"], owner) if p)
    return {"owner": owner, "password_ref": backup_ref(owner),
            "repository": f"s3:{parts['endpoint']}/{path}",
            "s3": {"endpoint": parts["endpoint"],
                   "access_key_ref": _ref(owner, *S3_ACCESS_KEY),
                   "secret_key_ref": _ref(owner, *S3_SECRET_KEY)}}


def repository_of(site: Site, owner: str, server: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The repository that holds owner's backups, as any host reaches it: its restic URL,
    its password (by reference) and, over SFTP, the server. On a server, every host has a
    repository of its own (PATH/HOST). `server` replaces the site's repository (the
    transfer repository of a migration)."""
    if server is None:
        s3 = s3_repository(site, owner)
        if s3 is not None:
            return s3
    sftp = server if server is not None else sftp_server(site, site.settings.backup_repository)
    if sftp is None:
        return {"owner": owner, "repository": site.settings.backup_repository,
                "password_ref": backup_ref(owner)}
    path = f"{sftp['path']}/{owner}"
    return {"owner": owner, "password_ref": backup_ref(owner), "sftp": sftp,
            "repository": f"sftp:{sftp['user']}@{sftp['address']}:{path}"}


def _backup_state(site: Site, host: Host, stacks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a backup of the host reads: per stack with user data, its volumes' folders, the
    rule its manifest declares (stop or copy), its health check and what a trial restore of
    it checks (manifest: backup.trial), with the repository and the retention."""
    s = site.settings
    out = []
    for state in stacks:
        manifest = site.catalog[state["name"]]
        if not manifest.user_data:
            continue
        out.append({"name": state["name"], "project": state["project"], "dir": state["dir"],
                    "paths": [v.name for v in manifest.user_data],
                    "consistency": manifest.backup_consistency,
                    "health": dict(state["health"]),
                    # what a trial restore checks besides the health (backup --verify)
                    "trial": {"sqlite": list(manifest.backup_trial.get("sqlite", ())),
                              "counts": [dict(c) for c in
                                         manifest.backup_trial.get("counts", ())],
                              "log_errors": list(manifest.backup_trial.get("log_errors",
                                                                           ())),
                              # the environment that wires the stack to other stacks
                              # (manifest env wire:*): emptied in the scratch copy, which
                              # must not talk to the live broker or hub
                              "unwired": sorted(k for k, v in manifest.env.items()
                                                if v.startswith("wire:"))}})
    own = repository_of(site, host.name)
    state = {"repository": own["repository"], "password_ref": own["password_ref"],
             "keep": {"daily": s.backup_keep_daily, "weekly": s.backup_keep_weekly,
                      "monthly": s.backup_keep_monthly},
             "stacks": out}
    for shared in ("sftp", "s3"):
        if shared in own:
            state[shared] = own[shared]
    public = (site.secrets.get(host.name, {}).get(SFTP_PUBLIC_KEY[0]) or {}).get(
        SFTP_PUBLIC_KEY[1])
    if public:  # the key this host reaches SFTP repositories with (made on first need)
        state["key"] = {"private_ref": _ref(host.name, *SFTP_KEY), "public": public}
    return state


def resolve_host(site: Site, name: str, links: list[Binding] | None = None) -> dict[str, Any]:
    """The whole desired state of one target host (see the module docstring)."""
    if links is None:
        links, _ = bindings(site)
    host = site.hosts[name]
    order = site.catalog.ordered(list(host.stacks))
    stacks = [_stack_state(site, host, site.catalog[s], links) for s in order]
    # openssl makes the certificates a host makes itself (not those abri made here)
    extra = ["openssl"] if any("crt" not in c for s in stacks for c in s["certificates"]) \
        else []
    mirror = site.settings.registry_mirror
    engine: dict[str, Any] = {
        "packages": {k: v + extra for k, v in ENGINE_PACKAGES.items()},
        "insecure_registries": [mirror] if mirror and site.settings.registry_insecure
        else [],
    }
    moved = sorted(f"abri-{s}" for s in host.migrated if s not in host.stacks)
    if moved:  # migrated to another host: kept stopped with their data, never brought down
        engine["stopped"] = moved
    state: dict[str, Any] = {
        "root": site.settings.stacks_root,
        "engine": engine,
        "projects": [s["project"] for s in stacks],
        "stacks": stacks,
        "backup": _backup_state(site, host, stacks),
    }
    wireguard = remote.wireguard_state(site, name)
    if wireguard is not None:
        state["wireguard"] = wireguard
    if host.hardened and host.kind != "local":
        state["hardening"] = hardening_state(site, host)
    return state


def admin_keys(host: Host) -> list[str]:
    """The public key of the key abri reaches the host with (KEY.pub, as ssh-copy-id reads
    it, else derived from the private key): the hardened host's admin user gets it. Empty
    when the host has no key of its own (ssh's agent or defaults): the admin then gets the
    keys that let abri in today (the connecting user's authorized_keys on the host)."""
    from pathlib import Path

    if not host.key:
        return []
    pub = Path(host.key + ".pub")
    try:
        text = pub.read_text(encoding="utf-8").strip()
    except OSError:
        try:
            run = subprocess.run(["ssh-keygen", "-y", "-P", "", "-f", host.key],
                                 capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return []
        text = run.stdout.strip() if run.returncode == 0 else ""
    return [line for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")][:1]


def hardening_state(site: Site, host: Host) -> dict[str, Any]:
    """What the kit's abri_harden converges: the admin user and its key, the sshd drop-in's
    SSH port, and the ports the firewall opens. A vps opens SSH and the ports the site
    declares public (a manifest port with exposure public) only; another hardened host opens
    its LAN ports too. A port bound to loopback is never opened (tui.core.exposure)."""
    from tui.core import exposure
    from tui.core.hosting import ADMIN_USER

    open_ports = [{"port": p.number, "protocol": p.protocol, "why": f"{p.stack} {p.name}"}
                  for p in exposure.of_host(site, host) if p.opened]
    tunnel = remote.firewall(site, host.name)
    open_ports += tunnel.get("open", [])
    out = {"admin_user": ADMIN_USER, "admin_keys": admin_keys(host),
           "ssh_port": int(host.port or 22), "open": open_ports}
    if tunnel.get("tunnel"):
        out["tunnel"] = tunnel["tunnel"]
    return out


def secret_refs(state: Any) -> set[str]:
    """Every secret reference (values of keys ending in _ref) in a state."""
    found: set[str] = set()
    if isinstance(state, dict):
        for key, value in state.items():
            if key.endswith("_ref"):
                if isinstance(value, str) and value:
                    found.add(value)
                elif isinstance(value, dict):
                    found.update(v for v in value.values() if isinstance(v, str))
            else:
                found |= secret_refs(value)
    elif isinstance(state, list):
        for item in state:
            found |= secret_refs(item)
    return found
