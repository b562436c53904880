"""Proxmox VE's published API schema, as a strict request validator (no Docker, no network).

The schema is pve-docs' api-viewer/apidata.js converted to JSON (see find_schema()). A request
is checked the way pve-http-server/PVE::JSONSchema check it: the path must exist, the method
must exist on it, every parameter must be declared (additionalProperties 0), required ones
present, types (integer, number, boolean, string) with their ranges, enums, patterns and
formats right, and property strings (net0 'name=eth0,bridge=vmbr0,ip=...', rootfs, features)
split into their keys and checked key by key against the schema's format objects.

The proxmox_standin server uses it on every request; tests/unit/test_pve_standin.py proves it
refuses what Proxmox would refuse.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any

SCHEMA_NAME = "proxmox-ve-api-schema.json"


def find_schema() -> Path | None:
    """The schema file: $ABRI_PVE_SCHEMA, tests/fleet/data/, or ../shared/data/ beside the
    clone (where CI puts the shared reference data)."""
    here = Path(__file__).resolve().parent
    candidates = [os.environ.get("ABRI_PVE_SCHEMA") or "",
                  here / "data" / SCHEMA_NAME]
    # the clone's root is tests/fleet/../..; the shared folder sits beside the clone (or
    # beside the folder that holds worktrees)
    for up in here.parents[1:4]:
        candidates.append(up / "shared" / "data" / SCHEMA_NAME)
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


class ParamError(Exception):
    """A request Proxmox refuses: status, the errors per parameter, and the message."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}

    def body(self) -> dict[str, Any]:
        """Proxmox's own error shape (pve-http-server: data null, errors per parameter)."""
        out: dict[str, Any] = {"data": None}
        if self.errors:
            out["errors"] = dict(self.errors)
        out["message"] = self.message
        return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

# pve-common's own formats, as PVE::JSONSchema registers them (the ones abri's requests use,
# and their neighbours); an unknown format name is refused rather than waved through, so the
# stand-in never accepts what it cannot check
_NODE = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
_CONFIGID = re.compile(r"^[a-z][a-z0-9_-]+$", re.I)
_DNS = re.compile(r"^(?=.{1,255}$)([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"
                  r"(\.([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?))*$")
_TAG = re.compile(r"^[a-z0-9_][a-z0-9_\-+.]*$", re.I)
_MAC = re.compile(r"^[a-f0-9]{2}(:[a-f0-9]{2}){5}$", re.I)
_SIZE = re.compile(r"^\d+(\.\d+)?[KMGT]?$")
_REALM = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
_VOLID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]:.+$", re.I)
_CONTENT = {"images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"}


def _is_ipv4(v: str) -> bool:
    try:
        ipaddress.IPv4Address(v)
        return True
    except ValueError:
        return False


def _is_ipv6(v: str) -> bool:
    try:
        ipaddress.IPv6Address(v)
        return True
    except ValueError:
        return False


def _cidr(v: str, version: int) -> bool:
    if "/" not in v:
        return False
    try:
        net = ipaddress.ip_interface(v)
    except ValueError:
        return False
    return net.version == version


def _mp_string(v: str) -> bool:
    # a volume id STORAGE:..., STORAGE:SIZE_GB for a new volume, or an absolute path
    return v.startswith("/") or bool(_VOLID.match(v))


