"""`abri migrate SOURCE TARGET`: move every stack of SOURCE to TARGET, data and credentials
included, with the downtime measured.

The steps, each recorded in ``.abri/migration.json`` before it starts so that running the
same command again after an interruption completes the migration from where it was:

1. deploy: TARGET is converged as the site has it now (the engine is ready), and the
   images of the stacks that come pulled there (before the downtime, not during it);
2. copy: a backup of SOURCE while its stacks run (``live``: read as they are), into a
   repository TARGET can read; it carries almost all the data;
3. seed: TARGET restores that live copy into the stacks' folders there (still before the
   downtime), so that the last restore only rewrites what changed since;
4. stop and copy what changed, in one run on SOURCE: its stacks are stopped (containers
   and data kept; the downtime starts), then a second backup, now consistent, which restic
   deduplicates against the first (only what changed is sent), and they stay stopped;
5. move: the stacks, their settings and their secrets move to TARGET in the site (one save;
   SOURCE keeps its copy of the secrets, and declares the stacks ``abri_migrated``: later
   applies keep them stopped there, never bring them down, never delete their data);
6. restore on TARGET from SOURCE's snapshots of step 4, then deploy, start and check
   health (the same passwords and tokens: the data is SOURCE's); the downtime ends;
7. verify TARGET.

The repository both reach: the site's own when it is on an SFTP server (SOURCE's
repository there, read by TARGET as ``abri restore TARGET --from SOURCE`` does); otherwise
a transfer repository in a folder on TARGET (``<backup_repository>-transfer/SOURCE``), which
SOURCE writes over SFTP with its abri key (let in on TARGET, restricted to SFTP) and TARGET
reads through the same SFTP path. If the stop or the second copy fails, SOURCE's stacks are
started again (one side always able to serve). The downtime is measured on this machine,
from the start of the stop run to the end of the restore run (its health checks passed).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from tui.core import backup, resolve
from tui.core.atomic import read_json, write_json
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

RECORD = "migration.json"
PHASES = ("deploy", "copy", "seed", "final", "move", "restore", "verify")


def record_path(site: Site):
    return site.path / ".abri" / RECORD


def read_record(site: Site) -> dict[str, Any] | None:
    return read_json(record_path(site))


def _write(site: Site, record: dict[str, Any]) -> None:
    write_json(record_path(site), record)


def transfer_access(site: Site, source: str, target: str) -> dict[str, Any]:
    """The repository SOURCE writes and TARGET reads (see the module docstring)."""
    own = resolve.repository_of(site, source)
    if "sftp" in own or "s3" in own:  # a repository both hosts reach
        return own
    host = site.hosts[target]
    if host.kind == "local" or not (host.address or host.name):
        raise AbriError(Problem(f"host '{target}'", "backup_repository", "the site's "
                                "repository is a folder on each host, and SOURCE cannot "
                                "reach this host over SSH for the transfer; use an SFTP "
                                "repository (abri site set backup_repository=sftp:USER@HOST:"
                                "/path)"))
    server = {"user": host.user or "root", "address": host.address or host.name,
              "port": int(host.port or 22), "site_host": target,
              "path": f"{site.settings.backup_repository}-transfer"}
    return resolve.repository_of(site, source, server=server)


def images_for(site: Site, source: str, target: str, stacks: list[str]) -> list[str]:
    """The image references TARGET will run once the stacks are there."""
    trial = site.copy()
    trial.move_stacks(source, target, stacks)
    state = resolve.resolve_host(trial, target)
    return sorted({s["image"] for s in state["stacks"] if s["name"] in stacks})


def seed_state(site: Site, source: str, target: str, stacks: list[str]) -> dict[str, Any]:
    """TARGET's backup state as it will be once the stacks are there (their folders)."""
    trial = site.copy()
    trial.move_stacks(source, target, stacks)
    return resolve.resolve_host(trial, target)["backup"]


def plan(site: Site, source: str, target: str) -> list[str]:
    """The stacks to move; refuses (nothing run, nothing written) what cannot be done."""
    from tui.core.inventory import TARGET_KINDS

    for name in (source, target):
        host = site.hosts.get(name)
        if host is None:
            raise AbriError(Problem(f"host '{name}'", "name", "is not in this site; 'abri "
                                    "host list' shows its hosts"))
        if host.kind not in TARGET_KINDS:
            raise AbriError(Problem(f"host '{name}'", "kind", "runs no stacks"))
    if source == target:
        raise AbriError(Problem("migrate", "target", "is the source; name another host"))
    stacks = list(site.hosts[source].stacks)
    if not stacks:
        raise AbriError(Problem(f"host '{source}'", "stacks", "has no stack to move"))
    both = [s for s in stacks if s in site.hosts[target].stacks]
    if both:
        raise AbriError(Problem(f"host '{target}'", "stacks", f"already has {', '.join(both)}"
                                "; remove it there first, or migrate elsewhere"))
    trial = site.copy()
    trial.move_stacks(source, target, stacks)
    trial.check()  # ports that collide on TARGET, wiring: refused before anything runs
    return stacks


def _say(text: str) -> None:
    print(f"\n== migrate: {text}", flush=True)


