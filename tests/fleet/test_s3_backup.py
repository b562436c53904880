"""Backups in S3-compatible object storage, on one Debian 13 fleet host, through the CLI.

No provider's storage is reachable from here, so the storage is a local S3 server: moto's
server (PyPI), started on the docker bridge's gateway for this test, with request signing
enforced (its IAM: a user, an access key and a policy made first; a wrong secret is refused
as a provider refuses it). What runs is what runs against a provider: restic 0.18 from the
host's archive, its S3 backend, abri's module, the keys handed over from the vault.

* Mosquitto deployed on a host that abri's engine step prepared; a retained message
  published as the broker's admin, and 384 MB of random data put in its folder;
* `abri secrets s3` keeps the keys (never printed); `abri backup` makes the repository (and
  the bucket, which did not exist) at BUCKET/PREFIX/h1 and a snapshot in it, printing its
  live progress (bytes of the total, the rate); the objects are in the bucket, read back
  with the same keys;
* a wrong secret in the vault: `abri backup` fails with one line naming the repository,
  nothing stopped (the broker still runs), no traceback;
* with the right keys again, the broker's data destroyed, `abri restore h1` (its progress
  printed too): the retained message and the data are back; a second apply has
  changed=0; no key appears in any output.
"""

from __future__ import annotations

import json
import os
import re
import secrets as _random
import socket
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest
from test_backup import MQ_DATA, _own_config_home, _retained, _run  # noqa: F401
from test_deploy import NESTED_ENGINE_OPTIONS, _abri, _env, _recap, _secrets, _tool

pytestmark = pytest.mark.fleet

BUCKET, PREFIX = "abri-home", "backups"
#: random data in the broker's folder, so that the copies take long enough to show progress
BLOB_MB = 384
#: a live progress line of abri backup/restore (tui/core/transfers.py)
PROGRESS = (r"^  h1 mosquitto {action}: [0-9.]+ [KMG]?B of [0-9.]+ [KMG]?B, [0-9.]+ [KMG]?B/s")


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path):
    """moto's S3 server on the bridge gateway, signing enforced; yields (endpoint, key id,
    secret)."""
    import boto3

    address = harness.bridge_gateway()
    port = _free_port(address)
    endpoint = f"http://{address}:{port}"
    # the first three requests need no signature: they make the user, its key and its policy
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    log = open(tmp_path / "moto.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", address,
                             "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((address, port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "moto did not start"
                time.sleep(0.3)
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="abri")
        key = iam.create_access_key(UserName="abri")["AccessKey"]
        iam.put_user_policy(UserName="abri", PolicyName="backups", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _keys(site: Path, access: Path, secret: Path) -> subprocess.CompletedProcess:
    """`abri secrets s3` with the keys the two files hold."""
    run = subprocess.run([_tool("abri"), "secrets", "s3", "--access-key-file", str(access),
                          "--secret-key-file", str(secret), "--site", str(site)],
                         capture_output=True, text=True, timeout=120, env=_env())
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def _objects(endpoint: str, key_id: str, secret: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=key_id, aws_secret_access_key=secret)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_backup_and_restore_through_s3(fleet, fleet_registry, s3_server, tmp_path):
    endpoint, key_id, secret = s3_server
    host = fleet(1, image="prepared")[0]
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    _abri("stack", "add", "--site", str(site), "h1", "mosquitto")
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true", f"backup_repository=s3:{endpoint}/{BUCKET}/{PREFIX}")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    first, _ = _run(site, "apply")
    outputs = [first]
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    admin = _secrets(site, "h1")["mosquitto"]["admin_password"]
    topic, message = "abri/test/s3", f"kept-{_random.token_hex(4)}"
    host.exec(f"docker exec abri-mosquitto-mosquitto-1 mosquitto_pub -h 127.0.0.1 -u admin "
              f"-P '{admin}' -t '{topic}' -m '{message}' -r -q 1")
    assert _retained(host, admin, topic) == message

    # ---- the keys, once, into the vault
    (tmp_path / "access").write_text(key_id + "\n")
    (tmp_path / "secret").write_text(secret + "\n")
    keys = _keys(site, tmp_path / "access", tmp_path / "secret")
    outputs.append(keys)
    assert _secrets(site, "h1")["_backup"]["s3_secret_access_key"] == secret

    # ---- a backup into the bucket (made by restic: it did not exist), of enough data for
    # its live progress to show (bytes of the total, the rate)
    host.exec(f"head -c {BLOB_MB << 20} /dev/urandom > {MQ_DATA}/blob.bin", timeout=300)
    blob = host.exec(f"sha256sum {MQ_DATA}/blob.bin").stdout.split()[0]
    made, _ = _run(site, "backup")
    outputs.append(made)
    assert made.returncode == 0, made.stdout[-6000:] + made.stderr[-3000:]
    repository = f"s3:{endpoint}/{BUCKET}/{PREFIX}/h1"
    assert f"create the repository {repository}" in made.stdout, made.stdout[-3000:]
    assert re.search(PROGRESS.format(action="backup"), made.stdout, re.M), made.stdout[-3000:]
    objects = _objects(endpoint, key_id, secret)
    assert f"{PREFIX}/h1/config" in objects, objects
    assert any(k.startswith(f"{PREFIX}/h1/data/") for k in objects), objects
    assert any(k.startswith(f"{PREFIX}/h1/snapshots/") for k in objects), objects
    listed, _ = _run(site, "backups", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["host"], r["stack"], r["kind"]) for r in rows] == [
        ("h1", "mosquitto", "backup")], rows

    # ---- a wrong secret: one clear line, nothing stopped
    (tmp_path / "wrong").write_text("W" * 40 + "\n")
    outputs.append(_keys(site, tmp_path / "access", tmp_path / "wrong"))
    refused, _ = _run(site, "backup")
    outputs.append(refused)
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert repository in said and "signature" in said.lower(), said[-3000:]
    assert "Traceback" not in said
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert "abri-mosquitto-mosquitto-1" in running
    assert not host.exec("ls /var/lib/abri/backup-stopped 2>/dev/null || true").stdout.strip()
    outputs.append(_keys(site, tmp_path / "access", tmp_path / "secret"))

    # ---- the broker's data destroyed, then restored from the bucket
    host.exec("docker compose -p abri-mosquitto -f /opt/abri/mosquitto/compose.yml down",
              timeout=180)
    host.exec(f"rm -rf {MQ_DATA} && mkdir -p {MQ_DATA}")
    restored, _ = _run(site, "restore", "h1")
    outputs.append(restored)
    assert restored.returncode == 0, restored.stdout[-8000:] + restored.stderr[-3000:]
    assert "mosquitto: restored snapshot" in restored.stdout, restored.stdout[-3000:]
    assert re.search(PROGRESS.format(action="restore"), restored.stdout, re.M), \
        restored.stdout[-3000:]
    assert host.exec(f"sha256sum {MQ_DATA}/blob.bin").stdout.split()[0] == blob
    assert _retained(host, admin, topic) == message
    again, _ = _run(site, "apply")
    outputs.append(again)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert _recap(again.stdout, "h1")["changed"] == 0, again.stdout[-4000:]

    shown = "\n".join(o.stdout + o.stderr for o in outputs)
    assert secret not in shown and key_id not in shown and admin not in shown
