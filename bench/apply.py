"""Benchmark: what abri's apply costs against the Ansible floor, on real fleet hosts.

In one run, on Debian 13 fleet hosts (tests/fleet/harness.py) with images from the local
registry through the registry-mirror setting, it measures:

  floor     a one-task playbook (ansible.builtin.ping) against the same host with the same
            connection settings (the site's ansible.cfg: pipelining, ControlPersist): the
            least any Ansible run pays; the baseline, measured in the same run
  first     the first `abri apply --no-verify` of mosquitto + homeassistant (engine, images,
            onboarding, MQTT wiring)
  noop      the re-apply that changes nothing, as the `ansible-playbook site.yml` run abri
            makes (timed as the whole abri process)
  hosts     the no-op re-apply of Mosquitto alone on 1, 3 and 6 hosts, to show how the cost
            grows with hosts, next to the floor on the same 1, 3 and 6 hosts (the fleet's
            hosts share the controller's cores, so the floor grows too)

and prints the ratios noop/floor and N hosts/1 host. No assertion: this is for reading.

    sudo .venv/bin/python bench/apply.py [--repeat N] [--no-hosts]
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
NESTED = ('{"bip": "10.213.0.1/24", "default-address-pools": '
          '[{"base": "10.214.0.0/16", "size": 24}]}')


def run(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=cwd)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def print_rows(rows: list[tuple[str, str, str]], load: float) -> None:
    """A bench's figures (label, value, note) as aligned lines, and the load they met."""
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>9}  {note}")
    print(f"(load average {load:.1f} at the start on {os.cpu_count()} cores; the machine may "
          "be shared)")


def recap(out: str) -> dict[str, int]:
    found = re.findall(r"ok=(\d+) changed=(\d+) failed=(\d+)", out)
    if not found:
        raise SystemExit(f"no recap in:\n{out[-2000:]}")
    return {"ok": sum(int(f[0]) for f in found), "changed": sum(int(f[1]) for f in found),
            "failed": sum(int(f[2]) for f in found)}


def make_site(tmp: Path, name: str, hosts, stacks, registry, env) -> str:
    site = str(tmp / name)
    abri = str(BIN / "abri")
    run([abri, "init", "--site", site, "--registry-mirror", registry.address,
         "--registry-insecure"], env)
    for i, host in enumerate(hosts):
        run([abri, "host", "add", f"h{i + 1}", "--kind", "ssh", "--address", host.address,
             "--user", host.ssh_user, "--key", str(host.key_path), "--site", site], env)
        for stack in stacks:
            run([abri, "stack", "add", f"h{i + 1}", stack, "--site", site], env)
    Path(site, "group_vars", "all", "local.yml").write_text(
        f"---\ndocker_engine_daemon_options: {NESTED}\n")
    return site


def floor(site: str, env: dict[str, str], repeat: int) -> float:
    """A one-task playbook against the site's hosts with the site's own ansible.cfg."""
    Path(site, "ping.yml").write_text(
        "---\n- name: Floor\n  hosts: abri_targets\n  gather_facts: false\n  tasks:\n"
        "    - name: Ping\n      ansible.builtin.ping:\n")
    import yaml

    envp = {**env, "ANSIBLE_CONFIG": str(Path(site) / "ansible.cfg")}
    site_id = yaml.safe_load(Path(site, "group_vars/all/abri.yml").read_text())["abri_site_id"]
    password = Path(env["ABRI_CONFIG_HOME"]) / "vault" / f"{site_id}.pass"
    # the same inventory and vars as abri's run, the vault included
    cmd = [str(BIN / "ansible-playbook"), "ping.yml", "--vault-password-file", str(password)]
    times = [run(cmd, envp, cwd=site)[0] for _ in range(repeat)]
    return statistics.median(times)


def noop(site: str, env: dict[str, str], repeat: int) -> tuple[float, dict[str, int]]:
    times, last = [], {}
    for _ in range(repeat):
        seconds, out = run([str(BIN / "abri"), "apply", "--no-verify", "--site", site], env)
        times.append(seconds)
        last = recap(out)
    return statistics.median(times), last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--no-hosts", action="store_true", help="skip the 1/3/6 host part")
    args = parser.parse_args()
    images = harness.build_images()
    registry = harness.ensure_registry(images)
    rows = []
    with tempfile.TemporaryDirectory(prefix="abri-bench-") as tmpdir:
        tmp = Path(tmpdir)
        env = {**os.environ, "ABRI_CONFIG_HOME": str(tmp / "config"), "ANSIBLE_NOCOLOR": "1"}
        with harness.start_fleet(1, image="plain", workdir=tmp / "fleet") as fleet:
            site = make_site(tmp, "site", fleet.hosts, ("mosquitto", "homeassistant"),
                             registry, env)
            first, out = run([str(BIN / "abri"), "apply", "--no-verify", "--site", site], env)
            first_recap = recap(out)
            base = floor(site, env, args.repeat)
            quiet, quiet_recap = noop(site, env, args.repeat)
        rows.append(("first apply (bare host)", f"{first:.1f} s",
                     f"changed={first_recap['changed']}"))
        rows.append(("one-task playbook (floor)", f"{base:.2f} s", "baseline"))
        rows.append(("no-op re-apply", f"{quiet:.2f} s",
                     f"{quiet / base:.2f}x floor, changed={quiet_recap['changed']}, "
                     f"tasks={quiet_recap['ok'] + quiet_recap['changed']}"))
        if not args.no_hosts:
            with harness.start_fleet(6, image="plain", workdir=tmp / "fleet6") as fleet:
                one = floor_one = None
                for n in (1, 3, 6):
                    site = make_site(tmp, f"site{n}", fleet.hosts[:n], ("mosquitto",),
                                     registry, env)
                    run([str(BIN / "abri"), "apply", "--no-verify", "--site", site], env)
                    seconds, _ = noop(site, env, args.repeat)
                    base_n = floor(site, env, args.repeat)
                    one = one or seconds
                    floor_one = floor_one or base_n
                    rows.append((f"no-op, mosquitto on {n} host(s)", f"{seconds:.2f} s",
                                 f"{seconds / one:.2f}x of 1 host"))
                    rows.append((f"floor on {n} host(s)", f"{base_n:.2f} s",
                                 f"{base_n / floor_one:.2f}x of 1 host"))
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        print(f"{label:<{width}}  {value:>9}  {note}")


if __name__ == "__main__":
    main()
