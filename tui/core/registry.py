"""Newer releases of a pinned image, asked of the registry the site pulls from.

abri asks only the site's registry mirror (``registry_mirror``), over the registry HTTP API
v2 (plain HTTP when ``registry_insecure`` is set): the tags of a repository, and the digest
of one tag. Without a mirror it asks nobody: the newest releases known are those the kit
carries in its catalog (a newer abri brings newer ones), and no request leaves for an
upstream registry. A release is a tag of numbers only (2026.11.1, 2.0.21) with as many parts
as the pinned one, so that 2.0 or latest never count as newer than 2.0.21.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

_RELEASE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: the manifest kinds a digest may name (a multi-platform index first, as docker pulls it)
_ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))


class RegistryError(Exception):
    """The registry could not be asked (no answer, refused, not a registry)."""


def release(tag: str) -> tuple[int, ...] | None:
    """The numbers of a release tag, or None for a tag that is not one."""
    return tuple(int(p) for p in tag.split(".")) if _RELEASE.match(tag or "") else None


def split(ref: str) -> tuple[str, str, str, str]:
    """registry/repository:tag[@digest] -> (registry, repository, tag, digest)."""
    ref, _, digest = ref.partition("@")
    registry, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    return registry, repository, tag, digest


def join(registry: str, repository: str, tag: str, digest: str = "") -> str:
    return f"{registry}/{repository}:{tag}" + (f"@{digest}" if digest else "")


def newer(tag: str, candidates: list[str], patch_only: bool = False) -> str | None:
    """The newest release among candidates that is newer than tag (the same number of
    parts; with patch_only, the same parts but the last), or None."""
    mine = release(tag)
    if mine is None:
        return None
    best: tuple[int, ...] | None = None
    for other in candidates:
        theirs = release(other)
        if theirs is None or len(theirs) != len(mine) or theirs <= mine:
            continue
        if patch_only and theirs[:-1] != mine[:-1]:
            continue
        if best is None or theirs > best:
            best = theirs
    return ".".join(str(p) for p in best) if best else None


class Registry:
    def __init__(self, address: str, insecure: bool, timeout: float = 10.0):
        self.base = f"{'http' if insecure else 'https'}://{address}"
        self.address = address
        self.timeout = timeout

    def _open(self, path: str, method: str = "GET", accept: str | None = None):
        headers = {"Accept": accept} if accept else {}
        req = urllib.request.Request(self.base + path, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise RegistryError(f"the registry {self.address} wants a login, which abri "
                                    "does not do; let it serve pulls without one") from None
            if exc.code == 404:
                return None
            raise RegistryError(f"the registry {self.address} answered HTTP {exc.code} for "
                                f"{path}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RegistryError(f"the registry {self.address} did not answer ({reason})"
                                ) from None

    def tags(self, repository: str) -> list[str]:
        """Every tag of the repository ([] when the registry does not hold it)."""
        out: list[str] = []
        path = f"/v2/{repository}/tags/list?n=1000"
        while path:
            resp = self._open(path)
            if resp is None:
                return out
            with resp:
                try:
                    body = json.loads(resp.read())
                except ValueError:
                    raise RegistryError(f"{self.address} answered the tag list of "
                                        f"{repository} with something else than JSON") from None
                out.extend(str(t) for t in body.get("tags") or [])
                link = resp.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            path = match.group(1) if match and match.group(1).startswith("/v2/") else ""
        return out

    def digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry serves for repository:tag (what docker pulls), or None."""
        resp = self._open(f"/v2/{repository}/manifests/{tag}", method="HEAD", accept=_ACCEPT)
        if resp is None:
            return None
        with resp:
            digest = resp.headers.get("Docker-Content-Digest", "")
        return digest if re.match(r"^sha256:[0-9a-f]{64}$", digest) else None
