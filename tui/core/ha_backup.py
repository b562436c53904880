"""Home Assistant's own backups, read and checked on the controller before an import.

A Home Assistant backup (Core's, or a Supervisor's full backup) is a plain tar: ``backup.json``
(plaintext metadata: name, date, slug, protected, compressed, homeassistant.version, folders,
addons) and inner ``*.tar.gz`` members. ``homeassistant.tar.gz`` holds the configuration under
``data/`` (the recorder's database ``home-assistant_v2.db`` included unless the backup excluded
it). A protected backup encrypts each inner member with SecureTar (the ``securetar`` library of
the Home Assistant project): version 2 (Home Assistant up to 2026.2) with AES-128-CBC and no
authentication, so a wrong password shows only as an inner tar that cannot be read; version 3
(2026.3 on) with Argon2id and XChaCha20-Poly1305 and a validation key, which checks the
password up front. Everything here refuses a bad archive with an AbriError naming the file
and what is wrong, before anything on a host changes. Secrets (the password) are never
printed.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.core.errors import AbriError, Problem

INNER = ("homeassistant.tar.gz", "homeassistant.tar")
DATABASE = "home-assistant_v2.db"
MAGIC = b"SecureTar"
GZIP_MAGIC = b"\x1f\x8b"
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(.*)$")


@dataclass
class HaBackup:
    """What a backup holds, read from its backup.json and its outer tar."""

    path: Path
    name: str
    date: str
    slug: str
    protected: bool
    compressed: bool
    ha_version: str
    folders: list[str]
    addons: list[dict[str, str]]
    size: int  # bytes of the whole file
    inner: str  # the member holding Home Assistant's configuration
    inner_size: int
    securetar: int | None  # SecureTar version of the inner member; None when not encrypted
    database: bool | None  # None when backup.json does not say
    members: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"file": str(self.path), "name": self.name, "date": self.date,
                "slug": self.slug, "homeassistant": self.ha_version, "size": self.size,
                "protected": self.protected,
                "encryption": f"SecureTar v{self.securetar}" if self.securetar else "none",
                "database": self.database, "folders": self.folders,
                "addons": [a.get("slug") or a.get("name") for a in self.addons]}


def _where(path: Path) -> str:
    return f"backup '{path}'"


def _bad(path: Path, what: str, message: str) -> AbriError:
    return AbriError(Problem(_where(path), what, message))


def _member(tar: tarfile.TarFile, names: tuple[str, ...]) -> tarfile.TarInfo | None:
    for m in tar.getmembers():
        if m.name.removeprefix("./") in names and m.isfile():
            return m
    return None


def _open_outer(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise _bad(path, "file", "does not exist or is not a file; give the path of a "
                   "backup downloaded from Home Assistant (Settings > System > Backups)")
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by read) never compressed
    except tarfile.ReadError:
        raise _bad(path, "file", "is not a tar archive; a Home Assistant backup is a .tar "
                   "file (as Home Assistant downloads it, not unpacked or repacked)") from None
    try:
        members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise _bad(path, "file", f"is truncated or corrupt ({exc}); download the backup "
                   "again") from None
    end = path.stat().st_size
    for m in members:
        if m.isfile() and m.offset_data + m.size > end:
            tar.close()
            raise _bad(path, "file", f"is truncated: {m.name} ends past the end of the file; "
                       "download the backup again")
    return tar


def _metadata(path: Path, tar: tarfile.TarFile) -> dict[str, Any]:
    member = _member(tar, ("backup.json",))
    if member is None:
        raise _bad(path, "backup.json", "is missing: this is not a Home Assistant backup "
                   "(one holds backup.json and homeassistant.tar.gz)")
    raw = tar.extractfile(member)
    try:
        data = json.loads(raw.read() if raw else b"")
    except (ValueError, UnicodeDecodeError):
        raise _bad(path, "backup.json", "is not valid JSON: this is not a Home Assistant "
                   "backup, or it is damaged") from None
    if not isinstance(data, dict) or not isinstance(data.get("slug"), str):
        raise _bad(path, "backup.json", "has no slug: this is not a Home Assistant backup")
    ha = data.get("homeassistant")
    if not isinstance(ha, dict) or not isinstance(ha.get("version"), str):
        raise _bad(path, "backup.json", "names no Home Assistant version: it holds no Home "
                   "Assistant configuration (a partial backup of add-ons or folders only?); "
                   "make a backup that includes Home Assistant's settings")
    return data


def _stream_version(head: bytes) -> int | None:
    """The SecureTar version an inner member starts with; None for a plain (gzip) tar."""
    if head.startswith(MAGIC) and len(head) > len(MAGIC):
        return head[len(MAGIC)]
    if head.startswith(GZIP_MAGIC) or head[257:262] == b"ustar":
        return None
    return 1  # the legacy format has no header: 16 bytes of IV, then ciphertext


def read(path: Path) -> HaBackup:
    """Open a backup, check its outer tar and backup.json, find its Home Assistant member.
    Raises AbriError for anything that is not a readable Home Assistant backup."""
    path = Path(path)
    with _open_outer(path) as tar:
        data = _metadata(path, tar)
        inner = _member(tar, INNER)
        if inner is None:
            raise _bad(path, "homeassistant.tar.gz", "is missing: the backup holds no Home "
                       "Assistant configuration; make one that includes Home Assistant's "
                       "settings")
        f = tar.extractfile(inner)
        head = f.read(512) if f else b""
        version = _stream_version(head)
        protected = bool(data.get("protected"))
        if version is not None and not protected:
            raise _bad(path, inner.name, "is encrypted while backup.json says the backup is "
                       "not protected: the archive is inconsistent")
        if version is None and protected and head.startswith(GZIP_MAGIC):
            # Supervisor marks a backup protected while some members may be plain
            version = None
        if version not in (None, 1, 2, 3):
            raise _bad(path, inner.name, f"uses SecureTar version {version}, which this "
                       "abri cannot read (it reads versions 1 to 3); upgrade abri")
        ha = data["homeassistant"]
        database = None
        if "exclude_database" in ha:
            database = not ha["exclude_database"]
        addons = [a for a in (data.get("addons") or []) if isinstance(a, dict)]
        folders = [str(x) for x in (data.get("folders") or [])]
        return HaBackup(
            path=path, name=str(data.get("name") or ""), date=str(data.get("date") or ""),
            slug=data["slug"], protected=protected, compressed=bool(data.get("compressed",
                                                                              True)),
            ha_version=ha["version"], folders=folders, addons=addons,
            size=path.stat().st_size, inner=inner.name, inner_size=inner.size,
            securetar=version, database=database,
            members=[m.name.removeprefix("./") for m in tar.getmembers()])


def _decrypted(tar: tarfile.TarFile, member: tarfile.TarInfo, password: str | None):
    """A context manager yielding the plaintext stream of an inner member."""
    import contextlib

    import securetar

    if password is None:
        return contextlib.nullcontext(tar.extractfile(member))
    # the archive object only wraps tar; SecureTarDecryptStream reads the member's bytes
    ctx = securetar.SecureTarRootKeyContext(password)
    return securetar.SecureTarDecryptStream(tar.extractfile(member),
                                            ciphertext_size=member.size,
                                            root_key_context=ctx)


def _wrong_password(backup: HaBackup) -> AbriError:
    how = ("its validation key rejects it" if backup.securetar == 3 else
           "Home Assistant's configuration does not decrypt to a readable archive with it")
    return _bad(backup.path, "password", f"is wrong: {how}; give the backup's password "
                "(Home Assistant shows it as the backup encryption key, under Settings > "
                "System > Backups)")


def check_password(backup: HaBackup, password: str | None) -> None:
    """Refuse a protected backup without a password, and a wrong password, reading no more
    than the start of the Home Assistant member: v3 checks its validation key before any
    data; v2 has none, so its first file header must decrypt and read as a tar."""
    import securetar

    if backup.securetar is None:
        return
    if not password:
        raise _bad(backup.path, "password", "is needed: the backup is protected (SecureTar "
                   f"v{backup.securetar}); give it with --password-file FILE")
    with tarfile.open(backup.path, "r:") as tar:
        member = _member(tar, (backup.inner.removeprefix("./"),))
        assert member is not None
        try:
            with _decrypted(tar, member, password) as stream:
                mode = "r|gz" if backup.inner.endswith(".gz") else "r|"
                with tarfile.open(fileobj=stream, mode=mode) as inner:
                    first = inner.next()
        except securetar.InvalidPasswordError:
            raise _wrong_password(backup) from None
        except Exception as exc:  # securetar's, tarfile's, gzip's and nacl's errors alike
            if backup.securetar == 3:  # the key was right: the data is damaged
                raise _bad(backup.path, backup.inner, f"is corrupt ({type(exc).__name__}); "
                           "download the backup again") from None
            raise _wrong_password(backup) from None
        if first is None:
            raise _bad(backup.path, backup.inner, "is an empty archive: it holds no Home "
                       "Assistant configuration")


def _version_key(value: str) -> tuple[int, int, int, int] | None:
    """CalVer of Home Assistant (2026.2.3, 2026.3.0b1, 2026.4.0.dev0) as a sortable key;
    a pre-release sorts before its release. None when value is no such version."""
    m = _VERSION.match(value.strip().lstrip("v"))
    if not m:
        return None
    return (int(m[1]), int(m[2]), int(m[3] or 0), 0 if m[4] else 1)


def check_version(backup: HaBackup, stack_tag: str, host: str) -> None:
    """Home Assistant refuses a backup made by a newer release than itself: so does abri,
    before anything changes, offering the ways out."""
    have, need = _version_key(stack_tag), _version_key(backup.ha_version)
    if have is None or need is None or need <= have:
        return
    raise _bad(backup.path, "homeassistant.version",
               f"the backup was made by Home Assistant {backup.ha_version}, newer than "
               f"{stack_tag}, which the site pins on {host}; Home Assistant cannot restore a "
               f"newer backup: run 'abri upgrade homeassistant --limit {host} --to "
               f"{backup.ha_version}' first (or pin that version), then import again")


def read_password_file(path: Path | None, option: str = "--password-file",
                       command: str = "import-ha-backup") -> str | None:
    """The password a file holds (its last line break dropped); None without a file."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AbriError(Problem(command, option,
                                f"{path} cannot be read ({exc.__class__.__name__}); give a "
                                "file holding the password")) from None
    password = text.rstrip("\r\n")
    if not password:
        raise AbriError(Problem(command, option, f"{path} is empty; give a "
                                "file holding the password"))
    return password


