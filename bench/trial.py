"""Benchmark: what a trial restore (`abri backup --verify`) costs against the backup of the
same data, on a fleet host.

In one run, on one Debian 13 fleet host (tests/fleet/harness.py) with Mosquitto and Home
Assistant deployed by abri and some MB of generated user data in Home Assistant's config
folder (bench/backup.py's generator: half incompressible, half JSON lines), it measures:

  tar|zstd   `tar -cf - DATA | zstd` of the stacks' user-data folders into a file, timed on
             the host: the baseline of reading the data once (bench/backup.py's)
  restore    plain `restic restore --no-cache --verify` of the backup's snapshots into a
             folder, timed on the host: the baseline of the trial's restore step
  backup     `abri backup` (restic installed beforehand): the whole abri process
  trial      `abri backup --verify` on that backup: the whole abri process, and per stack
             the module's own time (restore, start, health, checks, removal)

and prints the trial's time against the backup's, and its restore step against the plain
restore and the tar baseline, as ratios measured in the same run. No assertion: this is for
reading.

    sudo .venv/bin/python bench/trial.py [--mb 200]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import BIN, make_site, print_rows, run  # noqa: E402
from bench.backup import (  # noqa: E402
    GENERATE,
    HA_CONFIG,
    REPO,
    baseline,
    data_bytes,
    host_time,
    repository_password,
    snapshots,
)
from tests.fleet import harness  # noqa: E402


def plain_restore(host, snaps: list[dict]) -> float:
    """restic restore (no cache, verify) of every snapshot, as the trial does it, timed on
    the host; the folder is removed afterwards."""
    seconds = 0.0
    for s in snaps:
        path = s["paths"][0]
        seconds += host_time(host, f'RESTIC_REPOSITORY={REPO} RESTIC_PASSWORD="$(cat '
                                   f'/root/.bench-pass)" restic restore --no-cache --verify '
                                   f'-q {s["id"]}:{path} --target /srv/plain-restore/'
                                   f'{s["short_id"]} >/dev/null')
    host.exec("rm -rf /srv/plain-restore")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MB of generated user data")
    args = parser.parse_args()
    images = harness.build_images()
    registry = harness.ensure_registry(images)
    rows = []
    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmpdir:
        tmp = Path(tmpdir)
        env = {**os.environ, "ABRI_CONFIG_HOME": str(tmp / "config"), "ANSIBLE_NOCOLOR": "1"}
        with harness.start_fleet(1, image="plain", workdir=tmp / "fleet") as fleet:
            host = fleet.hosts[0]
            site = make_site(tmp, "site", fleet.hosts, ("mosquitto", "homeassistant"),
                             registry, env)
            run([str(BIN / "abri"), "site", "set", "--site", site,
                 f"backup_repository={REPO}"], env)
            run([str(BIN / "abri"), "apply", "--no-verify", "--site", site], env)
            host.exec("mkdir -p /srv && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                      "--no-install-recommends restic zstd >/dev/null", timeout=1200)
            host.exec(f"python3 - {HA_CONFIG}/bench {args.mb // 2}", input=GENERATE,
                      timeout=3600)
            total = data_bytes(host)
            load = os.getloadavg()[0]

            base, _ = baseline(host)
            backup_wall, _ = run([str(BIN / "abri"), "backup", "--site", site], env)
            password = repository_password(site, env)
            host.exec("umask 077 && cat > /root/.bench-pass", input=password)
            snaps = snapshots(host, password)
            restore = plain_restore(host, snaps)
            trial_wall, out = run([str(BIN / "abri"), "backup", "--verify", "--site", site],
                                  env)
            per_stack = dict(re.findall(r"^  h1 +(\S+) +passed .*?, (\d+)s: ", out, re.M))
            host.exec("rm -f /root/.bench-pass")

    mb = total / 1e6
    rows.append(("user data", f"{mb:.0f} MB", f"{args.mb // 2} MB incompressible, "
                 f"{args.mb // 2} MB JSON lines, plus the stacks' own files"))
    rows.append(("tar | zstd (baseline)", f"{base:.1f} s", f"{mb / base:.0f} MB/s"))
    rows.append(("restic restore (baseline)", f"{restore:.1f} s",
                 f"{mb / restore:.0f} MB/s, {restore / base:.2f}x the tar baseline's time "
                 "(--no-cache --verify, both snapshots)"))
    rows.append(("abri backup", f"{backup_wall:.1f} s", f"{backup_wall / base:.2f}x the tar "
                 "baseline's time (whole process: Ansible, stacks stopped for the copy)"))
    rows.append(("abri backup --verify", f"{trial_wall:.1f} s",
                 f"{trial_wall / backup_wall:.2f}x the backup's time, "
                 f"{trial_wall / restore:.1f}x the plain restore's"))
    for stack, seconds in sorted(per_stack.items()):
        rows.append((f"  trial of {stack}", f"{int(seconds)} s", "restore, start, health, "
                     "checks, removal (the module's own time)"))
    print_rows(rows, load)


if __name__ == "__main__":
    main()
