#!/usr/bin/python
"""abri's backup module: back up, list, restore and prune a host's user data with restic."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: abri_backup
short_description: Back up, list, restore or prune the user data of a host's stacks (restic)
description:
  - Takes the C(abri_state.backup) part of the resolved state (the repository folder, the
    retention, and per stack with user data its project, its folders and the consistency
    rule its manifest declares) and works on the host with restic, which it installs from
    the distribution's archive when missing.
  - I(action=backup) makes one snapshot per stack, tagged C(abri), C(stack=NAME),
    C(run=RUN) and C(kind=backup). A stack whose rule is C(stop) is stopped for its copy and
    started again (its health check waits for it); C(copy) reads the files as they are. The
    repository is created at the first backup (the folder's parent must exist, so a disk
    that is not mounted is an error, not a folder on the system disk).
  - I(action=snapshots) lists the host's snapshots (stack, time, size, bytes added).
  - I(action=restore) puts back the snapshots of one backup run (the latest, or the run of
    I(snapshot)). The stacks are stopped first, and data that exists on the host is saved
    in a safety snapshot (C(kind=safety)) before it is overwritten. The stacks stay stopped;
    the deploy that follows starts and checks them.
  - I(action=seed) puts a migration's live copy (the snapshots of I(snapshot)'s run in
    I(source)) into the folders of the stacks that are coming to this host, before the
    source stops, and only into folders that are empty or hold an earlier seed of the same
    source (anything else is left alone, and the final restore saves it first as usual). Each
    seeded stack gets a note in C(/var/lib/abri/seed/) naming SOURCE and the run. The
    final I(action=restore) from the same SOURCE then brings a seeded stack up to date
    (restic rewrites only what differs) without a safety snapshot of the seed, which is
    a copy of what is in the repository anyway; other data gets its safety snapshot.
  - I(action=prune) applies the retention (keep daily, weekly, monthly) to the backups of
    every stack (safety snapshots are kept) and frees the space.
  - The repository password comes in I(secrets) (no_log) and reaches restic through its
    environment, never its command line.
  - The repository may be on another machine over SFTP (C(backup.sftp) with user, address,
    port, folder; every host has a repository of its own under the folder). The host
    reaches it with the SSH key abri made for it (C(backup.key), the private key by
    reference, installed as C(/etc/abri/backup/sftp_key), 0600 root) through restic's
    C(sftp.command). The server's host key is pinned in C(/etc/abri/backup/known_hosts).
  - Or in S3-compatible object storage (C(backup.s3) with the endpoint and the storage keys
    by reference, handed to restic in its environment only); the bucket is made by restic
    when it does not exist.
    When the server is a host of the site the playbook reads its host key from it and
    passes it in I(host_keys), and the connection checks it strictly; otherwise the key is
    learnt on the first connection and checked ever after (C(StrictHostKeyChecking) set to
    C(accept-new)).
  - I(source) names another repository to work with instead of the host's own (the same
    shape, with owner, repository, password_ref, sftp). I(action=restore) then puts back
    the snapshots of the source's owner (C(abri restore HOST --from OTHER), the last step
    of a migration) while the safety snapshot of what the host holds goes into its own
    repository; I(action=backup) writes into it (a migration's transfer repository).
  - I(live=true) reads every stack while it runs, whatever its rule (the first copy of a
    migration, which the second, made with the stacks stopped, completes).
  - I(action=trial) proves that the newest backup (C(kind=backup)) of each stack can be put
    back and used, without touching the live stack. Its user data is restored (C(--no-cache
    --verify), so the repository's own bytes are read) into C(/var/lib/abri/trial/STACK/),
    and a scratch Compose project C(abri-trial-STACK) derived from the live one
    (C(docker compose config)) is started on it, with no published port, an internal network
    of its own, no container name, no devices and no restart policy, the environment that
    wires it to other stacks (manifest env C(wire:*)) emptied; bind mounts of the user data
    point at the scratch copy, other folders of the stack are mounted read-only. Then the
    stack's health check runs against the scratch container's address, and what the
    manifest declares in C(backup.trial) is checked (SQLite files that must pass C(PRAGMA
    integrity_check), item counts that must match the live files', log lines that must not
    appear). The project (containers, network, volumes) and the scratch folder are removed
    afterwards, whatever the outcome. The result lists per stack passed or failed with the
    reason; the module fails when one failed.
  - I(action=stop) stops the stacks; nothing is deleted. I(keep_stopped=true) makes a
    backup stop every stack first and leave them stopped (a migration's last copy).
  - Works while holding the host's abri lock (C(/run/lock/abri.lock)), as the other kit
    modules do, so a backup never stops a stack an apply is converging.
  - A stack stopped for its copy is noted in C(/var/lib/abri/backup-stopped/) until it is
    started again. A backup killed meanwhile on the host (its module and restic) leaves the
    note, and the next backup starts the stack again after its copy (unless something
    started the stack since); an apply starts it too. Stale restic locks of killed runs on
    this host are removed (plain C(restic unlock)) before a backup or a prune.
options:
  backup:
    description: abri_state.backup (repository, password_ref, keep, stacks).
    type: dict
    required: true
  host:
    description: The host's name in the site (restic's host of its snapshots).
    type: str
    required: true
  secrets:
    description: Secret values by reference (C(host/stack/key)), from the abri_secrets filter.
    type: dict
    default: {}
  action:
    description: What to do.
    type: str
    default: backup
    choices: [backup, snapshots, restore, seed, prune, stop, trial]
  snapshot:
    description: For restore and seed, a snapshot id (or its prefix); its backup run is
      restored (for seed it is required).
    type: str
    default: ""
  source:
    description: Another repository to restore from or back up into (owner, repository,
      password_ref, sftp), instead of the host's own.
    type: dict
    default: {}
  host_keys:
    description: The host keys of SFTP servers that are hosts of the site, by
      C(ADDRESS-PORT), each a list of C(TYPE KEY) lines (their C(ssh_host_*_key.pub)); a
      server not listed has its key learnt on the first connection.
    type: dict
    default: {}
  live:
    description: For backup, read every stack while it runs (no stop).
    type: bool
    default: false
  keep_stopped:
    description: For backup, stop every stack first and leave them stopped.
    type: bool
    default: false
  only:
    description: Work on these stacks of the host alone (names); empty means every stack
      with user data.
    type: list
    elements: str
    default: []
  kind:
    description: For backup, the kind its snapshots are tagged with (C(kind=KIND)); the
      retention of I(action=prune) and a restore without I(snapshot) consider C(backup)
      alone, so an C(upgrade) snapshot (the one C(abri upgrade) takes before it changes a
      stack) is kept until removed by hand.
    type: str
    default: backup
    choices: [backup, upgrade]
author: abri
"""

