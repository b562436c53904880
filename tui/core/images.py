"""The site's images without a US registry: copy them into the site's mirror, or bundle them.

``abri images mirror`` copies every image the site pins (each stack of each host, at its
pinned tag, or digest when the pin has one) from its upstream registry into the site's
``registry_mirror`` (or ``--to``), over the registry HTTP API v2: the manifest (a
multi-platform index with every per-platform manifest it lists), the config and layer
blobs. A blob the target already holds is not sent again (HEAD), a blob is uploaded in one
piece (POST, then PUT with its digest), and the manifest is put by tag; the digest the target
reports must equal the source's, so the copy is the same image, byte for byte, and a pin by
digest stays valid against the mirror. ``--from REGISTRY`` reads every image from one
registry that holds the upstream paths (a LAN cache, another mirror) instead of each image's
upstream registry.

``abri images bundle FILE`` writes one archive in the layout ``docker load`` reads
(docker-save: the blobs under blobs/sha256/, and manifest.json with Config, RepoTags and
Layers; abri-bundle.json says what it holds, and docker load ignores it), one image per
pinned reference for one platform, read from the mirror (or ``--from``). Hosts with no
registry access load it when the machine-local setting ``image_bundle`` names it (see
:func:`bundle_vars`). Registry layers are gzip-compressed tars; ``docker load`` inflates them
itself (its loader decompresses each layer stream), so they are stored as they come.

Upstream registries that want a token (Docker Hub, ghcr.io) answer 401 with
``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; abri then asks the realm for an
anonymous token and repeats the request with it. Logins (user names, passwords) are not
supported: a registry that wants one is refused with a clear message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.core import validate
from tui.core.atomic import read_json, write_json
from tui.core.errors import AbriError, Problem
from tui.core.registry import split

if TYPE_CHECKING:
    from tui.core.site import Site

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
IMAGE_TYPES = ("application/vnd.oci.image.manifest.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json")
ACCEPT = ", ".join((*INDEX_TYPES, *IMAGE_TYPES))
#: where a registry's API answers when it is not the name images carry
API_HOSTS = {"docker.io": "registry-1.docker.io"}
#: the member of a bundle that says what it holds (docker load ignores it)
BUNDLE_INDEX = "abri-bundle.json"
BUNDLE_VERSION = 1
#: the machine-local settings of a site (in .abri/, which git ignores)
LOCAL_FILE = Path(".abri") / "local.json"
CHUNK = 1 << 20


class RegistryError(Exception):
    """A registry could not be asked, refused, or answered something unexpected."""


def _digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_challenge(header: str) -> dict[str, str] | None:
    """The parameters of a ``WWW-Authenticate: Bearer k="v",...`` header, or None."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