FORMATS = {
    "pve-node": lambda v: bool(_NODE.match(v)),
    "pve-vmid": lambda v: v.isdigit(),
    "pve-storage-id": lambda v: bool(_CONFIGID.match(v)),
    "pve-configid": lambda v: bool(_CONFIGID.match(v)),
    "pve-configid-list": lambda v: all(_CONFIGID.match(i) for i in re.split(r"[,; ]+", v)
                                       if i) and bool(v.strip(",; ")),
    "pve-realm": lambda v: bool(_REALM.match(v)),
    "dns-name": lambda v: bool(_DNS.match(v)),
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
    "ip": lambda v: _is_ipv4(v) or _is_ipv6(v),
    "pve-ipv4-config": lambda v: v in ("dhcp", "manual") or _cidr(v, 4),
    "pve-ipv6-config": lambda v: v in ("auto", "dhcp", "manual") or _cidr(v, 6),
    "mac-addr": lambda v: bool(_MAC.match(v)),
    "disk-size": lambda v: bool(_SIZE.match(v)),
    "pve-lxc-mp-string": _mp_string,
    "pve-volume-id": lambda v: bool(_VOLID.match(v)),
    "pve-tag-list": lambda v: all(_TAG.match(t) for t in re.split(r"[;, ]+", v) if t)
                              and bool(v.strip(";, ")),
    "pve-storage-content": lambda v: v in _CONTENT,
    "pve-storage-content-list": lambda v: all(c in _CONTENT for c in v.split(",")),
    "pve-lxc-dev-string": lambda v: v.startswith("/dev/"),
    "pve-iface": lambda v: bool(re.match(r"^[a-zA-Z][a-zA-Z0-9_.\-]{1,20}$", v)),
    "email-opt": lambda v: "@" in v,
    "pve-userid": lambda v: bool(re.match(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$", v)),
    "pve-priv-list": lambda v: all(re.match(r"^[A-Za-z.]+$", p) for p in v.split(",")),
    "pve-startup-order": lambda v: bool(re.match(
        r"^(order=\d+)?(,?up=\d+)?(,?down=\d+)?$", v)),
    # qemu-server's: a disk's volume (an existing volume, STORAGE:SIZE_GB for a new one,
    # STORAGE:cloudinit, or a path), the source of import-from, a bridge, the boot order
    "pve-volume-id-or-qm-path": lambda v: v in ("none", "cdrom") or _mp_string(v),
    "pve-volume-id-or-absolute-path": _mp_string,
    "pve-bridge-id": lambda v: bool(re.match(r"^[-_.\w\d]+$", v)),
    "pve-qm-boot": lambda v: _qm_boot(v),
    "pve-qm-ipconfig": lambda v: _qm_ipconfig(v),
    # PVE::JSONSchema::pve_verify_urlencoded: what JavaScript's encodeURIComponent leaves
    "urlencoded": lambda v: bool(re.match(r"^[-%a-zA-Z0-9_.!~*'()]*$", v)),
}

_QM_DEVICE = re.compile(r"^(ide|sata|scsi|virtio|net|efidisk|tpmstate)\d+$")


def _qm_boot(v: str) -> bool:
    """'order=scsi0;ide2;net0' (or the deprecated legacy=cdn)."""
    for part in v.split(","):
        key, _, value = part.rpartition("=")
        key = key or "legacy"
        if key == "legacy":
            if not re.match(r"^[acdn]{1,4}$", value):
                return False
        elif key == "order":
            if not all(_QM_DEVICE.match(d) for d in value.split(";")):
                return False
        else:
            return False
    return True


def _qm_ipconfig(v: str) -> bool:
    """'ip=192.168.1.50/24,gw=192.168.1.1', 'ip=dhcp' (qemu-server's pve-qm-ipconfig: keys
    ip, gw, ip6, gw6; a gateway needs a fixed address of its family)."""
    parts: dict[str, str] = {}
    for part in v.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("ip", "gw", "ip6", "gw6") or key in parts:
            return False
        parts[key] = value
    if "ip" in parts and not (parts["ip"] == "dhcp" or _cidr(parts["ip"], 4)):
        return False
    if "ip6" in parts and not (parts["ip6"] in ("dhcp", "auto") or _cidr(parts["ip6"], 6)):
        return False
    if "gw" in parts and (not _is_ipv4(parts["gw"]) or not _cidr(parts.get("ip", ""), 4)):
        return False
    return not ("gw6" in parts and (not _is_ipv6(parts["gw6"])
                                    or not _cidr(parts.get("ip6", ""), 6)))


def _perl_pattern(pattern: str) -> re.Pattern[str]:
    """A Perl pattern as the schema prints it ('(?^:...)' is Perl's stringified qr//)."""
    return re.compile(pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:"))


class Schema:
    def __init__(self, tree: list[dict[str, Any]]):
        self._paths: dict[str, dict[str, Any]] = {}

        def walk(nodes: list[dict[str, Any]]) -> None:
            for n in nodes:
                if "info" in n:
                    self._paths[n["path"]] = n["info"]
                walk(n.get("children") or [])

        walk(tree)
        self._templates = [(p, p.strip("/").split("/")) for p in self._paths]

    @classmethod
    def load(cls, path: Path | None = None) -> Schema:
        path = path or find_schema()
        if path is None:
            raise FileNotFoundError(f"{SCHEMA_NAME} not found (set ABRI_PVE_SCHEMA, or put "
                                    "shared/data beside the clone)")
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def match(self, path: str) -> tuple[str, dict[str, str]] | None:
        """The schema path a request path falls under, and its path parameters."""
        parts = [p for p in path.strip("/").split("/") if p != ""]
        best = None
        for template, tparts in self._templates:
            if len(tparts) != len(parts):
                continue
            params: dict[str, str] = {}
            literal = 0
            for t, p in zip(tparts, parts, strict=True):
                if t.startswith("{") and t.endswith("}"):
                    params[t[1:-1]] = p
                elif t == p:
                    literal += 1
                else:
                    break
            else:
                if best is None or literal > best[0]:
                    best = (literal, template, params)
        return None if best is None else (best[1], best[2])

    def method_info(self, template: str, method: str) -> dict[str, Any] | None:
        return self._paths.get(template, {}).get(method)

    def check(self, method: str, path: str, params: dict[str, Any]
              ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Check one request; returns (schema path, method info, the parameters converted
        to their types). Raises ParamError in Proxmox's own words."""
        found = self.match(path)
        if found is None:
            raise ParamError(501, f"Method '{method} /api2/json{path}' not implemented")
        template, path_params = found
        info = self.method_info(template, method)
        if info is None:
            raise ParamError(501, f"Method '{method} /api2/json{path}' not implemented")
        spec = info.get("parameters") or {}
        props: dict[str, Any] = spec.get("properties") or {}
        given = dict(params)
        for k, v in path_params.items():
            if k in given and str(given[k]) != v:
                raise ParamError(400, "Parameter verification failed.",
                                 {k: "parameter is given in the path and differs"})
            given[k] = v
        errors: dict[str, str] = {}
        clean: dict[str, Any] = {}
        for key, value in given.items():
            prop = _prop_for(props, key)
            if prop is None:
                if spec.get("additionalProperties", 0):
                    clean[key] = value
                else:
                    errors[key] = "property is not defined in schema and the schema does " \
                                  "not allow additional properties"
                continue
            try:
                clean[key] = check_value(prop, value)
            except ValueError as exc:
                errors[key] = str(exc)
        for key, prop in props.items():
            if "[n]" in key or prop.get("optional"):
                continue
            if key not in given:
                errors[key] = "property is missing and it is not optional"
        for key in given:
            prop = _prop_for(props, key)
            need = prop.get("requires") if prop else None
            if need and need not in given and key not in errors:
                errors[need] = f"property is missing and it is required by '{key}'"
        if errors:
            raise ParamError(400, "Parameter verification failed.", errors)
        return template, info, clean


def _prop_for(props: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key in props:
        return props[key]
    m = re.match(r"^([a-z]+)(\d+)$", key)
    if m and f"{m.group(1)}[n]" in props:
        return props[f"{m.group(1)}[n]"]
    return None


def check_value(prop: dict[str, Any], value: Any) -> Any:
    """One value against one schema property; returns it converted, or raises ValueError
    with JSONSchema's wording."""
    kind = prop.get("type", "string")
    if kind == "boolean":
        if isinstance(value, bool):
            return 1 if value else 0
        text = str(value).strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
        raise ValueError(f"type check ('boolean') failed - got '{value}'")
    if kind == "integer":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"type check ('integer') failed - got '{value}'")
        text = str(value).strip()
        if not re.match(r"^[+-]?\d+$", text):
            raise ValueError(f"type check ('integer') failed - got '{value}'")
        number = int(text)
        _range(prop, number)
        return number
    if kind == "number":
        try:
            number = float(str(value))
        except ValueError:
            raise ValueError(f"type check ('number') failed - got '{value}'") from None
        _range(prop, number)
        return number
    if kind != "string":
        if isinstance(value, (dict, list)):
            return value
        raise ValueError(f"type check ('{kind}') failed - got '{value}'")
    if isinstance(value, (dict, list)):
        raise ValueError(f"type check ('string') failed - got {type(value).__name__}")
    text = str(value)
    if "maxLength" in prop and len(text) > int(prop["maxLength"]):
        raise ValueError(f"value may only be {prop['maxLength']} characters long")
    if "minLength" in prop and len(text) < int(prop["minLength"]):
        raise ValueError(f"value must be at least {prop['minLength']} characters long")
    if prop.get("enum") is not None and text not in prop["enum"]:
        raise ValueError(f"value '{text}' does not have a value in the enumeration '"
                         + ", ".join(prop["enum"]) + "'")
    if "pattern" in prop and not _perl_pattern(prop["pattern"]).fullmatch(text):
        raise ValueError("value does not match the regex pattern")
    fmt = prop.get("format")
    if isinstance(fmt, dict):
        check_property_string(fmt, text)
    elif isinstance(fmt, str):
        test = FORMATS.get(fmt)
        if test is None:
            raise ValueError(f"unable to check format '{fmt}' (the stand-in does not know "
                             "it; teach pve_schema.FORMATS before using it)")
        if not test(text):
            raise ValueError(f"value does not look like a valid {fmt}")
    return text


def _range(prop: dict[str, Any], number: float) -> None:
    if "minimum" in prop and number < float(prop["minimum"]):
        raise ValueError(f"value must have a minimum value of {prop['minimum']}")
    if "maximum" in prop and number > float(prop["maximum"]):
        raise ValueError(f"value must have a maximum value of {prop['maximum']}")


def parse_property_string(fmt: dict[str, Any], text: str) -> dict[str, str]:
    """'name=eth0,bridge=vmbr0' into its keys, as PVE::JSONSchema::parse_property_string
    does: a bare first value belongs to the format's default_key; keys must be known and
    appear once."""
    default_key = next((k for k, v in fmt.items() if v.get("default_key")), None)
    out: dict[str, str] = {}
    for part in text.split(","):
        if part == "":
            continue
        if "=" in part:
            key, value = part.split("=", 1)
        elif default_key is not None and default_key not in out:
            key, value = default_key, part
        else:
            raise ValueError(f"invalid format - value without key, but schema does not "
                             f"define a default key: '{part}'")
        if key in out:
            raise ValueError(f"invalid format - duplicate key in comma-separated list "
                             f"property: {key}")
        if key not in fmt:
            raise ValueError(f"invalid format - property '{key}' is not defined in the "
                             "format")
        alias = fmt[key].get("alias")
        if alias:  # 'volume' is 'file'; 'virtio=MAC' is model=virtio,macaddr=MAC
            if fmt[key].get("keyAlias"):
                if fmt[key]["keyAlias"] in out:
                    raise ValueError(f"invalid format - duplicate key in comma-separated "
                                     f"list property: {fmt[key]['keyAlias']}")
                out[fmt[key]["keyAlias"]] = key
            key = alias
            if key in out:
                raise ValueError(f"invalid format - duplicate key in comma-separated list "
                                 f"property: {key}")
        out[key] = value
    return out


def check_property_string(fmt: dict[str, Any], text: str) -> dict[str, Any]:
    parsed = parse_property_string(fmt, text)
    clean: dict[str, Any] = {}
    for key, value in parsed.items():
        try:
            clean[key] = check_value(fmt[key], value)
        except ValueError as exc:
            raise ValueError(f"invalid format - {key}: {exc}") from None
    for key, prop in fmt.items():
        if not prop.get("optional") and not prop.get("alias") and key not in parsed:
            raise ValueError(f"invalid format - {key}: property is missing and it is not "
                             "optional")
    return clean


def property_format(schema: Schema, template: str, method: str, key: str
                    ) -> dict[str, Any] | None:
    """The format object of a property string parameter (net[n], features ...)."""
    info = schema.method_info(template, method) or {}
    prop = _prop_for((info.get("parameters") or {}).get("properties") or {}, key)
    fmt = prop.get("format") if prop else None
    return fmt if isinstance(fmt, dict) else None
