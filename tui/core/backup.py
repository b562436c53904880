"""Backup, the list of backups and restore: the controller's side of the kit's abri_backup.

Each target host keeps a restic repository (the site setting ``backup_repository``, a folder
on the host or on a disk mounted there). A backup makes one snapshot per stack with user data
(the volumes its manifest marks ``user_data``), read by the rule its manifest declares
(``backup.consistency``: stop or copy); the snapshots of one ``abri backup`` share a run tag,
and a restore puts back one run. The repository password is generated per host on the first
backup and kept in the host's vault (``_backup/repository_password``), never printed. Nothing
here names a service.

``abri backup --verify`` restores the newest backup of each stack on trial, next to the live
one (the kit module's action ``trial``: a scratch Compose project started on a scratch copy,
checked by the manifest's health check and its ``backup.trial`` block, then removed). When a
stack's trial passed is kept per host and stack in the site's ``.abri/restores-proven.json``
(the machine's record, not committed), which ``abri backups`` shows.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from tui.core import resolve
from tui.core import secrets as vault
from tui.core.atomic import read_json, write_json
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.runner import RunResult
    from tui.core.site import Site

SNAPSHOT_ID = re.compile(r"^[0-9a-f]{4,64}$")


def hosts_with_data(site: Site, names: list[str]) -> list[str]:
    """The hosts among names with at least one stack that holds user data."""
    return [n for n in names
            if any(s in site.catalog and site.catalog[s].user_data
                   for s in site.hosts[n].stacks)]


def has_password(site: Site, host: str) -> bool:
    stack, key = resolve.BACKUP_SECRET
    return bool((site.secrets.get(host, {}).get(stack) or {}).get(key))


def ensure_passwords(site: Site, hosts: list[str]) -> list[str]:
    """Generate the repository password of every host that has none yet (saved with the
    site). Returns the hosts that got one."""
    stack, key = resolve.BACKUP_SECRET
    made = []
    for name in hosts:
        if not has_password(site, name):
            site.secrets.setdefault(name, {}).setdefault(stack, {})[key] = vault.generate()
            made.append(name)
    if made:
        site.save()
    return made


def _key_pair() -> tuple[str, str]:
    """A new Ed25519 key pair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def ensure_keys(site: Site, hosts: list[str]) -> list[str]:
    """Give every host that has none the SSH key pair it reaches SFTP repositories with
    (kept in its vault, saved with the site; the private key is never printed). Returns the
    hosts that got one."""
    made = []
    for name in hosts:
        mine = site.secrets.setdefault(name, {}).setdefault(resolve.SFTP_KEY[0], {})
        if not mine.get(resolve.SFTP_KEY[1]):
            mine[resolve.SFTP_KEY[1]], mine[resolve.SFTP_PUBLIC_KEY[1]] = _key_pair()
            made.append(name)
    if made:
        site.save()
    return made


def uses_sftp(site: Site) -> bool:
    return resolve.sftp_server(site, site.settings.backup_repository) is not None


def uses_s3(site: Site) -> bool:
    return resolve.s3_repository(site, "") is not None


def _s3_keys(site: Site, host: str) -> tuple[str, str] | None:
    mine = site.secrets.get(host, {}).get(resolve.S3_ACCESS_KEY[0]) or {}
    pair = (mine.get(resolve.S3_ACCESS_KEY[1]), mine.get(resolve.S3_SECRET_KEY[1]))
    return pair if all(pair) else None


def set_s3_keys(site: Site, access_key: str, secret_key: str) -> list[str]:
    """Keep the S3 storage's keys in the vault of every host (saved with the site; never
    printed). Returns the hosts whose keys changed."""
    from tui.core import validate

    for field, value in (("--access-key-file", access_key), ("--secret-key-file", secret_key)):
        if not value or len(value) > 256 or validate.has_control(value) or " " in value:
            raise AbriError(Problem("backup keys", field, "must hold one key: 1 to 256 "
                                    "printable characters without spaces (the file's first "
                                    "line)"))
    changed = []
    for name in sorted(site.hosts):
        if _s3_keys(site, name) != (access_key, secret_key):
            mine = site.secrets.setdefault(name, {}).setdefault(resolve.S3_ACCESS_KEY[0], {})
            mine[resolve.S3_ACCESS_KEY[1]] = access_key
            mine[resolve.S3_SECRET_KEY[1]] = secret_key
            changed.append(name)
    if changed:
        site.save()
    return changed