class Client:
    """The registry HTTP API v2 of one registry (plain HTTP when insecure)."""

    def __init__(self, address: str, insecure: bool = False, timeout: float = 60.0):
        self.address = address
        self.api = API_HOSTS.get(address, address)
        self.base = f"{'http' if insecure else 'https'}://{self.api}"
        self.timeout = timeout
        self._tokens: dict[str, str] = {}
        # redirects (Docker Hub sends blob downloads to a CDN) are followed without the
        # token: urllib drops headers added with add_unredirected_header on a redirect
        self._opener = urllib.request.build_opener()

    # ------------------------------------------------------------------ transport
    def _token(self, challenge: dict[str, str]) -> str:
        realm = challenge.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise RegistryError(f"the registry {self.address} asked for a token at "
                                f"{realm!r}, which is not a URL")
        query = {k: challenge[k] for k in ("service", "scope") if challenge.get(k)}
        key = json.dumps([realm, query], sort_keys=True)
        if key in self._tokens:
            return self._tokens[key]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        try:
            with self._opener.open(urllib.request.Request(url), timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RegistryError(f"the registry {self.address} wants a login (its token "
                                f"service answered HTTP {exc.code} to an anonymous request); "
                                "abri pulls anonymously only") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"the token service of {self.address} did not answer "
                                f"({getattr(exc, 'reason', exc)})") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) \
            else None
        if not token:
            raise RegistryError(f"the token service of {self.address} gave no token")
        self._tokens[key] = str(token)
        return self._tokens[key]

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                data: Any = None, ok: Iterable[int] = (200,), absolute: bool = False):
        """One request (the path under the registry, or an absolute URL the registry gave);
        a 401 with a Bearer challenge is answered with an anonymous token, once. Returns the
        open response, or None for a 404."""
        url = path if absolute else self.base + path
        token = None
        for attempt in (1, 2):
            req = urllib.request.Request(url, method=method, data=data,
                                         headers=dict(headers or {}))
            if token:
                req.add_unredirected_header("Authorization", f"Bearer {token}")
            try:
                resp = self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1:
                    challenge = parse_challenge(exc.headers.get("WWW-Authenticate", ""))
                    exc.close()
                    if challenge is None:
                        raise RegistryError(f"the registry {self.address} wants a login, "
                                            "which abri does not do; let it serve anonymous "
                                            "pulls (and pushes, for a mirror on your LAN)"
                                            ) from None
                    token = self._token(challenge)
                    if hasattr(data, "seek"):
                        data.seek(0)
                    continue
                if exc.code == 404:
                    exc.close()
                    return None
                detail = exc.read(300).decode("utf-8", "replace").strip()
                raise RegistryError(f"the registry {self.address} answered HTTP {exc.code} "
                                    f"to {method} {urllib.parse.urlsplit(url).path}"
                                    + (f": {detail}" if detail else "")) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise RegistryError(f"the registry {self.address} did not answer ({reason})"
                                    ) from None
            if resp.status not in ok:
                resp.close()
                raise RegistryError(f"the registry {self.address} answered HTTP "
                                    f"{resp.status} to {method} {path}")
            return resp
        raise RegistryError(f"the registry {self.address} refused the token it gave")

    # ------------------------------------------------------------------ manifests
    def manifest(self, repository: str, reference: str) -> tuple[str, bytes, str] | None:
        """(media type, body, digest) of a manifest, or None when there is none. The digest
        is computed from the body (and must match what the registry says)."""
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                            {"Accept": ACCEPT})
        if resp is None:
            return None
        with resp:
            body = resp.read()
            said = resp.headers.get("Docker-Content-Digest", "")
            media = resp.headers.get("Content-Type", "").split(";")[0].strip()
        digest = _digest_of(body)
        if said and said != digest:
            raise RegistryError(f"{self.address} served {repository}:{reference} with digest "
                                f"{said}, but its content hashes to {digest}")
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryError(f"{self.address} served {repository}@{reference} with other "
                                f"content ({digest})")
        try:
            doc = json.loads(body)
        except ValueError:
            raise RegistryError(f"{self.address} answered the manifest of {repository}:"
                                f"{reference} with something else than JSON") from None
        media = doc.get("mediaType") or media
        if media not in (*INDEX_TYPES, *IMAGE_TYPES):
            raise RegistryError(f"{self.address} serves {repository}:{reference} as "
                                f"{media or 'an unknown kind'}, which abri does not copy "
                                "(schema 1 manifests are long obsolete)")
        return media, body, digest

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        resp = self.request("HEAD", f"/v2/{repository}/manifests/{reference}",
                            {"Accept": ACCEPT})
        if resp is None:
            return None
        with resp:
            return resp.headers.get("Docker-Content-Digest") or None

    def put_manifest(self, repository: str, reference: str, media: str, body: bytes) -> str:
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                            {"Content-Type": media}, data=body, ok=(200, 201))
        if resp is None:
            raise RegistryError(f"{self.address} answered 404 to a manifest put "
                                f"({repository}:{reference})")
        with resp:
            return resp.headers.get("Docker-Content-Digest", "")

    # ------------------------------------------------------------------ blobs
    def has_blob(self, repository: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if resp is None:
            return False
        resp.close()
        return True

    def blob(self, repository: str, digest: str):
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}")
        if resp is None:
            raise RegistryError(f"{self.address} does not hold the blob {digest} of "
                                f"{repository}")
        return resp

    def put_blob(self, repository: str, digest: str, handle, size: int) -> None:
        """A monolithic upload: POST opens the upload, one PUT with the digest ends it."""
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/",
                            {"Content-Length": "0"}, data=b"", ok=(202,))
        if resp is None:
            raise RegistryError(f"{self.address} does not take uploads to {repository}")
        with resp:
            location = resp.headers.get("Location", "")
        if not location:
            raise RegistryError(f"{self.address} opened an upload without a Location")
        url = urllib.parse.urljoin(self.base + "/", location)
        if urllib.parse.urlsplit(url).netloc != urllib.parse.urlsplit(self.base).netloc:
            raise RegistryError(f"{self.address} sent the upload of {repository} to another "
                                f"server ({urllib.parse.urlsplit(url).netloc}); abri sends "
                                "images only to the registry named")
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        resp = self.request("PUT", url, {"Content-Type": "application/octet-stream",
                                         "Content-Length": str(size)},
                            data=handle, ok=(201, 204), absolute=True)
        if resp is None:
            raise RegistryError(f"{self.address} lost the upload of {digest}")
        resp.close()


