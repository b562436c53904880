"""Benchmark: how long `abri` takes from process start until its first screen is up.

Each sample is a fresh process. abri runs through its real console script with Textual's
headless driver (TEXTUAL_DRIVER) and ABRI_EXIT_WHEN_READY=1, which makes the app exit right
after the first screen has been mounted and refreshed; the wall time of the whole process is
the figure. Baselines measured in the same run, the same way:

  python     python -c pass                       (interpreter start)
  textual    python -c "import textual"           (the UI library import)
  hello      a bare Textual app with one Static   (the floor for any Textual app's first frame)

abri is measured on an empty folder (welcome screen) and on a site with one host and two
stacks (overview: loads the site, the catalog, Ansible's inventory parser and the vault).
Prints medians and abri's ratio to the bare Textual app. No assertion: this is for reading.

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


def sample(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({done.returncode}):\n"
                         + done.stderr.decode(errors="replace")[-2000:])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="samples per case (default 9)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "ABRI_CONFIG_HOME": str(tmp_path / "config"),
               "TEXTUAL_DRIVER": HEADLESS, "ABRI_EXIT_WHEN_READY": "1"}
        site = tmp_path / "site"
        abri = str(BIN / "abri")
        for step in (["init"], ["host", "add", "home", "--kind", "local"],
                     ["stack", "add", "home", "mosquitto"],
                     ["stack", "add", "home", "homeassistant"]):
            subprocess.run([abri, *step, "--site", str(site)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        cases = {
            "python": [sys.executable, "-c", "pass"],
            "textual": [sys.executable, "-c", "import textual"],
            "hello": [sys.executable, "-c", HELLO],
            "abri welcome": [abri, "--site", str(tmp_path / "empty")],
            "abri overview": [abri, "--site", str(site)],
        }
        for cmd in cases.values():  # warm the file cache and bytecode once
            sample(cmd, env)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):  # interleaved, so drift hits every case alike
            for name, cmd in cases.items():
                times[name].append(sample(cmd, env))

    med = {name: statistics.median(values) for name, values in times.items()}
    print(f"startup to first screen, median of {args.repeat} fresh processes:")
    for name, value in med.items():
        spread = max(times[name]) - min(times[name])
        print(f"  {name:<14} {value * 1000:7.0f} ms   (spread {spread * 1000:.0f} ms)")
    for name in ("abri welcome", "abri overview"):
        print(f"{name}: {med[name] / med['hello']:.2f}x a bare Textual app, "
              f"{med[name] / med['textual']:.2f}x 'import textual'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