def _extract_tree(backup: HaBackup, name: str, prefix: str, password: str | None,
                  dest: Path, skip=lambda rel: False) -> list[str]:
    """Unpack the folder prefix/ of the inner member name into dest (created): only regular
    files, folders and links that stay inside dest (tarfile's 'data' filter), and not the
    paths skip() refuses. Returns the paths written, relative to dest. The member is
    decrypted when it starts with SecureTar's header (a protected backup)."""
    import securetar

    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    with tarfile.open(backup.path, "r:") as tar:
        member = _member(tar, (name.removeprefix("./"),))
        if member is None:
            raise _bad(backup.path, name, "is missing from the archive")
        f = tar.extractfile(member)
        version = _stream_version(f.read(512) if f else b"")
        if version is not None and not password:
            raise _bad(backup.path, "password", f"is needed: {name} is encrypted (SecureTar "
                       f"v{version}); give it with --password-file FILE")
        try:
            with _decrypted(tar, member, password if version is not None else None) as stream:
                mode = "r|gz" if name.endswith(".gz") else "r|"
                with tarfile.open(fileobj=stream, mode=mode) as inner:
                    for m in inner:
                        path = m.name.removeprefix("./")
                        if path != prefix and not path.startswith(prefix + "/"):
                            continue
                        rel = path.removeprefix(prefix).lstrip("/")
                        if not rel or skip(rel):
                            continue
                        m.name = rel
                        if m.islnk():  # a hard link names its target from the archive's root
                            target = m.linkname.removeprefix("./")
                            m.linkname = target.removeprefix(prefix + "/")
                        inner.extract(m, dest, filter="data")
                        written.append(rel)
        except securetar.InvalidPasswordError:
            raise _wrong_password(backup) from None
        except (securetar.SecureTarError, tarfile.TarError, EOFError) as exc:
            if version in (1, 2) and not written:  # no validation key: a wrong key reads so
                raise _wrong_password(backup) from None
            raise _bad(backup.path, name, f"cannot be unpacked ({exc}); the backup "
                       "is damaged: download it again") from None
    return written