# ---------------------------------------------------------------------- what the site pins
@dataclass
class Pin:
    """One image the site deploys: its pinned upstream reference and where it runs."""

    ref: str  # registry/repository:tag[@sha256:...] as pinned
    registry: str
    repository: str
    tag: str
    digest: str  # "" when the pin has none
    users: list[str] = field(default_factory=list)  # "STACK on HOST"

    @property
    def reference(self) -> str:
        """What is asked of a registry: the pinned digest, else the tag."""
        return self.digest or self.tag


def pins(site: Site, hosts: list[str] | None = None) -> list[Pin]:
    """Every image the site's stacks deploy (on the hosts named, else all), once each."""
    found: dict[str, Pin] = {}
    for host_name in hosts if hosts is not None else sorted(site.hosts):
        host = site.hosts[host_name]
        for stack in site.catalog.ordered([s for s in host.stacks if s in site.catalog]):
            ref = site.image_pin(host_name, stack)
            if ref not in found:
                registry, repository, tag, digest = split(ref)
                found[ref] = Pin(ref, registry, repository, tag, digest)
            found[ref].users.append(f"{stack} on {host_name}")
    return list(found.values())


def check_registry(value: str, option: str) -> str:
    """A registry address given on the command line (host[:port]), or AbriError."""
    try:
        clean = validate.registry(value)
    except ValueError as exc:
        raise AbriError(Problem("images", option, str(exc))) from None
    if not clean:
        raise AbriError(Problem("images", option, "is empty; give the registry's host or "
                                "host:port"))
    return clean


# ---------------------------------------------------------------------- copying
@dataclass
class Copied:
    ref: str  # the pin
    target: str  # where it is now (registry/repository:tag)
    digest: str
    blobs: int = 0  # blobs sent
    bytes: int = 0  # bytes sent
    manifests: int = 0  # manifests put
    already: bool = False  # the target held it: nothing was sent


def _copy_blob(src: Client, dst: Client, repository: str, desc: dict[str, Any],
               out: Copied) -> None:
    digest = desc["digest"]
    if desc.get("urls"):  # a foreign layer (Windows base images): never in a registry
        return
    if dst.has_blob(repository, digest):
        return
    with tempfile.TemporaryFile() as tmp:
        hasher = hashlib.sha256()
        size = 0
        with src.blob(repository, digest) as resp:
            while chunk := resp.read(CHUNK):
                hasher.update(chunk)
                tmp.write(chunk)
                size += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise RegistryError(f"{src.address} served the blob {digest} of {repository} "
                                "with other content; nothing of it was sent")
        tmp.seek(0)
        dst.put_blob(repository, digest, tmp, size)
    out.blobs += 1
    out.bytes += size


def _copy_manifest(src: Client, dst: Client, repository: str, reference: str,
                   out: Copied, expect: str = "") -> tuple[str, str, bytes]:
    """Copy one manifest (and what it references) by digest; returns (digest, media, body)."""
    got = src.manifest(repository, reference)
    if got is None:
        raise RegistryError(f"{src.address} does not hold {repository}:{reference}")
    media, body, digest = got
    if expect and digest != expect:
        raise RegistryError(f"{src.address} serves {repository}@{expect} with other content")
    doc = json.loads(body)
    if dst.manifest_digest(repository, digest) == digest:
        return digest, media, body
    if media in INDEX_TYPES:
        for child in doc.get("manifests") or []:
            _copy_manifest(src, dst, repository, child["digest"], out, expect=child["digest"])
    else:
        for desc in (doc["config"], *(doc.get("layers") or [])):
            _copy_blob(src, dst, repository, desc, out)
    said = dst.put_manifest(repository, digest, media, body)
    if said and said != digest:
        raise RegistryError(f"{dst.address} stored {repository}@{digest} as {said}")
    out.manifests += 1
    return digest, media, body


