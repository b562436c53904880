"""Benchmark: a migration's downtime against the time its data takes to move, on fleet hosts.

In one run, on two Debian 13 fleet hosts (tests/fleet/harness.py): Mosquitto and Home
Assistant deployed by abri on h1, with some hundreds of MB of generated user data in Home
Assistant's config folder (as bench/backup.py makes it), then `abri migrate h1 h2` through
the site's default repository (a folder on each host, so the data travels through the
transfer repository on h2 over SFTP). It prints, from the command's own steps:

  live copy   the backup of h1 while its stacks run (the baseline: the whole data moved
              once, restic's way)
  seed        that copy put in place on h2, still before the stop
  downtime    from the stop on h1 to healthy on h2 (what abri prints), and its parts

and the ratio downtime / (live copy + seed): what the downtime would hold without the copy
before the stop is the whole transfer. No assertion: this is for reading.

    sudo .venv/bin/python bench/migrate.py [--mb 400]
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import BIN, NESTED, print_rows, run  # noqa: E402
from bench.backup import GENERATE, HA_CONFIG, data_bytes  # noqa: E402
from tests.fleet import harness  # noqa: E402


def timed_steps(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, float], str]:
    """Run abri migrate; the seconds each '== migrate: STEP' took (until the next)."""
    marks: list[tuple[str, float]] = []
    out: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("== migrate: "):
                marks.append((line[12:].split()[0], time.perf_counter()))
        code = proc.wait()
    text = "".join(out)
    if code != 0:
        raise SystemExit(f"abri migrate failed ({code}):\n{text[-4000:]}")
    marks.append(("end", time.perf_counter()))
    steps: dict[str, float] = {}
    for (name, t0), (_, t1) in itertools.pairwise(marks):
        steps[name] = steps.get(name, 0.0) + t1 - t0
    return steps, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="MB of generated user data")
    args = parser.parse_args()
    images = harness.build_images()
    registry = harness.ensure_registry(images)
    abri = str(BIN / "abri")
    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmpdir:
        tmp = Path(tmpdir)
        env = {**os.environ, "ABRI_CONFIG_HOME": str(tmp / "config"), "ANSIBLE_NOCOLOR": "1"}
        with harness.start_fleet(2, image="plain", workdir=tmp / "fleet") as fleet:
            site = str(tmp / "site")
            run([abri, "init", "--site", site, "--registry-mirror", registry.address,
                 "--registry-insecure"], env)
            for i, host in enumerate(fleet.hosts):
                run([abri, "host", "add", f"h{i + 1}", "--kind", "ssh", "--address",
                     host.address, "--user", host.ssh_user, "--key", str(host.key_path),
                     "--site", site], env)
            for stack in ("mosquitto", "homeassistant"):
                run([abri, "stack", "add", "h1", stack, "--site", site], env)
            Path(site, "group_vars", "all", "local.yml").write_text(
                f"---\ndocker_engine_daemon_options: {NESTED}\n")
            run([abri, "apply", "--no-verify", "--site", site], env)
            h1 = fleet.hosts[0]
            h1.exec(f"python3 - {HA_CONFIG}/bench {args.mb // 2}", input=GENERATE,
                    timeout=3600)
            total = data_bytes(h1)
            load = os.getloadavg()[0]
            steps, out = timed_steps([abri, "migrate", "h1", "h2", "--site", site], env)
    said = re.search(r"^Downtime: ([\d.]+) s .*$", out, re.M)
    if not said:
        raise SystemExit(f"no downtime in:\n{out[-3000:]}")
    downtime = float(said.group(1))
    live, seed = steps.get("copy", 0.0), steps.get("put", 0.0)
    rows = [("user data", f"{total / 1e6:.0f} MB", f"{args.mb // 2} MB incompressible, "
             f"{args.mb // 2} MB JSON lines, plus the stacks' own files"),
            ("deploy h2", f"{steps.get('deploy', 0.0):.1f} s", "engine, stacks' images"),
            ("live copy", f"{live:.1f} s", f"{total / 1e6 / live:.0f} MB/s, h1 still serving "
             "(the baseline)"),
            ("seed", f"{seed:.1f} s", "the copy put in place on h2, h1 still serving"),
            ("downtime", f"{downtime:.1f} s", said.group(0)[len("Downtime: "):]),
            ("ratio", f"{downtime / (live + seed):.2f}",
             "downtime / (live copy + seed): the share of moving the data that the "
             "downtime holds")]
    print_rows(rows, load)


if __name__ == "__main__":
    main()
