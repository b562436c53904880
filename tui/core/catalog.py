"""The stack catalog: every folder stacks/<name>/ holding a stack.yml is a service.

The manifest is the single source of truth for a service; this module loads and validates it
(JSON Schema for shape, then cross-field checks) and converts user-typed setting values.
A broken manifest is an AbriError naming the file and the field, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tui.core import paths, validate
from tui.core.errors import AbriError, Problem

SETTING_TYPES = ("str", "int", "port", "bool", "choice", "secret")

_NAME = r"^[a-z][a-z0-9_]{0,31}$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "name", "title", "description", "image", "ports", "volumes",
                 "settings", "healthcheck"],
    "properties": {
        "schema": {"const": 1},
        "name": {"type": "string", "pattern": _NAME},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "provides": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
        "uses": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
        "image": {
            "type": "object",
            "additionalProperties": False,
            "required": ["registry", "repository", "tag"],
            "properties": {
                "registry": {"type": "string", "pattern": r"^[a-z0-9.-]+(:[0-9]+)?$"},
                "repository": {"type": "string", "pattern": r"^[a-z0-9._/-]+$"},
                "tag": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                        "not": {"const": "latest"}},
            },
        },
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "setting", "protocol", "purpose", "exposure"],
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "setting": {"type": "string", "pattern": _NAME},
                    "protocol": {"enum": ["tcp", "udp"]},
                    "purpose": {"type": "string", "minLength": 1},
                    "exposure": {"enum": ["lan", "local"]},
                    "when": {"type": "string", "pattern": _NAME},
                },
            },
        },
        "volumes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "path", "user_data"],
                "properties": {
                    "name": {"type": "string", "pattern": _NAME},
                    "path": {"type": "string", "pattern": r"^/"},
                    "user_data": {"type": "boolean"},
                },
            },
        },
        "settings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "type", "help"],
                "properties": {
                    "key": {"type": "string", "pattern": _NAME},
                    "type": {"enum": list(SETTING_TYPES)},
                    "default": {},
                    "help": {"type": "string", "minLength": 1},
                    "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "pattern": {"type": "string"},
                    "min": {"type": "integer"},
                    "max": {"type": "integer"},
                    "generate": {"type": "boolean"},
                },
            },
        },
        "devices": {"type": "array", "items": {"type": "string", "pattern": r"^/dev/"}},
        "healthcheck": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "port_setting", "timeout"],
            "properties": {
                "kind": {"enum": ["tcp", "http"]},
                "port_setting": {"type": "string", "pattern": _NAME},
                "path": {"type": "string", "pattern": r"^/"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 3600},
            },
        },
    },
}


@dataclass(frozen=True)
class Setting:
    key: str
    type: str
    help: str
    default: Any = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    min: int | None = None
    max: int | None = None
    generate: bool = False

    @property
    def secret(self) -> bool:
        return self.type == "secret"

    def describe_valid(self) -> str:
        if self.type == "port":
            return "a port number from 1 to 65535"
        if self.type == "int":
            bounds = []
            if self.min is not None:
                bounds.append(f">= {self.min}")
            if self.max is not None:
                bounds.append(f"<= {self.max}")
            return "a whole number" + (" " + " and ".join(bounds) if bounds else "")
        if self.type == "bool":
            return "true or false"
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        if self.type == "secret":
            return "at least 12 characters without spaces or quotes"
        if self.pattern:
            return f"text matching {self.pattern}"
        return "text"

    def convert(self, raw: Any) -> Any:
        """Turn a typed value (a CLI string, a YAML value) into the setting's type.

        Raises ValueError with a message saying what would be valid.
        """
        valid = self.describe_valid()
        if self.type == "port":
            return validate.port(raw)
        if self.type == "int":
            if isinstance(raw, bool):
                raise ValueError(f"{raw!r} is not {valid}")
            try:
                value = int(str(raw).strip(), 10)
            except ValueError:
                raise ValueError(f"{str(raw)!r} is not {valid}") from None
            if (self.min is not None and value < self.min) or (
                self.max is not None and value > self.max
            ):
                raise ValueError(f"{value} is out of range; use {valid}")
            return value
        if self.type == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError(f"{str(raw)!r} is not {valid}")
        text = "" if raw is None else str(raw)
        if self.type == "choice":
            if text not in self.choices:
                raise ValueError(f"{text!r} is not {valid}")
            return text
        if self.type == "secret":
            if len(text) < 12 or re.search(r"[\s'\"\\]", text):
                raise ValueError(f"the value given is not {valid}")  # never echo a secret
            return text
        if len(text) > 1024 or "\x00" in text:
            raise ValueError(f"the text is too long or holds a NUL byte; use {valid}")
        if self.pattern and not re.fullmatch(self.pattern, text):
            raise ValueError(f"{text!r} is not {valid}")
        return text


@dataclass(frozen=True)
class Port:
    name: str
    setting: str
    protocol: str
    purpose: str
    exposure: str
    when: str | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    path: str
    user_data: bool


@dataclass(frozen=True)
class Stack:
    name: str
    title: str
    description: str
    image: dict[str, str]
    ports: tuple[Port, ...]
    volumes: tuple[Volume, ...]
    settings: tuple[Setting, ...]
    healthcheck: dict[str, Any]
    provides: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    path: Path = field(default=Path("."), compare=False)

    def setting(self, key: str) -> Setting | None:
        for s in self.settings:
            if s.key == key:
                return s
        return None

    @property
    def secret_keys(self) -> list[str]:
        """Secrets abri keeps for this stack in the vault. A stack that uses mqtt also gets
        a broker user named after itself, with the generated secret mqtt_password."""
        keys = [s.key for s in self.settings if s.secret]
        if "mqtt" in self.uses:
            keys.append("mqtt_password")
        return keys

    def defaults(self) -> dict[str, Any]:
        return {s.key: s.default for s in self.settings if not s.secret}

    def active_ports(self, values: dict[str, Any]) -> list[tuple[Port, int]]:
        """The ports this stack claims on its host with the given (complete) settings."""
        out = []
        for port in self.ports:
            if port.when and not values.get(port.when):
                continue
            out.append((port, int(values[port.setting])))
        return out

    def image_ref(self, mirror: str = "") -> str:
        registry = mirror or self.image["registry"]
        return f"{registry}/{self.image['repository']}:{self.image['tag']}"


def _json_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _where(file: Path) -> str:
    try:
        return str(file.relative_to(paths.kit_dir()))
    except ValueError:
        return str(file)


def load_stack(file: Path) -> Stack:
    """Load and validate one manifest. Raises AbriError naming the file and field."""
    where = _where(file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AbriError(Problem(where, "", f"cannot be read: {exc.strerror}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AbriError(Problem(where, "", f"is not valid YAML{at}")) from None
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise AbriError([Problem(where, _json_path(e.absolute_path), e.message) for e in errors])
    problems: list[Problem] = []
    if data["name"] != file.parent.name:
        problems.append(Problem(where, "name", f"is {data['name']!r} but the folder is "
                                f"{file.parent.name!r}; they must match"))
    settings = []
    seen = set()
    for i, raw in enumerate(data["settings"]):
        s = Setting(key=raw["key"], type=raw["type"], help=raw["help"],
                    default=raw.get("default"), choices=tuple(raw.get("choices", ())),
                    pattern=raw.get("pattern"), min=raw.get("min"), max=raw.get("max"),
                    generate=bool(raw.get("generate", False)))
        if s.key in seen:
            problems.append(Problem(where, f"settings[{i}].key", f"{s.key!r} appears twice"))
        seen.add(s.key)
        if s.type == "choice" and not s.choices:
            problems.append(Problem(where, f"settings[{i}].choices", "a choice needs choices"))
        if s.pattern:
            try:
                re.compile(s.pattern)
            except re.error as exc:
                problems.append(Problem(where, f"settings[{i}].pattern", f"bad regex: {exc}"))
                s = Setting(**{**s.__dict__, "pattern": None})
        if s.type != "secret":
            if "default" not in raw:
                problems.append(Problem(where, f"settings[{i}].default",
                                        "is missing; every non-secret setting needs a default"))
            else:
                try:
                    s.convert(s.default)
                except ValueError as exc:
                    problems.append(Problem(where, f"settings[{i}].default", str(exc)))
        settings.append(s)
    by_key = {s.key: s for s in settings}
    ports = []
    for i, raw in enumerate(data["ports"]):
        p = Port(**raw)
        target = by_key.get(p.setting)
        if target is None or target.type != "port":
            problems.append(Problem(where, f"ports[{i}].setting",
                                    f"{p.setting!r} is not a setting of type port"))
        if p.when and (p.when not in by_key or by_key[p.when].type != "bool"):
            problems.append(Problem(where, f"ports[{i}].when",
                                    f"{p.when!r} is not a setting of type bool"))
        ports.append(p)
    hc = data["healthcheck"]
    if hc["port_setting"] not in by_key:
        problems.append(Problem(where, "healthcheck.port_setting",
                                f"{hc['port_setting']!r} is not a setting of this stack"))
    if hc["kind"] == "http" and "path" not in hc:
        problems.append(Problem(where, "healthcheck.path", "an http check needs a path"))
    if problems:
        raise AbriError(problems)
    return Stack(
        name=data["name"], title=data["title"], description=data["description"].strip(),
        image=dict(data["image"]), ports=tuple(ports),
        volumes=tuple(Volume(**v) for v in data["volumes"]), settings=tuple(settings),
        healthcheck=dict(hc), provides=tuple(data.get("provides", ())),
        uses=tuple(data.get("uses", ())), devices=tuple(data.get("devices", ())),
        path=file.parent,
    )


class Catalog:
    """All stacks found under a stacks directory, by name."""

    def __init__(self, stacks: dict[str, Stack]):
        self.stacks = dict(sorted(stacks.items()))

    @classmethod
    def load(cls, directory: Path | None = None) -> Catalog:
        directory = directory or paths.stacks_dir()
        if not directory.is_dir():
            raise AbriError(Problem(str(directory), "", "the stack catalog folder is missing"))
        stacks: dict[str, Stack] = {}
        problems: list[Problem] = []
        for manifest in sorted(directory.glob("*/stack.yml")):
            try:
                stack = load_stack(manifest)
            except AbriError as exc:
                problems.extend(exc.problems)
                continue
            stacks[stack.name] = stack
        if problems:
            raise AbriError(problems)
        return cls(stacks)

    def __contains__(self, name: object) -> bool:
        return name in self.stacks

    def __getitem__(self, name: str) -> Stack:
        return self.stacks[name]

    def __iter__(self):
        return iter(self.stacks.values())

    def names(self) -> list[str]:
        return list(self.stacks)

    def providers(self, capability: str) -> list[str]:
        return [s.name for s in self if capability in s.provides]

    def ordered(self, names: list[str] | set[str]) -> list[str]:
        """The given stacks in deploy order: providers before the stacks that use them."""
        wanted = sorted(names)
        done: list[str] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in done or name in trail:
                return
            for cap in self.stacks[name].uses:
                for provider in self.providers(cap):
                    if provider in wanted:
                        visit(provider, (*trail, name))
            done.append(name)

        for name in wanted:
            visit(name, ())
        return done