def copy_image(src: Client, dst: Client, pin: Pin) -> Copied:
    """Copy one pinned image from src to dst (same repository path), idempotently."""
    out = Copied(pin.ref, f"{dst.address}/{pin.repository}:{pin.tag}", "")
    top = src.manifest_digest(pin.repository, pin.reference)
    if top is None:
        raise RegistryError(f"{src.address} does not hold {pin.repository}:{pin.reference}")
    if pin.digest and top != pin.digest:
        raise RegistryError(f"{src.address} serves {pin.repository}@{pin.digest} as {top}")
    if dst.manifest_digest(pin.repository, pin.tag) == top:
        out.digest, out.already = top, True
        return out
    digest, media, body = _copy_manifest(src, dst, pin.repository, pin.reference, out,
                                         expect=pin.digest)
    said = dst.put_manifest(pin.repository, pin.tag, media, body)
    if said != digest:
        raise RegistryError(f"{dst.address} reports {said or 'no digest'} for "
                            f"{pin.repository}:{pin.tag}, but the source's is {digest}; the "
                            "copy is not the pinned image")
    out.digest = digest
    return out


def _source_for(pin: Pin, source: str, source_insecure: bool,
                clients: dict[tuple[str, bool], Client]) -> Client:
    address, insecure = (source, source_insecure) if source else (pin.registry, False)
    key = (address, insecure)
    if key not in clients:
        clients[key] = Client(address, insecure)
    return clients[key]


def mirror(site: Site, target: str, target_insecure: bool, source: str = "",
           source_insecure: bool = False, hosts: list[str] | None = None,
           say: Callable[[str], None] = lambda _line: None) -> list[Copied]:
    """Copy every image the site pins into target (see the module docstring)."""
    dst = Client(target, target_insecure)
    clients: dict[tuple[str, bool], Client] = {}
    done = []
    for pin in pins(site, hosts):
        src = _source_for(pin, source, source_insecure, clients)
        try:
            copied = copy_image(src, dst, pin)
        except RegistryError as exc:
            raise RegistryError(f"{pin.ref} ({', '.join(pin.users)}): {exc}") from None
        if copied.already:
            say(f"{pin.ref}: {target} holds it already ({copied.digest})")
        else:
            say(f"{pin.ref}: copied to {copied.target} ({copied.digest}; {copied.manifests} "
                f"manifest(s), {copied.blobs} blob(s), {copied.bytes / 1e6:.1f} MB sent)")
        done.append(copied)
    return done


def mirror_holds(site: Site, hosts: list[str] | None = None, timeout: float = 5.0
                 ) -> tuple[set[str], str]:
    """The pinned references the site's mirror does not hold (by the pinned digest when
    the pin has one, else by tag), and "" - or (empty set, why) when the mirror could not
    be asked from this machine."""
    address = site.settings.registry_mirror
    client = Client(address, site.settings.registry_insecure, timeout=timeout)
    missing = set()
    try:
        for pin in pins(site, hosts):
            digest = client.manifest_digest(pin.repository, pin.reference)
            if digest is None or (pin.digest and digest != pin.digest):
                missing.add(pin.ref)
    except RegistryError as exc:
        return set(), str(exc)
    return missing, ""


# ---------------------------------------------------------------------- bundles
def platform_of(value: str) -> tuple[str, str, str]:
    parts = (value or "").strip().split("/")
    if len(parts) not in (2, 3) or not all(re.match(r"^[a-z0-9_]+$", p) for p in parts):
        raise AbriError(Problem("images", "--platform", f"{value!r} is not a platform; use "
                                "OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64"))
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def _pick(doc: dict[str, Any], platform: tuple[str, str, str], where: str) -> str:
    os_name, arch, variant = platform
    offered = []
    for m in doc.get("manifests") or []:
        p = m.get("platform") or {}
        offered.append("/".join(x for x in (p.get("os"), p.get("architecture"),
                                            p.get("variant")) if x))
        if p.get("os") == os_name and p.get("architecture") == arch and (
                not variant or p.get("variant") == variant):
            return m["digest"]
    raise RegistryError(f"{where} has no image for {'/'.join(x for x in platform if x)} "
                        f"(it offers {', '.join(o for o in offered if o) or 'none'})")


