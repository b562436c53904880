"""The user's site: a plain Ansible project directory that abri reads, validates and writes.

Layout (everything but the vault password is inside the site and safe to commit):

    inventory.ini                 hosts by kind (abri's block, plus whatever the user adds)
    group_vars/all/abri.yml       site settings (registry mirror, stacks root, site id)
    host_vars/<host>/abri.yml     the host's kind, address and stacks with their settings
    host_vars/<host>/vault.yml    the host's generated secrets, ansible-vault encrypted
    site.yml  ansible.cfg         generated; run with plain ansible-playbook too

Every change goes through load -> mutate -> validate -> save: nothing is written unless the
whole site validates, and each file is replaced atomically. Files abri does not manage are
never touched.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tui.core import accounts, hosting, inventory, remote, render, validate
from tui.core import secrets as vault
from tui.core.atomic import write_atomic
from tui.core.catalog import Catalog
from tui.core.errors import AbriError, Problem, SiteError
from tui.core.inventory import KINDS, TARGET_KINDS, HostEntry

SITE_VARS = Path("group_vars/all/abri.yml")
HOST_VARS = "abri.yml"
MANAGED_NOTE = "# Managed by abri: it rewrites this file. Put your own variables in another file.\n"


#: how many backups 'abri backup --prune' keeps per stack (restic forget --keep-*)
KEEP_FIELDS = ("backup_keep_daily", "backup_keep_weekly", "backup_keep_monthly")


@dataclass
class SiteSettings:
    registry_mirror: str = ""
    registry_insecure: bool = False
    stacks_root: str = "/opt/abri"
    #: the restic repository of each host: a folder on the host (or a disk mounted there),
    #: or sftp:USER@HOST:/path on another machine (one repository per host under it)
    backup_repository: str = "/var/backups/abri"
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4
    backup_keep_monthly: int = 6
    #: when this machine runs 'abri upgrade --patch' for the site (a systemd calendar
    #: expression such as 'Sun 04:00'); empty: never (tui.core.timers)
    upgrade_timer: str = ""
    #: when this machine runs 'abri backup --verify' (trial restores) for the site
    verify_timer: str = ""
    #: when this machine runs 'abri backup --prune' (backups and the retention) for the site
    backup_timer: str = ""
    #: which outside endpoints plan and apply accept (tui.core.audit): strict, none under
    #: US jurisdiction; eu, US endpoints reported (only image pulls accepted silently);
    #: off, no check
    sovereignty: str = "eu"
    #: the vps that serves remote access (a WireGuard tunnel to the home hosts and the
    #: proxy stack on it, tui.core.remote); empty: off
    remote_access: str = ""

    FIELDS = ("registry_mirror", "registry_insecure", "stacks_root", "backup_repository",
              *KEEP_FIELDS, "upgrade_timer", "verify_timer", "backup_timer", "sovereignty",
              "remote_access")

    def set(self, key: str, raw: Any) -> None:
        """Set one site setting from user input; ValueError says what would be valid."""
        if key == "registry_mirror":
            self.registry_mirror = validate.registry(str(raw))
        elif key == "registry_insecure":
            text = str(raw).strip().lower()
            if text not in ("true", "false", "yes", "no", "1", "0", "on", "off"):
                raise ValueError(f"{raw!r} is not true or false")
            self.registry_insecure = text in ("true", "yes", "1", "on")
        elif key == "stacks_root":
            self.stacks_root = validate.absolute_dir(str(raw))
        elif key == "backup_repository":
            self.backup_repository = validate.backup_repository(str(raw))
        elif key in KEEP_FIELDS:
            text = str(raw).strip()
            if not text.isdigit() or not 0 <= int(text) <= 1000:
                raise ValueError(f"{raw!r} is not a whole number of backups from 0 to 1000 "
                                 "(0 keeps none by this rule)")
            setattr(self, key, int(text))
        elif key in ("upgrade_timer", "verify_timer", "backup_timer"):
            from tui.core import timers

            setattr(self, key, timers.check_calendar(str(raw)))
        elif key == "sovereignty":
            self.sovereignty = validate.sovereignty(str(raw))
        elif key == "remote_access":
            text = "" if raw is None else str(raw).strip()
            self.remote_access = validate.host_name(text) if text else ""
        else:
            raise KeyError(key)


@dataclass
class Host(HostEntry):
    """A host of the site: what inventory.ini says of it, plus its stacks and settings."""

    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: stacks 'abri migrate' moved to another host (stack -> that host): their containers
    #: stay stopped here and their data is kept, never brought down
    migrated: dict[str, str] = field(default_factory=dict)
    #: stack -> the image reference this host deploys instead of the site's pin: set by
    #: 'abri upgrade --limit' for the hosts it upgraded (lifted to the site's pin once every
    #: host of the stack runs the same)
    images: dict[str, str] = field(default_factory=dict)
    #: stack -> device account name -> {acl: [topic rules]}: the users added with 'abri
    #: stack user add' (tui.core.accounts); their passwords are in the vault
    accounts: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: proxmox: api_url, node, user or token_id, ca_pem (the pinned CA), ca_fingerprint,
    #: cert_fingerprint; its password or token secret is in the vault (tui.core.proxmox)
    proxmox: dict[str, Any] = field(default_factory=dict)
    #: guest: cores, memory (MiB), disk (GiB), bridge, ip (dhcp or CIDR), gateway, storage,
    #: vmid (given, or recorded once abri created the guest)
    guest: dict[str, Any] = field(default_factory=dict)
    #: vps: provider and region (tui.core.hosting; its jurisdiction is in the audit)
    vps: dict[str, str] = field(default_factory=dict)
    #: hardening on (True) or off (False); None: the kind's default (on for a vps only)
    hardening: bool | None = None

    @property
    def hardened(self) -> bool:
        return hosting.hardened(self.kind, self.hardening)

    @property
    def service_address(self) -> str:
        """Where the controller reaches this host's services."""
        return "127.0.0.1" if self.kind == "local" else (self.address or self.name)

    def entry(self) -> HostEntry:
        return HostEntry(**{f.name: getattr(self, f.name) for f in fields(HostEntry)})


