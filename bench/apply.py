"""Benchmark: what abri's apply costs on top of Docker Compose, on one real fleet host.

In one run, on one fresh Debian 13 fleet host (tests/fleet/harness.py), with the stacks
mosquitto + homeassistant pulled from the local registry through the registry-mirror
setting, it measures:

  first     the first `abri apply --no-verify` (engine, images, onboarding, MQTT wiring)
  noop      the re-apply that changes nothing (abri's fixed cost: the no-op baseline)
  compose   a raw `docker compose up -d` of the same rendered stacks over SSH, also a no-op:
            the floor any tool on top of Compose pays

and prints the ratio noop/compose (the baseline is measured in the same run) and the number
of tasks a run executes. No assertion: this is for reading, not for passing.

    sudo .venv/bin/python bench/apply.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fleet import harness  # noqa: E402

BIN = Path(sys.executable).parent
STACKS = ("mosquitto", "homeassistant")


def abri(*args: str, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([str(BIN / "abri"), *args], capture_output=True, text=True, env=env,
                          timeout=3600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"abri {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def recap(out: str) -> dict[str, int]:
    match = re.search(r"ok=(\d+) changed=(\d+) failed=(\d+)", out)
    if not match:
        raise SystemExit(f"no recap in:\n{out[-2000:]}")
    ok, changed, failed = map(int, match.groups())
    return {"ok": ok, "changed": changed, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="no-op/compose pairs (median)")
    args = parser.parse_args()
    images = harness.build_images()
    registry = harness.ensure_registry(images)
    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmp, \
            harness.start_fleet(1, workdir=Path(tmp) / "fleet") as fleet:
        host = fleet[0]
        env = {**os.environ, "ABRI_CONFIG_HOME": str(Path(tmp) / "config")}
        site = str(Path(tmp) / "site")
        abri("init", "--site", site, "--registry-mirror", registry.address,
             "--registry-insecure", env=env)
        abri("host", "add", "bench", "--kind", "ssh", "--address", host.address,
             "--user", host.ssh_user, "--key", str(host.key_path), "--site", site, env=env)
        for stack in STACKS:
            abri("stack", "add", "bench", stack, "--site", site, env=env)
        first, out = abri("apply", "--no-verify", "--site", site, env=env)
        first_recap = recap(out)
        noops, composes, noop_recap = [], [], {}
        compose_cmd = " && ".join(
            f"docker compose -f /opt/abri/{s}/compose.yml up -d --quiet-pull" for s in STACKS)
        for _ in range(args.repeat):
            seconds, out = abri("apply", "--no-verify", "--site", site, env=env)
            noops.append(seconds)
            noop_recap = recap(out)
            start = time.perf_counter()
            host.ssh(compose_cmd, timeout=600)
            composes.append(time.perf_counter() - start)
    noop, compose = statistics.median(noops), statistics.median(composes)
    tasks = noop_recap["ok"] + noop_recap["changed"]
    print(f"first apply            {first:8.1f} s   (changed={first_recap['changed']})")
    print(f"no-op re-apply         {noop:8.1f} s   median of {len(noops)}"
          f" (changed={noop_recap['changed']})")
    print(f"raw compose up -d      {compose:8.2f} s   median of {len(composes)} (baseline)")
    print(f"ratio no-op/compose    {noop / compose:8.1f} x")
    print(f"ratio first/no-op      {first / noop:8.1f} x")
    print(f"tasks per run          {tasks:8d}")


if __name__ == "__main__":
    main()