def local_ref(pin: Pin, mirror_address: str) -> str:
    """The name a host runs the image by: what compose.yml names (the mirror applied),
    without the digest (docker load gives tags only)."""
    return f"{mirror_address or pin.registry}/{pin.repository}:{pin.tag}"


class _Hashing(io.RawIOBase):
    """Reads from a response, hashing what goes through."""

    def __init__(self, resp):
        self.resp = resp
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.resp.read(len(buf))
        self.hasher.update(data)
        buf[:len(data)] = data
        return len(data)


def _add_blob(tar: tarfile.TarFile, client: Client, repository: str, digest: str,
              size: int, written: set[str]) -> str:
    name = f"blobs/sha256/{digest.split(':', 1)[1]}"
    if name in written:
        return name
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    with client.blob(repository, digest) as resp:
        reader = _Hashing(resp)
        tar.addfile(info, io.BufferedReader(reader, CHUNK))
    if "sha256:" + reader.hasher.hexdigest() != digest:
        raise RegistryError(f"{client.address} served the blob {digest} of {repository} with "
                            "other content")
    written.add(name)
    return name


def check_bundle_file(file: Path) -> Path:
    """The bundle's path, absolute, when its folder exists and can be written."""
    path = Path(os.path.abspath(os.path.expanduser(str(file))))
    if path.is_dir():
        raise AbriError(Problem("images bundle", "FILE", f"{path} is a folder; give the path "
                                "of the archive to write (e.g. images.tar)"))
    if not path.parent.is_dir():
        raise AbriError(Problem("images bundle", "FILE", f"the folder {path.parent} does not "
                                "exist"))
    try:  # a real probe: permissions, a read-only file system, root on a special one
        with tempfile.TemporaryFile(prefix=f".{path.name}.", dir=path.parent):
            pass
    except OSError as exc:
        raise AbriError(Problem("images bundle", "FILE", f"{path} cannot be written "
                                f"({exc.strerror or exc}); choose another place")) from None
    return path


def bundle(site: Site, file: Path, source: str, source_insecure: bool,
           hosts: list[str] | None = None, platform: str = "linux/amd64",
           say: Callable[[str], None] = lambda _line: None) -> list[dict[str, Any]]:
    """Write every pinned image of the site (or of the hosts named) into one archive that
    `docker load` reads, atomically; read from source (the mirror, or --from)."""
    wanted = platform_of(platform)
    path = check_bundle_file(file)
    client = Client(source, source_insecure)
    mirror_address = site.settings.registry_mirror
    entries: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w",
                                                         format=tarfile.PAX_FORMAT) as tar:
            written: set[str] = set()
            for pin in pins(site, hosts):
                where = f"{source}/{pin.repository}:{pin.reference}"
                got = client.manifest(pin.repository, pin.reference)
                if got is None:
                    raise RegistryError(f"{pin.ref} ({', '.join(pin.users)}): {source} does "
                                        f"not hold {pin.repository}:{pin.reference}")
                media, body, top = got
                doc = json.loads(body)
                if media in INDEX_TYPES:
                    child = _pick(doc, wanted, where)
                    got = client.manifest(pin.repository, child)
                    if got is None:
                        raise RegistryError(f"{where}: the platform manifest {child} is "
                                            "missing")
                    media, body, _ = got
                    doc = json.loads(body)
                config = doc["config"]
                cfg = _add_blob(tar, client, pin.repository, config["digest"],
                                int(config["size"]), written)
                layers = [_add_blob(tar, client, pin.repository, d["digest"], int(d["size"]),
                                    written) for d in doc.get("layers") or []]
                ref = local_ref(pin, mirror_address)
                entries.append({"Config": cfg, "RepoTags": [ref], "Layers": layers})
                index.append({"ref": ref, "pin": pin.ref, "digest": top,
                              "image_id": config["digest"], "users": pin.users})
                say(f"{pin.ref}: {len(layers)} layer(s), image {config['digest'][:19]}, "
                    f"as {ref}")
            for name, data in (("manifest.json", entries),
                               (BUNDLE_INDEX, {"version": BUNDLE_VERSION,
                                               "platform": "/".join(x for x in wanted if x),
                                               "images": index})):
                raw = json.dumps(data, indent=1).encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(raw), 0o644
                tar.addfile(info, io.BytesIO(raw))
            tar.close()
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return index


