"""abri images mirror and bundle against real registries (Debian's docker-registry on
127.0.0.1), the bundle loaded by the real `docker load`, the image_bundle setting, the strict
gate's look into the mirror, and every refused input (exit 2, the field named, nothing
written)."""

from __future__ import annotations

import http.server
import json
import secrets
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from tests import local_registry as lr
from tests.conftest import fingerprint
from tui.core import audit, images
from tui.core.errors import AbriError
from tui.core.site import Site

needs_registry = pytest.mark.skipif(not Path(lr.BINARY).exists(),
                                    reason="Debian's docker-registry is not installed")


@pytest.fixture
def source(tmp_path):
    with lr.started(tmp_path / "source") as reg:
        yield reg


@pytest.fixture
def target(tmp_path):
    with lr.started(tmp_path / "target") as reg:
        yield reg


def _site(abri, site_dir, pins: dict[str, str], mirror: str = "") -> Site:
    """A site whose stacks deploy the given images (stack -> pinned reference)."""
    assert abri("host", "add", "home", "--kind", "local", "--site", site_dir).code == 0
    for stack in pins:
        r = abri("stack", "add", "home", stack, "--site", site_dir)
        assert r.code == 0, r.err
    site = Site.load(site_dir)
    site.image_pins.update(pins)
    if mirror:
        site.settings.registry_mirror, site.settings.registry_insecure = mirror, True
    site.save()
    return Site.load(site_dir)


def _repo() -> str:
    return f"abritest/demo{secrets.token_hex(3)}"


# ------------------------------------------------------------------ mirror
@needs_registry
def test_mirror_copies_an_index_with_its_platforms_then_copies_nothing(
        abri, site_dir, source, target):
    repo = _repo()
    top, per_arch = lr.push_index(source, repo, "1.0", {
        "amd64": [{"hello": b"amd64 base"}, {"etc/app": b"app"}],
        "arm64": [{"hello": b"arm64 base"}, {"etc/app": b"app"}]})
    single = lr.push_image(source, "library/other", "2.1", [{"x": b"other"}])
    _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:1.0",
                           "nodered": "ghcr.io/library/other:2.1"})
    r = abri("images", "mirror", "--from", source.address, "--from-insecure", "--to",
             target.address, "--insecure", "--site", site_dir)
    assert r.code == 0, r.err
    assert "Copied 2 image(s)" in r.out
    # the same digests: the mirror serves the very images that were pinned
    assert target.head_manifest(repo, "1.0") == top
    assert target.head_manifest("library/other", "2.1") == single.digest
    for img in per_arch.values():
        assert target.head_manifest(repo, img.digest) == img.digest
        for blob in (img.config, *img.layers):
            assert target.has_blob(repo, blob)
    stored = {p: p.stat().st_mtime_ns for p in target.root.rglob("*")}

    again = abri("images", "mirror", "--from", source.address, "--from-insecure", "--to",
                 target.address, "--insecure", "--site", site_dir)
    assert again.code == 0, again.err
    assert f"Nothing to copy: {target.address} holds every pinned image already (2)" \
        in again.out
    # nothing was put: no blob, no upload, no manifest link rewritten
    assert {p: p.stat().st_mtime_ns for p in target.root.rglob("*")} == stored


@needs_registry
def test_blobs_the_target_holds_are_not_sent_again(abri, site_dir, source, target):
    repo = _repo()
    shared = {"base": b"a base layer both images share" * 100}
    lr.push_image(source, repo, "1", [shared, {"one": b"1"}])
    lr.push_image(source, repo, "2", [shared, {"two": b"2"}])
    site = _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:1"})
    first = images.mirror(site, target.address, True, source.address, True)
    assert [c.blobs for c in first] == [3]  # config and two layers
    site.image_pins["mosquitto"] = f"docker.io/{repo}:2"
    second = images.mirror(site, target.address, True, source.address, True)
    assert [c.blobs for c in second] == [2]  # the shared base layer was there
    assert not second[0].already


