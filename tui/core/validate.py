"""Field validators shared by the CLI, the TUI (as-you-type) and the site loader.

Each returns the cleaned value or raises ValueError with a message that says what was
wrong and what would be valid. Callers attach the host, stack and field names.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
from pathlib import Path

_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")


def has_control(text: str) -> bool:
    """Whether text holds a control character (C0, DEL or C1): a line break or tab, say."""
    return any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text)


def host_name(value: str) -> str:
    value = (value or "").strip()
    if not _HOST_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid host name; use 1-63 letters, digits and "
                         "hyphens, not starting or ending with a hyphen (e.g. home-server)")
    return value


def address(value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ValueError("is empty; give an IP address or a DNS name (e.g. 192.168.1.20)")
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if (len(value) > 253 or not all(_DNS_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise ValueError(f"{value!r} is neither an IP address nor a DNS name; use e.g. "
                         "192.168.1.20, fd00::20 or pi.home.arpa")
    return value


def port(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a port; use a number from 1 to 65535")
    try:
        number = int(str(value).strip(), 10)
    except ValueError:
        raise ValueError(f"{str(value)!r} is not a port; use a number from 1 to 65535") from None
    if not 1 <= number <= 65535:
        raise ValueError(f"{number} is out of range; use a number from 1 to 65535")
    return number


def ssh_user(value: str) -> str:
    value = (value or "").strip()
    if not _USER.match(value):
        raise ValueError(f"{value!r} is not a valid user name; use a lowercase letter or _ "
                         "then up to 31 lowercase letters, digits, _ or - (e.g. root, pi)")
    return value


def key_path(value: str) -> str:
    raw = (value or "").strip()
    if not raw:
        raise ValueError("is empty; give the path of an SSH private key (e.g. ~/.ssh/id_ed25519)")
    if has_control(raw):
        raise ValueError("holds a control character (a newline or tab, say); give the path "
                         "as plain text (e.g. ~/.ssh/id_ed25519)")
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        path = path.resolve()
    if any(marker in str(path) for marker in _TEMPLATE_MARKERS):
        # Ansible evaluates a host variable that holds '{{', '{%' or '{#' as a template: the
        # path would be run as code on every apply, not read as a path
        raise ValueError(f"{str(path)!r} holds '{{{{', '{{%' or '{{#', which Ansible would "
                         "run as a template; rename the key or its folder, or give a "
                         "symlink to it whose path has none of them")
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist; give the path of an existing SSH "
                         "private key file")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file; give an SSH private key file")
    try:
        head = path.read_bytes()[:64]
    except OSError:
        raise ValueError(f"{str(path)!r} cannot be read; check its permissions") from None
    if b"PRIVATE KEY" not in head:
        raise ValueError(f"{str(path)!r} is not an SSH private key (no PRIVATE KEY header); "
                         "give the private half, not the .pub file")
    return str(path)


def registry(value: str) -> str:
    value = (value or "").strip()
    if value and not _REGISTRY.match(value):
        raise ValueError(f"{value!r} is not a registry address; use host or host:port "
                         "(e.g. registry.example.eu or 10.0.0.5:5000), or empty for upstream")
    if ":" in value:
        port(value.rsplit(":", 1)[1])
    return value


_IMAGE = re.compile(r"^[a-z0-9.-]+(:[0-9]+)?/[a-z0-9][a-z0-9._/-]*"
                    r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$")


def image(value: str) -> str:
    """An image reference as abri pins it: registry/repository:tag, optionally @sha256:DIGEST."""
    value = str(value or "").strip()
    if not _IMAGE.match(value):
        raise ValueError(f"{shown(value)} is not an image reference; use REGISTRY/REPOSITORY:TAG "
                         "(e.g. docker.io/eclipse-mosquitto:2.0.21), optionally followed by "
                         "@sha256: and the 64 hexadecimal digits of its digest")
    return value


def absolute_dir(value: str) -> str:
    value = (value or "").strip()
    if not value.startswith("/") or re.search(r"[\s'\"\\]", value) or ".." in value.split("/"):
        raise ValueError(f"{value!r} is not an absolute folder path without spaces or '..' "
                         "(e.g. /opt/abri)")
    return value.rstrip("/") or "/"


_SFTP = re.compile(r"^sftp:([^@:/\s]+)@([^:/\s]+):(/.*)$")


#: S3-compatible object storage at European providers, by name: the endpoint of each of
#: their European regions (any other endpoint is given as a URL)
S3_PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "scaleway": ("https://s3.{region}.scw.cloud", ("fr-par", "nl-ams", "pl-waw")),
    "ovhcloud": ("https://s3.{region}.io.cloud.ovh.net",
                 ("gra", "sbg", "rbx", "de", "uk", "waw")),
    "hetzner": ("https://{region}.your-objectstorage.com", ("fsn1", "nbg1", "hel1")),
}
_S3_URL = re.compile(r"^s3:(https?://[^/\s]+)/([^/\s]+)(?:/(\S*))?$")
_S3_PRESET = re.compile(r"^s3:([a-z]+):([a-z0-9-]+)/([^/\s]+)(?:/(\S*))?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_S3_EXAMPLE = ("write s3:PROVIDER:REGION/BUCKET[/PREFIX] (providers: " + ", ".join(
    f"{name} ({'/'.join(regions)})" for name, (_, regions) in S3_PROVIDERS.items())
    + ") or s3:https://ENDPOINT/BUCKET[/PREFIX], e.g. s3:hetzner:fsn1/my-home/abri")


def s3_parts(value: str) -> dict[str, str] | None:
    """endpoint (URL), bucket, prefix, provider and region of an S3 repository, None for any
    other repository. Raises ValueError for an S3 repository that is not well formed."""
    if not (value or "").startswith("s3:"):
        return None
    preset = _S3_PRESET.match(value)
    if preset:
        provider, region, bucket, prefix = preset.groups()
        if provider not in S3_PROVIDERS:
            raise ValueError(f"{value!r}: {provider!r} is not a provider abri knows; "
                             + _S3_EXAMPLE)
        pattern, regions = S3_PROVIDERS[provider]
        if region not in regions:
            raise ValueError(f"{value!r}: {region!r} is not a region of {provider} abri knows "
                             f"({', '.join(regions)}); give the endpoint as a URL instead: "
                             "s3:https://ENDPOINT/BUCKET[/PREFIX]")
        endpoint = pattern.format(region=region)
    else:
        url = _S3_URL.match(value)
        if not url:
            raise ValueError(f"{value!r} is not an S3 repository; " + _S3_EXAMPLE)
        endpoint, bucket, prefix = url.groups()
        provider = region = ""
        authority = endpoint.partition("://")[2]
        host, _, port = authority.partition(":")
        try:
            address(host)
            if port and not 0 < int(port) < 65536:
                raise ValueError(f"{port} is not a port (1 to 65535)")
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{value!r}: {bucket!r} is not a bucket name (3 to 63 lowercase "
                         "letters, digits, '.' and '-', starting and ending with a letter or "
                         "digit)")
    prefix = (prefix or "").strip("/")
    if prefix and (not _PREFIX.match(prefix) or ".." in prefix.split("/")):
        raise ValueError(f"{value!r}: {prefix!r} is not a folder in the bucket (letters, "
                         "digits, '.', '_', '-' and '/', no '..')")
    return {"endpoint": endpoint, "bucket": bucket, "prefix": prefix, "provider": provider,
            "region": region}


def backup_repository(value: str) -> str:
    """A restic repository: an absolute folder on each host, ``sftp:USER@HOST:/path`` on
    another machine (HOST a DNS name, an address, or a host of the site), or S3-compatible
    object storage (``s3:PROVIDER:REGION/BUCKET[/PREFIX]`` or
    ``s3:https://ENDPOINT/BUCKET[/PREFIX]``)."""
    value = (value or "").strip()
    if value.startswith("s3:"):
        s3_parts(value)
        return value.rstrip("/")
    if not value.startswith("sftp:"):
        return absolute_dir(value)
    match = _SFTP.match(value)
    if not match:
        raise ValueError(f"{value!r} is not an SFTP repository; write sftp:USER@HOST:/path "
                         "(e.g. sftp:backup@nas.home.arpa:/srv/abri), or give a folder")
    user, host, path = match.groups()
    try:
        ssh_user(user)
        address(host)
        path = absolute_dir(path)
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return f"sftp:{user}@{host}:{path}"


def sftp_parts(value: str) -> tuple[str, str, str] | None:
    """(user, host, path) of a validated SFTP repository, None for a folder."""
    match = _SFTP.match(value)
    return (match.group(1), match.group(2), match.group(3)) if match else None


#: the levels of the site setting sovereignty (tui.core.audit)
SOVEREIGNTY = ("strict", "eu", "off")


def sovereignty(value: str) -> str:
    text = (value or "").strip().lower()
    if text not in SOVEREIGNTY:
        raise ValueError(f"{value!r} is not a sovereignty level; use strict (nothing under US "
                         "jurisdiction), eu (US endpoints at build time only, reported) or "
                         "off (no check)")
    return text


def timezone(value: str) -> str:
    """An IANA time zone name as the controller's zoneinfo database knows it, in its own
    spelling (europe/lisbon becomes Europe/Lisbon)."""
    value = (value or "").strip()
    zones = _time_zones()
    if not zones:  # no tz database on this controller: the shape is all that can be checked
        if _TZ_SHAPE.match(value):
            return value
        raise ValueError(f"{value!r} is not a time zone; use an IANA name such as "
                         "Europe/Berlin or Europe/Lisbon")
    if value in zones:
        return value
    by_lower = {z.lower(): z for z in zones}
    if value.lower() in by_lower:
        return by_lower[value.lower()]
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.75)
    hint = (f"did you mean {by_lower[close[0]]}?" if close
            else "use a name such as Europe/Berlin or Europe/Lisbon "
                 "('timedatectl list-timezones' lists them all)")
    raise ValueError(f"{value!r} is not a time zone of the IANA database; {hint}")


