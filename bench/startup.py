"""Benchmark: how long `abri` takes from process start until its first screen is up.

Each sample is a fresh process. abri runs through its real console script with Textual's
headless driver (TEXTUAL_DRIVER) and ABRI_EXIT_WHEN_READY, which makes the app exit right
after its first screen has been mounted and refreshed (=1), or once that screen shows the
site read from disk (=loaded); the wall time of the whole process is the figure. Baselines
measured in the same run, the same way:

  python     python -c pass                       (interpreter start)
  textual    python -c "import textual"           (the UI library import)
  hello      a bare Textual app with one Static   (the floor for any Textual app's first frame)

abri is measured on an empty folder (welcome screen) and on a site with two hosts (this
machine with Mosquitto and Home Assistant, a Raspberry Pi over SSH with Mosquitto). The
overview's first frame comes before the site is read: the header, the summary line saying
the site is being read, the frames of the two panels and the footer; then a loading
indicator shows while a worker reads the site (the catalog, Ansible's inventory parser and
the vault), and the tables fill in. Both moments are measured. Prints medians (wall time,
and the CPU time each process used) and abri's ratios to the bare Textual app. No
assertion: this is for reading.

    .venv/bin/python bench/startup.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
HEADLESS = "textual.drivers.headless_driver:HeadlessDriver"
READY = "ABRI_EXIT_WHEN_READY"

HELLO = """
from textual.app import App
from textual.widgets import Static

class Hello(App):
    def compose(self):
        yield Static("hello")

    def on_mount(self):
        self.call_after_refresh(self.exit)

Hello().run()
"""


def sample(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall time, CPU time) of one fresh process, in seconds. The CPU time (user + system,
    from the process's own rusage) hardly moves when other work shares the machine; the
    wall time does."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    assert process.stderr is not None
    errors = process.stderr.read()
    process.stderr.close()
    if status != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({status}):\n"
                         + errors.decode(errors="replace")[-2000:])
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="samples per case (default 9)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "ABRI_CONFIG_HOME": str(tmp_path / "config"),
               "TEXTUAL_DRIVER": HEADLESS}
        site = tmp_path / "site"
        abri = str(BIN / "abri")
        for step in (["init"], ["host", "add", "home", "--kind", "local"],
                     ["stack", "add", "home", "mosquitto"],
                     ["stack", "add", "home", "homeassistant"],
                     ["host", "add", "pi", "--kind", "ssh", "--address", "192.0.2.20",
                      "--user", "pi"],
                     ["stack", "add", "pi", "mosquitto"]):
            subprocess.run([abri, *step, "--site", str(site)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        frame, loaded = {**env, READY: "1"}, {**env, READY: "loaded"}
        cases = {
            "python": ([sys.executable, "-c", "pass"], env),
            "textual": ([sys.executable, "-c", "import textual"], env),
            "hello": ([sys.executable, "-c", HELLO], env),
            "abri welcome": ([abri, "--site", str(tmp_path / "empty")], frame),
            "abri overview": ([abri, "--site", str(site)], frame),
            "abri loaded": ([abri, "--site", str(site)], loaded),
        }
        for cmd, case_env in cases.values():  # warm the file cache and bytecode once
            sample(cmd, case_env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):  # interleaved, so drift hits every case alike
            for name, (cmd, case_env) in cases.items():
                wall, used = sample(cmd, case_env)
                times[name].append(wall)
                cpu[name].append(used)

    med = {name: statistics.median(values) for name, values in times.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    print(f"startup to first screen, median of {args.repeat} fresh processes "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for name, value in med.items():
        spread = max(times[name]) - min(times[name])
        print(f"  {name:<14} {value * 1000:7.0f} ms   (spread {spread * 1000:.0f} ms)   "
              f"CPU {med_cpu[name] * 1000:5.0f} ms")
    labels = {"abri welcome": "abri welcome (empty folder)",
              "abri overview": "abri overview, two hosts: first frame",
              "abri loaded": "abri overview, two hosts: site read and shown"}
    for name, label in labels.items():
        print(f"{label}: {med[name] / med['hello']:.2f}x a bare Textual app "
              f"(CPU {med_cpu[name] / med_cpu['hello']:.2f}x), "
              f"{med[name] / med['textual']:.2f}x 'import textual'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
