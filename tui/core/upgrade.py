"""`abri upgrade [--limit HOST] [STACK ...] [--dry-run]`: move stacks to newer releases, one
at a time, and roll back by itself when the new release does not prove healthy.

The newest release of a stack is the newest of the kit's catalog pin and the release tags
the site's registry mirror holds (tui.core.registry; without a mirror nobody is asked), or
the one given with --to. For each host, then each stack on it (providers first):

1. before: what must still hold afterwards is read from the running stack (its check
   kinds: Home Assistant's version and config entries; a retained message left on a
   broker). A stack that does not answer before is not upgraded;
2. snapshot: the stack is stopped and its user data saved in a snapshot of kind
   ``upgrade`` (the backup's mechanism, into the host's repository; kept by the
   retention); it stays stopped;
3. switch: the host pins the new reference (tag and, from a registry, digest), and an
   apply of the host pulls it and recreates the stack, whose health check must pass;
4. gate: the checks of step 1 against the new release, then every check of the host.

When 3 or 4 fails, abri rolls back: the old reference is pinned again and the snapshot is
restored (what the failed release left is saved in a safety snapshot first), the stack is
deployed on it and the same gate is run against the old release. The site keeps the old
pin, and abri stops at that host. Each step is recorded in ``.abri/upgrade.json`` before it
starts: after an interruption, ``abri upgrade`` completes the recorded upgrade first (on to
the new release whole, or back to the old one whole), and ``abri apply`` refuses to run
until it has.

Exit codes: 0 upgraded (or nothing to upgrade), 1 failed before anything changed on a
host, 3 rolled back (the old release serves), 4 the rollback failed too.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tui.core import backup, registry
from tui.core.atomic import read_json, write_json
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

RECORD = "upgrade.json"
EXIT_UPGRADED, EXIT_FAILED, EXIT_ROLLED_BACK, EXIT_NOT_ROLLED_BACK = 0, 1, 3, 4


@dataclass
class Move:
    host: str
    stack: str
    old: str
    new: str
    source: str  # where the new release was found: kit, registry, --to

    @property
    def old_tag(self) -> str:
        return registry.split(self.old)[2]

    @property
    def new_tag(self) -> str:
        return registry.split(self.new)[2]


def record_path(site: Site):
    return site.path / ".abri" / RECORD


def read_record(site: Site) -> dict[str, Any] | None:
    return read_json(record_path(site))


def _write(site: Site, record: dict[str, Any]) -> None:
    write_json(record_path(site), record)


def unfinished(site: Site) -> str | None:
    """A sentence on the recorded upgrade that has not ended, or None."""
    record = read_record(site)
    if not record:
        return None
    m = record["move"]
    return (f"the upgrade of {m['stack']} on {m['host']} to {registry.split(m['new'])[2]} "
            f"is unfinished (it stopped at '{record['phase']}'); run 'abri upgrade' to "
            "complete it: it ends on the new release or rolls back to the old one")


def _check_tag(value: str) -> str:
    import re

    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", value or ""):
        raise AbriError(Problem("upgrade", "--to", f"{value!r} is not an image tag (letters, "
                                "digits, dots, hyphens and underscores, such as 2026.11.1)"))
    return value


def plan(site: Site, hosts: list[str], stacks: list[str], to: str | None = None,
         patch_only: bool = False) -> tuple[list[Move], list[str]]:
    """The moves, host by host (providers first on each), and notes on how the newest
    releases were found. Refuses what cannot be done before anything runs."""
    from tui.core.inventory import TARGET_KINDS

    for name in stacks:
        if name not in site.catalog:
            raise AbriError(Problem("upgrade", "STACK", f"{name!r} is not in the catalog; "
                                    "valid: " + ", ".join(site.catalog.names())))
    if to is not None:
        _check_tag(to)
        if len(stacks) != 1:
            raise AbriError(Problem("upgrade", "--to", "names one release: give the one "
                                    "stack it is for (abri upgrade STACK --to TAG)"))
    mirror = site.settings.registry_mirror
    reg = registry.Registry(mirror, site.settings.registry_insecure) if mirror else None
    notes = []
    if reg is None:
        notes.append("No registry mirror is set: the newest releases known are those of this "
                     "abri's catalog (set registry_mirror to look for newer ones there)")
    seen_tags: dict[str, list[str] | None] = {}
    moves: list[Move] = []
    for host_name in hosts:
        host = site.hosts[host_name]
        if host.kind not in TARGET_KINDS:
            continue
        for stack in site.catalog.ordered([s for s in host.stacks if s in site.catalog]):
            if stacks and stack not in stacks:
                continue
            old = site.image_pin(host_name, stack)
            upstream, repo, tag, _digest = registry.split(old)
            kit_tag = registry.split(site.catalog[stack].image_ref())[2]
            tags = None
            if reg is not None:
                if repo not in seen_tags:
                    try:
                        seen_tags[repo] = reg.tags(repo)
                    except registry.RegistryError as exc:
                        notes.append(f"{repo}: {exc}; the kit's release is the newest known")
                        seen_tags[repo] = None
                tags = seen_tags[repo]
            if to is not None:
                target, source = to, "--to"
                if tags is not None and to not in tags:
                    raise AbriError(Problem("upgrade", "--to", f"the registry {mirror} holds no "
                                            f"{repo}:{to}; its releases: " + ", ".join(
                                                sorted((t for t in tags if registry.release(t)),
                                                       key=registry.release)[-5:]) or "none"))
            else:
                target = registry.newer(tag, [kit_tag] + (tags or []), patch_only)
                source = "registry" if target and tags and target in tags else "kit"
            if not target or target == tag:
                continue
            new_digest = ""
            if tags is not None and target in tags:
                try:
                    new_digest = reg.digest(repo, target) or ""
                except registry.RegistryError as exc:
                    notes.append(f"{repo}:{target}: {exc}; pinned by tag alone")
            moves.append(Move(host_name, stack, old,
                              registry.join(upstream, repo, target, new_digest), source))
    return moves, notes


def format_plan(moves: list[Move]) -> str:
    if not moves:
        return "Every stack runs the newest release known; nothing to upgrade"
    lines = [f"{'HOST':<14} {'STACK':<16} {'FROM':<14} {'TO':<14} FOUND IN"]
    for m in moves:
        digest = registry.split(m.new)[3]
        lines.append(f"{m.host:<14} {m.stack:<16} {m.old_tag:<14} {m.new_tag:<14} {m.source}"
                     + (f" ({digest[:19]}...)" if digest else ""))
    return "\n".join(lines)


class Report:
    """Where an upgrade tells what it does, and how it runs the kit's playbooks: the
    terminal and tui.core.runner by default; the installer passes its own."""

    def __init__(self) -> None:
        from tui.core import runner

        self.run_site = runner.run_site
        self.on_progress = runner.TerminalProgress()

    def step(self, text: str) -> None:
        print(f"\n== upgrade: {text}", flush=True)

    def info(self, text: str) -> None:
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(f"abri: {text}", file=sys.stderr, flush=True)

    def recap(self, result) -> None:
        from tui.core import runner

        runner.print_recap(result)


def run(site: Site, moves: list[Move], timeout: int | None = None,
        out: Report | None = None) -> int:
    """Carry out the recorded upgrade first, if any, then moves. Returns an exit code."""
    out = out or Report()
    record = read_record(site)
    if record:
        move = Move(**record["move"])
        out.step(f"completing the upgrade of {move.stack} on {move.host} to {move.new_tag} (it "
             f"stopped at '{record['phase']}')")
        code = _one(site, move, record, timeout, out)
        if code != EXIT_UPGRADED:
            return code
        moves = [m for m in moves if (m.host, m.stack) != (move.host, move.stack)]
    for done, move in enumerate(moves):
        code = _one(site, move, None, timeout, out)
        if code != EXIT_UPGRADED:
            if done:
                out.warn(f"{done} upgrade(s) before this one stay in place")
            return code
    return EXIT_UPGRADED


def _failed_checks(checks) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)


def _one(site: Site, move: Move, record: dict[str, Any] | None, timeout: int | None,
         out: Report) -> int:
    from tui.core import checks

    progress = out.on_progress
    host, stack = move.host, move.stack
    if record is None:
        record = {"move": asdict(move), "phase": "before", "started": time.time()}
        out.step(f"{stack} on {host}: {move.old_tag} -> {move.new_tag}")
    phase = record["phase"]

    def step(name: str, **fields: Any) -> None:
        record.update(phase=name, **fields)
        _write(site, record)

    extra = {"abri_health_timeout": int(timeout)} if timeout else {}
    if phase == "before":
        step("before")
        try:
            record["before"] = checks.upgrade_before(site, host, stack)
        except (OSError, PermissionError) as exc:
            record_path(site).unlink(missing_ok=True)
            out.warn(f"{stack} on {host} does not answer as it should before the upgrade "
                     f"({exc}); nothing was changed. 'abri verify --limit {host}' shows what "
                     "fails")
            return EXIT_FAILED
        step("snapshot")
        phase = "snapshot"
    if phase == "snapshot":
        out.step(f"stop {stack} on {host} and save its data (snapshot of kind upgrade)")
        backup.prepare(site, [host])
        result = out.run_site(site, "backup", limit=host, on_progress=progress,
                                 extra_vars={"abri_backup_only": [stack],
                                             "abri_backup_kind": "upgrade",
                                             "abri_backup_keep_stopped": True})
        made = [r for r in backup.made_rows(result) if r["stack"] == stack]
        if not result.ok or not made:
            out.recap(result)
            out.warn(f"the snapshot of {stack} on {host} failed; starting it again as it was")
            again = out.run_site(site, "apply", limit=host, on_progress=progress)
            record_path(site).unlink(missing_ok=True)
            if not again.ok:
                out.recap(again)
            out.warn(f"nothing was upgraded; {stack} on {host} "
                     + ("serves again" if again.ok else f"could not be started: 'abri apply "
                        f"--limit {host}'"))
            return EXIT_FAILED
        out.info(backup.format_made(made))
        step("switch", snapshot=made[0]["id"], stopped_at=time.time())
        phase = "switch"
    reason = record.get("reason", "")
    if phase == "switch":
        out.step(f"deploy {move.new_tag} of {stack} on {host} and check it")
        site.pin_image(host, stack, move.new)
        site.save()
        result = out.run_site(site, "apply", limit=host, on_progress=progress,
                              extra_vars=extra)
        if result.ok:
            gate = checks.upgrade_gate(site, host, stack, record.get("before") or {},
                                       move.new_tag, settle=float(timeout or 120))
            reason = _failed_checks(gate)
            if not reason:
                record_path(site).unlink(missing_ok=True)
                took = time.time() - record.get("stopped_at", time.time())
                out.info(f"Upgraded {stack} on {host} to {move.new_tag}: the checks pass "
                         f"({stack} was down {took:.0f} s). Its data before the upgrade is "
                         f"snapshot {record['snapshot'][:8]} ('abri backups').")
                return EXIT_UPGRADED
        else:
            out.recap(result)
            reason = ("; ".join(f.message for f in result.progress.failures)
                      or f"the deploy of {move.new_tag} failed")
        step("rollback", reason=reason)
        phase = "rollback"
    # rollback: the old release on the data from before
    out.step(f"roll {stack} on {host} back to {move.old_tag}: {reason}")
    site.pin_image(host, stack, move.old)
    site.save()
    result = out.run_site(site, "restore", limit=host, on_progress=progress,
                          extra_vars={"abri_backup_snapshot": record["snapshot"],
                                      "abri_backup_only": [stack]})
    problem = ""
    if result.ok:
        gate = checks.upgrade_gate(site, host, stack, record.get("before") or {},
                                   move.old_tag)
        problem = _failed_checks(gate)
    else:
        out.recap(result)
        problem = "the restore and deploy of the old release failed"
    if problem:
        out.warn(f"{stack} on {host} did not come back on {move.old_tag}: {problem}. The "
                 f"data from before the upgrade is snapshot {record['snapshot'][:8]}; 'abri "
                 "upgrade' tries the rollback again")
        return EXIT_NOT_ROLLED_BACK
    record_path(site).unlink(missing_ok=True)
    out.warn(f"Rolled back {stack} on {host} to {move.old_tag}, on its data from before the "
             f"upgrade: {move.new_tag} failed its checks ({reason}). The site keeps "
             f"{move.old_tag}; what {move.new_tag} left is kept in a safety snapshot ('abri "
             "backups').")
    return EXIT_ROLLED_BACK