def ensure_s3_keys(site: Site, hosts: list[str]) -> list[str]:
    """Give every host among hosts the site's S3 keys (from a host that has them, e.g. one
    added after 'abri secrets s3'). Refused, naming the command, when no host has any."""
    known = next((k for k in (_s3_keys(site, n) for n in sorted(site.hosts)) if k), None)
    if known is None:
        raise AbriError(Problem("backup_repository", "S3 keys", "the site keeps its backups in "
                                f"S3 storage ({site.settings.backup_repository}) and has no "
                                "keys for it yet; give them once with 'abri secrets s3 "
                                "--access-key-file F --secret-key-file F' (kept in the "
                                "vault, never printed)"))
    made = [n for n in hosts if _s3_keys(site, n) != known]
    for name in made:
        mine = site.secrets.setdefault(name, {}).setdefault(resolve.S3_ACCESS_KEY[0], {})
        mine[resolve.S3_ACCESS_KEY[1]], mine[resolve.S3_SECRET_KEY[1]] = known
    if made:
        site.save()
    return made


def prepare_access(site: Site, hosts: list[str]) -> None:
    """What reaching the repositories of hosts needs in the vault: SSH keys when the
    repository is reached over SFTP, the storage keys (on every host: a restore --from or a
    migration reads another host's repository) when it is S3."""
    if uses_s3(site):
        ensure_s3_keys(site, sorted(site.hosts))
    if uses_sftp(site):
        ensure_keys(site, hosts)


def prepare(site: Site, hosts: list[str]) -> None:
    """What a backup run of hosts needs in the vault: repository passwords, and the keys
    that reach the repositories."""
    prepare_access(site, hosts)  # may refuse (no S3 keys): before anything is saved
    ensure_passwords(site, hosts)


def source_of(site: Site, host: str, other: str) -> dict[str, Any]:
    """OTHER's repository as host reaches it (restore --from): only an SFTP repository is
    shared; a folder on OTHER is out of host's reach."""
    if other not in site.hosts:
        raise AbriError(Problem(f"host '{other}'", "--from", "is not in this site; 'abri host "
                                "list' shows its hosts"))
    access = resolve.repository_of(site, other)
    if "sftp" not in access and "s3" not in access:
        raise AbriError(Problem(f"host '{other}'", "--from", "keeps its backups in a folder "
                                f"on itself ({access['repository']}), which {host} cannot "
                                "read; use an SFTP or S3 repository (abri site set "
                                "backup_repository=sftp:USER@HOST:/path or s3:...) for "
                                "restores across hosts"))
    return access


def check_snapshot_id(value: str) -> str:
    value = value.strip().lower()
    if not SNAPSHOT_ID.match(value):
        raise AbriError(Problem("restore", "--snapshot", f"{value!r} is not a snapshot id "
                                "(4 to 64 hexadecimal digits, as 'abri backups' shows them)"))
    return value


def module_results(result: RunResult, failed: bool = False
                   ) -> dict[str, list[dict[str, Any]]]:
    """host -> the results of the run's abri_backup calls that ran (not skipped); with
    failed, those that failed too."""
    out: dict[str, list[dict[str, Any]]] = {}
    wanted = ("runner_on_ok", "runner_on_failed") if failed else ("runner_on_ok",)
    for event in result.events:
        if event.get("event") not in wanted:
            continue
        data = event.get("event_data") or {}
        if data.get("task_action") not in ("abri_backup", "ansible.legacy.abri_backup"):
            continue
        out.setdefault(str(data.get("host")), []).append(data.get("res") or {})
    return out


def snapshot_rows(result: RunResult) -> list[dict[str, Any]]:
    """Every snapshot a 'snapshots' run listed, one row each, by host then time."""
    rows = []
    for host, results in sorted(module_results(result).items()):
        for res in results:
            for snap in res.get("snapshots") or []:
                rows.append({"host": host, **{k: snap.get(k) for k in (
                    "stack", "time", "id", "short_id", "kind", "run", "size", "files",
                    "added")}})
    return rows


def made_rows(result: RunResult) -> list[dict[str, Any]]:
    """The snapshots a backup run made, one row per host and stack."""
    return [{"host": host, **snap} for host, results in sorted(module_results(result).items())
            for res in results for snap in res.get("snapshots") or []
            if "stopped_seconds" in snap]