class Site:
    def __init__(self, path: Path, site_id: str, settings: SiteSettings,
                 hosts: dict[str, Host], secrets: dict[str, dict[str, dict[str, str]]],
                 catalog: Catalog, image_pins: dict[str, str] | None = None):
        self.path = Path(path)
        self.site_id = site_id
        self.settings = settings
        self.hosts = hosts
        self.secrets = secrets  # host -> stack -> key -> value; kept for removed stacks too
        self.catalog = catalog
        #: stack -> upstream image reference the site deploys (pinned when the stack was first
        #: added; 'abri upgrade' moves it once the stack runs the new one on every host)
        self.image_pins: dict[str, str] = dict(image_pins or {})
        #: (host, stack or None) the user asked to purge on the next save
        self._purges: list[tuple[str, str | None]] = []
        #: (host, stack, key): single secrets to drop on the next save (a device account
        #: removed)
        self._forgotten: list[tuple[str, str, str]] = []

    # ------------------------------------------------------------------ loading
    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / SITE_VARS).is_file()

    @classmethod
    def init(cls, path: Path, catalog: Catalog | None = None,
             settings: SiteSettings | None = None) -> Site:
        """A new, empty site. Refuses a folder that already holds an abri site."""
        path = Path(path)
        if cls.exists(path):
            raise SiteError(Problem(str(path), "", "already holds an abri site "
                                    f"({SITE_VARS}); use it, or choose an empty folder"))
        if path.exists() and not path.is_dir():
            raise SiteError(Problem(str(path), "", "is a file, not a folder; give the path "
                                    "of a new or empty folder for the site"))
        if (path / "inventory.ini").exists():
            raise SiteError(Problem(str(path / "inventory.ini"), "", "already exists and "
                                    "was not made by abri; choose an empty folder"))
        foreign = [name for name in render.GENERATED
                   if (path / name).exists()
                   and render.NOTE_MARK not in (path / name).read_text(errors="replace")]
        if foreign:
            raise SiteError(Problem(str(path), "", "already holds " + ", ".join(foreign)
                                    + ", which abri did not write and would overwrite; move "
                                    "them aside or choose an empty folder"))
        site = cls(path, uuid.uuid4().hex, settings or SiteSettings(), {}, {},
                   catalog or Catalog.load())
        vault.ensure_vault_password(site.site_id)
        return site

    @classmethod
    def load(cls, path: Path, catalog: Catalog | None = None) -> Site:
        path = Path(path)
        catalog = catalog or Catalog.load()
        if not path.is_dir():
            raise SiteError(Problem(str(path), "", "is not a folder; create a site with "
                                    "'abri init --site DIR'"))
        if not cls.exists(path):
            raise SiteError(Problem(str(path), "", f"is not an abri site (no {SITE_VARS}); "
                                    "create one with 'abri init'"))
        site_vars = _read_yaml(path / SITE_VARS)
        site_id = site_vars.get("abri_site_id")
        if not isinstance(site_id, str) or not site_id.isalnum():
            raise SiteError(Problem(str(SITE_VARS), "abri_site_id",
                                    "is missing or not a plain id; restore it from git"))
        settings = SiteSettings()
        problems: list[Problem] = []
        for key in SiteSettings.FIELDS:
            if f"abri_{key}" in site_vars:
                try:
                    settings.set(key, site_vars[f"abri_{key}"])
                except ValueError as exc:
                    problems.append(Problem(str(SITE_VARS), f"abri_{key}", str(exc)))
        if not (path / "inventory.ini").is_file():
            raise SiteError(Problem(str(path / "inventory.ini"), "", "is missing"))
        entries = inventory.parse(path / "inventory.ini")
        hosts: dict[str, Host] = {}
        secrets: dict[str, dict[str, dict[str, str]]] = {}
        for name, e in entries.items():
            host = Host(**asdict(e))
            host_dir = path / "host_vars" / name
            data = _read_yaml(host_dir / HOST_VARS) if (host_dir / HOST_VARS).exists() else {}
            stacks = data.get("abri_stacks") or {}
            where = f"host_vars/{name}/{HOST_VARS}"
            if not isinstance(stacks, dict):
                problems.append(Problem(where, "abri_stacks", "must be a mapping of stack "
                                        "names to their settings"))
                stacks = {}
            for stack, values in stacks.items():
                if not isinstance(values, dict):
                    values = {}
                host.stacks[str(stack)] = dict(values)
            moved = data.get("abri_migrated") or {}
            if not isinstance(moved, dict):
                problems.append(Problem(where, "abri_migrated", "must map stack names to the "
                                        "host they moved to"))
                moved = {}
            host.migrated = {str(k): str(v) for k, v in moved.items()}
            own = data.get("abri_images") or {}
            if not isinstance(own, dict):
                problems.append(Problem(where, "abri_images", "must map stack names to image "
                                        "references"))
                own = {}
            host.images = {str(k): str(v) for k, v in own.items()}
            host.accounts, bad = accounts.parse(data.get("abri_accounts"), where)
            problems.extend(bad)
            for key in ("proxmox", "guest"):
                given = data.get(f"abri_{key}") or {}
                if not isinstance(given, dict):
                    problems.append(Problem(where, f"abri_{key}", "must be a mapping"))
                    given = {}
                setattr(host, key, dict(given))
            if host.kind == "vps":
                host.vps, bad_vps = hosting.check(data.get("abri_vps"))
                problems.extend(Problem(where, f, m) for f, m in bad_vps)
            elif data.get("abri_vps") not in (None, {}):
                problems.append(Problem(where, "abri_vps", "only a vps host has a provider "
                                        "and region"))
            if data.get("abri_hardening") is not None:
                try:
                    host.hardening = hosting.on_off(data["abri_hardening"])
                except ValueError as exc:
                    problems.append(Problem(where, "abri_hardening", str(exc)))
            hosts[name] = host
            secrets[name] = vault.read_host_secrets(site_id, host_dir)
        pins = site_vars.get("abri_images") or {}
        if not isinstance(pins, dict):
            problems.append(Problem(str(SITE_VARS), "abri_images", "must map stack names to "
                                    "image references"))
            pins = {}
        site = cls(path, site_id, settings, hosts, secrets, catalog,
                   {str(k): str(v) for k, v in pins.items()})
        problems.extend(site.problems())
        if problems:
            raise SiteError(problems)
        return site

    # ------------------------------------------------------------------ changes
    def add_host(self, name: str, kind: str, address: str | None = None,
                 port: int | str | None = None, user: str | None = None,
                 key: str | None = None, parent: str | None = None,
                 provider: str | None = None, region: str | None = None) -> Host:
        where = f"host '{name}'"
        problems: list[Problem] = []

        def check(fieldname: str, fn, value):
            try:
                return fn(value)
            except ValueError as exc:
                problems.append(Problem(where, fieldname, str(exc)))
                return None

        name = check("name", validate.host_name, name) or name
        if kind not in KINDS:
            problems.append(Problem(where, "kind", f"{kind!r} is not a host kind; use one of "
                                    + ", ".join(KINDS)))
        if name in self.hosts:
            problems.append(Problem(where, "name", "is already in this site; choose another "
                                    "name or remove the host first"))
        clean_address = check("address", validate.address, address) if address else None
        clean_port = check("port", validate.port, port) if port not in (None, "") else None
        clean_user = check("user", validate.ssh_user, user) if user else None
        clean_key = check("key", validate.key_path, key) if key else None
        if kind == "local":
            problems.extend(self._no_ssh_fields(where, address=address, port=port, user=user,
                                                key=key))
            others = [h.name for h in self.hosts.values() if h.kind == "local"]
            if others:
                problems.append(Problem(where, "kind", f"this site already has a local host "
                                        f"({others[0]}); a site has at most one"))
        elif kind in ("ssh", "vps", "proxmox") and not address:
            problems.append(Problem(where, "address", f"is required for "
                                    f"{validate.a_kind(kind)} host; give its IP address or "
                                    "DNS name"))
        if kind == "guest":
            if not parent:
                problems.append(Problem(where, "parent", "a guest needs the proxmox host that "
                                        "owns it (--parent NAME)"))
            elif parent not in self.hosts or self.hosts[parent].kind != "proxmox":
                nodes = [h.name for h in self.hosts.values() if h.kind == "proxmox"]
                problems.append(Problem(where, "parent", f"{parent!r} is not a proxmox host of "
                                        "this site; valid: " + (", ".join(nodes) or "none yet")))
        elif parent:
            problems.append(Problem(where, "parent", "only a guest has a parent"))
        vps = self._vps_fields(where, kind, provider, region, problems)
        if problems:
            raise AbriError(problems)
        host = Host(name, kind, clean_address, clean_port, clean_user, clean_key,
                    parent if kind == "guest" else None)
        host.vps = vps
        self.hosts[name] = host
        # a host removed earlier and added again gets its secrets back: its data on the
        # machine (the Home Assistant owner, broker users) still belongs to them
        if name not in self.secrets:
            self.secrets[name] = vault.read_host_secrets(
                self.site_id, self.path / "host_vars" / name)
        return host

    @staticmethod
    def _vps_fields(where: str, kind: str, provider: str | None, region: str | None,
                    problems: list[Problem]) -> dict[str, str]:
        """A vps's provider (default other) and region, checked; refused for other kinds."""
        if kind != "vps":
            problems.extend(Problem(where, f, f"only a vps host has a {f}")
                            for f, v in (("provider", provider), ("region", region))
                            if v not in (None, ""))
            return {}
        out: dict[str, str] = {}
        try:
            out["provider"] = hosting.provider(provider or "other")
        except ValueError as exc:
            problems.append(Problem(where, "provider", str(exc)))
            return out
        if region not in (None, ""):
            try:
                out["region"] = hosting.region(out["provider"], str(region))
            except ValueError as exc:
                problems.append(Problem(where, "region", str(exc)))
        return out

    def set_hosting(self, name: str, hardening: str | None = None,
                    provider: str | None = None, region: str | None = None) -> Host:
        """Switch a host's hardening on or off, or change a vps's provider and region
        (None leaves a field as it is). Hardening applies to hosts that get stacks."""
        host = self._host(name)
        where = f"host '{name}'"
        problems: list[Problem] = []
        clean_hardening = host.hardening
        if hardening is not None:
            if host.kind not in TARGET_KINDS:
                problems.append(Problem(where, "hardening", f"{validate.a_kind(host.kind)} "
                                        "host is not deployed to; harden its guests"))
            elif host.kind == "local":
                problems.append(Problem(where, "hardening", "a local host is this machine, "
                                        "reached without SSH; harden it from another "
                                        "machine as an ssh host"))
            else:
                try:
                    clean_hardening = hosting.on_off(hardening)
                except ValueError as exc:
                    problems.append(Problem(where, "hardening", f"{exc}; use on or off"))
        vps = host.vps
        if provider is not None or region is not None:
            vps = self._vps_fields(where, host.kind, provider or host.vps.get("provider"),
                                   region if region is not None else host.vps.get("region"),
                                   problems)
        if problems:
            raise AbriError(problems)
        host.hardening, host.vps = clean_hardening, vps
        return host

    @staticmethod
    def _no_ssh_fields(where: str, **given: object) -> list[Problem]:
        """A local host is reached without SSH: every SSH field given for it is refused."""
        label = {"port": "SSH port", "user": "SSH user", "key": "SSH key"}
        return [Problem(where, fieldname, "a local host is this machine and takes no "
                        f"{label.get(fieldname, fieldname)}; leave it out, or use kind ssh "
                        "for another machine")
                for fieldname, value in given.items() if value not in (None, "")]

    def set_host(self, name: str, address: str | None = None, port: int | str | None = None,
                 user: str | None = None, key: str | None = None) -> Host:
        """Change how a host is reached, checked as add_host checks it. None leaves a field
        as it is; an empty value clears it (Ansible's default then applies: port 22, the
        controller's user, ssh's own keys). The name and kind are not changed here: the name
        keys the host's host_vars folder and its vault, so renaming is adding a new host,
        moving the stacks and removing the old one."""
        host = self._host(name)
        where = f"host '{name}'"
        given = {"address": address, "port": port, "user": user, "key": key}
        if all(value is None for value in given.values()):
            raise AbriError(Problem(where, "", "nothing to change; give an address, port, "
                                    "user or key"))
        checks = {"address": validate.address, "port": validate.port,
                  "user": validate.ssh_user, "key": validate.key_path}
        problems: list[Problem] = []
        if host.kind == "local":
            problems.extend(self._no_ssh_fields(where, **given))
        clean: dict[str, Any] = {}
        for fieldname, value in given.items():
            if value is None:
                continue
            if str(value).strip() == "":
                clean[fieldname] = None
                continue
            if host.kind == "local":  # refused above
                continue
            try:
                clean[fieldname] = checks[fieldname](value)
            except ValueError as exc:
                problems.append(Problem(where, fieldname, str(exc)))
        if (host.kind in ("ssh", "vps", "proxmox") and "address" in clean
                and clean["address"] is None):
            problems.append(Problem(where, "address", f"is required for "
                                    f"{validate.a_kind(host.kind)} host; give its IP address "
                                    "or DNS name"))
        if "port" in clean and host.kind != "local":
            ssh_port = clean["port"] or 22
            for stack_name, values in host.stacks.items():
                if stack_name not in self.catalog:
                    continue
                for p, number in self.catalog[stack_name].active_ports(
                        {**self.catalog[stack_name].defaults(), **values}):
                    if (number, p.protocol) == (ssh_port, "tcp"):
                        problems.append(Problem(where, "port", f"{ssh_port} is used by "
                                                f"{stack_name} ({p.name}) on this host; "
                                                "choose another SSH port"))
        if problems:
            raise AbriError(problems)
        for fieldname, value in clean.items():
            setattr(host, fieldname, value)
        return host

    def image_pin(self, host_name: str, stack_name: str) -> str:
        """The upstream image reference a stack deploys on a host: the host's own pin, else
        the site's, else the catalog's current one."""
        host = self.hosts.get(host_name)
        own = host.images.get(stack_name) if host else None
        return (own or self.image_pins.get(stack_name)
                or self.catalog[stack_name].image_ref())

    def pin_image(self, host_name: str, stack_name: str, ref: str) -> None:
        """Pin ref for a stack on one host; when every host with the stack then runs the
        same, it becomes the site's pin and the hosts' own pins go."""
        validate.image(ref)
        self._host(host_name).images[stack_name] = ref
        holders = [h for h in self.hosts.values() if stack_name in h.stacks]
        if all(self.image_pin(h.name, stack_name) == ref for h in holders):
            self.image_pins[stack_name] = ref
            for h in self.hosts.values():
                h.images.pop(stack_name, None)

    def match_hosts(self, pattern: str) -> list[str]:
        """The hosts of this site that an Ansible host pattern (as --limit takes it) selects,
        in the site's order. Understood: host names; globs with * and ?; 'all'; the groups
        abri writes (abri_<kind>, abri_targets); terms joined by commas (or colons), where
        &term keeps only hosts also in term and !term leaves term's hosts out. Raises
        AbriError when a term, or the whole pattern, selects no host of the site."""
        import fnmatch
        import re

        names = list(self.hosts)
        valid = "hosts: " + (", ".join(sorted(names)) or "none yet")
        groups = {"all": names,
                  "abri_targets": [n for n in names if self.hosts[n].kind in TARGET_KINDS]}
        for kind in KINDS:
            groups[f"abri_{kind}"] = [n for n in names if self.hosts[n].kind == kind]
        terms = [t.strip() for t in re.split(r"[,:]", pattern or "") if t.strip()]
        if not terms:
            raise AbriError(Problem("", "--limit", f"is empty; give a host name or pattern; "
                                    f"{valid}"))
        problems: list[Problem] = []

        def select(term: str) -> set[str]:
            if term.startswith("~") or "[" in term or "]" in term:
                problems.append(Problem("", "--limit", f"{term!r}: regular expressions and "
                                        "host ranges are not understood here; use host names, "
                                        "globs with * or comma lists"))
                return set()
            found = {n for n in names if fnmatch.fnmatchcase(n, term)}
            for group, members in groups.items():
                if fnmatch.fnmatchcase(group, term):
                    found.update(members)
            if not found:
                problems.append(Problem("", "--limit", f"{term!r} matches no host of this site; "
                                        f"{valid}"))
            return found

        regular = [t for t in terms if t[0] not in "&!"]
        chosen: set[str] = set()
        for term in regular or ["all"]:
            chosen |= select(term)
        for term in (t[1:] for t in terms if t[0] == "&"):
            chosen &= select(term)
        for term in (t[1:] for t in terms if t[0] == "!"):
            chosen -= select(term)
        if not problems and not chosen:
            problems.append(Problem("", "--limit", f"{pattern!r} matches no host of this site; "
                                    f"{valid}"))
        if problems:
            raise AbriError(problems)
        return [n for n in names if n in chosen]

    def remove_host(self, name: str) -> None:
        self._host(name)
        guests = [h.name for h in self.hosts.values() if h.parent == name]
        if guests:
            raise AbriError(Problem(f"host '{name}'", "name", "owns the guests "
                                    + ", ".join(guests) + "; remove them first"))
        del self.hosts[name]

    def add_stack(self, host_name: str, stack_name: str,
                  sets: dict[str, str] | None = None) -> None:
        host = self._host(host_name)
        where = f"host '{host_name}', stack '{stack_name}'"
        if stack_name not in self.catalog:
            raise AbriError(Problem(where, "stack", f"{stack_name!r} is not in the catalog; "
                                    "valid: " + ", ".join(self.catalog.names())))
        if host.kind not in TARGET_KINDS:
            raise AbriError(Problem(where, "host", f"{validate.a_kind(host.kind)} host runs "
                                    "no stacks; add them to one of its guests"))
        stack = self.catalog[stack_name]
        values = dict(host.stacks.get(stack_name) or stack.defaults())
        secrets = dict(self.secrets.get(host_name, {}).get(stack_name, {}))
        problems = self._apply_sets(where, stack, values, secrets, sets or {})
        if problems:
            raise AbriError(problems)
        for key in stack.generated_keys:
            if not secrets.get(key):
                secrets[key] = vault.generate()
        self.image_pins.setdefault(stack_name, stack.image_ref())
        host.stacks.pop(stack_name, None)  # re-insert last: a collision is reported on it
        host.stacks[stack_name] = values
        host.migrated.pop(stack_name, None)  # wanted here again: its kept data serves again
        self.secrets.setdefault(host_name, {})[stack_name] = secrets

    def move_stacks(self, source: str, target: str, names: list[str]) -> None:
        """Move stacks from source to target with their settings and secrets (the same
        passwords and tokens serve the moved data). On source they are declared migrated:
        kept stopped with their data, never brought down. Its secrets stay there too."""
        src, dst = self._host(source), self._host(target)
        for name in names:
            if name in src.stacks:
                dst.stacks[name] = src.stacks.pop(name)
            if name in self.secrets.get(source, {}):
                self.secrets.setdefault(target, {})[name] = dict(self.secrets[source][name])
            if name in src.images:  # the data is of that version: it goes along
                dst.images[name] = src.images[name]
            if name in src.accounts:  # device accounts serve the devices from there
                dst.accounts[name] = src.accounts.pop(name)
            src.migrated[name] = target
            dst.migrated.pop(name, None)

    def set_stack(self, host_name: str, stack_name: str, sets: dict[str, str]) -> None:
        host = self._host(host_name)
        if stack_name not in host.stacks:
            raise AbriError(Problem(f"host '{host_name}'", "stack", f"{stack_name!r} is not on "
                                    "this host; add it with 'abri stack add'"))
        self.add_stack(host_name, stack_name, sets)

    def remove_stack(self, host_name: str, stack_name: str) -> None:
        """Take a stack off a host. Its secrets stay in the vault: the data it leaves on
        the host (kept on purpose) still belongs to those credentials."""
        host = self._host(host_name)
        if stack_name not in host.stacks:
            raise AbriError(Problem(f"host '{host_name}'", "stack", f"{stack_name!r} is not on "
                                    "this host; on it: " + (", ".join(host.stacks) or "nothing")))
        del host.stacks[stack_name]

    def _apply_sets(self, where: str, stack, values: dict, secrets: dict,
                    sets: dict[str, str]) -> list[Problem]:
        problems = []
        for key, raw in sets.items():
            setting = stack.setting(key)
            if setting is None:
                valid = ", ".join(s.key for s in stack.settings) or "none"
                problems.append(Problem(where, key, f"is not a setting of {stack.name}; valid: "
                                        f"{valid}"))
                continue
            try:
                value = setting.convert(raw)
            except ValueError as exc:
                problems.append(Problem(where, key, str(exc)))
                continue
            if setting.secret:
                old = secrets.get(key)
                if old and old != value:
                    # the service may still hold the old one (an account's password): the
                    # kit moves it over with the old one, then forgets it
                    secrets[f"{key}_previous"] = old
                secrets[key] = value
            else:
                values[key] = value
        return problems

    def provided(self, host_name: str) -> set[str]:
        """The capabilities (mqtt, ...) the stacks on a host provide."""
        host = self._host(host_name)
        return {cap for s in host.stacks if s in self.catalog
                for cap in self.catalog[s].provides}

    def missing_providers(self, host_name: str, stack_name: str) -> dict[str, list[str]]:
        """What a stack uses that nothing on the host provides yet: capability -> the
        catalog stacks that would provide it."""
        provided = self.provided(host_name)
        elsewhere = {cap for h in self.hosts for cap in self.provided(h) if h != host_name}
        return {cap: self.catalog.providers(cap) for cap in self.catalog[stack_name].uses
                if cap not in provided and cap not in elsewhere}

    def _host(self, name: str) -> Host:
        if name not in self.hosts:
            raise AbriError(Problem(f"host '{name}'", "name", "is not in this site; hosts: "
                                    + (", ".join(self.hosts) or "none yet")))
        return self.hosts[name]

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[Problem]:
        """Everything wrong with the site as a whole (cross-field and cross-stack checks)."""
        from tui.core import resolve

        out: list[Problem] = []
        pins = [(str(SITE_VARS), stack, ref) for stack, ref in self.image_pins.items()]
        pins += [(f"host_vars/{h.name}/{HOST_VARS}", stack, ref)
                 for h in self.hosts.values() for stack, ref in h.images.items()]
        for where, stack, ref in pins:
            try:
                validate.image(ref)
            except ValueError as exc:
                out.append(Problem(where, f"abri_images.{stack}", str(exc)))
        for host in self.hosts.values():
            out.extend(self._host_problems(host))
        if not out:
            links, wiring = resolve.bindings(self)
            out.extend(wiring)
            out.extend(resolve.binding_problems(self, links))
            out.extend(accounts.problems(self))
            out.extend(remote.problems(self))
        return out

    def _host_problems(self, host: Host) -> list[Problem]:
        out: list[Problem] = []
        out.extend(self._pve_problems(host))
        if host.stacks and host.kind not in TARGET_KINDS:
            out.append(Problem(f"host '{host.name}'", "stacks", f"{validate.a_kind(host.kind)} "
                               "host runs no stacks; move them to a guest"))
            return out
        claimed: dict[tuple[int, str], str] = {}
        if host.kind != "local":
            claimed[(host.port or 22, "tcp")] = "SSH"
        for name, raw in host.stacks.items():  # insertion order: the newest stack last
            where = f"host '{host.name}', stack '{name}'"
            if name not in self.catalog:
                out.append(Problem(where, "stack", f"{name!r} is not in the catalog; valid: "
                                   + ", ".join(self.catalog.names())))
                continue
            stack = self.catalog[name]
            values = stack.defaults()
            for key, value in raw.items():
                setting = stack.setting(key)
                if setting is None or setting.secret:
                    valid = ", ".join(s.key for s in stack.settings if not s.secret)
                    what = "a secret (kept in the vault)" if setting else "not a setting"
                    out.append(Problem(where, key, f"is {what} of {name}; valid here: {valid}"))
                    continue
                try:
                    values[key] = setting.convert(value)
                except ValueError as exc:
                    out.append(Problem(where, key, str(exc)))
            raw.clear()
            raw.update(values)
            for port, number in stack.active_ports(values):
                key = (number, port.protocol)
                if key in claimed:
                    out.append(Problem(where, port.setting, f"port {number}/{port.protocol} is "
                                       f"already used by {claimed[key]} on this host; choose "
                                       "another port"))
                else:
                    claimed[key] = f"{name} ({port.name})"
        return out

    def _pve_problems(self, host: Host) -> list[Problem]:
        """What a proxmox node or a guest needs in its host_vars (abri_proxmox, abri_guest)."""
        where = f"host_vars/{host.name}/{HOST_VARS}"
        out: list[Problem] = []
        if host.kind == "proxmox":
            conf = host.proxmox
            need = ["api_url", "node", "ca_pem"]
            out += [Problem(where, f"abri_proxmox.{k}", "is missing; add the host again with "
                            "'abri host add NAME --kind proxmox ...'")
                    for k in need if not conf.get(k)]
            if not conf.get("user") and not conf.get("token_id"):
                out.append(Problem(where, "abri_proxmox.user", "neither user nor token_id is "
                                   "set; the node cannot be reached"))
        elif host.kind == "guest":
            checks = {"cores": validate.guest_cores, "memory": validate.guest_memory,
                      "disk": validate.guest_disk, "bridge": validate.bridge,
                      "ip": validate.guest_ip}
            for key, fn in checks.items():
                if key not in host.guest:
                    out.append(Problem(where, f"abri_guest.{key}", "is missing"))
                    continue
                try:
                    host.guest[key] = fn(host.guest[key])
                except ValueError as exc:
                    out.append(Problem(where, f"abri_guest.{key}", str(exc)))
            usb = host.guest.get("usb")
            if usb is not None:
                if not isinstance(usb, list):
                    out.append(Problem(where, "abri_guest.usb", "must be a list of device "
                                       "paths"))
                else:
                    for i, dev in enumerate(usb):
                        try:
                            usb[i] = validate.usb_device(str(dev))
                        except ValueError as exc:
                            out.append(Problem(where, f"abri_guest.usb[{i}]", str(exc)))
            for key, fn in (("vmid", validate.guest_vmid), ("storage", validate.pve_storage),
                            ("type", validate.guest_type)):
                if host.guest.get(key) not in (None, ""):
                    try:
                        host.guest[key] = fn(host.guest[key])
                    except ValueError as exc:
                        out.append(Problem(where, f"abri_guest.{key}", str(exc)))
            out += [Problem(where, f"abri_guest.{k}", m)
                    for k, m in validate.vm_guest_problems(host.guest)]
            if host.parent and (host.parent not in self.hosts
                                or self.hosts[host.parent].kind != "proxmox"):
                out.append(Problem(f"host '{host.name}'", "parent", f"{host.parent!r} is not "
                                   "a proxmox host of this site"))
        return out

    def set_guest(self, name: str, **sizes: object) -> Host:
        """Change a guest's cores, memory, disk or USB device list (None leaves one as it
        is; a list of devices replaces the guest's); the next apply changes the guest.
        Checked as 'host add' checks them."""
        host = self._host(name)
        where = f"host '{name}'"
        if host.kind != "guest":
            raise AbriError(Problem(where, next(k for k, v in sizes.items() if v is not None),
                                    f"only a guest has a size; this is "
                                    f"{validate.a_kind(host.kind)} host"))
        checks = {"cores": validate.guest_cores, "memory": validate.guest_memory,
                  "disk": validate.guest_disk}
        problems: list[Problem] = []
        clean: dict[str, Any] = {}
        for key, value in sizes.items():
            if value is None or key == "usb":
                continue
            try:
                clean[key] = checks[key](value)
            except ValueError as exc:
                problems.append(Problem(where, key, str(exc)))
        usb = sizes.get("usb")
        if usb is not None:  # the whole list, replaced (an empty one passes none)
            devices = []
            for dev in usb:  # type: ignore[union-attr]
                try:
                    devices.append(validate.usb_device(str(dev)))
                except ValueError as exc:
                    problems.append(Problem(where, "usb", str(exc)))
            if len(set(devices)) != len(devices):
                problems.append(Problem(where, "usb", "names a device twice"))
            clean["usb"] = devices
        for key, message in validate.vm_guest_problems({**host.guest, **clean}):
            if key in clean:
                problems.append(Problem(where, key, message))
        if "disk" in clean and clean["disk"] < int(host.guest.get("disk") or 0):
            problems.append(Problem(where, "disk", f"{clean['disk']} GiB is smaller than the "
                                    f"guest's {host.guest['disk']} GiB; Proxmox cannot shrink "
                                    "a disk"))
        if problems:
            raise AbriError(problems)
        host.guest.update(clean)
        if host.guest.get("usb") == []:
            del host.guest["usb"]
        return host

    def configure_proxmox(self, name: str, conf: dict[str, Any],
                          secret: dict[str, str]) -> None:
        """The node's API settings (checked by the caller, the CA pinned) and its password
        or token secret, which go to the vault only."""
        host = self._host(name)
        host.proxmox = dict(conf)
        self.secrets.setdefault(name, {})["_proxmox"] = dict(secret)

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise AbriError(problems)

    # ------------------------------------------------------------------ writing
    def save(self) -> None:
        """Validate, then write every managed file atomically. Nothing is written when the
        site has problems."""
        self.check()
        remote.ensure_secrets(self)  # tunnel keys and certificates abri makes, when missing
        files = render.site_files(self)
        existing_inventory = None
        inv = self.path / "inventory.ini"
        if inv.exists():
            existing_inventory = inv.read_text(encoding="utf-8")
        inventory_text = inventory.merge(existing_inventory,
                                         [h.entry() for h in self.hosts.values()])
        self.path.mkdir(parents=True, exist_ok=True)
        vault.ensure_vault_password(self.site_id)
        write_atomic(inv, inventory_text)
        for rel, text in files.items():
            write_atomic(self.path / rel, text)
        render.link_kit(self.path)
        purged = set(self._purges)
        for host in self.hosts.values():
            host_dir = self.path / "host_vars" / host.name
            # secrets on disk that this copy of the site does not hold (another copy of the
            # site minted them meanwhile, a stack removed) are kept until explicitly purged
            on_disk = vault.read_host_secrets(self.site_id, host_dir)
            merged: dict[str, dict[str, str]] = {}
            for stack in sorted(set(on_disk) | set(self.secrets.get(host.name, {}))):
                if (host.name, None) in purged or (host.name, stack) in purged:
                    continue
                merged[stack] = {**on_disk.get(stack, {}),
                                 **self.secrets.get(host.name, {}).get(stack, {})}
                for h, s, key in self._forgotten:
                    if (h, s) == (host.name, stack):
                        merged[stack].pop(key, None)
            self.secrets[host.name] = merged
            vault.write_host_secrets(self.site_id, host_dir, merged)
        for host_name, stack in self._purges:
            if host_name not in self.hosts:
                host_dir = self.path / "host_vars" / host_name
                left = vault.read_host_secrets(self.site_id, host_dir)
                if stack is not None:
                    left.pop(stack, None)
                vault.write_host_secrets(self.site_id, host_dir, {} if stack is None else left)
        self._purges.clear()
        self._forgotten.clear()
        # hosts removed from the site: drop abri's vars file, keep secrets and user files
        for host_dir in sorted((self.path / "host_vars").glob("*")):
            if host_dir.is_dir() and host_dir.name not in self.hosts:
                managed = host_dir / HOST_VARS
                if managed.exists():
                    managed.unlink()

    def forget_secret(self, host_name: str, stack: str, key: str) -> None:
        """Drop one secret at the next save (a device account removed)."""
        self._forgotten.append((host_name, stack, key))
        (self.secrets.get(host_name, {}).get(stack) or {}).pop(key, None)

    def purge_secrets(self, host_name: str, stack: str | None = None) -> list[str]:
        """Forget the secrets of a host (or of one stack on it) at the next save: the only
        way abri ever drops a secret. Refused for stacks still on the host. Returns what
        will be purged."""
        host = self.hosts.get(host_name)
        if host is not None and ((stack is None and host.stacks) or stack in host.stacks):
            on = ", ".join(host.stacks) if stack is None else stack
            raise AbriError(Problem(f"host '{host_name}'", "stack", f"{on} still on the host "
                                    "uses these secrets; remove the stack first"))
        known = self.secrets.get(host_name)
        if known is None:
            known = vault.read_host_secrets(self.site_id, self.path / "host_vars" / host_name)
        names = sorted(known) if stack is None else [stack] if stack in known else []
        if not names:
            raise AbriError(Problem(f"host '{host_name}'", "secrets", "there are no secrets "
                                    "to purge" + (f" for {stack}" if stack else "")))
        self._purges.append((host_name, stack))
        if host is not None:  # device accounts without their passwords: gone with them
            for name in names:
                host.accounts.pop(name, None)
        if host_name in self.secrets:
            for name in names:
                self.secrets[host_name].pop(name, None)
        return names

    def copy(self) -> Site:
        return Site(self.path, self.site_id, copy.deepcopy(self.settings),
                    copy.deepcopy(self.hosts), copy.deepcopy(self.secrets), self.catalog,
                    dict(self.image_pins))

    def all_secret_values(self) -> list[str]:
        return [v for stacks in self.secrets.values() for keys in stacks.values()
                for v in keys.values()]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    """YAML as abri writes it: Ansible's !unsafe tag (values kept out of Jinja) reads as the
    plain value."""


def _unsafe(loader: Any, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!unsafe", _unsafe)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)
    except OSError as exc:
        raise SiteError(Problem(str(file), "", f"cannot be read: {exc.strerror}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SiteError(Problem(str(file), "", f"is not valid YAML{at}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SiteError(Problem(str(file), "", "must hold a mapping of variables"))
    return data