def extract_config(backup: HaBackup, password: str | None, dest: Path,
                   database: bool = True) -> list[str]:
    """Unpack Home Assistant's configuration (the member's data/ folder) into dest, which
    must be empty. Only regular files, folders and links that stay inside dest (tarfile's
    'data' filter). Returns the paths written, relative to dest."""
    def skip(rel: str) -> bool:
        return not database and rel.split("/")[0].startswith(DATABASE)

    written = _extract_tree(backup, backup.inner, "data", password, dest, skip)
    if not written:
        raise _bad(backup.path, backup.inner, "holds no data/ folder: it is not Home "
                   "Assistant's configuration")
    return written


def _excluded(rel: str, exclude: tuple[str, ...]) -> bool:
    return any(rel == ex or rel.startswith(ex + "/") for ex in exclude)


def extract_addon_data(backup: HaBackup, slug: str, sources: list[str],
                       exclude: list[str] | tuple[str, ...], password: str | None,
                       dest: Path) -> tuple[str | None, list[str]]:
    """Unpack an add-on's data into dest: from the first of sources that holds files
    (addon:PATH, a folder of the add-on's own member; homeassistant:PATH, a folder of Home
    Assistant's configuration), leaving out the paths exclude names (relative to the
    source). Only files, folders and links that stay inside dest. Returns (the source
    used, the paths written); (None, []) when no source holds any file."""
    ex = tuple(exclude)
    for source in sources:
        kind, _, path = source.partition(":")
        if kind == "addon":
            name = addon_member(backup, slug)
            if name is None:
                continue
            prefix = path
        else:
            name, prefix = backup.inner, f"data/{path}"
        written = _extract_tree(backup, name, prefix, password, dest,
                                lambda rel: _excluded(rel, ex))
        if written:
            return source, written
    return None, []