def format_made(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        how = f"stopped {r['stopped_seconds']:.0f}s" if r["stopped_seconds"] else "not stopped"
        lines.append(f"  {r['host']:<12} {r['stack']:<16} snapshot {r['short_id']}  "
                     f"{human_size(r['size'])} in {r['files']} files, "
                     f"{human_size(r['added'])} new, {how}")
    return "\n".join(lines)


def human_size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_snapshots(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No snapshots yet; make one with 'abri backup'"
    lines = [f"{'HOST':<14} {'STACK':<16} {'DATE (UTC)':<20} {'ID':<9} {'SIZE':>10} "
             f"{'ADDED':>10}  KIND"]
    for r in rows:
        date = str(r["time"] or "")[:19].replace("T", " ")
        lines.append(f"{r['host']:<14} {r['stack'] or '-':<16} {date:<20} {r['short_id']:<9} "
                     f"{human_size(r['size']):>10} {human_size(r['added']):>10}  {r['kind']}")
    return "\n".join(lines)


#: where the controller keeps when each host's stacks were last restored on trial
PROVEN = "restores-proven.json"


def _proven_file(site: Site):
    return site.path / ".abri" / PROVEN


def proven(site: Site) -> dict[str, dict[str, dict[str, Any]]]:
    """host -> stack -> the last trial restore that passed (time, snapshot, its time)."""
    data = read_json(_proven_file(site))
    if not isinstance(data, dict):
        return {}
    return {str(h): {str(s): dict(v) for s, v in stacks.items() if isinstance(v, dict)}
            for h, stacks in data.items() if isinstance(stacks, dict)}


def trial_rows(result: RunResult) -> list[dict[str, Any]]:
    """Every stack a trial run tried, one row per host and stack (passed or failed)."""
    rows = []
    for host, results in sorted(module_results(result, failed=True).items()):
        for res in results:
            for t in res.get("trials") or []:
                rows.append({"host": host, **{k: t.get(k) for k in (
                    "stack", "ok", "reason", "id", "short_id", "time", "seconds", "checks")}})
    return rows


def record_trials(site: Site, rows: list[dict[str, Any]]) -> None:
    """Keep the trials that passed as the hosts' stacks' last proven restores."""
    passed = [r for r in rows if r["ok"]]
    if not passed:
        return
    data = proven(site)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for r in passed:
        data.setdefault(r["host"], {})[r["stack"]] = {
            "time": now, "snapshot": r["id"], "short_id": r["short_id"],
            "snapshot_time": r["time"], "seconds": r["seconds"]}
    write_json(_proven_file(site), data)


def format_trials(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        snap = f"snapshot {r['short_id']}" if r.get("short_id") else "no snapshot"
        if r["ok"]:
            said = f"passed  {snap} of {str(r['time'] or '')[:19].replace('T', ' ')} UTC, " \
                   f"{float(r['seconds'] or 0):.0f}s: {', '.join(r['checks'] or [])}"
        else:
            said = f"FAILED  {snap}: {r['reason']}"
        lines.append(f"  {r['host']:<12} {r['stack']:<16} {said}")
    return "\n".join(lines)


def with_proven(site: Site, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The snapshot rows, each with its host and stack's last proven restore (or None)."""
    known = proven(site)
    return [{**r, "last_proven_restore": known.get(r["host"], {}).get(r["stack"] or "")}
            for r in rows]


def format_proven(site: Site, hosts: list[str]) -> str:
    """A line per host and stack with user data: when a restore of it was last proven."""
    known = proven(site)
    lines = ["Last proven restore ('abri backup --verify'):"]
    for host in hosts:
        for stack in site.catalog.ordered(list(site.hosts[host].stacks)):
            if not site.catalog[stack].user_data:
                continue
            p = known.get(host, {}).get(stack)
            when = (f"{str(p.get('time', ''))[:19].replace('T', ' ')} UTC, snapshot "
                    f"{p.get('short_id', '?')} of "
                    f"{str(p.get('snapshot_time', ''))[:19].replace('T', ' ')} UTC"
                    if p else "never")
            lines.append(f"  {host:<12} {stack:<16} {when}")
    return "\n".join(lines)