@needs_registry
def test_a_pin_by_digest_is_copied_and_a_wrong_digest_refused(abri, site_dir, source, target):
    repo = _repo()
    img = lr.push_image(source, repo, "3.0", [{"f": b"pinned"}])
    site = _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:3.0@{img.digest}"})
    done = images.mirror(site, target.address, True, source.address, True)
    assert done[0].digest == img.digest == target.head_manifest(repo, "3.0")

    other = _repo()
    lr.push_image(source, other, "1", [{"f": b"x"}])
    wrong = "sha256:" + "0" * 64
    _site_dir = site_dir.parent / "other-site"
    assert abri("init", "--site", _site_dir).code == 0
    _site(abri, _site_dir, {"mosquitto": f"docker.io/{other}:1@{wrong}"})
    r = abri("images", "mirror", "--from", source.address, "--from-insecure", "--to",
             target.address, "--insecure", "--site", _site_dir)
    assert r.code == 1
    assert f"docker.io/{other}:1@{wrong}" in r.err and "mosquitto on home" in r.err
    assert "Traceback" not in r.err
    assert target.head_manifest(other, "1") is None


# ------------------------------------------------------------------ bundle + docker load
def _docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@needs_registry
@pytest.mark.skipif(not _docker_ok(), reason="no Docker engine answers on this machine")
def test_bundle_is_what_docker_load_reads(abri, site_dir, source, tmp_path):
    repo = _repo()
    _, per_arch = lr.push_index(source, repo, "1.0", {
        "amd64": [{"hello": b"amd64"}, {"etc/conf": b"conf"}],
        "arm64": [{"hello": b"arm64"}]})
    solo = lr.push_image(source, f"{repo}-b", "7", [{"etc/conf": b"conf"}])
    mirror = source.address  # the site's mirror is the registry the bundle is read from
    _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:1.0",
                           "nodered": f"docker.io/{repo}-b:7"}, mirror=mirror)
    out = tmp_path / "images.tar"
    r = abri("images", "bundle", out, "--site", site_dir)
    assert r.code == 0, r.err
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    amd64 = per_arch["amd64"]
    assert manifest[0]["RepoTags"] == [f"{mirror}/{repo}:1.0"]
    assert manifest[0]["Config"] == f"blobs/sha256/{amd64.config.split(':')[1]}"
    # layers as the registry has them: gzip (docker load inflates them itself)
    assert manifest[0]["Layers"] == [f"blobs/sha256/{d.split(':')[1]}" for d in amd64.layers]
    refs = [f"{mirror}/{repo}:1.0", f"{mirror}/{repo}-b:7"]
    try:
        load = subprocess.run(["docker", "load", "-i", str(out)], capture_output=True,
                              text=True)
        assert load.returncode == 0, load.stderr
        for ref, img in zip(refs, (amd64, solo), strict=True):
            info = json.loads(subprocess.run(["docker", "image", "inspect", ref],
                                             capture_output=True, text=True,
                                             check=True).stdout)[0]
            assert info["Id"] == img.config  # the image id is the config's digest
            assert ref in info["RepoTags"]
            assert info["RootFS"]["Layers"] == img.diff_ids
            assert info["Architecture"] == "amd64"
    finally:
        subprocess.run(["docker", "rmi", *refs], capture_output=True)

    # the setting: kept on this machine only, and the deploy's data names the images
    before = fingerprint(site_dir)
    r = abri("site", "set", f"image_bundle={out}", "--site", site_dir)
    assert r.code == 0, r.err
    assert fingerprint(site_dir) == before  # nothing of it in the committed site
    assert json.loads((site_dir / ".abri" / "local.json").read_text()) == \
        {"image_bundle": str(out)}
    shown = json.loads(abri("site", "show", "--json", "--site", site_dir).out)
    assert shown["image_bundle"] == str(out)
    data = images.bundle_vars(Site.load(site_dir))
    assert data == {"src": str(out), "images": {refs[0]: amd64.config,
                                                refs[1]: solo.config}}
    # arm64 from the same index
    arm = tmp_path / "arm.tar"
    assert abri("images", "bundle", arm, "--platform", "linux/arm64", "--limit", "home",
                "--site", site_dir).code == 0
    with tarfile.open(arm) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest[0]["Config"].endswith(per_arch["arm64"].config.split(":")[1])
    assert abri("site", "set", "image_bundle=", "--site", site_dir).code == 0
    assert images.bundle_vars(Site.load(site_dir)) is None


