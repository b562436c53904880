"""Import a Home Assistant backup into the Home Assistant stack of a host of the site.

Order (nothing on the host changes until every check passed):

1. read and check the backup on the controller (ha_backup: the archive, backup.json, the
   password, the Home Assistant version against the one the site pins on the host), and the
   owner's password the user gives;
2. deploy the stack first when the host has never run it (an apply of the host);
3. a safety snapshot of the host's Home Assistant data (the backup playbook, this stack
   alone, kind ``upgrade`` so the retention keeps it; the stack is left stopped);
4. unpack the backup's configuration into a private folder on the controller and make it
   follow abri's rules: configuration.yaml includes abri's part (abri/core.yaml, which
   loads abri's integration list), default_config and cloud are switched off (they load
   Nabu Casa's cloud and the alerts feed), the config entries of services outside the home
   are removed, the MQTT entry is pointed at the site's broker with abri's account;
5. the kit's import playbook replaces the stack's configuration folder with it (backups/
   kept), and the site learns the backup's owner (user name, and the password the user
   gave, into the vault); the data of the add-ons a stack of HOST takes (its manifest's
   ha_addon) replaces that stack's user-data volume the same way, after the same safety
   snapshot;
6. an apply of the host (abri's files, start, API, tokens) and the checks.

Nothing here prints a secret.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.core import ha_backup
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.catalog import Stack
    from tui.core.site import Site

#: integrations that reach Home Assistant's and Nabu Casa's services in the US: never left
#: loaded or configured by an import (default_config loads the first two)
OUTSIDE_DOMAINS = ("cloud", "homeassistant_alerts")
#: the top-level keys of configuration.yaml an import switches off, and why
DISABLED_KEYS = {
    "default_config": "loads Nabu Casa's cloud, the alerts feed and my.home-assistant.io "
                      "links; abri loads its own list (abri/integrations.yaml) instead",
    "cloud": "Nabu Casa's cloud (US)",
    "homeassistant_alerts": "the alerts feed from alerts.home-assistant.io",
}
ENTRIES = ".storage/core.config_entries"
AUTH = ".storage/auth"
AUTH_PROVIDER = ".storage/auth_provider.homeassistant"
CLOUD_STORE = ".storage/cloud"
_TOP_KEY = re.compile(r"^([A-Za-z_][\w.-]*)\s*:")
ABRI_INCLUDE = "homeassistant: !include abri/core.yaml"
#: the broker fields of an MQTT entry that belong to another broker (TLS, websockets)
_BROKER_EXTRAS = ("certificate", "client_cert", "client_key", "tls_insecure", "transport",
                  "ws_path", "ws_headers", "client_id")


@dataclass
class Prepared:
    """What the controller made of a backup's configuration."""

    owner: str | None
    notes: list[str] = field(default_factory=list)


def ha_stack(site: Site) -> Stack:
    """The catalog's stack that provides Home Assistant."""
    for stack in site.catalog:
        if "homeassistant" in stack.provides:
            return stack
    raise AbriError(Problem("catalog", "homeassistant", "no stack provides Home Assistant"))


def config_volume(stack: Stack) -> str:
    """The stack's volume that is Home Assistant's /config."""
    for v in stack.volumes:
        if v.path.rstrip("/") == "/config":
            return v.name
    raise AbriError(Problem(f"stacks/{stack.name}/stack.yml", "volumes",
                            "has no volume at /config"))


# ---------------------------------------------------------------- configuration fix-ups
def _blocks(text: str) -> list[tuple[str | None, list[str]]]:
    """configuration.yaml as top-level blocks: (key or None, lines). A block is a line
    starting at column 0 with KEY: and the indented, blank and comment lines after it."""
    out: list[tuple[str | None, list[str]]] = []
    for line in text.splitlines(keepends=True):
        m = _TOP_KEY.match(line)
        if m:
            out.append((m[1], [line]))
        elif out and (line[:1] in (" ", "\t") or not line.strip() or line.startswith("#")):
            out[-1][1].append(line)
        else:
            out.append((None, [line]))
    return out


