"""The stack step of abri's convergence (abri_stack, and abri_host's quick check): one
Compose stack's folders, files, accounts, certificates, project and health.

`module` is an AnsibleModule or a stand-in with the same few members (check_mode, _diff,
fail_json).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from ansible.module_utils.abri_docker import DockerError
from ansible.module_utils.abri_docker import containers as docker_containers
from ansible.module_utils.abri_health import wait_healthy
from ansible.module_utils.abri_passwd import render_passwd

MARKER = ".abri/api-done"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _write_atomic(path, data, mode, owner):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".abri-", dir=directory)
    try:
        os.fchmod(fd, mode)
        os.fchown(fd, owner, owner)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Stack:
    def __init__(self, module, spec, secrets, wait=True, health_timeout=0, pull="missing"):
        self.m = module
        self.pull = pull
        self.wait = wait
        self.health_timeout = int(health_timeout or 0)
        self.spec = spec
        self.secrets = secrets
        self.dir = spec["dir"]
        self.project = spec["project"]
        self.check = module.check_mode
        self.changes = []
        self.diffs = []
        self.restart = False
        self.compose_changed = False

    # ------------------------------------------------------------------ helpers
    def secret(self, ref):
        value = self.secrets.get(ref)
        if not value:
            self.m.fail_json(msg=f"stack {self.spec['name']}: the secret {ref} is missing from "
                                 "the site's vault (run abri once to generate it)")
        return value

    def note(self, text):
        self.changes.append(text)

    def ensure_dir(self, path, owner, mode):
        st = None
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(path)
        if st is None:
            self.note(f"create {path}/")
            if not self.check:
                os.makedirs(path, exist_ok=True)
                os.chown(path, owner, owner)
                os.chmod(path, mode)
            return
        if (st.st_mode & 0o7777) != mode or st.st_uid != owner:
            self.note(f"fix owner/mode of {path}/")
            if not self.check:
                os.chown(path, owner, owner)
                os.chmod(path, mode)

    def ensure_file(self, rel, data, mode, owner, *, secret=False, restart=False,
                    policy="managed", replaces_marker=None):
        path = os.path.join(self.dir, rel)
        old = _read(path)
        if old is not None and policy == "seed":
            if not (replaces_marker and replaces_marker.encode() in old):
                return False  # the user's file now
            self.note(f"replace {rel} written by an earlier abri (kept as {rel}.abri-old)")
            if not self.check:
                _write_atomic(path + ".abri-old", old, 0o600, 0)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self.ensure_dir(parent, owner, 0o755)
        st = os.stat(path) if old is not None else None
        content_same = old is not None and _sha(old) == _sha(data)
        meta_same = st is not None and (st.st_mode & 0o7777) == mode and st.st_uid == owner
        if content_same and meta_same:
            return False
        if old is None:
            self.note(f"create {rel}")
        elif not content_same:
            self.note(f"restore {rel} (it differed from the site)")
        else:
            self.note(f"fix owner/mode of {rel}")
        if not content_same and getattr(self.m, "_diff", False) and not secret:
            before = (old or b"").decode("utf-8", "replace")
            self.diffs.append({"before_header": path, "after_header": path,
                               "before": before, "after": data.decode("utf-8", "replace")})
        if not self.check:
            _write_atomic(path, data, mode, owner)
        if restart and not content_same:
            self.restart = True
        return True

    # ------------------------------------------------------------------ docker
    def compose(self, *args, check=True):
        cmd = ["docker", "compose", "-p", self.project, "--project-directory", self.dir,
               "-f", os.path.join(self.dir, "compose.yml"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if check and proc.returncode != 0:
            self.m.fail_json(msg=f"stack {self.spec['name']}: docker compose {' '.join(args)} "
                                 f"failed: {proc.stderr.strip()[-2000:]}", changes=self.changes)
        return proc

    def containers(self, quiet=False):
        """Containers of the project (by Compose's label), whatever their state; None when
        the engine does not answer and quiet is set."""
        try:
            return docker_containers([f"com.docker.compose.project={self.project}"])
        except (DockerError, ValueError) as exc:
            if quiet:
                return None
            self.m.fail_json(msg=f"stack {self.spec['name']}: listing its containers failed: "
                                 f"{exc}", changes=self.changes)

    def converge_project(self):
        if self.check and not shutil.which("docker"):
            self.note("docker compose up (the engine is not installed yet)")
            return
        # check mode on a host whose engine is installed but not running (the engine step
        # starts it before this one in an apply): say what would happen rather than fail
        have = self.containers(quiet=self.check)
        if have is None:
            self.note("docker compose up (the engine does not answer yet)")
            return
        stale = [c for c in have if c.get("State") in ("created", "dead")]
        if stale:
            self.note("remove half-made containers "
                      + ", ".join(n.lstrip("/") for c in stale for n in c.get("Names", []))
                      + " (left by an interrupted run)")
            if not self.check:
                subprocess.run(["docker", "rm", "-f", *[c["Id"] for c in stale]],
                               capture_output=True, text=True)
            have = [c for c in have if c not in stale]
        running = [c for c in have if c.get("State") == "running"]
        if self.compose_changed or not running or len(running) < len(have):
            why = ("compose.yml changed" if self.compose_changed
                   else "not running" if not running else "a container is stopped")
            self.note(f"docker compose up ({why})")
            if not self.check:
                self.conflicts()
                # --pull never: images come from a bundle; a missing one is an error
                pull = ("--pull", "never") if self.pull == "never" else ()
                self.compose("up", "-d", "--remove-orphans", "--quiet-pull", *pull)
            return
        if self.restart:
            self.note("restart (a file it reads at start changed)")
            if not self.check:
                self.compose("restart")

    def conflicts(self):
        """A container of another project (or none) holding a name this project wants is
        never touched: say which and what to do."""
        proc = self.compose("config", "--format", "json", check=False)
        try:
            services = json.loads(proc.stdout).get("services", {})
        except ValueError:
            return
        for svc in services.values():
            name = svc.get("container_name")
            if not name:
                continue
            info = subprocess.run(["docker", "inspect", "-f",
                                   '{{index .Config.Labels "com.docker.compose.project"}}', name],
                                  capture_output=True, text=True)
            if info.returncode == 0 and info.stdout.strip() != self.project:
                self.m.fail_json(msg=f"a container named {name} exists that abri did not make "
                                     f"(project {info.stdout.strip() or 'none'}); abri leaves it "
                                     f"alone: rename or remove it (docker rm -f {name}), then "
                                     "apply again")

    # ------------------------------------------------------------------ health
    def health(self):
        hc = self.spec.get("health") or {}
        if not hc.get("kind"):
            return
        ok, last = wait_healthy(hc, self.secret, timeout=self.health_timeout or None)
        if not ok:
            self.m.fail_json(msg=f"stack {self.spec['name']}: health check ({hc['kind']} on "
                                 f"127.0.0.1:{hc['port']}) failed: {last}", changes=self.changes)

    # ------------------------------------------------------------------ run
    def present(self):
        spec = self.spec
        if not os.path.isdir(os.path.dirname(self.dir)):
            self.ensure_dir(os.path.dirname(self.dir), 0, 0o755)
        self.ensure_dir(self.dir, 0, 0o755)
        for d in spec.get("dirs", []):
            self.ensure_dir(os.path.join(self.dir, d["path"]), int(d.get("owner", 0)),
                            int(d.get("mode", "0755"), 8))
        bootstrap = (any("bootstrap_content" in f for f in spec.get("files", []))
                     and not os.path.exists(os.path.join(self.dir, MARKER)))
        for f in spec.get("files", []):
            content = f["bootstrap_content"] if bootstrap and "bootstrap_content" in f \
                else f["content"]
            changed = self.ensure_file(f["path"], content.encode("utf-8"),
                                       int(f.get("mode", "0644"), 8), int(f.get("owner", 0)),
                                       restart=f.get("restart", False),
                                       policy=f.get("policy", "managed"),
                                       replaces_marker=f.get("replaces_marker"))
            if changed and f["path"] == "compose.yml":
                self.compose_changed = True
        accounts = spec.get("accounts")
        if accounts:
            users = {u: self.secret(ref) for u, ref in accounts["users_ref"].items()}
            path = os.path.join(self.dir, accounts["passwd_file"])
            old = (_read(path) or b"").decode("utf-8", "replace")
            text = render_passwd(users, old)
            if self.ensure_file(accounts["passwd_file"], text.encode(), 0o600,
                                int(accounts.get("owner", 0)), secret=True, restart=True):
                self.changes[-1] = f"{self.changes[-1]} (users: {', '.join(sorted(users))})"
        env = spec.get("env")
        if env:
            lines = []
            for name, v in sorted(env.items()):
                value = self.secret(v["value_ref"]) if "value_ref" in v else v.get("value", "")
                lines.append(f"{name}={json.dumps(value)}")
            if self.ensure_file(".env", ("\n".join(lines) + "\n").encode(), 0o600, 0,
                                secret=True):
                self.compose_changed = True
        for cert in spec.get("certificates", []):
            self.certificate(cert)
        self.converge_project()
        if not self.check and self.wait:
            self.health()
        return bootstrap

    def certificate(self, cert):
        crt = os.path.join(self.dir, cert["path"] + ".crt")
        key = os.path.join(self.dir, cert["path"] + ".key")
        owner = int(cert.get("owner", 0))
        if "crt" in cert:  # made by abri on the controller or the user's: the key (when
            # there is one: a CA's root comes alone) from the vault
            pairs = [(cert["path"] + ".crt", cert["crt"], False)]
            if cert.get("key_ref"):
                pairs.append((cert["path"] + ".key", self.secret(cert["key_ref"]), True))
            for rel, data, secret in pairs:
                if not os.path.isdir(os.path.dirname(os.path.join(self.dir, rel))):
                    self.ensure_dir(os.path.dirname(os.path.join(self.dir, rel)), owner, 0o700)
                self.ensure_file(rel, data.encode("utf-8"), 0o600, owner, secret=secret,
                                 restart=True)
            return
        if os.path.exists(crt) and os.path.exists(key):
            for path in (crt, key):
                st = os.stat(path)
                if st.st_uid != owner or (st.st_mode & 0o777) != 0o600:
                    self.note(f"fix owner/mode of {os.path.relpath(path, self.dir)}")
                    if not self.check:
                        os.chown(path, owner, owner)
                        os.chmod(path, 0o600)
            return
        self.note(f"create a self-signed certificate {cert['path']}.crt for {cert['name']}")
        self.restart = True
        if self.check:
            return
        self.ensure_dir(os.path.dirname(crt), owner, 0o700)
        name = cert["name"]
        kind = "IP" if all(c in "0123456789.:abcdefABCDEF" for c in name) and (
            "." in name or ":" in name) and not name[-1].isalpha() else "DNS"
        proc = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:3072", "-sha256", "-nodes",
             "-days", str(cert.get("days", 3650)), "-subj", f"/CN={name}",
             "-addext", f"subjectAltName={kind}:{name}", "-keyout", key, "-out", crt],
            capture_output=True, text=True)
        if proc.returncode != 0:
            self.m.fail_json(msg=f"openssl failed: {proc.stderr.strip()[-1000:]}")
        for path in (crt, key):
            os.chown(path, owner, owner)
            os.chmod(path, 0o600)

    def absent(self):
        if not os.path.exists(os.path.join(self.dir, "compose.yml")) or not shutil.which("docker"):
            return
        if self.containers():
            self.note("docker compose down (no longer wanted; data kept)")
            if not self.check:
                self.compose("down", "--remove-orphans")