@needs_registry
def test_apply_refuses_a_bundle_that_lacks_an_image_or_a_digest_pin(
        abri, site_dir, source, tmp_path):
    repo = _repo()
    img = lr.push_image(source, repo, "1", [{"f": b"1"}])
    _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:1"}, mirror=source.address)
    out = tmp_path / "b.tar"
    assert abri("images", "bundle", out, "--site", site_dir).code == 0
    assert abri("site", "set", f"image_bundle={out}", "--site", site_dir).code == 0
    assert abri("stack", "add", "home", "nodered", "--site", site_dir).code == 0
    before = fingerprint(site_dir)
    r = abri("plan", "--site", site_dir)
    assert r.code == 2
    assert "image" in r.err and "does not hold docker.io/nodered/node-red" in r.err
    assert f"abri images bundle {out}" in r.err and "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    assert abri("stack", "remove", "home", "nodered", "--site", site_dir).code == 0
    site = Site.load(site_dir)
    site.image_pins["mosquitto"] = f"docker.io/{repo}:1@{img.digest}"
    with pytest.raises(AbriError, match="pinned by digest"):
        images.bundle_vars(site)


# ------------------------------------------------------------------ the strict gate
@needs_registry
def test_strict_asks_the_mirror_and_passes_once_it_holds_the_images(
        abri, site_dir, source, target):
    repo = _repo()
    lr.push_image(source, repo, "5", [{"f": b"5"}])
    _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:5"})
    assert abri("site", "set", "sovereignty=strict", "--site", site_dir).code == 0
    r = abri("plan", "--site", site_dir)
    assert r.code == 2
    assert f"docker.io/{repo}:5" in r.err and "abri images mirror --to HOST:PORT" in r.err
    assert abri("site", "set", f"registry_mirror={target.address}", "registry_insecure=true",
                "--site", site_dir).code == 0
    site = Site.load(site_dir)
    held = audit.mirror_check(site)
    assert held == ({f"docker.io/{repo}:5"}, "")
    with pytest.raises(AbriError, match="does not hold the image") as exc:
        audit.gate(site, mirror_missing=held)
    assert "fix: abri images mirror" in str(exc.value)
    report = audit.report(site, held[0])
    assert [f["mitigated"] for f in report["findings"]] == [False]
    r = abri("images", "mirror", "--from", source.address, "--from-insecure",
             "--site", site_dir)
    assert r.code == 0, r.err
    held = audit.mirror_check(site)
    assert held == (set(), "")
    assert audit.gate(site, mirror_missing=held) == []


def test_strict_says_when_the_mirror_cannot_be_asked(abri, site_dir):
    port = lr.free_port()  # nothing listens there
    site = _site(abri, site_dir, {"mosquitto": "docker.io/library/eclipse-mosquitto:2.0.21"},
                 mirror=f"127.0.0.1:{port}")
    site.settings.sovereignty = "strict"
    held = audit.mirror_check(site)
    assert held[0] == set() and "did not answer" in held[1]
    lines = audit.gate(site, mirror_missing=held)
    assert len(lines) == 1 and "could not check" in lines[0]
    site.settings.sovereignty = "eu"
    assert audit.mirror_check(site) is None  # eu never asks the mirror