_TZ_SHAPE = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$")


@functools.cache
def _time_zones() -> frozenset[str]:
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def country(value: str) -> str:
    """An ISO 3166-1 alpha-2 country code, upper-cased (pt becomes PT)."""
    from tui.core.iso3166 import COUNTRIES

    text = (value or "").strip()
    code = text.upper()
    if code in COUNTRIES:
        return code
    by_name = {name.lower(): c for c, name in COUNTRIES.items()}
    close = difflib.get_close_matches(text.lower(), list(by_name), n=1, cutoff=0.8)
    hint = (f"did you mean {by_name[close[0]]} ({COUNTRIES[by_name[close[0]]]})?" if close
            else "use its two letters, such as DE, FR or PT")
    raise ValueError(f"{text!r} is not an ISO 3166 country code; {hint}")


def a_kind(kind: str) -> str:
    """'a proxmox', 'an ssh': the article as the kind is spoken (ssh is ess-ess-aitch)."""
    return f"{'an' if kind == 'ssh' or kind[:1] in 'aeiou' else 'a'} {kind}"


def shown(value: object) -> str:
    """A setting's value as a user types it: true/false, not Python's True/False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        return "(empty)"
    return str(value)


# ---------------------------------------------------------------- Proxmox VE nodes and guests
_PVE_NODE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$")
_PVE_ID = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)  # storage ids (pve-storage-id)
_BRIDGE = re.compile(r"^[-_.\w]+$")
_PVE_USER = re.compile(r"^[^\s:/@!]+@[A-Za-z][A-Za-z0-9.\-_]+$")
_PVE_TOKEN = re.compile(r"^[^\s:/@!]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$")


def pve_node(value: str) -> str:
    value = (value or "").strip()
    if not _PVE_NODE.match(value):
        raise ValueError(f"{value!r} is not a Proxmox node name; give the node's name as the "
                         "web interface lists it under Datacenter (e.g. pve)")
    return value


def pve_user(value: str) -> str:
    value = (value or "").strip()
    if not _PVE_USER.match(value):
        raise ValueError(f"{value!r} is not a Proxmox user; write USER@REALM (e.g. root@pam)")
    return value


def pve_token_id(value: str) -> str:
    value = (value or "").strip()
    if not _PVE_TOKEN.match(value):
        raise ValueError(f"{value!r} is not an API token id; write USER@REALM!TOKENID "
                         "(e.g. root@pam!abri)")
    return value


def whole(value: object, low: int, high: int, unit: str, example: str) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number of {unit}; e.g. {example}")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"{number} is out of range; use {low} to {high} {unit}")
    return number


def guest_cores(value: object) -> int:
    return whole(value, 1, 8192, "cores", "2")


def guest_memory(value: object) -> int:
    return whole(value, 256, 16 * 1024 * 1024, "MiB", "2048")


def guest_disk(value: object) -> int:
    return whole(value, 2, 1024 * 1024, "GiB", "16")


def guest_vmid(value: object) -> int:
    return whole(value, 100, 999999999, "(a Proxmox vmid)", "120")


GUEST_TYPES = ("lxc", "vm")


def guest_type(value: str) -> str:
    """lxc (a container, the default) or vm (a QEMU VM from Debian's cloud image)."""
    text = (value or "").strip().lower()
    if text not in GUEST_TYPES:
        raise ValueError(f"{value!r} is not a guest type; give lxc (a container) or vm (a "
                         "QEMU VM with cloud-init)")
    return text


#: the size of Debian's cloud image, the smallest disk a VM guest can have
VM_MIN_DISK = 3


def vm_guest_problems(guest: dict) -> list[tuple[str, str]]:
    """What a VM guest cannot have, as (field, message): DHCP (its address is needed
    before abri can reach it, and only a guest agent Debian's cloud image lacks could tell
    it), USB devices by path (a VM takes them otherwise; not built), a disk smaller than
    the image."""
    if guest.get("type") != "vm":
        return []
    out = []
    if guest.get("ip") == "dhcp":
        out.append(("ip", "a VM needs a fixed address with its prefix length and a "
                    "gateway (abri must know it before the VM answers; only a QEMU guest "
                    "agent, which Debian's cloud image lacks, could tell a DHCP one)"))
    if guest.get("usb"):
        out.append(("usb", "passing USB devices into a VM is not built yet; use an LXC "
                    "guest for a USB stick"))
    try:
        small = int(guest.get("disk") or 0) < VM_MIN_DISK
    except (TypeError, ValueError):
        small = False
    if small:
        out.append(("disk", f"Debian's cloud image is {VM_MIN_DISK} GiB; a VM's disk cannot "
                    "be smaller"))
    return out


def bridge(value: str) -> str:
    value = (value or "").strip()
    if not _BRIDGE.match(value):
        raise ValueError(f"{value!r} is not a bridge name; e.g. vmbr0")
    return value


def pve_storage(value: str) -> str:
    value = (value or "").strip()
    if not _PVE_ID.match(value):
        raise ValueError(f"{value!r} is not a Proxmox storage id; e.g. local-lvm")
    return value


def guest_ip(value: str) -> str:
    """dhcp, or an IPv4 address with its prefix length (192.168.1.50/24)."""
    text = (value or "").strip()
    if text.lower() == "dhcp":
        return "dhcp"
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        iface = None
    if iface is None or "/" not in text:
        raise ValueError(f"{text!r} is neither dhcp nor an IPv4 address with its prefix "
                         "length; e.g. 192.168.1.50/24")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) \
            and iface.network.prefixlen < 31:
        raise ValueError(f"{text!r} is the network's own or broadcast address; give a host "
                         "address in it")
    return str(iface)


def gateway(value: str, ip: str | None) -> str:
    text = (value or "").strip()
    try:
        gw = ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv4 address; e.g. 192.168.1.1") from None
    if ip and ip != "dhcp" and gw not in ipaddress.IPv4Interface(ip).network:
        raise ValueError(f"{text} is not in the guest's network "
                         f"{ipaddress.IPv4Interface(ip).network}; give a gateway in it")
    return str(gw)


_DEVICE = re.compile(r"^/dev/[A-Za-z0-9._:+/-]+$")


def usb_device(value: str) -> str:
    """A device path to pass into a guest, best by id (/dev/serial/by-id/...): it goes into
    a Proxmox property string, so a comma, '=' or space is refused, never escaped."""
    text = (value or "").strip()
    if not _DEVICE.match(text) or ".." in text.split("/"):
        raise ValueError(f"{text!r} is not a device path; give one under /dev without commas "
                         "or spaces, best by id (e.g. /dev/serial/by-id/usb-ITead_Sonoff_"
                         "Zigbee_3.0_USB_Dongle_Plus-if00-port0)")
    return text
