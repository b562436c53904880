"""Real registries for tests: Debian's docker-registry (distribution 2.8) serving plain HTTP
on 127.0.0.1 with a free port and a storage folder of the test's own, and images pushed into
them with raw registry API calls (not abri's client, so that a test of the client does not
check the client with itself)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BINARY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
http:
  addr: 127.0.0.1:{port}
"""

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalRegistry:
    address: str
    root: Path
    process: subprocess.Popen

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def catalog(self) -> list[str]:
        with urllib.request.urlopen(self.url("/v2/_catalog"), timeout=10) as resp:
            return json.loads(resp.read())["repositories"] or []

    def head_manifest(self, repository: str, reference: str) -> str | None:
        req = urllib.request.Request(self.url(f"/v2/{repository}/manifests/{reference}"),
                                     method="HEAD", headers={"Accept": ", ".join(
                                         (OCI_INDEX, MANIFEST_V2,
                                          "application/vnd.oci.image.manifest.v1+json",
                                          "application/vnd.docker.distribution.manifest"
                                          ".list.v2+json"))})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.headers["Docker-Content-Digest"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def has_blob(self, repository: str, digest: str) -> bool:
        req = urllib.request.Request(self.url(f"/v2/{repository}/blobs/{digest}"),
                                     method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=10):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

    def blob_files(self) -> int:
        """How many blobs the storage holds (each blob is one data file)."""
        base = self.root / "docker/registry/v2/blobs"
        return sum(1 for _ in base.rglob("data")) if base.exists() else 0

    # ------------------------------------------------------------------ raw pushes
    def put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        req = urllib.request.Request(self.url(f"/v2/{repository}/blobs/uploads/"),
                                     method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as resp:
            location = resp.headers["Location"]
        if location.startswith("/"):
            location = self.url(location)
        sep = "&" if "?" in location else "?"
        req = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT",
                                     data=data,
                                     headers={"Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=30):
            pass
        return digest

    def put_manifest(self, repository: str, reference: str, media: str,
                     body: bytes) -> str:
        req = urllib.request.Request(self.url(f"/v2/{repository}/manifests/{reference}"),
                                     method="PUT", data=body, headers={"Content-Type": media})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.headers["Docker-Content-Digest"]


@contextlib.contextmanager
def started(tmp: Path) -> Iterator[LocalRegistry]:
    """A docker-registry on 127.0.0.1 with a free port, stopped (by its pid) afterwards."""
    tmp.mkdir(parents=True, exist_ok=True)
    root = tmp / "storage"
    for _ in range(5):
        port = free_port()
        config = tmp / "config.yml"
        config.write_text(CONFIG.format(root=root, port=port))
        log = open(tmp / "registry.log", "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
        reg = LocalRegistry(f"127.0.0.1:{port}", root, proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(reg.url("/v2/"), timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        if proc.poll() is None:
            break
        log.close()  # the port was taken meanwhile: another one
    else:
        raise RuntimeError(f"docker-registry did not start: {(tmp / 'registry.log').read_text()}")
    try:
        yield reg
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


# ---------------------------------------------------------------------- crafted images
def layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip-compressed layer tar holding files; (compressed bytes, diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


@dataclass
class Pushed:
    digest: str  # the manifest's (or index's) digest
    config: str  # the config digest: the image id docker gives it (a single image)
    layers: list[str]
    diff_ids: list[str]


def push_image(reg: LocalRegistry, repository: str, tag: str | None,
               files: list[dict[str, bytes]], arch: str = "amd64") -> Pushed:
    """A small image (schema 2 manifest, gzip layers) pushed under repository[:tag]."""
    layers, diff_ids = [], []
    for content in files:
        data, diff_id = layer(content)
        layers.append((reg.put_blob(repository, data), len(data)))
        diff_ids.append(diff_id)
    config = json.dumps({"architecture": arch, "os": "linux",
                         "config": {"Cmd": ["/hello"], "Env": ["ABRI=test"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": "abri test"} for _ in diff_ids]},
                        sort_keys=True).encode()
    cfg = reg.put_blob(repository, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST_V2,
        "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": cfg},
        "layers": [{"mediaType": LAYER_GZIP, "size": size, "digest": d} for d, size in layers],
    }, indent=3).encode()
    digest = reg.put_manifest(repository, tag or "sha256:" + hashlib.sha256(manifest).hexdigest(),
                              MANIFEST_V2, manifest)
    return Pushed(digest, cfg, [d for d, _ in layers], diff_ids)


def push_index(reg: LocalRegistry, repository: str, tag: str,
               platforms: dict[str, list[dict[str, bytes]]]) -> tuple[str, dict[str, Pushed]]:
    """A multi-platform image (an OCI index over one image per architecture)."""
    images = {arch: push_image(reg, repository, None, files, arch)
              for arch, files in platforms.items()}
    entries = []
    for arch, img in images.items():
        with urllib.request.urlopen(urllib.request.Request(
                reg.url(f"/v2/{repository}/manifests/{img.digest}"),
                headers={"Accept": MANIFEST_V2}), timeout=10) as resp:
            size = len(resp.read())
        entries.append({"mediaType": MANIFEST_V2, "digest": img.digest, "size": size,
                        "platform": {"os": "linux", "architecture": arch}})
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
                      ).encode()
    return reg.put_manifest(repository, tag, OCI_INDEX, body), images