# ------------------------------------------------------------------ a token challenge
class _TokenRegistry(http.server.BaseHTTPRequestHandler):
    """Answers like Docker Hub: 401 with a Bearer challenge, a token from the realm."""

    token_requests: list[str] = []

    def log_message(self, *_args):
        pass

    def do_GET(self):
        port = self.server.server_address[1]
        if self.path.startswith("/token?"):
            type(self).token_requests.append(self.path)
            body = json.dumps({"token": "anon-token"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.headers.get("Authorization") != "Bearer anon-token":
            self.send_response(401)
            self.send_header("WWW-Authenticate",
                             f'Bearer realm="http://127.0.0.1:{port}/token",'
                             'service="registry.test",scope="repository:library/x:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"schemaVersion": 2, "mediaType": lr.MANIFEST_V2,
                           "config": {"digest": "sha256:" + "1" * 64, "size": 1},
                           "layers": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", lr.MANIFEST_V2)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET


def test_a_bearer_challenge_is_answered_with_an_anonymous_token():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = images.Client(f"127.0.0.1:{server.server_address[1]}", insecure=True)
        media, _body, digest = client.manifest("library/x", "1")
        assert media == lr.MANIFEST_V2 and digest.startswith("sha256:")
        client.manifest("library/x", "1")  # the token is kept for the scope
        assert len(_TokenRegistry.token_requests) == 1
        assert "service=registry.test" in _TokenRegistry.token_requests[0]
        assert "scope=repository%3Alibrary%2Fx%3Apull" in _TokenRegistry.token_requests[0]
    finally:
        server.shutdown()
        server.server_close()


def test_parse_challenge():
    got = images.parse_challenge('Bearer realm="https://auth.docker.io/token",'
                                 'service="registry.docker.io",'
                                 'scope="repository:library/eclipse-mosquitto:pull"')
    assert got == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                   "scope": "repository:library/eclipse-mosquitto:pull"}
    assert images.parse_challenge('Basic realm="x"') is None


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("args,field", [
    (["mirror", "--to", "not a registry!"], "--to"),
    (["mirror", "--to", "reg.lan:99999"], "--to"),
    (["mirror"], "--to"),  # no --to and no mirror in the site
    (["mirror", "--to", "reg.lan:5000", "--from", "http://x"], "--from"),
    (["bundle", "OUT"], "--from"),  # no --from and no mirror
    (["bundle", "OUT", "--from", "bad host"], "--from"),
    (["bundle", "OUT", "--from", "reg.lan:5000", "--platform", "amd64"], "--platform"),
    (["bundle", "MISSINGDIR", "--from", "reg.lan:5000"], "FILE"),
    (["bundle", "ADIR", "--from", "reg.lan:5000"], "FILE"),
    (["bundle", "/sys/abri-images.tar", "--from", "reg.lan:5000"], "FILE"),
    (["bundle", "OUT", "--from", "reg.lan:5000", "--limit", "nohost"], "--limit"),
])
def test_refused_input_names_the_field_and_writes_nothing(abri, site_dir, tmp_path, args,
                                                           field):
    _site(abri, site_dir, {"mosquitto": "docker.io/library/eclipse-mosquitto:2.0.21"})
    subst = {"OUT": str(tmp_path / "out.tar"), "MISSINGDIR": str(tmp_path / "no" / "x.tar"),
             "ADIR": str(tmp_path)}
    before = fingerprint(site_dir), sorted(p.name for p in tmp_path.iterdir())
    r = abri("images", *[subst.get(a, a) for a in args], "--site", site_dir)
    assert r.code == 2, (r.out, r.err)
    assert field in r.err and "Traceback" not in r.err
    assert (fingerprint(site_dir), sorted(p.name for p in tmp_path.iterdir())) == before


@pytest.mark.parametrize("value,says", [
    ("/nonexistent/images.tar", "is not a file"),
    ("NOTABUNDLE", "is not an image bundle of abri"),
    ("NOTATAR", "cannot be read as an image bundle"),
    ("/tmp/{{ lookup('pipe', 'id') }}.tar", "braces"),
])
def test_a_bad_image_bundle_setting_is_refused(abri, site_dir, tmp_path, value, says):
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(__file__, arcname="manifest.json")
    (tmp_path / "text.tar").write_text("hello")
    value = {"NOTABUNDLE": str(plain), "NOTATAR": str(tmp_path / "text.tar")}.get(value, value)
    before = fingerprint(site_dir)
    r = abri("site", "set", f"image_bundle={value}", "--site", site_dir)
    assert r.code == 2
    assert "image_bundle" in r.err and says in r.err and "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    assert not (site_dir / ".abri" / "local.json").exists()


@needs_registry
def test_upgrade_is_refused_while_images_come_from_a_bundle(abri, site_dir, source, tmp_path):
    repo = _repo()
    lr.push_image(source, repo, "1.0.0", [{"f": b"1"}])
    lr.push_image(source, repo, "1.0.1", [{"f": b"2"}])
    _site(abri, site_dir, {"mosquitto": f"docker.io/{repo}:1.0.0"}, mirror=source.address)
    out = tmp_path / "b.tar"
    assert abri("images", "bundle", out, "--site", site_dir).code == 0
    assert abri("site", "set", f"image_bundle={out}", "--site", site_dir).code == 0
    before = fingerprint(site_dir)
    r = abri("upgrade", "mosquitto", "--to", "1.0.1", "--site", site_dir)
    assert r.code == 2, (r.out, r.err)
    assert "image_bundle" in r.err and "abri site set image_bundle=" in r.err
    assert fingerprint(site_dir) == before