def fix_configuration(text: str) -> tuple[str, list[str]]:
    """The backup's configuration.yaml with abri's part included and the keys that load
    outside services commented out (kept in the file, so the user sees what was there).
    Returns the new text and what was changed."""
    notes = []
    lines: list[str] = []
    has_include = False
    for key, block in _blocks(text):
        if key == "homeassistant":
            if block[0].strip() == ABRI_INCLUDE and len([b for b in block[1:]
                                                         if b.strip()
                                                         and not b.lstrip().startswith("#")]) == 0:
                has_include = True
                lines += block
                continue
            notes.append("configuration.yaml: the homeassistant: block was commented out "
                         "(abri's abri/core.yaml sets name, location and units from the "
                         "site; put customize: or packages: back under "
                         "abri's include by hand if you need them)")
            lines += ["# abri (import): commented out, abri includes abri/core.yaml\n"]
            lines += [f"# {b}" if b.strip() else b for b in block]
            continue
        if key in DISABLED_KEYS:
            notes.append(f"configuration.yaml: {key}: commented out ({DISABLED_KEYS[key]})")
            lines += [f"# abri (import): {key} switched off: {DISABLED_KEYS[key]}\n"]
            lines += [f"# {b}" if b.strip() else b for b in block]
            continue
        lines += block
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if not has_include:
        lines = ["# abri's part (name, time zone, units, its integration list) is in abri/;\n",
                 "# the apply writes those files.\n", ABRI_INCLUDE + "\n", "\n", *lines]
        notes.append("configuration.yaml: abri's include (homeassistant: !include "
                     "abri/core.yaml) added at the top")
    return "".join(lines), notes


def fix_entries(store: dict[str, Any], remove: set[str], mqtt: dict[str, Any] | None
                ) -> list[str]:
    """Remove the config entries of outside services, and point the MQTT entries at the
    site's broker (broker, port, username, password; TLS and websocket fields dropped).
    Changes store in place; returns what was done (never a secret)."""
    notes = []
    entries = (store.get("data") or {}).get("entries")
    if not isinstance(entries, list):
        return ["core.config_entries: no entries list; left as it is"]
    kept = []
    for entry in entries:
        domain = entry.get("domain")
        title = entry.get("title") or domain
        if domain in remove:
            notes.append(f"config entry {domain} ({title}) removed: it calls a service "
                         "outside the home")
            continue
        if domain == "mqtt" and mqtt is not None:
            data = dict(entry.get("data") or {})
            old = f"{data.get('broker', '?')}:{data.get('port', 1883)}"
            for k in _BROKER_EXTRAS:
                data.pop(k, None)
            data.update(mqtt)
            entry["data"] = data
            notes.append(f"config entry mqtt ({title}) moved from broker {old} to the site's "
                         f"broker {mqtt['broker']}:{mqtt['port']}, user {mqtt['username']}")
        kept.append(entry)
    store["data"]["entries"] = kept
    return notes