def run(site: Site, source: str, target: str) -> int:
    from tui.core import runner, transfers

    record = read_record(site)
    if record and (record["source"], record["target"]) != (source, target):
        raise AbriError(Problem("migrate", "source", f"the migration of {record['source']} "
                                f"to {record['target']} is unfinished; run 'abri migrate "
                                f"{record['source']} {record['target']}' to complete it"))
    if record:
        stacks = record["stacks"]
        _say(f"completing the migration of {', '.join(stacks)} from {source} to {target} "
             f"(it stopped before: {record['phase']})")
    else:
        stacks = plan(site, source, target)
        record = {"source": source, "target": target, "stacks": stacks, "phase": "deploy",
                  "started": time.time()}
    access = transfer_access(site, source, target)
    backup.ensure_passwords(site, [source, target])
    backup.ensure_keys(site, [source, target])
    backup.prepare_access(site, [source, target])

    def at(phase: str) -> bool:
        return PHASES.index(record["phase"]) <= PHASES.index(phase)

    def step(phase: str, **fields: Any) -> None:
        record.update(phase=phase, **fields)
        _write(site, record)

    def failed(result, what: str) -> int:
        runner.print_recap(result)
        print(f"\nabri: the migration stopped at '{what}'. {source}'s data is intact; run "
              f"'abri migrate {source} {target}' again to complete it", file=sys.stderr)
        return 1

    progress = runner.TerminalProgress()
    moving = transfers.TerminalTransfers()  # bytes, rate and time left of each copy
    step(record["phase"])
    if at("deploy"):
        _say(f"deploy {target}")
        result = runner.run_site(site, "apply", limit=target, on_progress=progress)
        if not result.ok:
            return failed(result, "deploy")
        images = images_for(site, source, target, stacks)
        if images:  # pulled now, not during the downtime
            result = runner.run_site(site, "backup", limit=target, on_progress=progress,
                                     extra_vars={"abri_backup_action": "pull",
                                                 "abri_backup_images": images})
            if not result.ok:
                return failed(result, "deploy")
        step("copy")
    if at("copy"):
        _say(f"copy the data of {source} while it runs, into {access['repository']}")
        result = runner.run_site(site, "backup", limit=source, on_progress=progress,
                                 on_transfer=moving,
                                 extra_vars={"abri_backup_live": True,
                                             "abri_backup_source": access})
        if not result.ok:
            return failed(result, "copy")
        _print_made(result)
        made = backup.made_rows(result)
        step("seed", live=made[0]["id"] if made else None)
    if at("seed") and record.get("live"):
        _say(f"put that copy in place on {target} (the last restore then brings only what "
             "changed)")
        result = runner.run_site(site, "backup", limit=target, on_progress=progress,
                                 on_transfer=moving,
                                 extra_vars={"abri_backup_action": "seed",
                                             "abri_backup_source": access,
                                             "abri_backup_snapshot": record["live"],
                                             "abri_backup_only": stacks,
                                             "abri_backup_seed": seed_state(
                                                 site, source, target, stacks)})
        if not result.ok:
            return failed(result, "seed")
        step("final")
    if at("final"):
        _say(f"stop the stacks of {source} (downtime starts) and copy what changed since "
             "the first copy")
        step("final", downtime_from=time.time())
        result = runner.run_site(site, "backup", limit=source, on_progress=progress,
                                 on_transfer=moving,
                                 extra_vars={"abri_backup_source": access,
                                             "abri_backup_keep_stopped": True})
        made = backup.made_rows(result)
        if not result.ok or not made:
            return _back(site, result, source, target, record, "final")
        _print_made(result)
        step("move", snapshot=made[0]["id"], copied_at=time.time())
    if at("move"):
        _say(f"move {', '.join(stacks)} to {target} in the site")
        site.move_stacks(source, target, stacks)
        site.save()
        step("restore")
    if at("restore"):
        _say(f"restore on {target} from {source}'s snapshots, start and check")
        result = runner.run_site(site, "restore", limit=target, on_progress=progress,
                                 on_transfer=moving,
                                 extra_vars={"abri_backup_source": access,
                                             "abri_backup_snapshot": record["snapshot"]})
        runner.print_recap(result)
        if not result.ok:
            return failed(result, "restore")
        step("verify", healthy_at=time.time())
    _say(f"verify {target}")
    code = runner.verify_cli(site, hosts=[target])
    print(format_downtime(record))
    if code == 0:
        record_path(site).unlink(missing_ok=True)
        print(f"Moved {', '.join(stacks)} from {source} to {target}. On {source} they stay "
              f"stopped with their data; 'abri migrate {target} {source}' moves them back.")
    else:
        print(f"abri: the stacks run on {target} but a check failed; 'abri verify' again, "
              f"or 'abri migrate {source} {target}' to finish", file=sys.stderr)
    return code


def _back(site: Site, result, source: str, target: str, record: dict[str, Any],
          what: str) -> int:
    """The stop or the last copy failed: SOURCE serves again, the migration starts over."""
    from tui.core import runner

    runner.print_recap(result)
    print(f"\nabri: the migration stopped at '{what}'; starting {source}'s stacks again",
          file=sys.stderr)
    again = runner.run_site(site, "apply", limit=source, on_progress=runner.TerminalProgress())
    record.update(phase="copy")
    _write(site, record)
    if not again.ok:
        runner.print_recap(again)
    print(f"abri: {source} " + ("serves again" if again.ok else "could not be started; 'abri "
          f"apply --limit {source}'") + f"; 'abri migrate {source} {target}' tries again",
          file=sys.stderr)
    return 1


def format_downtime(record: dict[str, Any]) -> str:
    start = record.get("downtime_from")
    end = record.get("healthy_at")
    if not (start and end):
        return "Downtime: not measured (the stop happened in an earlier, interrupted run)"
    copy = record.get("copied_at", start) - start
    rest = end - record.get("copied_at", start)
    return (f"Downtime: {end - start:.1f} s from the stop on {record['source']} to healthy "
            f"on {record['target']} (stop and last copy {copy:.1f} s, restore, deploy and "
            f"start {rest:.1f} s)")


def _print_made(result) -> None:
    made = backup.made_rows(result)
    if made:
        print(backup.format_made(made), flush=True)