def addon_member(backup: HaBackup, slug: str) -> str | None:
    """The outer member that holds an add-on (Supervisor writes <slug>.tar.gz, or <slug>.tar
    for an uncompressed backup); None when the backup does not hold it."""
    for name in (f"{slug}.tar.gz", f"{slug}.tar"):
        if name in backup.members:
            return name
    return None


def addon_options(backup: HaBackup, slug: str, password: str | None) -> dict[str, Any]:
    """The options of an add-on as its Supervisor backup keeps them: the member <slug>.tar.gz
    (encrypted with SecureTar like Home Assistant's in a protected backup) holds addon.json,
    {"user": {"options": {...}, ...}, "system": ..., "version": ..., "state": ...}.
    Raises AbriError naming the member when it is missing, damaged or holds no options."""
    import securetar

    name = addon_member(backup, slug)
    if name is None:
        raise _bad(backup.path, f"{slug}.tar.gz", "is missing: backup.json names the add-on, "
                   "but the archive does not hold it")
    with tarfile.open(backup.path, "r:") as tar:
        member = _member(tar, (name,))
        assert member is not None
        f = tar.extractfile(member)
        version = _stream_version(f.read(512) if f else b"")
        if version is not None and not password:
            raise _bad(backup.path, "password", f"is needed: {name} is encrypted (SecureTar "
                       f"v{version}); give it with --password-file FILE")
        data = None
        try:
            with _decrypted(tar, member, password if version is not None else None) as stream:
                mode = "r|gz" if name.endswith(".gz") else "r|"
                with tarfile.open(fileobj=stream, mode=mode) as inner:
                    for m in inner:
                        if m.name.removeprefix("./") == "addon.json" and m.isfile():
                            raw = inner.extractfile(m)
                            data = json.loads(raw.read() if raw else b"")
                            break
        except securetar.InvalidPasswordError:
            raise _wrong_password(backup) from None
        except (securetar.SecureTarError, tarfile.TarError, EOFError, OSError,
                ValueError, UnicodeDecodeError) as exc:
            raise _bad(backup.path, name, f"cannot be read ({type(exc).__name__}); the add-on "
                       "is damaged in the backup, or the password does not fit it") from None
    options = ((data or {}).get("user") or {}).get("options") if isinstance(data, dict) \
        else None
    if not isinstance(options, dict):
        raise _bad(backup.path, name, "holds no addon.json with the add-on's options")
    return options


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_summary(backup: HaBackup) -> str:
    db = {True: "included", False: "not included", None: "not stated"}[backup.database]
    addons = ", ".join(f"{a.get('name') or a.get('slug')} ({a.get('slug')}, "
                       f"{a.get('version', '?')})" for a in backup.addons) or "none"
    lines = [
        f"Backup         {backup.name or backup.slug} ({backup.slug})",
        f"Date           {backup.date}",
        f"Home Assistant {backup.ha_version}",
        f"Size           {human_size(backup.size)}",
        "Encryption     " + (f"password-protected, SecureTar v{backup.securetar}"
                             if backup.securetar else "none"),
        f"Database       {db}",
        f"Add-ons        {addons}",
        f"Folders        {', '.join(backup.folders) or 'none'}",
    ]
    return "\n".join(lines)

