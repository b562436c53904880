"""Benchmark: what abri's backup costs against `tar | zstd` of the same data, on a fleet host.

In one run, on one Debian 13 fleet host (tests/fleet/harness.py) with Mosquitto and Home
Assistant deployed by abri and some hundreds of MB of generated user data in Home
Assistant's config folder (half incompressible, as photos and camera snapshots are; half
compressible JSON lines, as exported history is), it measures:

  tar|zstd   `tar -cf - DATA | zstd -q -o FILE` of the stacks' user-data folders into a file
             next to the repository, timed on the host: the baseline, measured twice in the
             same run (before and after the first backup; their mean is the baseline)
  sealed     the same stream also encrypted (openssl AES-256-CTR) and hashed (SHA-256) as it
             is written: closer to restic's work, printed for reading
  first      the first `abri backup` (restic installed beforehand, so that the apt download
             is not in it): the whole abri process, and restic's own time (the snapshots'
             backup_start..backup_end) for the same bytes
  second     `abri backup` after a small change (a few MB of new and changed files)

and prints the throughputs, first/baseline ratios (target 0.8x or better) and the second
backup's cost as a fraction of the first. No assertion: this is for reading.

    sudo .venv/bin/python bench/backup.py [--mb 400]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.apply import BIN, make_site, print_rows, run  # noqa: E402
from tests.fleet import harness  # noqa: E402

HA_CONFIG = "/opt/abri/homeassistant/config"
MQ_DATA = "/opt/abri/mosquitto/data"
REPO = "/srv/abri-backup"

#: on the host: SIZE MB of incompressible files and SIZE MB of JSON lines under $1
GENERATE = r"""
import json, os, random, sys
root, size = sys.argv[1], int(sys.argv[2])
os.makedirs(root + "/media", exist_ok=True)
os.makedirs(root + "/history", exist_ok=True)
for i in range(max(1, size // 16)):
    with open(f"{root}/media/snapshot-{i:03d}.jpg", "wb") as fh:
        fh.write(os.urandom(16 << 20))
rng = random.Random(10)
entities = [f"sensor.room_{n}_{kind}" for n in range(40) for kind in ("temp", "hum", "co2")]
for i in range(max(1, size // 16)):
    with open(f"{root}/history/states-{i:03d}.jsonl", "w") as fh:
        written = 0
        while written < 16 << 20:
            line = json.dumps({"entity_id": rng.choice(entities),
                               "state": round(rng.uniform(0, 100), 1),
                               "last_changed": f"2026-{rng.randint(1, 12):02d}-"
                                               f"{rng.randint(1, 28):02d}T"
                                               f"{rng.randint(0, 23):02d}:00:00Z"}) + "\n"
            fh.write(line)
            written += len(line)
"""


def host_time(host, cmd: str) -> float:
    """Seconds a shell command takes on the host, timed there (no docker exec overhead)."""
    out = host.exec(f"s=$(date +%s.%N); {cmd}; e=$(date +%s.%N); echo \"$s $e\"",
                    timeout=3600).stdout.split()
    return float(out[-1]) - float(out[-2])


def data_bytes(host) -> int:
    return int(host.exec(f"du -sb --apparent-size {HA_CONFIG} {MQ_DATA} | "
                         "awk '{s+=$1} END {print s}'").stdout)


def baseline(host) -> tuple[float, int]:
    seconds = host_time(host, f"tar -cf - -C / {HA_CONFIG[1:]} {MQ_DATA[1:]} 2>/dev/null | "
                              "zstd -q -o /srv/baseline.tar.zst")
    size = int(host.exec("stat -c %s /srv/baseline.tar.zst && rm -f /srv/baseline.tar.zst"
                         ).stdout.split()[0])
    return seconds, size


def sealed_baseline(host) -> float:
    """The same stream as the baseline, also encrypted (AES-256-CTR) and hashed (SHA-256)
    as it is written: closer to the work restic does (not a target, for reading)."""
    return host_time(host, f"tar -cf - -C / {HA_CONFIG[1:]} {MQ_DATA[1:]} 2>/dev/null | "
                           "zstd -q | openssl enc -aes-256-ctr -pbkdf2 -pass pass:bench | "
                           "tee /srv/baseline.tar.zst.enc | sha256sum >/dev/null; "
                           "rm -f /srv/baseline.tar.zst.enc")


def repository_password(site: str, env: dict[str, str]) -> str:
    import yaml

    site_id = yaml.safe_load(Path(site, "group_vars/all/abri.yml").read_text())["abri_site_id"]
    password = Path(env["ABRI_CONFIG_HOME"]) / "vault" / f"{site_id}.pass"
    _, out = run([str(BIN / "ansible-vault"), "view", "--vault-password-file", str(password),
                  "host_vars/h1/vault.yml"], env, cwd=site)
    return yaml.safe_load(out)["abri_secrets"]["_backup"]["repository_password"]


def snapshots(host, password: str) -> list[dict]:
    out = host.exec(f'RESTIC_REPOSITORY={REPO} RESTIC_PASSWORD="$(cat)" restic snapshots '
                    "--json --no-lock", input=password).stdout
    return json.loads(out or "[]")


def restic_seconds(snaps: list[dict]) -> tuple[float, int, int]:
    """restic's own time for a backup run (sum over its snapshots), bytes read, bytes added."""
    def at(text: str) -> float:
        text = re.sub(r"(\.\d{6})\d*", r"\1", text)
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    seconds = sum(at(s["summary"]["backup_end"]) - at(s["summary"]["backup_start"])
                  for s in snaps)
    read = sum(int(s["summary"]["total_bytes_processed"]) for s in snaps)
    added = sum(int(s["summary"]["data_added"]) for s in snaps)
    return seconds, read, added


def run_of(snaps: list[dict], before: set[str]) -> list[dict]:
    return [s for s in snaps if s["id"] not in before]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="MB of generated user data")
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

            base1, packed = baseline(host)
            first_wall, out = run([str(BIN / "abri"), "backup", "--site", site], env)
            stopped = [int(s) for s in re.findall(r"stopped (\d+)s\)", out)]
            password = repository_password(site, env)
            first_snaps = snapshots(host, password)
            first_restic, first_read, first_added = restic_seconds(first_snaps)
            base2, _ = baseline(host)
            base = (base1 + base2) / 2
            sealed = sealed_baseline(host)

            # a small change: a new camera snapshot, one history file appended to
            host.exec(f"head -c 2M /dev/urandom > {HA_CONFIG}/bench/media/new.jpg && "
                      f"head -c 1M {HA_CONFIG}/bench/history/states-000.jsonl >> "
                      f"{HA_CONFIG}/bench/history/states-001.jsonl")
            second_wall, _ = run([str(BIN / "abri"), "backup", "--site", site], env)
            second = run_of(snapshots(host, password), {s["id"] for s in first_snaps})
            second_restic, _, second_added = restic_seconds(second)
            repo_size = int(host.exec(f"du -sb {REPO} | cut -f1").stdout)

    mb = total / 1e6
    rows.append(("user data", f"{mb:.0f} MB", f"{args.mb // 2} MB incompressible, "
                 f"{args.mb // 2} MB JSON lines, plus the stacks' own files"))
    rows.append(("tar | zstd (baseline)", f"{base:.1f} s",
                 f"{mb / base:.0f} MB/s (runs {base1:.1f} s, {base2:.1f} s); "
                 f"archive {packed / 1e6:.0f} MB"))
    rows.append(("tar | zstd | aes | sha256", f"{sealed:.1f} s",
                 f"{mb / sealed:.0f} MB/s: the baseline also encrypted and hashed (for "
                 f"reading; restic: {(first_read / first_restic) / (total / sealed):.2f}x "
                 "of it)"))
    rows.append(("first backup, restic", f"{first_restic:.1f} s",
                 f"{first_read / 1e6 / first_restic:.0f} MB/s, "
                 f"{(first_read / first_restic) / (total / base):.2f}x the baseline's throughput; "
                 f"added {first_added / 1e6:.0f} MB"))
    rows.append(("first backup, abri", f"{first_wall:.1f} s",
                 f"{mb / first_wall:.0f} MB/s, {base / first_wall:.2f}x the baseline's "
                 f"throughput (whole process: Ansible, stacks stopped {stopped} s)"))
    rows.append(("second backup, restic", f"{second_restic:.1f} s",
                 f"{second_restic / first_restic:.2f} of the first; added "
                 f"{second_added / 1e6:.1f} MB"))
    rows.append(("second backup, abri", f"{second_wall:.1f} s",
                 f"{second_wall / first_wall:.2f} of the first"))
    rows.append(("repository", f"{repo_size / 1e6:.0f} MB", "after both backups"))
    print_rows(rows, load)


if __name__ == "__main__":
    main()