def owner_of(config: Path) -> str | None:
    """The user name of the owner account in a configuration folder (Home Assistant's auth
    store: the owner user, and its credentials of the homeassistant provider)."""
    try:
        auth = json.loads((config / AUTH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    data = auth.get("data") or {}
    owners = {u.get("id") for u in data.get("users") or [] if u.get("is_owner")}
    for cred in data.get("credentials") or []:
        if cred.get("user_id") in owners and cred.get("auth_provider_type") == "homeassistant":
            username = (cred.get("data") or {}).get("username")
            if username:
                return str(username)
    return None


def owner_password_fits(config: Path, owner: str, password: str) -> bool | None:
    """Whether password is the owner's in the configuration folder (Home Assistant keeps a
    base64 of a bcrypt hash per user of its own provider). None when the store is missing."""
    import base64

    import bcrypt

    try:
        store = json.loads((config / AUTH_PROVIDER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for user in (store.get("data") or {}).get("users") or []:
        if str(user.get("username", "")).strip().casefold() == owner.strip().casefold():
            try:
                hashed = base64.b64decode(user["password"])
            except (KeyError, ValueError, TypeError):
                return None
            raw = password.encode()[:72]  # bcrypt reads the first 72 bytes alone
            return bcrypt.checkpw(raw, hashed)
    return None


def prepare_config(config: Path, remove: set[str], mqtt: dict[str, Any] | None) -> Prepared:
    """Make an unpacked configuration folder follow abri's rules (see the module)."""
    notes: list[str] = []
    conf = config / "configuration.yaml"
    text = conf.read_text(encoding="utf-8") if conf.is_file() else ""
    new, more = fix_configuration(text)
    notes += more
    conf.write_text(new, encoding="utf-8")
    entries = config / ENTRIES
    if entries.is_file():
        try:
            store = json.loads(entries.read_text(encoding="utf-8"))
        except ValueError:
            raise AbriError(Problem("backup", ENTRIES, "is not valid JSON: the backup's "
                                    "configuration is damaged")) from None
        notes += fix_entries(store, remove, mqtt)
        entries.write_text(json.dumps(store, indent=2), encoding="utf-8")
    cloud = config / CLOUD_STORE
    if cloud.exists():
        cloud.unlink()
        notes.append(".storage/cloud removed: the Nabu Casa account's tokens")
    return Prepared(owner=owner_of(config), notes=notes)


def left_out(backup: ha_backup.HaBackup, checked: Checked | None = None) -> list[str]:
    """What the backup holds that an import does not bring (add-ons, Supervisor's folders):
    it stays in the archive. With checked: first what becomes of the add-ons an import maps
    (their logins), then the rest."""
    mapped = checked.mapped if checked else set()
    out = list(checked.addon_notes) if checked else []
    out += [f"add-on {a.get('name') or a.get('slug')} ({a.get('slug')}): not imported (abri "
            "imports no data of this add-on); its data stays in the backup"
            for a in backup.addons if a.get("slug") not in mapped]
    out += [f"folder {f}: not imported; it stays in the backup" for f in backup.folders]
    return out


@dataclass(frozen=True)
class Login:
    """An add-on's login that the import makes a device account of (tui.core.accounts)."""

    host: str  # the host of the stack that keeps the account (the site's broker)
    stack: str
    name: str
    password: str = field(repr=False)
    acl: tuple[str, ...]


def plan_logins(site: Site, backup: ha_backup.HaBackup, host: str, ha: str,
                password: str | None) -> tuple[list[Login], list[str], set[str]]:
    """The logins of the backup's add-ons that a stack's manifest maps (accounts.ha_addon),
    onto the stack that serves that capability to HOST's Home Assistant: the logins to add,
    what is said of each add-on and login (names only), and the slugs mapped. A login named
    like one of abri's own users, or like a device account already there, is skipped."""
    from tui.core import accounts, resolve

    links, _ = resolve.bindings(site)
    logins: list[Login] = []
    notes: list[str] = []
    mapped: set[str] = set()
    for addon in backup.addons:
        slug = addon.get("slug")
        keeper = next((s for s in site.catalog if s.accounts
                       and (s.accounts.get("ha_addon") or {}).get("slug") == slug), None)
        if keeper is None:
            continue
        spec = keeper.accounts["ha_addon"]
        label = f"add-on {addon.get('name') or slug} ({slug})"
        mapped.add(slug)
        b = next((b for b in links if (b.consumer_host, b.consumer, b.capability, b.provider)
                  == (host, ha, keeper.accounts["capability"], keeper.name)), None)
        if b is None:
            notes.append(f"{label}: its logins not imported: {ha} on {host} uses no "
                         f"{keeper.name} of this site; add one, then import again")
            continue
        where = f"{keeper.name} on {b.provider_host}"
        start, before = len(notes), len(logins)
        options = ha_backup.addon_options(backup, slug, password)
        raw = options.get(spec["logins"]) or []
        own = accounts.own_users(site, b.provider_host, keeper.name)
        existing = accounts.device_accounts(site, b.provider_host, keeper.name)
        seen: set[str] = set()
        for item in raw if isinstance(raw, list) else []:
            name = str((item or {}).get("username", "")) if isinstance(item, dict) else ""
            secret = item.get("password") if isinstance(item, dict) else None
            shown = name or "(no name)"
            try:
                accounts.check_name(name)
            except ValueError as exc:
                notes.append(f"{label}: login {shown!r} skipped: {exc}")
                continue
            if name in seen:
                notes.append(f"{label}: login {name} skipped: given twice in the add-on")
                continue
            seen.add(name)
            if name in own:
                notes.append(f"{label}: login {name} skipped: it is the name of one of abri's "
                             f"own users of {where} ({own[name]}), which is not overwritten; "
                             f"add the device under another name ('abri stack user add "
                             f"{b.provider_host} {keeper.name} NAME')")
                continue
            if name in existing:
                notes.append(f"{label}: login {name}: already a device account of {where}; "
                             "kept as it is")
                continue
            if item.get("password_pre_hashed"):
                notes.append(f"{label}: login {name} skipped: the add-on holds only a hash "
                             f"of its password; add it with 'abri stack user add "
                             f"{b.provider_host} {keeper.name} {name} --password-file F'")
                continue
            try:
                accounts.check_password(str(secret or ""))
            except ValueError as exc:
                notes.append(f"{label}: login {name} skipped: its password {exc}")
                continue
            logins.append(Login(b.provider_host, keeper.name, name, str(secret),
                                tuple(spec.get("acl") or accounts.default_acl(name))))
        said = ", ".join(x.name for x in logins[before:]) or "none"
        notes.insert(start, f"{label}: logins that become device accounts of {where}: {said}")
    return logins, notes, mapped


@dataclass
class AddonData:
    """An add-on's data that the import puts into a stack of HOST (manifest: ha_addon)."""

    slug: str
    label: str
    stack: str
    volume: str
    owner: int
    source: str  # the manifest's from: entry that held the files
    files: int
    #: stack secret -> value, from the add-on's options (never printed)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


def _source_text(source: str) -> str:
    kind, _, path = source.partition(":")
    if kind == "addon":
        return f"the add-on's {path}/ folder"
    return f"{path}/ in Home Assistant's configuration"


def unpack_addon_data(site: Site, host: str, keeper: Stack, backup: ha_backup.HaBackup,
                      password: str | None, secrets: dict[str, str], sources: list[str],
                      dest: Path) -> tuple[str | None, list[str], list[str]]:
    """An add-on's data unpacked into dest as the stack will get it: from the first of
    sources that holds files, without what the manifest leaves out, with abri's own part
    merged back in (ha_addon.merge, tui.core.seedmerge). Returns (the source used, the
    paths unpacked, what the merges did)."""
    from tui.core import seedmerge

    spec = keeper.ha_addon or {}
    source, written = ha_backup.extract_addon_data(
        backup, spec["slug"], sources, list(spec.get("exclude") or ()), password, dest)
    notes = []
    if source is not None:
        have = site.secrets.get(host, {}).get(keeper.name, {})
        for rule in spec.get("merge") or ():
            key = rule.get("key_secret")
            old = [secrets[key]] if key in secrets else []
            new = secrets.get(key) or have.get(key) if key else None
            notes.append(seedmerge.merge(dest, rule, keeper.path / rule["from"], old, new))
    return source, written, notes


def plan_addon_data(site: Site, backup: ha_backup.HaBackup, host: str,
                    password: str | None) -> tuple[list[AddonData], list[str], set[str]]:
    """The backup's add-ons whose data a stack's manifest takes (ha_addon), when HOST has
    that stack: what goes where (the data is unpacked into a scratch folder to count it and
    to check it can be read), what is said of each (names and counts only), the slugs
    mapped. An add-on whose stack is not on HOST is said not imported, with the way to
    import it."""
    out: list[AddonData] = []
    notes: list[str] = []
    mapped: set[str] = set()
    for addon in backup.addons:
        slug = addon.get("slug")
        keeper = next((s for s in site.catalog if s.ha_addon
                       and s.ha_addon.get("slug") == slug), None)
        if keeper is None:
            continue
        spec = keeper.ha_addon
        label = f"add-on {addon.get('name') or slug} ({slug})"
        mapped.add(slug)
        if keeper.name not in site.hosts[host].stacks:
            notes.append(f"{label}: not imported: {host} has no {keeper.name} stack, which "
                         f"takes its data; add it ('abri stack add {host} {keeper.name}') and "
                         "import again; its data stays in the backup")
            continue
        secrets: dict[str, str] = {}
        said = []
        wanted = spec.get("secrets") or {}
        if wanted and ha_backup.addon_member(backup, slug) is not None:
            options = ha_backup.addon_options(backup, slug, password)
            for key, option in wanted.items():
                value = options.get(option)
                if isinstance(value, str) and value:
                    secrets[key] = value
                    said.append(f"its option {option} becomes {keeper.name}'s {key} (into "
                                "the vault)")
        with tempfile.TemporaryDirectory(prefix="abri-addon-") as tmp:
            source, written, merged = unpack_addon_data(
                site, host, keeper, backup, password, secrets, list(spec["from"]),
                Path(tmp) / "data")
        if source is None:
            looked = ", ".join(_source_text(x) for x in spec["from"])
            notes.append(f"{label}: no data found in the backup (looked in {looked}); "
                         f"nothing imported into {keeper.name}")
            continue
        volume = next(v for v in keeper.volumes if v.name == spec["volume"])
        left = ", ".join(spec.get("exclude") or ()) or "nothing"
        notes.append(f"{label}: its data ({_source_text(source)}, {len(written)} files and "
                     f"folders) replaces the {volume.name} volume of {keeper.name} on {host} "
                     f"({spec.get('why') or 'its user data'}); left out: {left}"
                     + "".join(f"; {x}" for x in said + merged))
        out.append(AddonData(slug, label, keeper.name, volume.name, volume.owner, source,
                             len(written), secrets))
    return out, notes, mapped


# ---------------------------------------------------------------- the import
@dataclass
class Checked:
    """A backup that passed every check, and what the import will do with it. The
    passwords stay in memory (never in a repr, never printed)."""

    backup: ha_backup.HaBackup
    stack: str
    password: str | None = field(repr=False)
    owner_password: str | None = field(repr=False)
    logins: list[Login] = field(default_factory=list)
    addon_notes: list[str] = field(default_factory=list)
    mapped: set[str] = field(default_factory=set)
    addon_data: list[AddonData] = field(default_factory=list)


def check(site: Site, path: Path, host: str, password: str | None,
          owner_password: str | None, dry_run: bool) -> Checked:
    """Every check that can refuse the import, before anything changes (exit 2)."""
    from tui.core.inventory import TARGET_KINDS

    backup = ha_backup.read(path)
    ha_backup.check_password(backup, password)
    stack = ha_stack(site)
    where = f"host '{host}'"
    if host not in site.hosts:
        raise AbriError(Problem(where, "--host", "is not in this site; 'abri host list' "
                                "shows its hosts"))
    if site.hosts[host].kind not in TARGET_KINDS:
        raise AbriError(Problem(where, "--host", "runs no stacks (a Proxmox node?); give "
                                "the host Home Assistant runs on"))
    if stack.name not in site.hosts[host].stacks:
        raise AbriError(Problem(where, "stacks", f"has no {stack.name}; add it with 'abri "
                                f"stack add {host} {stack.name}' (and an MQTT broker, "
                                "mosquitto, on it or another host), then import again"))
    tag = site.image_pin(host, stack.name).rpartition(":")[2].split("@")[0]
    ha_backup.check_version(backup, tag, host)
    if not dry_run and not owner_password:
        raise AbriError(Problem("import-ha-backup", "--owner-password-file",
                                "is needed: the backup brings its own owner account, and "
                                "abri logs in as the owner to configure Home Assistant; "
                                "give a file holding the owner's password (the one you log "
                                "in to Home Assistant with)"))
    logins, notes, mapped = plan_logins(site, backup, host, stack.name, password)
    data, more, also = plan_addon_data(site, backup, host, password)
    return Checked(backup, stack.name, password, owner_password, logins, notes + more,
                   mapped | also, data)


def describe(checked: Checked) -> str:
    """What the backup holds and what becomes of each part: the dry run's text (the CLI
    prints it, the installer shows it). Names and counts only, never a secret."""
    lines = [ha_backup.format_summary(checked.backup)]
    lines += [f"  {line}" for line in left_out(checked.backup, checked)]
    return "\n".join(lines)


class Report:
    """Where an import tells what it does, and how it runs the kit's playbooks and the
    checks: the terminal and tui.core.runner by default; the installer passes its own."""

    def __init__(self) -> None:
        from tui.core import runner

        self.run_site = runner.run_site
        self.on_progress = runner.TerminalProgress()

    def step(self, text: str) -> None:
        print(f"\n{text}", flush=True)

    def info(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def warn(self, text: str) -> None:
        print(f"abri: {text}", file=sys.stderr, flush=True)

    def recap(self, result) -> None:
        from tui.core import runner

        runner.print_recap(result)

    def verify(self, site: Site, hosts: list[str]) -> int:
        from tui.core import runner

        return runner.verify_cli(site, hosts=hosts)


def _mqtt_wiring(site: Site, host: str, stack: str) -> dict[str, Any] | None:
    from tui.core import resolve

    state = resolve.resolve_host(site, host)
    mine = next(s for s in state["stacks"] if s["name"] == stack)
    for item in (mine.get("api") or {}).get("integrations") or []:
        if item.get("domain") == "mqtt":
            h, s, key = item["password_ref"].split("/", 2)
            password = (site.secrets.get(h, {}).get(s) or {}).get(key)
            if not password:
                return None  # made by the apply that follows; it then re-creates the entry
            return {"broker": item["host"], "port": int(item["port"]),
                    "username": item["username"], "password": password}
    return None


def run(site: Site, checked: Checked, host: str, keep_database: bool = True,
        out: Report | None = None) -> int:
    """Steps 2 to 6 of the module docstring, the configuration prepared on the controller
    first (a bad owner password is refused before the host changes). Returns the CLI's
    exit status. The CLI and the installer both run this (out says where to)."""
    import os

    from tui.core import backup as backups

    out = out or Report()
    stack = site.catalog[checked.stack]
    api = stack.api or {}
    volume = config_volume(stack)
    remove = set(OUTSIDE_DOMAINS) | set(api.get("remove_after_onboarding") or ())
    with tempfile.TemporaryDirectory(prefix="abri-import-") as tmp:
        os.chmod(tmp, 0o700)
        config = Path(tmp) / "config"
        out.step(f"[1/5] Unpacking {checked.backup.path.name} on this machine")
        ha_backup.extract_config(checked.backup, checked.password, config,
                                 database=keep_database)
        prepared = prepare_config(config, remove, _mqtt_wiring(site, host, stack.name))
        sets: dict[str, str] = {}
        if prepared.owner and api.get("owner_user_setting"):
            sets[api["owner_user_setting"]] = prepared.owner
            setting = stack.setting(api["owner_user_setting"])
            try:
                if setting is not None:
                    setting.convert(prepared.owner)
            except ValueError as exc:
                raise AbriError(Problem(f"backup '{checked.backup.path}'", "owner",
                                        f"the owner's user name cannot be used by abri: "
                                        f"{exc}")) from None
            fits = owner_password_fits(config, prepared.owner, checked.owner_password or "")
            if fits is False:
                raise AbriError(Problem("import-ha-backup", "--owner-password-file",
                                        f"is not the password of the backup's owner "
                                        f"{prepared.owner}; give the one you log in to that "
                                        "Home Assistant with"))
        imports = [(stack.name, volume, _packed(config, Path(tmp) / "config.tar.gz"), None)]
        for item in checked.addon_data:  # the add-ons' data, for the stacks that take it
            folder = Path(tmp) / f"addon-{item.stack}"
            unpack_addon_data(site, host, site.catalog[item.stack], checked.backup,
                              checked.password, item.secrets, [item.source], folder)
            imports.append((item.stack, item.volume,
                            _packed(folder, Path(tmp) / f"addon-{item.stack}.tar.gz"),
                            item.owner))

        progress = out.on_progress
        out.step(f"[2/5] Deploying {stack.name} on {host} (as the site wants it, before the "
                 "import)")
        result = out.run_site(site, "apply", limit=host, on_progress=progress)
        out.recap(result)
        if not result.ok:
            return 1
        names = [x[0] for x in imports]
        out.step(f"[3/5] Safety snapshot of {', '.join(names)} on {host} (stopped for it)")
        backups.prepare(site, [host])
        result = out.run_site(site, "backup", limit=host, on_progress=progress,
                              extra_vars={"abri_backup_only": names,
                                          "abri_backup_kind": "upgrade",
                                          "abri_backup_keep_stopped": True})
        out.recap(result)
        if not result.ok:
            return 1
        made = backups.made_rows(result)
        undo = (f"'abri restore {host} --snapshot {made[0]['short_id']}' puts back what "
                f"{host} held before the import") if made else ""
        if made:
            for line in backups.format_made(made).splitlines():
                out.info(line.strip())
            out.info(f"({undo})")
        out.step(f"[4/5] Putting the backup's configuration in place on {host}")
        for name, folder, archive, owner in imports:
            extra: dict[str, Any] = {"abri_import_stack": name, "abri_import_folder": folder,
                                     "abri_import_archive": str(archive)}
            if name != stack.name:  # an add-on's data: the whole volume, the service's own
                extra["abri_import_keep"] = []
                extra["abri_import_owner"] = owner
            result = out.run_site(site, "import", limit=host, on_progress=progress,
                                  extra_vars=extra)
            out.recap(result)
            if not result.ok:
                if undo:
                    out.warn(f"the import did not complete; {undo}")
                return 1
    for note in prepared.notes:
        out.info(note)
    for line in left_out(checked.backup, checked):
        out.info(line)
    if sets:
        site.set_stack(host, stack.name, sets)
    secrets = site.secrets.setdefault(host, {}).setdefault(stack.name, {})
    owner_secret = api.get("owner_secret")
    if owner_secret and checked.owner_password:
        secrets[owner_secret] = checked.owner_password
        secrets.pop(f"{owner_secret}_previous", None)
    for item in checked.addon_data:  # e.g. the key the add-on's credentials are encrypted with
        site.secrets.setdefault(host, {}).setdefault(item.stack, {}).update(item.secrets)
    from tui.core import accounts

    for login in checked.logins:  # the add-ons' logins, as device accounts (never printed)
        accounts.add(site, login.host, login.stack, login.name, login.password,
                     list(login.acl))
    site.save()
    for login in checked.logins:
        out.info(f"device account {login.name} imported on {login.stack} ({login.host}), "
                 "with its password from the backup (kept in the site's vault)")
    for item in checked.addon_data:
        out.info(f"{item.label}: its data is in {item.stack}'s {item.volume} volume on {host}")
    out.info(f"owner account kept: {prepared.owner or '(none found)'}; abri logs in with the "
             "password you gave (kept in the site's vault)")
    out.step(f"[5/5] Applying {host} and checking it")
    # the broker that received the add-on's logins is applied too (on another host)
    hosts = list(dict.fromkeys([host, *(x.host for x in checked.logins)]))
    result = out.run_site(site, "apply", limit=",".join(hosts), on_progress=progress)
    out.recap(result)
    code = out.verify(site, hosts) if result.ok else 1
    if code != 0 and undo:
        out.warn(f"the imported Home Assistant did not pass; fix what is said above and "
                 f"run 'abri apply --limit {host}', or {undo}")
    return code


def _packed(folder: Path, archive: Path) -> Path:
    """folder's contents as a tar.gz (for the import playbook); the folder is removed."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    shutil.rmtree(folder)
    return archive