EXAMPLES = r"""
- name: Back up the user data of every stack
  abri_backup:
    backup: "{{ abri_state.backup }}"
    host: "{{ inventory_hostname }}"
    secrets: "{{ abri_state.backup | abri_secrets(hostvars) }}"
"""

RETURN = r"""
changes:
  description: What was done, one line each.
  type: list
  returned: always
snapshots:
  description: The snapshots made (backup) or all of the host's (snapshots).
  type: list
  returned: always
restored:
  description: For restore, per stack the snapshot put back.
  type: list
  returned: when action is restore
trials:
  description: For trial, per stack (stack, ok, reason, snapshot id, short_id and time,
    seconds, checks passed).
  type: list
  returned: when action is trial
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime

from ansible.module_utils.abri_health import probe, wait_healthy
from ansible.module_utils.abri_lock import host_lock
from ansible.module_utils.abri_stack_core import MARKER as API_DONE
from ansible.module_utils.basic import AnsibleModule

#: restic's exit codes (0.17 and later)
NO_REPOSITORY = 10
WRONG_PASSWORD = 12
#: a note per stack stopped for its copy, until it runs again (survives a reboot: a container
#: stopped with restart unless-stopped stays stopped after one)
STOPPED_DIR = "/var/lib/abri/backup-stopped"
#: where the host keeps what reaches an SFTP repository (root only)
SSH_DIR = "/etc/abri/backup"
#: the scratch folders of trial restores (one per stack, removed after its trial)
TRIAL_DIR = "/var/lib/abri/trial"
#: a note per stack seeded by a migration's live copy (source host and run), until the
#: migration's final restore has brought the stack up to date
SEED_DIR = "/var/lib/abri/seed"
#: the Compose project (and prefix of its network and volumes) of a stack's trial
TRIAL_PREFIX = "abri-trial-"


#: where a running backup or restore keeps its progress, and its last word when it ends
#: (tmpfs: gone at reboot), read by abri on the controller while a run goes on
#: (tui/core/transfers.py)
TRANSFER_FILE = "/run/abri/transfer.json"


def _transfer_write(stack, action, status, run, done=False):
    """One restic status (or, done, its summary) line, as the controller reads it: bytes done
    and total, seconds elapsed and remaining (a restore's bytes are bytes_restored; a
    backup's summary says total_bytes_processed and total_duration)."""
    moved = status.get("bytes_done", status.get("bytes_restored",
                                                status.get("total_bytes_processed", 0)))
    total = status.get("total_bytes", status.get("total_bytes_processed", 0))
    elapsed = status.get("seconds_elapsed", status.get("total_duration", 0))
    data = {"run": run, "stack": stack, "action": action, "bytes_done": int(moved or 0),
            "total_bytes": int(total or 0), "seconds_elapsed": float(elapsed or 0),
            "seconds_remaining": 0 if done else int(status.get("seconds_remaining") or 0),
            "percent": 1.0 if done else float(status.get("percent_done") or 0),
            "done": bool(done)}
    tmp = TRANSFER_FILE + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, TRANSFER_FILE)
    except OSError:
        pass  # progress is for show: a run never fails on it


#: how long the first look at an S3 repository may take (restic itself retries an error
#: for many minutes, a wrong key's too)
S3_ANSWER_SECONDS = 60
#: restic's line for an error it retries: the error
_RETRIED = re.compile(r"returned error, retrying after [^:]*: (.*)$", re.M)

#: what ssh or restic's sftp backend says when the server is not there (down, sshd stopped)
_UNREACHED = re.compile(r"ssh: |Connection (refused|timed out|closed|reset)|timed out|"
                        r"No route to host|unable to start the sftp session|"
                        r"server unexpectedly closed connection")


class Failed(Exception):
    """A clear error for the user; the module fails with it."""