def read_bundle(file: Path) -> dict[str, Any]:
    """What a bundle abri wrote holds (its abri-bundle.json), or ValueError saying why not."""
    try:
        with tarfile.open(file, mode="r:") as tar:
            member = tar.getmember(BUNDLE_INDEX)
            handle = tar.extractfile(member)
            data = json.loads(handle.read()) if handle else None
            tar.getmember("manifest.json")
    except KeyError:
        raise ValueError(f"{file} is not an image bundle of abri (no {BUNDLE_INDEX} or "
                         "manifest.json in it); write one with 'abri images bundle FILE'"
                         ) from None
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise ValueError(f"{file} cannot be read as an image bundle "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(data, dict) or data.get("version") != BUNDLE_VERSION or not \
            isinstance(data.get("images"), list):
        raise ValueError(f"{file} is an image bundle of another abri version; write it again "
                         "with 'abri images bundle FILE'")
    return data


# ---------------------------------------------------------------------- the apply side
def local_settings(site: Site) -> dict[str, Any]:
    """This machine's settings of the site (.abri/local.json, never committed)."""
    data = read_json(site.path / LOCAL_FILE)
    return data if isinstance(data, dict) else {}


def check_image_bundle(value: str) -> str:
    """The value image_bundle would take ("" clears it), or AbriError naming the field: the
    path, absolute, of a bundle abri wrote."""
    text = (value or "").strip()
    if not text:
        return ""
    if re.search(r"[{}\x00-\x1f\x7f]", text):
        # the path reaches Ansible as an extra variable: never anything it could template
        raise AbriError(Problem("site", "image_bundle", "a path with braces or control "
                                "characters is not taken; rename the file"))
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if not path.is_file():
        raise AbriError(Problem("site", "image_bundle", f"{path} is not a file; write the "
                                "bundle first with 'abri images bundle FILE'"))
    try:
        read_bundle(path)
    except ValueError as exc:
        raise AbriError(Problem("site", "image_bundle", str(exc))) from None
    return str(path)


def set_image_bundle(site: Site, value: str) -> str:
    """Set (or, with "", clear) the machine-local image_bundle; returns the path kept. It
    is kept in .abri/local.json, never in the committed site: it is a path of this
    machine."""
    path = check_image_bundle(value)
    data = local_settings(site)
    if path:
        data["image_bundle"] = path
    else:
        data.pop("image_bundle", None)
    write_json(site.path / LOCAL_FILE, data)
    return path


def bundle_vars(site: Site, hosts: list[str] | None = None) -> dict[str, Any] | None:
    """The extra variable that makes the kit's deploy load images from the bundle
    (``abri_image_bundle``: the bundle's path on this machine and, per reference a stack's
    compose.yml names, the image id it must have), or None without a bundle. Refuses
    (AbriError, before any host is touched) a bundle that lacks an image the hosts deploy,
    and a pin by digest, which Docker cannot run from a loaded archive."""
    path = local_settings(site).get("image_bundle")
    if not path:
        return None
    path = check_image_bundle(str(path))  # still there, still a bundle, still plain
    try:
        data = read_bundle(Path(path))
    except ValueError as exc:
        raise AbriError(Problem("site", "image_bundle", str(exc))) from None
    held = {e["pin"]: e for e in data["images"] if isinstance(e, dict) and "pin" in e}
    problems = []
    images: dict[str, str] = {}
    for pin in pins(site, hosts):
        where = f"{', '.join(pin.users)}"
        if pin.digest:
            problems.append(Problem(where, "image", f"{pin.ref} is pinned by digest; Docker "
                                    "runs a digest reference only from a registry, not from "
                                    "a loaded archive: deploy it from the registry mirror, "
                                    "or clear image_bundle ('abri site set image_bundle=')"))
            continue
        entry = held.get(pin.ref)
        if entry is None:
            problems.append(Problem(where, "image", f"the image bundle {path} does not hold "
                                    f"{pin.ref}; write it again with 'abri images bundle "
                                    f"{path}'"))
            continue
        ref = local_ref(pin, site.settings.registry_mirror)
        if entry.get("ref") != ref:
            problems.append(Problem(where, "image", f"the image bundle {path} names {pin.ref} "
                                    f"{entry.get('ref')}, but the site runs it as {ref} (the "
                                    "registry mirror changed since); write it again with "
                                    f"'abri images bundle {path}'"))
            continue
        images[ref] = str(entry["image_id"])
    if problems:
        raise AbriError(problems)
    return {"src": path, "images": images}