def _epoch(docker_time):
    """Seconds since the epoch of a time as docker inspect gives it (RFC 3339, ns, UTC)."""
    text = re.sub(r"(\.\d{6})\d*", r"\1", docker_time.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _restic_error(stderr):
    """restic's own last words: the message of its JSON exit_error when it gave one."""
    for line in reversed(stderr.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("message_type") == "exit_error":
            return str(data.get("message", "")).strip()
    return stderr.strip()[-1500:]


class Backup:
    def __init__(self, module):
        self.m = module
        p = module.params
        self.spec = p["backup"]
        only = p.get("only") or []
        if only:
            self.spec = dict(self.spec, stacks=[s for s in self.spec["stacks"]
                                                if s["name"] in only])
        self.kind = p.get("kind") or "backup"
        self.host = p["host"]
        self.secrets = p["secrets"] or {}
        self.changes = []
        self.source = p.get("source") or {}
        self.live = bool(p.get("live"))
        self.keep_stopped = bool(p.get("keep_stopped"))
        self.host_keys = p.get("host_keys") or {}
        self.owner = self.host
        self.use(self.spec)
        self.own = (self.env, self.options, self.repo, self.sftp, self.s3)
        if self.source:
            self.use(self.source)
            self.owner = self.source.get("owner") or self.host

    def use(self, access):
        """Work with the repository access describes (the host's own, or a source)."""
        self.repo = access["repository"]
        self.sftp = access.get("sftp") or None
        self.s3 = access.get("s3") or None
        self.env = dict(os.environ, RESTIC_REPOSITORY=self.repo,
                        RESTIC_PASSWORD=self.secret(access["password_ref"]),
                        RESTIC_PROGRESS_FPS="2", LC_ALL="C")
        self.options = []
        if self.s3:
            self.env.update(AWS_ACCESS_KEY_ID=self.secret(self.s3["access_key_ref"]),
                            AWS_SECRET_ACCESS_KEY=self.secret(self.s3["secret_key_ref"]))
        if self.sftp:
            where = f"{self.sftp['address']}-{int(self.sftp['port'])}"
            alias = f"abri-repository-{where}"
            check = "yes" if self.host_keys.get(where) else "accept-new"
            command = (f"ssh -i {SSH_DIR}/sftp_key -o IdentitiesOnly=yes -o BatchMode=yes "
                       f"-o UserKnownHostsFile={SSH_DIR}/known_hosts "
                       f"-o StrictHostKeyChecking={check} -o HostKeyAlias={alias} "
                       f"-o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 "
                       f"-p {int(self.sftp['port'])} {self.sftp['user']}@"
                       f"{self.sftp['address']} -s sftp")
            self.options = ["-o", f"sftp.command={command}"]

    def unreached(self, stderr):
        """One line: the SFTP server that did not answer, its repository, ssh's reason."""
        reason = next((ln.strip() for ln in stderr.splitlines() if _UNREACHED.search(ln)),
                      "the SSH connection failed")
        return (f"the SFTP repository {self.repo} could not be reached from {self.host}: "
                f"{self.sftp['address']} port {int(self.sftp['port'])} did not answer "
                f"({reason[-300:]}); is that host up and its SSH server running? Nothing "
                "was stopped or changed on this host; run 'abri backup' again once it is back")

    def use_own(self):
        self.env, self.options, self.repo, self.sftp, self.s3 = self.own

    def ssh_files(self):
        """The host's SFTP key and the server's pinned host key, 0600 root (written only
        when they differ)."""
        if not (self.sftp or self.own[3]):
            return
        key = self.spec.get("key") or {}
        if not key.get("private_ref"):
            raise Failed("this host has no SSH key for the SFTP repository yet; run it "
                         "through abri, which makes one")
        private = self.secret(key["private_ref"]).strip() + "\n"
        os.makedirs(SSH_DIR, mode=0o700, exist_ok=True)
        os.chmod(SSH_DIR, 0o700)
        self.write(f"{SSH_DIR}/sftp_key", private, "the SSH key for the SFTP repository")
        lines = sorted({f"abri-repository-{where} {' '.join(str(k).split()[:2])}"
                        for where, keys in self.host_keys.items() for k in keys or []
                        if len(str(k).split()) >= 2})
        if lines:
            path = f"{SSH_DIR}/known_hosts"
            old = []
            if os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    old = fh.read().splitlines()
            aliases = {ln.split()[0] for ln in lines if ln.strip()}
            kept = [ln for ln in old if ln.split() and ln.split()[0] not in aliases]
            self.write(path, "\n".join(sorted(kept + lines)) + "\n",
                       "the SFTP server's host key (pinned)")

    def write(self, path, text, what):
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text and (os.stat(path).st_mode & 0o777) == 0o600:
                    return
        except OSError:
            pass
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        self.changes.append(f"install {what} ({path})")

    def secret(self, ref):
        value = self.secrets.get(ref)
        if not value:
            raise Failed(f"the secret {ref} is missing from the site's vault")
        return value

    # ------------------------------------------------------------------ restic
    def ensure_restic(self):
        if shutil.which("restic"):
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        for cmd in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                     "-o", "DPkg::Lock::Timeout=600", "restic"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise Failed(f"restic is not installed and {' '.join(cmd[:3])} failed: "
                             f"{proc.stderr.strip()[-1500:]}")
        self.changes.append("install restic from the distribution's archive")

    def restic(self, *args, check=True, timeout=None):
        proc = subprocess.run(["restic", *self.options, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise Failed(f"restic {args[0]} failed (exit {proc.returncode}): "
                         f"{_restic_error(proc.stderr)}")
        return proc

    def s3_restic(self, *args):
        """restic on S3 storage, bounded: restic retries an answer it takes for a passing
        fault (a wrong key, a bucket that does not exist) for many minutes. On timeout: the
        error restic kept retrying, as Failed, or None when it was a missing bucket."""
        try:
            return self.restic(*args, check=False, timeout=S3_ANSWER_SECONDS)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr or b""  # the raw bytes, text=True or not
            err = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
            said = [m.group(1) for m in _RETRIED.finditer(err)]
            if said and "bucket does not exist" in said[-1].lower():
                return None
            reason = (f"it answered, and restic kept retrying: {said[-1][-300:]}" if said
                      else "it did not answer")
            raise Failed(f"the S3 storage {self.s3['endpoint']} of the repository {self.repo} "
                         f"failed {self.host} for {S3_ANSWER_SECONDS} s: {reason}. Are the "
                         "endpoint and the keys right ('abri secrets s3')? Nothing was "
                         "stopped or changed on this host") from None

    def watched(self, stack, action, *args):
        """restic with --json, its progress (bytes done, total, elapsed, remaining) kept in
        TRANSFER_FILE while it runs, for abri on the controller to show (it holds no secret:
        a stack's name and byte counts). Fails like restic() with check."""
        os.makedirs(os.path.dirname(TRANSFER_FILE), mode=0o755, exist_ok=True)
        run = os.urandom(6).hex()  # this restic run's lines differ from any earlier run's
        summary = None
        with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as err:
            proc = subprocess.Popen(["restic", *self.options, *args, "--json"],
                                    stdout=subprocess.PIPE, stderr=err, text=True,
                                    env=self.env)
            lines, shown = [], 0.0
            try:
                for line in proc.stdout:
                    lines.append(line)
                    try:
                        data = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(data, dict):
                        continue
                    if data.get("message_type") == "summary":
                        summary = data
                    elif (data.get("message_type") == "status"
                          and time.monotonic() - shown >= 0.5):
                        shown = time.monotonic()
                        _transfer_write(stack, action, data, run)
                proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode == 0 and summary is not None:
                # the last word stays in the file (a fast copy may end before it is read):
                # the next run's lines carry another run id
                _transfer_write(stack, action, summary, run, done=True)
            err.seek(0)
            stderr = err.read()
        if proc.returncode != 0:
            raise Failed(f"restic {args[0]} failed (exit {proc.returncode}): "
                         f"{_restic_error(stderr)}")
        return subprocess.CompletedProcess(args, proc.returncode, "".join(lines), stderr)

    def repository(self, create):
        """The repository answers with this site's password; created when asked and absent."""
        if self.s3 and create:  # makes the bucket and the repository when absent, quickly
            made = self.s3_restic("init", "-q")
            if made is not None and made.returncode == 0:
                self.changes.append(f"create the repository {self.repo}")
                return
        proc = (self.s3_restic("cat", "config") if self.s3
                else self.restic("cat", "config", check=False))
        if proc is None:  # a bucket that does not exist holds no repository
            proc = subprocess.CompletedProcess([], NO_REPOSITORY, "", "")
        if proc.returncode == 0:
            return
        if proc.returncode == WRONG_PASSWORD:
            raise Failed(f"the repository {self.repo} on {self.host} does not open with this "
                         "site's repository password (made by another site, or the vault was "
                         "replaced); abri leaves it alone")
        if self.sftp and proc.returncode != NO_REPOSITORY and _UNREACHED.search(proc.stderr):
            raise Failed(self.unreached(proc.stderr))
        if proc.returncode != NO_REPOSITORY:
            raise Failed(f"the repository {self.repo} on {self.host} cannot be read: "
                         f"{_restic_error(proc.stderr)[-800:]}")
        if not create:
            raise Failed(f"there is no backup repository at {self.repo} on {self.host} (no "
                         "backup was made there yet, or the disk that holds it is not "
                         "mounted); make one with 'abri backup'")
        if self.sftp or self.s3:  # the server's folder exists (made by abri on a site
            # host); restic makes a bucket that does not exist yet
            self.restic("init", "-q")
            self.changes.append(f"create the repository {self.repo}")
            return
        parent = os.path.dirname(self.repo.rstrip("/")) or "/"
        if not os.path.isdir(parent):
            raise Failed(f"the folder {parent} for the repository {self.repo} does not exist "
                         f"on {self.host} (a disk not mounted?); abri makes only the "
                         "repository's own folder")
        if os.path.isdir(self.repo) and os.listdir(self.repo):
            raise Failed(f"{self.repo} on {self.host} holds files and is not a restic "
                         "repository; choose an empty or new folder (abri site set "
                         "backup_repository=...)")
        os.makedirs(self.repo, mode=0o700, exist_ok=True)
        os.chmod(self.repo, 0o700)
        self.restic("init", "-q")
        self.changes.append(f"create the repository {self.repo}")

    def snapshots(self):
        proc = self.restic("snapshots", "--json", "--host", self.owner, "--tag", "abri")
        out = []
        for snap in json.loads(proc.stdout or "[]") or []:
            tags = dict(t.partition("=")[::2] for t in snap.get("tags") or [] if "=" in t)
            summary = snap.get("summary") or {}
            out.append({"id": snap["id"], "short_id": snap.get("short_id", snap["id"][:8]),
                        "time": snap["time"], "stack": tags.get("stack", ""),
                        "run": tags.get("run", ""), "kind": tags.get("kind", "backup"),
                        "api_done": tags.get("api") == "done",
                        "paths": snap.get("paths") or [],
                        "size": int(summary.get("total_bytes_processed", 0)),
                        "files": int(summary.get("total_files_processed", 0)),
                        "added": int(summary.get("data_added", 0))})
        return sorted(out, key=lambda s: s["time"])

    def take(self, stack, paths, run, kind):
        # whether abri's API setup of the stack was done here (its marker lives next to the
        # data, not in it): a restore of the data then needs no loopback-only first start
        api = (["--tag", "api=done"] if os.path.exists(os.path.join(stack["dir"], API_DONE))
               else [])
        proc = self.watched(stack["name"], "backup", "backup", "--host", self.host, "--tag",
                            "abri", "--tag", f"stack={stack['name']}", "--tag", f"run={run}",
                            "--tag", f"kind={kind}", *api, *paths)
        summary = {}
        for line in proc.stdout.splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if data.get("message_type") == "summary":
                summary = data
        return {"stack": stack["name"], "id": summary.get("snapshot_id", ""),
                "short_id": summary.get("snapshot_id", "")[:8], "kind": kind, "run": run,
                "size": int(summary.get("total_bytes_processed", 0)),
                "files": int(summary.get("total_files_processed", 0)),
                "added": int(summary.get("data_added", 0))}

    # ------------------------------------------------------------------ stacks
    def folders(self, stack):
        return [os.path.join(stack["dir"], p) for p in stack["paths"]]

    def running(self, stack):
        proc = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project="
             f"{stack['project']}", "--filter", "status=running"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            if not shutil.which("docker"):
                return []
            raise Failed(f"docker ps failed: {proc.stderr.strip()[-500:]}")
        return proc.stdout.split()

    def stop(self, stack):
        ids = self.running(stack)
        if ids:
            proc = subprocess.run(["docker", "stop", "-t", "60", *ids], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise Failed(f"stack {stack['name']}: docker stop failed: "
                             f"{proc.stderr.strip()[-500:]}")
        return ids

    def note_path(self, stack):
        return os.path.join(STOPPED_DIR, stack["project"] + ".json")

    def note_stopped(self, stack, ids):
        """Before the stop: which containers this backup stops, and since when."""
        os.makedirs(STOPPED_DIR, mode=0o700, exist_ok=True)
        path = self.note_path(stack)
        with open(path + ".tmp", "w") as fh:
            json.dump({"ids": ids, "at": time.time(), "pid": os.getpid()}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(path + ".tmp", path)

    def left_stopped(self, stack):
        """Containers of the stack that an interrupted backup stopped and nothing started
        since (the note of a run that never got to start them again)."""
        try:
            with open(self.note_path(stack)) as fh:
                note = json.load(fh)
        except FileNotFoundError:
            return []
        except ValueError:
            note = {}
        ids = [str(i) for i in note.get("ids") or []]
        if not ids:
            return []
        proc = subprocess.run(["docker", "inspect", "--format",
                               "{{.Id}} {{.State.Running}} {{.State.StartedAt}}", *ids],
                              capture_output=True, text=True)
        left = []
        for line in proc.stdout.splitlines():  # containers removed since are not listed
            cid, running, started = [*line.split(" ", 2), "", ""][:3]
            if running == "false" and _epoch(started) < float(note.get("at") or 0):
                left.append(cid[:12])
        return left

    def start(self, stack, ids):
        proc = subprocess.run(["docker", "start", *ids], capture_output=True, text=True)
        if proc.returncode != 0:
            return f"docker start failed: {proc.stderr.strip()[-500:]}"
        if os.path.exists(self.note_path(stack)):
            os.unlink(self.note_path(stack))
        ok, last = wait_healthy(stack.get("health") or {}, self.secret)
        return None if ok else f"health check failed after the start: {last}"

    # ------------------------------------------------------------------ actions
    def unlock(self):
        """Remove the restic locks of runs on this host that are gone (a killed backup's);
        restic's plain unlock leaves a lock whose process still runs alone. Under the host's
        abri lock no other abri run uses the repository from here."""
        self.restic("unlock", "-q", check=False)

    def backup(self):
        self.repository(create=True)
        self.unlock()
        run = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if self.keep_stopped:
            self.stop_all()
        made = []
        problems = []
        for stack in self.spec["stacks"]:
            paths = [p for p in self.folders(stack) if os.path.isdir(p)]
            if not paths:
                self.changes.append(f"{stack['name']}: no data on this host yet (not "
                                    "deployed?), nothing to back up")
                continue
            stopped, start = [], time.monotonic()
            if stack["consistency"] == "stop" and not self.live:
                # a stack a killed backup left stopped runs again after this copy, unless
                # this run keeps the stacks stopped (a migration's last copy)
                left = [] if self.keep_stopped else self.left_stopped(stack)
                if left:
                    self.changes.append(f"{stack['name']}: left stopped by an interrupted "
                                        "backup; started again after this copy")
                ids = self.running(stack)
                if ids or left:
                    self.note_stopped(stack, ids + left)
                stopped = self.stop(stack) + left
            try:
                snap = self.take(stack, paths, run, self.kind)
            except Failed as exc:
                error = self.start(stack, stopped) if stopped else None
                again = (f"; the stack was started again{' but ' + error if error else ''}"
                         if stopped else "")
                raise Failed(f"stack {stack['name']}: {exc}{again}. Its data on the host is "
                             "untouched; the snapshots made before stay in the repository"
                             ) from None
            if stopped:
                error = self.start(stack, stopped)
                if error:
                    problems.append(f"stack {stack['name']}: {error}")
            snap["stopped_seconds"] = round(time.monotonic() - start, 1) if stopped else 0
            made.append(snap)
            how = (f"stopped {snap['stopped_seconds']:.0f}s" if stopped else
                   "read while running" if stack["consistency"] == "copy" or (
                       self.live and self.running(stack)) else "was stopped")
            self.changes.append(f"{stack['name']}: snapshot {snap['short_id']} "
                                f"({snap['files']} files, {snap['size']} bytes, "
                                f"{snap['added']} new; {how})")
        if problems:
            raise Failed("; ".join(problems))
        return {"snapshots": made, "run": run}

    def chosen_run(self, wanted):
        """The snapshots of the backup run to put back, by stack: the run of the snapshot
        `wanted` names, or the newest backup run."""
        snaps = self.snapshots()
        if wanted:
            match = [s for s in snaps if s["id"].startswith(wanted)]
            if not match:
                raise Failed(f"no snapshot {wanted} of {self.owner} in {self.repo} ('abri "
                             "backups' lists them)")
            if len(match) > 1:
                raise Failed(f"{wanted} names {len(match)} snapshots; give more of the id")
            run = match[0]["run"]
            chosen = [s for s in snaps if run and s["run"] == run] or match
        else:
            backups = [s for s in snaps if s["kind"] == "backup"]
            if not backups:
                raise Failed(f"the repository {self.repo} holds no backup of {self.owner}")
            run = backups[-1]["run"]
            chosen = [s for s in backups if s["run"] == run]
        by_stack = {}
        for snap in chosen:  # the last of a stack in the run (a run has one per stack)
            by_stack[snap["stack"]] = snap
        targets = [st for st in self.spec["stacks"] if st["name"] in by_stack]
        if not targets:
            raise Failed(f"the backup {run} holds no stack of {self.host} that the site has "
                         "on it now")
        for st in self.spec["stacks"]:
            if st["name"] not in by_stack:
                self.changes.append(f"{st['name']}: not in the backup {run}, left as it is")
        return run, by_stack, targets

    def seed_path(self, stack):
        return os.path.join(SEED_DIR, stack["project"] + ".json")

    def seeded_from(self, stack):
        """The host whose live copy seeded the stack's folders here (None: no seed)."""
        try:
            with open(self.seed_path(stack)) as fh:
                return json.load(fh).get("source")
        except (FileNotFoundError, ValueError):
            return None

    def seed(self, wanted):
        """A migration's live copy put in place on the target before the source stops."""
        if not (self.source and wanted):
            raise Failed("a seed needs the source repository and the live copy's snapshot")
        self.repository(create=False)
        run, by_stack, targets = self.chosen_run(wanted)
        seeded = []
        for st in targets:
            present = [p for p in self.folders(st) if os.path.isdir(p) and os.listdir(p)]
            if present and self.seeded_from(st) != self.owner:
                self.changes.append(f"{st['name']}: {self.host} holds data of its own there; "
                                    "not seeded (the final restore saves it first)")
                continue
            if self.running(st):
                self.changes.append(f"{st['name']}: runs on {self.host}; not seeded")
                continue
            os.makedirs(SEED_DIR, mode=0o700, exist_ok=True)
            path = self.seed_path(st)
            with open(path + ".tmp", "w") as fh:  # before the first byte lands
                json.dump({"source": self.owner, "run": run, "at": time.time()}, fh)
            os.replace(path + ".tmp", path)
            seeded += self.put_back([st], by_stack)
        return {"restored": seeded, "run": run}

    def restore(self, wanted):
        self.repository(create=False)
        run, by_stack, targets = self.chosen_run(wanted)
        for st in targets:
            if self.stop(st):
                self.changes.append(f"{st['name']}: stopped for the restore")
        safety_run = "safety-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        safety = []
        reading = (self.env, self.options, self.repo, self.sftp, self.s3)
        for st in targets:
            present = [p for p in self.folders(st) if os.path.isdir(p) and os.listdir(p)]
            if present and self.source and self.seeded_from(st) == self.owner:
                self.changes.append(f"{st['name']}: holds the live copy seeded from "
                                    f"{self.owner} before the stop; brought up to date")
                continue
            if present:
                if self.source and not safety:  # into the host's own repository
                    self.use_own()
                    self.repository(create=True)
                snap = self.take(st, present, safety_run, "safety")
                safety.append(snap)
                self.changes.append(f"{st['name']}: the data on the host saved first as "
                                    f"safety snapshot {snap['short_id']}")
        self.env, self.options, self.repo, self.sftp, self.s3 = reading
        try:
            restored = self.put_back(targets, by_stack)
        except Failed as exc:
            raise Failed(f"{exc}. The stacks stay stopped, the data saved before in the "
                         "safety snapshot; 'abri restore' again, or 'abri apply' to start "
                         "them as they are") from None
        for st in targets:  # up to date now: a later restore treats it as the host's data
            if os.path.exists(self.seed_path(st)):
                os.unlink(self.seed_path(st))
        return {"restored": restored, "safety": safety, "run": run}

    def put_back(self, targets, by_stack):
        restored = []
        for st in targets:
            snap = by_stack[st["name"]]
            for folder in self.folders(st):
                name = os.path.basename(folder)
                source = next((p for p in snap["paths"] if os.path.basename(p) == name), None)
                if source is None:
                    self.changes.append(f"{st['name']}: {name}/ is not in snapshot "
                                        f"{snap['short_id']}, left as it is")
                    continue
                os.makedirs(folder, exist_ok=True)
                self.watched(st["name"], "restore", "restore", f"{snap['id']}:{source}",
                             "--target", folder, "--delete")
            if snap.get("api_done"):  # the data was set up through its API already
                marker = os.path.join(st["dir"], API_DONE)
                os.makedirs(os.path.dirname(marker), mode=0o700, exist_ok=True)
                with open(marker, "w", encoding="utf-8") as fh:
                    fh.write("API setup done by abri on the host this data was backed up "
                             "on; restored with it.\n")
            restored.append({"stack": st["name"], "id": snap["id"],
                             "short_id": snap["short_id"], "time": snap["time"]})
            self.changes.append(f"{st['name']}: restored snapshot {snap['short_id']} of "
                                f"{snap['time'][:19]}Z")
        return restored

    # ------------------------------------------------------------------ trial restore
    def trial(self):
        """Restore the newest backup of every stack into a scratch project, start it, check
        it, remove it (see the module's documentation)."""
        self.repository(create=False)
        newest = {}
        for snap in self.snapshots():  # by time: the last of a stack is its newest
            if snap["kind"] == "backup":
                newest[snap["stack"]] = snap
        trials = []
        for st in self.spec["stacks"]:
            snap = newest.get(st["name"])
            if snap is None:
                trials.append({"stack": st["name"], "ok": False, "checks": [],
                               "reason": "no backup of it in the repository yet ('abri "
                                         "backup' makes one)"})
                continue
            trials.append(Trial(self, st, snap).run())
        for t in trials:
            self.changes.append(f"{t['stack']}: trial restore of snapshot "
                                f"{t.get('short_id', '-')} "
                                + ("passed (" + ", ".join(t["checks"]) + ")" if t["ok"]
                                   else f"FAILED: {t['reason']}"))
        return {"trials": trials}

    def stop_all(self):
        """Stop every stack with user data (a migration's source); data and containers
        stay."""
        stopped = []
        for st in self.spec["stacks"]:
            if self.stop(st):
                stopped.append(st["name"])
                self.changes.append(f"{st['name']}: stopped")
        return {"stopped": stopped}

    def prune(self):
        self.repository(create=False)
        self.unlock()
        keep = self.spec["keep"]
        if not any(int(keep.get(k, 0)) for k in ("daily", "weekly", "monthly")):
            raise Failed("the retention keeps nothing (backup_keep_daily, _weekly and "
                         "_monthly are all 0); abri will not remove every backup")
        proc = self.restic("forget", "--json", "--host", self.host, "--tag", "kind=backup",
                           "--group-by", "host,paths",
                           "--keep-daily", str(keep["daily"]),
                           "--keep-weekly", str(keep["weekly"]),
                           "--keep-monthly", str(keep["monthly"]), "--prune")
        removed = 0
        for line in proc.stdout.splitlines():
            try:
                groups = json.loads(line)
            except ValueError:
                continue
            if isinstance(groups, list):
                removed += sum(len(g.get("remove") or []) for g in groups)
        self.changes.append(f"prune: {removed} snapshot(s) removed by the retention (daily "
                            f"{keep['daily']}, weekly {keep['weekly']}, monthly "
                            f"{keep['monthly']})" if removed else
                            "prune: every backup is within the retention")
        return {"removed": removed}


def _docker(*args, check=True, timeout=600, what=None):
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise Failed(f"{what or 'docker ' + args[0]} failed: "
                     f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    return proc


def _count(path, how, key):
    """The number of items in a file by a manifest's count rule; raises Failed."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise Failed(f"{path} is missing") from None
    except (OSError, UnicodeError) as exc:
        raise Failed(f"{path} cannot be read: {exc}") from None
    if how == "json_items":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise Failed(f"{path} is not valid JSON: {exc}") from None
        for part in (key.split(".") if key else []):
            if not isinstance(data, dict) or part not in data:
                raise Failed(f"{path} has no {key}")
            data = data[part]
        if not isinstance(data, (list, dict)):
            raise Failed(f"{key or 'the document'} in {path} is not a list or an object")
        return len(data)
    try:  # yaml_items: PyYAML when the host has it (any tag read as plain data) ...
        import yaml

        class _Loader(yaml.SafeLoader):
            pass

        def _any(loader, suffix, node):
            if isinstance(node, yaml.MappingNode):
                return loader.construct_mapping(node)
            if isinstance(node, yaml.SequenceNode):
                return loader.construct_sequence(node)
            return loader.construct_scalar(node)

        _Loader.add_multi_constructor("!", _any)
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise Failed(f"{path} is not valid YAML: {str(exc)[:300]}") from None
        if data is None:
            return 0
        if not isinstance(data, (list, dict)):
            raise Failed(f"{path} is not a YAML list or mapping")
        return len(data)
    except ImportError:  # ... else the entries at the top level of its text
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not lines or lines[0].strip() in ("[]", "{}"):
            return 0
        if lines[0].startswith("- ") or lines[0] == "-":
            return sum(1 for ln in lines if ln.startswith("- ") or ln == "-")
        return sum(1 for ln in lines if re.match(r"^[^\s#-][^:]*:", ln))


def scratch_model(model, stack, project, network, copy_root):
    """A stack's live Compose model (JSON of docker compose config) as a scratch project:
    no published port, no container name, no devices, no restart, one internal network of
    its own (named network), no host-gateway alias, the wiring to other stacks emptied (the
    variables in stack.trial.unwired); bind mounts of the user data (stack paths) point
    under copy_root, other folders of the stack's directory are mounted read-only; named
    volumes are the project's own, fresh ones; org.abri.* labels become org.abri.trial."""
    root = os.path.normpath(stack["dir"])
    user = {os.path.join(root, rel): os.path.join(copy_root, rel) for rel in stack["paths"]}
    services = {}
    for name, svc in (model.get("services") or {}).items():
        svc = {k: v for k, v in svc.items() if k not in (
            "ports", "container_name", "devices", "networks", "links", "external_links",
            "mac_address", "restart")}
        if not str(svc.get("network_mode", "")).startswith("service:"):
            svc.pop("network_mode", None)
            svc["networks"] = {"trial": {}}
        svc["restart"] = "no"
        unwired = (stack.get("trial") or {}).get("unwired") or []
        env = svc.get("environment")
        if isinstance(env, dict):
            svc["environment"] = {k: ("" if k in unwired else v) for k, v in env.items()}
        elif isinstance(env, list):
            svc["environment"] = [f"{item.partition('=')[0]}=" if item.partition("=")[0]
                                  in unwired else item for item in env]
        hosts = svc.get("extra_hosts")
        if isinstance(hosts, dict):
            svc["extra_hosts"] = {k: v for k, v in hosts.items() if v != "host-gateway"}
        elif isinstance(hosts, list):
            svc["extra_hosts"] = [h for h in hosts if not re.search(r"[:=]host-gateway$", h)]
        labels = svc.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(item.partition("=")[::2] for item in labels)
        svc["labels"] = {**{k: v for k, v in labels.items() if not k.startswith("org.abri.")},
                         "org.abri.trial": stack["name"]}
        mounts = []
        for vol in svc.get("volumes") or []:
            vol = dict(vol)
            if vol.get("type") == "bind":
                src = os.path.normpath(vol.get("source", ""))
                mapped = next((copy + src[len(orig):] for orig, copy in user.items()
                               if src == orig or src.startswith(orig + "/")), None)
                if mapped is not None:
                    vol["source"] = mapped
                elif src == root or src.startswith(root + "/"):
                    vol["read_only"] = True  # the live stack's own, never written
            mounts.append(vol)
        if mounts:
            svc["volumes"] = mounts
        services[name] = svc
    # internal: no way out to the LAN, the internet or other projects' published ports
    out = {"name": project, "services": services,
           "networks": {"trial": {"name": network, "internal": True}}}
    volumes = {k: {} for k in (model.get("volumes") or {})}  # fresh, the project's own
    if volumes:
        out["volumes"] = volumes
    for key in ("secrets", "configs"):
        if model.get(key):
            out[key] = model[key]
    return out


def _one_line(text):
    """restic's several lines as one (its closing count of errors left out)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()
             and not re.match(r"^Fatal: There were \d+ errors$", ln.strip())]
    return "; ".join(lines)


class Trial:
    """One stack's trial restore: a scratch copy of its user data and a scratch Compose
    project on it, checked, then removed (always)."""

    def __init__(self, backup, stack, snap):
        self.b = backup
        self.st = stack
        self.snap = snap
        self.name = stack["name"]
        self.project = TRIAL_PREFIX + self.name
        self.network = f"{self.project}_trial"
        self.scratch = os.path.join(TRIAL_DIR, self.name)
        self.file = os.path.join(self.scratch, "compose.json")
        self.checks = []

    def run(self):
        start = time.monotonic()
        out = {"stack": self.name, "id": self.snap["id"], "short_id": self.snap["short_id"],
               "time": self.snap["time"], "run": self.snap.get("run", "")}
        reason = None
        try:
            self.remove()  # what an interrupted trial may have left
            self.restore()
            self.check_files()
            self.start()
            self.check_service()
        except Failed as exc:
            reason = _one_line(exc)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            reason = f"{type(exc).__name__}: {_one_line(exc)}"
        finally:
            try:
                self.remove()
            except (Failed, OSError, subprocess.SubprocessError) as exc:
                left = f"the scratch project {self.project} could not be removed: {exc}"
                reason = f"{reason}; {left}" if reason else left
        out.update(ok=reason is None, reason=reason or "", checks=self.checks,
                   seconds=round(time.monotonic() - start, 1))
        return out

    # the scratch copy -----------------------------------------------------------
    def restore(self):
        os.makedirs(TRIAL_DIR, mode=0o700, exist_ok=True)
        os.makedirs(self.scratch, mode=0o700)
        for rel in self.st["paths"]:
            source = next((p for p in self.snap["paths"]
                           if os.path.basename(p.rstrip("/")) == rel), None)
            if source is None:
                raise Failed(f"{rel}/ is not in snapshot {self.snap['short_id']}")
            target = os.path.join(self.scratch, "data", rel)
            os.makedirs(target)
            try:  # the repository's own bytes (no cache), the files read back (verify)
                self.b.restic("restore", "--no-cache", f"{self.snap['id']}:{source}",
                              "--target", target, "--verify", "-q")
            except Failed as exc:
                said = _one_line(exc)
                hint = (" (the repository's data is damaged; 'restic check --read-data' "
                        "names the pack files)" if "ciphertext verification failed" in said
                        else "")
                raise Failed(f"the restore of snapshot {self.snap['short_id']} ({rel}/) "
                             f"failed{hint}: {said[:900]}") from None
        self.checks.append(f"restored snapshot {self.snap['short_id']}")

    def copy_path(self, rel):
        """A path of the stack's directory (manifest) in the scratch copy."""
        return os.path.join(self.scratch, "data", rel)

    def check_files(self):
        import sqlite3

        trial = self.st.get("trial") or {}
        for rel in trial.get("sqlite") or []:
            path = self.copy_path(rel)
            if not os.path.isfile(path):
                raise Failed(f"{rel} is not in the restored data")
            try:
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    rows = db.execute("PRAGMA integrity_check").fetchall()
                finally:
                    db.close()
            except sqlite3.Error as exc:
                raise Failed(f"{rel} as restored cannot be read by SQLite: {exc}") from None
            said = "; ".join(str(r[0]) for r in rows[:5])
            if said != "ok":
                raise Failed(f"{rel} as restored fails PRAGMA integrity_check: {said[:400]}")
            self.checks.append(f"{os.path.basename(rel)} integrity ok")
        for rule in trial.get("counts") or []:
            restored = _count(self.copy_path(rule["file"]), rule["count"], rule.get("key"))
            live = _count(os.path.join(self.st["dir"], rule["file"]), rule["count"],
                          rule.get("key"))
            if restored != live:
                raise Failed(f"the restored {rule['file']} holds {restored} {rule['what']}, "
                             f"the live one {live} (changed since the backup of "
                             f"{self.snap['time'][:19]}Z? 'abri backup' then try again)")
            self.checks.append(f"{restored} {rule['what']} as live")

    # the scratch project ---------------------------------------------------------
    def compose(self):
        """The live project's Compose model (docker compose config), made a scratch one."""
        live = os.path.join(self.st["dir"], "compose.yml")
        if not os.path.isfile(live):
            raise Failed(f"{live} is missing (the stack is not deployed?)")
        proc = subprocess.run(["docker", "compose", "-p", self.st["project"], "-f", live,
                               "config", "--format", "json"], capture_output=True, text=True,
                              cwd=self.st["dir"], timeout=120)
        if proc.returncode != 0:
            raise Failed(f"docker compose config of {live} failed: "
                         f"{proc.stderr.strip()[-500:]}")
        return scratch_model(json.loads(proc.stdout), self.st, self.project, self.network,
                             os.path.join(self.scratch, "data"))

    def start(self):
        model = self.compose()
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:  # may hold the stack's .env values
            json.dump(model, fh)
        self.compose_cmd("up", "-d", "--no-build", "--quiet-pull", what="starting the "
                         "scratch project")
        self.checks.append("started")

    def compose_cmd(self, *args, check=True, what=None):
        proc = subprocess.run(["docker", "compose", "-p", self.project, "-f", self.file,
                               *args], capture_output=True, text=True, cwd=self.scratch,
                              timeout=900)
        if check and proc.returncode != 0:
            raise Failed(f"{what or 'docker compose ' + args[0]} failed: "
                         f"{(proc.stderr or proc.stdout).strip()[-600:]}")
        return proc

    def container(self):
        """The container the health check probes: the stack's one service, else the
        service named after the stack, else the first."""
        with open(self.file, encoding="utf-8") as fh:
            names = list(json.load(fh)["services"])
        service = self.name if self.name in names else names[0]
        cid = self.compose_cmd("ps", "-a", "-q", service).stdout.strip().split()
        if not cid:
            raise Failed(f"the scratch container of {service} was not created")
        return cid[0]

    def address(self, cid):
        proc = _docker("inspect", "--format", "{{json .NetworkSettings.Networks}} "
                       "{{.State.Status}} {{.State.ExitCode}}", cid)
        nets, _, state = proc.stdout.strip().partition(" ")
        status, _, code = state.partition(" ")
        if status not in ("running", "restarting"):
            raise Failed(f"the scratch container stopped (exit {code}): "
                         f"{self.log_tail()}")
        ip = ((json.loads(nets) or {}).get(self.network) or {}).get("IPAddress")
        if not ip:
            raise Failed(f"the scratch container has no address on {self.network}")
        return ip

    def log_tail(self):
        proc = self.compose_cmd("logs", "--no-color", "--tail", "5", check=False)
        return " | ".join(ln.strip() for ln in proc.stdout.splitlines()[-5:])[-600:] or \
            "(no log)"

    def check_service(self):
        cid = self.container()
        health = dict(self.st.get("health") or {})
        if health.get("kind"):
            health["address"] = self.address(cid)
            deadline = time.monotonic() + int(health.get("timeout", 60))
            while True:
                ok, last = probe(health, self.b.secret)
                if ok:
                    break
                if time.monotonic() > deadline:
                    raise Failed(f"the health check ({health['kind']}) of the scratch "
                                 f"container at {health['address']} did not pass within "
                                 f"{health.get('timeout', 60)}s: {last}; its log: "
                                 f"{self.log_tail()}")
                self.address(cid)  # stopped: the reason now, not at the timeout
                time.sleep(1)
            self.checks.append(f"health {last} at {health['address']}")
        patterns = [re.compile(p) for p in (self.st.get("trial") or {}).get("log_errors")
                    or []]
        if patterns:
            logs = self.compose_cmd("logs", "--no-color", "--no-log-prefix").stdout
            for line in logs.splitlines():
                if any(p.search(line) for p in patterns):
                    raise Failed(f"the scratch container's log says: {line.strip()[:400]}")
            self.checks.append("log clean")

    def remove(self):
        """The scratch project and folder gone: containers, network, volumes (those of a
        trial killed before it removed them too)."""
        if os.path.exists(self.file):
            self.compose_cmd("down", "-v", "--remove-orphans", "-t", "20", check=False)
        label = f"label=com.docker.compose.project={self.project}"
        left = _docker("ps", "-a", "-q", "--filter", label).stdout.split()
        if left:
            _docker("rm", "-f", "-v", *left, what="removing the scratch containers")
        for kind in ("network", "volume"):
            names = _docker(kind, "ls", "-q", "--filter", label).stdout.split()
            if names:
                _docker(kind, "rm", *names, what=f"removing the scratch {kind}s")
        if os.path.lexists(self.scratch):
            shutil.rmtree(self.scratch)
        for kind in ("container", "network", "volume"):
            flag = ["-a"] if kind == "container" else []
            listed = _docker(kind, "ls", *flag, "-q", "--filter", label).stdout.split()
            if listed:
                raise Failed(f"{len(listed)} scratch {kind}(s) of {self.project} remain")


def main():
    module = AnsibleModule(
        argument_spec={
            "backup": {"type": "dict", "required": True},
            "host": {"type": "str", "required": True},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
            "action": {"type": "str", "default": "backup",
                       "choices": ["backup", "snapshots", "restore", "seed", "prune",
                                   "stop", "trial"]},
            "snapshot": {"type": "str", "default": ""},
            "source": {"type": "dict", "default": {}},
            "host_keys": {"type": "dict", "default": {}},
            "live": {"type": "bool", "default": False},
            "keep_stopped": {"type": "bool", "default": False},
            "only": {"type": "list", "elements": "str", "default": []},
            "kind": {"type": "str", "default": "backup", "choices": ["backup", "upgrade"]},
        },
        supports_check_mode=False,
    )
    action = module.params["action"]
    result = {"snapshots": []}
    changes = []
    try:
        b = Backup(module)
        changes = b.changes
        if action == "stop":
            with host_lock(module, "abri_backup stop"):
                result.update(b.stop_all())
            module.exit_json(changed=bool(result["stopped"]), changes=changes, **result)
        b.ensure_restic()
        b.ssh_files()
        if action == "snapshots":
            b.repository(create=False)
            result["snapshots"] = b.snapshots()
        else:
            with host_lock(module, f"abri_backup {action}"):
                result.update(getattr(b, action)(*([module.params["snapshot"]]
                                                   if action in ("restore", "seed")
                                                   else [])))
    except Failed as exc:
        module.fail_json(msg=str(exc), changes=changes)
    if action == "trial":  # the live stacks are untouched: changed only by an install
        failed = [t for t in result["trials"] if not t["ok"]]
        installed = any(c.startswith("install ") for c in changes)
        if failed:
            module.fail_json(msg="trial restore failed: " + "; ".join(
                f"{t['stack']}: {t['reason']}" for t in failed), changes=changes,
                changed=installed, **result)
        module.exit_json(changed=installed, changes=changes, **result)
    if action == "snapshots":
        changed = bool(changes)  # restic installed
    elif action == "prune":
        changed = bool(result.get("removed"))
    else:
        changed = True
    module.exit_json(changed=changed, changes=changes, **result)

if __name__ == "__main__":
    main()
