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

# timezone: an IANA name (zoneinfo); country: an ISO 3166-1 alpha-2 code
SETTING_TYPES = ("str", "int", "port", "bool", "choice", "secret", "timezone", "country")

_WHEN = r"^[a-z][a-z0-9_]{0,31}(=[A-Za-z0-9_.-]+)?$"
_NAME = r"^[a-z][a-z0-9_]{0,31}$"

#: how a backup reads a stack's user data (manifest: backup.consistency)
BACKUP_CONSISTENCY = ("stop", "copy")

#: how a trial restore counts the items of a file (manifest: backup.trial.counts[].count):
#: yaml_items, the entries of the YAML file's top-level list or mapping; json_items, the
#: entries of the JSON list or object at `key` (a dotted path; the whole document without)
TRIAL_COUNTS = ("yaml_items", "json_items")

#: a file of the stack's directory: relative, no '..' (checked again in load_stack)
_REL_FILE = r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$"
#: a dotted path into a JSON document (data.entities)
_DOTTED = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"

#: a DNS name, or *.domain for every name under it
_ENDPOINT_HOST = r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9-]+)+$"
#: when an outside endpoint is contacted (manifest: endpoints[].when)
ENDPOINT_WHEN = ("build", "run", "install")
#: what abri does about it (manifest: endpoints[].mitigation)
ENDPOINT_MITIGATIONS = ("none", "disabled", "removed_after_onboarding")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "name", "title", "description", "image", "ports", "volumes",
                 "settings", "healthcheck"],
    "properties": {
        "schema": {"enum": [1, 2]},
        "name": {"type": "string", "pattern": _NAME},
        "title": {"type": "string", "minLength": 1},
        "description": {"type": "string", "minLength": 1},
        "provides": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
        "uses": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
        # capabilities used when the site has a provider (the same host first, else the one
        # host that provides it; refused when that is ambiguous), left out otherwise
        "wants": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
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
        # the outside endpoints the service calls by itself (the image registry is derived
        # from image.registry): host, what for, when (build: image pull; run: while it runs;
        # install: when an integration, node or library is installed or built), and the
        # mitigation abri has in force (none; disabled in the config abri writes;
        # removed_after_onboarding, with the integration's domain)
        # outside endpoints whose address is a setting's value (a URL or a host name the
        # user gives, such as an ACME CA's directory), contacted while `when` holds
        "setting_endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["setting", "purpose", "when"],
                "properties": {
                    "setting": {"type": "string", "pattern": _NAME},
                    "purpose": {"type": "string", "minLength": 1},
                    "when": {"type": "string", "pattern": _WHEN},
                },
            },
        },
        "endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host", "purpose", "when", "mitigation", "source"],
                "properties": {
                    "host": {"type": "string", "pattern": _ENDPOINT_HOST},
                    "purpose": {"type": "string", "minLength": 1},
                    "when": {"enum": list(ENDPOINT_WHEN)},
                    "mitigation": {"enum": list(ENDPOINT_MITIGATIONS)},
                    "integration": {"type": "string", "minLength": 1},
                    "offered": {"type": "string", "minLength": 1},
                    "note": {"type": "string", "minLength": 1},
                    "source": {"type": "string", "pattern": r"^https://"},
                    # who operates a host of the service's own project (its domain is not
                    # in the kit's data file, tui/data/endpoints.yml, which names no stack)
                    "jurisdiction": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["operator", "country", "cloud_act", "source"],
                        "properties": {
                            "operator": {"type": "string", "minLength": 1},
                            "country": {"type": "string", "minLength": 1},
                            "cloud_act": {"type": "boolean"},
                            "source": {"type": "string", "pattern": r"^https://"},
                        },
                    },
                },
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
                    "exposure": {"enum": ["lan", "local", "public"]},
                    # a bool setting that must be true, or KEY=VALUE for a choice setting
                    "when": {"type": "string", "pattern": _WHEN},
                    # a choice setting whose value "loopback" keeps the port on the host
                    "loopback_setting": {"type": "string", "pattern": _NAME},
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
                    "owner": {"type": "integer", "minimum": 0},
                    "mode": {"type": "string", "pattern": r"^0[0-7]{3}$"},
                },
            },
        },
        "settings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "type", "help"],
                # no regular expression reaches a user: a pattern comes with its words
                "dependentRequired": {"pattern": ["valid"]},
                "properties": {
                    "key": {"type": "string", "pattern": _NAME},
                    "type": {"enum": list(SETTING_TYPES)},
                    "default": {},
                    "help": {"type": "string", "minLength": 1},
                    "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "pattern": {"type": "string"},
                    # the pattern in words, with an example: what messages and forms show
                    "valid": {"type": "string", "minLength": 1},
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
                # tcp: the port accepts; http: GET path answers 200; mqtt: CONNECT as the
                # account's admin user answers CONNACK 0 (a broker that really serves)
                "kind": {"enum": ["tcp", "http", "mqtt"]},
                "port_setting": {"type": "string", "pattern": _NAME},
                "path": {"type": "string", "pattern": r"^/"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 3600},
            },
        },
        # files rendered on the controller and converged on the host by the kit module
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["src", "dest"],
                "properties": {
                    "src": {"type": "string", "pattern": r"^[A-Za-z0-9_./-]+$"},
                    "dest": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"},
                    "owner": {"type": "integer", "minimum": 0},
                    "mode": {"type": "string", "pattern": r"^0[0-7]{3}$"},
                    # managed: abri's, restored when changed by hand; seed: written once,
                    # then the user's
                    "policy": {"enum": ["managed", "seed"]},
                    "restart": {"type": "boolean"},
                    "when": {"type": "string", "pattern": _NAME},
                    # a seed file that still holds this text was written by an earlier abri
                    # that managed it: it is replaced once (the old one kept as .abri-old)
                    "replaces_marker": {"type": "string", "minLength": 8},
                },
            },
        },
        # self-signed TLS pairs (dest.crt, dest.key): made_by host (the default), made on the
        # host when none is there; made_by controller, made by abri on this machine and kept
        # in the host's vault, so the certificate's fingerprint is known here (abri shows it);
        # made_by user, the user's own certificate and key ('abri stack certificate'), kept
        # in the vault the same way.
        # when: a bool setting that must be true, or KEY=VALUE for a choice setting
        "certificates": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["dest"],
                "properties": {
                    "dest": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"},
                    "owner": {"type": "integer", "minimum": 0},
                    "when": {"type": "string", "pattern": _WHEN},
                    "days": {"type": "integer", "minimum": 1},
                    "made_by": {"enum": ["host", "controller", "user"]},
                    # made_by user: the stack also runs without it (only written when given)
                    "optional": {"type": "boolean"},
                },
            },
        },
        # remote access (site setting remote_access=VPS): role proxy, the stack that serves
        # the site's remote access on the vps (added to it by 'abri site set
        # remote_access=HOST'); role upstream, a stack whose port (a name in ports) the proxy
        # serves from a home host through abri's WireGuard tunnel. Templates get
        # remote_access: the proxy {upstreams: [{host, stack, address, port}], name}, an
        # upstream {proxies: [tunnel address of the vps]}, any other stack {}.
        "remote_access": {
            "type": "object",
            "additionalProperties": False,
            "required": ["role"],
            "properties": {
                "role": {"enum": ["proxy", "upstream"]},
                "port": {"type": "string", "pattern": _NAME},
            },
        },
        # a provider that keeps one account per consumer (a broker's users)
        "accounts": {
            "type": "object",
            "additionalProperties": False,
            "required": ["capability", "format", "passwd_file", "acl_file", "admin_user",
                         "admin_secret"],
            "properties": {
                "capability": {"type": "string", "pattern": _NAME},
                "format": {"enum": ["mosquitto"]},
                "passwd_file": {"type": "string"},
                "acl_file": {"type": "string"},
                "owner": {"type": "integer", "minimum": 0},
                "admin_user": {"type": "string", "pattern": _NAME},
                "admin_secret": {"type": "string", "pattern": _NAME},
                "port_setting": {"type": "string", "pattern": _NAME},
                # the Home Assistant add-on whose logins an import of a Supervisor backup
                # turns into device accounts (abri import-ha-backup): its slug, the option
                # holding [{username, password}], and the topic rules the logins get
                "ha_addon": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["slug", "logins"],
                    "properties": {
                        "slug": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
                        "logins": {"type": "string", "pattern": _NAME},
                        "acl": {"type": "array", "items": {
                            "type": "string",
                            "pattern": r"^(read|write|readwrite|deny) \S+$"}},
                    },
                },
            },
        },
        # the Home Assistant add-on whose data an import of a Supervisor backup (abri
        # import-ha-backup) puts into this stack: its slug, the user-data volume it goes to,
        # where the data is in the backup (the first source that holds files: addon:PATH in
        # the add-on's own member, whose config/ is its addon_configs folder and data/ its
        # /data; homeassistant:PATH in Home Assistant's configuration folder), what is left
        # out (paths relative to the source), and which of the add-on's options become
        # secrets of the stack (setting key -> option name)
        "ha_addon": {
            "type": "object",
            "additionalProperties": False,
            "required": ["slug", "volume", "from"],
            "properties": {
                "slug": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
                "volume": {"type": "string", "pattern": _NAME},
                "from": {"type": "array", "minItems": 1, "items": {
                    "type": "string",
                    "pattern": r"^(addon|homeassistant):[A-Za-z0-9_][A-Za-z0-9_.-]*"
                               r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"}},
                "exclude": {"type": "array", "items": {
                    "type": "string",
                    "pattern": r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*(/[A-Za-z0-9_.][A-Za-z0-9_.-]*)*$"}},
                "secrets": {"type": "object", "additionalProperties": {
                    "type": "string", "pattern": r"^[a-z][a-z0-9_]*$"}},
                "why": {"type": "string"},
                # abri's own part put back into the imported data (tui.core.seedmerge):
                # the file, the seed (a file of the stack folder) and the file's format;
                # key_secret: the secret setting that encrypts the file
                "merge": {"type": "array", "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["file", "from", "format"],
                    "properties": {
                        "file": {"type": "string",
                                 "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"},
                        "from": {"type": "string"},
                        "format": {"enum": ["json-by-id", "node-red-credentials"]},
                        "key_secret": {"type": "string", "pattern": _NAME},
                    },
                }},
            },
        },
        # topics a consumer may use on the broker ({user} is its account name)
        "acl": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": "string",
                                       "pattern": r"^(read|write|readwrite|deny) \S+$"}}},
        # environment variables for the containers that hold secrets or wiring, written to a
        # 0600 .env file next to compose.yml: name -> "secret:KEY" or "wire:CAP.FIELD"
        "env": {"type": "object", "additionalProperties": {
            "type": "string", "pattern": r"^(secret:[a-z_]+|wire:[a-z_]+\.[a-z_]+)$"}},
        # the service's own API, configured after the container answers
        "api": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kind", "port_setting"],
            "properties": {
                "kind": {"enum": ["homeassistant"]},
                "port_setting": {"type": "string", "pattern": _NAME},
                "owner_user_setting": {"type": "string", "pattern": _NAME},
                "owner_secret": {"type": "string", "pattern": _NAME},
                "language_setting": {"type": "string", "pattern": _NAME},
                # listen on the host's loopback only until the API setup is done
                "bootstrap_loopback": {"type": "boolean"},
                "remove_after_onboarding": {"type": "array", "items": {"type": "string"}},
                "wait_for_entries": {"type": "array", "items": {"type": "string"}},
                # config entries made from what the stack uses: domain -> capability
                "integrations": {"type": "object",
                                 "additionalProperties": {"type": "string", "pattern": _NAME}},
                # the capability (in provides) whose every client gets a long-lived access
                # token of its own, minted through this API once the service is set up and
                # kept in the client stack's vault as <capability>_token
                "client_tokens": {"type": "string", "pattern": _NAME},
            },
        },
        # a message the service publishes by itself, on a topic of the provider of
        # `capability` ({user} is its account name), at least every `within` seconds:
        # the 'heartbeat' check watches for it as the provider's admin
        "heartbeat": {
            "type": "object",
            "additionalProperties": False,
            "required": ["capability", "topic", "within"],
            "properties": {
                "capability": {"type": "string", "pattern": _NAME},
                "topic": {"type": "string", "pattern": r"^[^#+\s]+$"},
                "within": {"type": "integer", "minimum": 1, "maximum": 600},
            },
        },
        # how a backup reads the stack's user-data volumes consistently: stop (the stack is
        # stopped for the copy and started again: a database closes cleanly, a broker writes
        # its persistence on shutdown) or copy (read as it is: files the service does not
        # rewrite while it runs). Without this block: stop, the safe rule.
        "backup": {
            "type": "object",
            "additionalProperties": False,
            "required": ["consistency"],
            "properties": {
                "consistency": {"enum": list(BACKUP_CONSISTENCY)},
                "why": {"type": "string", "minLength": 1},
                # what 'abri backup --verify' proves on a trial restore of the newest backup
                # (a scratch copy of the stack started next to the live one, which it never
                # touches), besides the health check against the scratch container:
                "trial": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        # SQLite databases (paths in the stack's directory, in a user-data
                        # volume) that must pass PRAGMA integrity_check as restored
                        "sqlite": {"type": "array", "minItems": 1, "uniqueItems": True,
                                   "items": {"type": "string", "pattern": _REL_FILE}},
                        # items of a file counted in the restored copy and the live one;
                        # the two counts must match
                        "counts": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["file", "count", "what"],
                                "properties": {
                                    "file": {"type": "string", "pattern": _REL_FILE},
                                    "count": {"enum": list(TRIAL_COUNTS)},
                                    "key": {"type": "string", "pattern": _DOTTED},
                                    # what is counted, in the plural (messages say it)
                                    "what": {"type": "string",
                                             "pattern": r"^[a-z][a-z ]{0,39}$"},
                                },
                            },
                        },
                        # regular expressions: a line of the scratch container's log that
                        # matches one fails the trial (the service refused its data)
                        "log_errors": {"type": "array", "minItems": 1,
                                       "items": {"type": "string", "minLength": 1}},
                    },
                },
            },
        },
        # the end-to-end checks 'abri verify' runs for this stack; http: GET the health
        # check's path answers 200; heartbeat: see above; tokens: every access token a
        # provider's API minted this stack (api.client_tokens there) is accepted by that
        # API, and a wrong one refused
        "checks": {"type": "array", "items": {"enum": ["mqtt_broker", "homeassistant",
                                                        "http", "heartbeat", "tokens"]}},
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
    valid: str | None = None  # what the pattern accepts, in words ("two letters, such as DE")
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
        if self.type == "timezone":
            return "an IANA time zone, such as Europe/Berlin or Europe/Lisbon"
        if self.type == "country":
            return "an ISO 3166 two-letter country code, such as DE, FR or PT"
        if self.valid:
            return self.valid
        return "text in the form the setting's help describes" if self.pattern else "text"

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
        if self.type == "timezone":
            return validate.timezone(text)
        if self.type == "country":
            return validate.country(text)
        if self.type == "choice":
            if text not in self.choices:
                raise ValueError(f"{text!r} is not {valid}")
            return text
        if self.type == "secret":
            if len(text) < 12 or re.search(r"[\s'\"\\]", text):
                raise ValueError(f"the value given is not {valid}")  # never echo a secret
            return text
        if len(text) > 1024:
            raise ValueError(f"the text is too long (over 1024 characters); use {valid}")
        if validate.has_control(text):
            raise ValueError(f"the text holds a control character (a line break, tab or "
                             f"similar); use {valid}")
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
    loopback_setting: str | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    path: str
    user_data: bool
    owner: int = 0
    mode: str = "0755"


@dataclass(frozen=True)
class File:
    """A file of the stack: a template under the stack folder rendered on the controller
    (src), converged at dest under the stack's directory on the host."""

    src: str
    dest: str
    owner: int = 0
    mode: str = "0644"
    policy: str = "managed"
    restart: bool = False
    when: str | None = None
    replaces_marker: str | None = None


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
    wants: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    files: tuple[File, ...] = ()
    accounts: dict[str, Any] | None = None
    #: the Home Assistant add-on whose data an import brings into this stack
    ha_addon: dict[str, Any] | None = None
    acl: dict[str, tuple[str, ...]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    api: dict[str, Any] | None = None
    checks: tuple[str, ...] = ()
    heartbeat: dict[str, Any] | None = None
    certificates: tuple[dict[str, Any], ...] = ()
    #: how a backup reads the user-data volumes (stop or copy)
    backup_consistency: str = "stop"
    #: what a trial restore checks besides the health check (manifest: backup.trial)
    backup_trial: dict[str, Any] = field(default_factory=dict)
    #: the outside endpoints the service calls (manifest: endpoints)
    endpoints: tuple[dict[str, Any], ...] = ()
    #: the outside endpoints a setting names (manifest: setting_endpoints)
    setting_endpoints: tuple[dict[str, Any], ...] = ()
    #: its part in remote access (manifest: remote_access; role proxy or upstream)
    remote_access: dict[str, Any] | None = None
    path: Path = field(default=Path("."), compare=False)

    @property
    def user_data(self) -> tuple[Volume, ...]:
        """The volumes that hold the user's data (backed up, restored, moved)."""
        return tuple(v for v in self.volumes if v.user_data)

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
        for cap in self.uses:
            keys.append(f"{cap}_password")
        return keys

    @property
    def generated_keys(self) -> list[str]:
        """The secrets abri makes when the site has none (generate: true, and the broker
        passwords); a secret without generate is the user's to give (an EAB key)."""
        by_key = {s.key: s for s in self.settings}
        return [k for k in self.secret_keys if k not in by_key or by_key[k].generate]

    def defaults(self) -> dict[str, Any]:
        return {s.key: s.default for s in self.settings if not s.secret}

    def active_ports(self, values: dict[str, Any]) -> list[tuple[Port, int]]:
        """The ports this stack claims on its host with the given (complete) settings."""
        out = []
        for port in self.ports:
            if not when_holds(port.when, values):
                continue
            out.append((port, int(values[port.setting])))
        return out

    def image_ref(self, mirror: str = "") -> str:
        registry = mirror or self.image["registry"]
        return f"{registry}/{self.image['repository']}:{self.image['tag']}"


def when_holds(when: str | None, values: dict[str, Any]) -> bool:
    """A manifest's `when`: a bool setting that is true, or KEY=VALUE of a choice."""
    if not when:
        return True
    key, eq, value = when.partition("=")
    return values.get(key) == value if eq else bool(values.get(key))


def _when_problems(where: str, field: str, when: str | None,
                   by_key: dict[str, Setting]) -> list[Problem]:
    """A `when` names a bool setting, or KEY=VALUE with a choice setting and one of its
    choices."""
    if not when:
        return []
    key, eq, value = when.partition("=")
    want = "choice" if eq else "bool"
    if key not in by_key or by_key[key].type != want:
        return [Problem(where, field, f"{key!r} is not a setting of type {want}")]
    if eq and value not in by_key[key].choices:
        return [Problem(where, field, f"{value!r} is not one of {key}'s choices: "
                        + ", ".join(by_key[key].choices))]
    return []


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
        data = yaml.load(file.read_text(encoding="utf-8"),
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
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
                    pattern=raw.get("pattern"), valid=raw.get("valid"),
                    min=raw.get("min"), max=raw.get("max"),
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
        problems += _when_problems(where, f"ports[{i}].when", p.when, by_key)
        ports.append(p)
    hc = data["healthcheck"]
    if hc["port_setting"] not in by_key:
        problems.append(Problem(where, "healthcheck.port_setting",
                                f"{hc['port_setting']!r} is not a setting of this stack"))
    if hc["kind"] == "http" and "path" not in hc:
        problems.append(Problem(where, "healthcheck.path", "an http check needs a path"))
    if hc["kind"] == "mqtt" and "accounts" not in data:
        problems.append(Problem(where, "healthcheck.kind", "an mqtt check logs in as the "
                                "admin of the stack's accounts; declare accounts"))
    files = []
    for i, raw in enumerate(data.get("files", ())):
        f = File(**raw)
        if not (file.parent / f.src).is_file():
            problems.append(Problem(where, f"files[{i}].src", f"{f.src!r} is not a file in "
                                    f"{file.parent.name}/"))
        if ".." in f.dest.split("/"):
            problems.append(Problem(where, f"files[{i}].dest", "must stay inside the stack's "
                                    "directory (no '..')"))
        if f.when and (f.when not in by_key or by_key[f.when].type != "bool"):
            problems.append(Problem(where, f"files[{i}].when",
                                    f"{f.when!r} is not a setting of type bool"))
        files.append(f)
    if not (file.parent / "compose.yml.j2").is_file():
        problems.append(Problem(where, "", "the stack folder has no compose.yml.j2"))
    accounts = data.get("accounts")
    if accounts and accounts["capability"] not in data.get("provides", ()):
        problems.append(Problem(where, "accounts.capability", f"{accounts['capability']!r} "
                                "is not in provides"))
    if accounts and accounts["admin_secret"] not in by_key:
        problems.append(Problem(where, "accounts.admin_secret", "is not a setting"))
    ha_addon = data.get("ha_addon")
    if ha_addon:
        vol = next((v for v in data["volumes"] if v["name"] == ha_addon["volume"]), None)
        if vol is None or not vol.get("user_data"):
            problems.append(Problem(where, "ha_addon.volume", f"{ha_addon['volume']!r} is not "
                                    "a user-data volume of this stack"))
        for key in ha_addon.get("secrets") or {}:
            if key not in by_key or not by_key[key].secret:
                problems.append(Problem(where, f"ha_addon.secrets.{key}",
                                        "is not a secret setting of this stack"))
        for i, ex in enumerate(ha_addon.get("exclude") or ()):
            if ".." in ex.split("/"):
                problems.append(Problem(where, f"ha_addon.exclude[{i}]", "no '..'"))
        for i, src in enumerate(ha_addon["from"]):
            if ".." in src.partition(":")[2].split("/"):
                problems.append(Problem(where, f"ha_addon.from[{i}]", "no '..'"))
        for i, rule in enumerate(ha_addon.get("merge") or ()):
            if ".." in rule["from"].split("/") or not (file.parent / rule["from"]).is_file():
                problems.append(Problem(where, f"ha_addon.merge[{i}].from",
                                        f"{rule['from']!r} is not a file in "
                                        f"{file.parent.name}/"))
            key = rule.get("key_secret")
            if rule["format"] == "node-red-credentials" and (
                    key not in by_key or not by_key[key].secret):
                problems.append(Problem(where, f"ha_addon.merge[{i}].key_secret",
                                        "names no secret setting of this stack (the key "
                                        "the file is encrypted with)"))
    api = data.get("api")
    if api:
        for k in ("port_setting", "owner_user_setting", "owner_secret", "language_setting"):
            if k in api and api[k] not in by_key:
                problems.append(Problem(where, f"api.{k}", f"{api[k]!r} is not a setting"))
        if "client_tokens" in api and api["client_tokens"] not in data.get("provides", ()):
            problems.append(Problem(where, "api.client_tokens", f"{api['client_tokens']!r} "
                                    "is not in provides"))
        for domain, cap in (api.get("integrations") or {}).items():
            if cap not in data.get("uses", ()):
                problems.append(Problem(where, f"api.integrations.{domain}",
                                        f"{cap!r} is not in uses"))
    for name, ref in (data.get("env") or {}).items():
        kind, _, what = ref.partition(":")
        if kind == "secret" and what not in by_key and not any(
                what == f"{c}_password" for c in data.get("uses", ())):
            problems.append(Problem(where, f"env.{name}", f"{what!r} is not a secret of this "
                                    "stack"))
        if kind == "wire" and what.split(".")[0] not in (*data.get("uses", ()),
                                                         *data.get("wants", ())):
            problems.append(Problem(where, f"env.{name}", f"{what.split('.')[0]!r} is not in "
                                    "uses or wants"))
    for cap in sorted(set(data.get("wants", ())) & set(data.get("uses", ()))):
        problems.append(Problem(where, "wants", f"{cap!r} is in uses too; a capability is "
                                "either needed (uses) or used when there (wants)"))
    checks = data.get("checks", ())
    heartbeat = data.get("heartbeat")
    if "http" in checks and hc["kind"] != "http":
        problems.append(Problem(where, "checks", "the http check GETs the health check's "
                                "path; it needs healthcheck.kind http"))
    if "heartbeat" in checks and not heartbeat:
        problems.append(Problem(where, "checks", "the heartbeat check needs a heartbeat "
                                "block (capability, topic, within)"))
    if heartbeat and heartbeat["capability"] not in data.get("uses", ()):
        problems.append(Problem(where, "heartbeat.capability",
                                f"{heartbeat['capability']!r} is not in uses"))
    problems += _trial_problems(where, data)
    remote = data.get("remote_access")
    if remote and remote["role"] == "upstream" and remote.get("port") not in {
            p.name for p in ports}:
        problems.append(Problem(where, "remote_access.port", "an upstream names the port the "
                                "proxy serves: one of its ports' names"))
    for i, cert in enumerate(data.get("certificates", ())):
        problems += _when_problems(where, f"certificates[{i}].when", cert.get("when"), by_key)
    for i, ep in enumerate(data.get("setting_endpoints", ())):
        if ep["setting"] not in by_key or by_key[ep["setting"]].type != "str":
            problems.append(Problem(where, f"setting_endpoints[{i}].setting",
                                    f"{ep['setting']!r} is not a setting of type str"))
        problems += _when_problems(where, f"setting_endpoints[{i}].when", ep["when"], by_key)
    removed = set((api or {}).get("remove_after_onboarding", ()))
    for i, ep in enumerate(data.get("endpoints", ())):
        named = ep.get("integration")
        if ep["mitigation"] == "removed_after_onboarding" and named not in removed:
            problems.append(Problem(where, f"endpoints[{i}].integration",
                                    f"{named!r} is not in api.remove_after_onboarding"))
        elif ep["mitigation"] != "removed_after_onboarding" and named:
            problems.append(Problem(where, f"endpoints[{i}].integration", "only with "
                                    "mitigation removed_after_onboarding"))
    if problems:
        raise AbriError(problems)
    return Stack(
        name=data["name"], title=data["title"], description=data["description"].strip(),
        image=dict(data["image"]), ports=tuple(ports),
        volumes=tuple(Volume(**v) for v in data["volumes"]), settings=tuple(settings),
        healthcheck=dict(hc), provides=tuple(data.get("provides", ())),
        uses=tuple(data.get("uses", ())), wants=tuple(data.get("wants", ())),
        devices=tuple(data.get("devices", ())),
        files=tuple(files), accounts=dict(accounts) if accounts else None,
        ha_addon=dict(ha_addon) if ha_addon else None,
        acl={k: tuple(v) for k, v in (data.get("acl") or {}).items()},
        env=dict(data.get("env") or {}), api=dict(api) if api else None,
        checks=tuple(checks), heartbeat=dict(heartbeat) if heartbeat else None,
        certificates=tuple(dict(c) for c in data.get("certificates", ())),
        backup_consistency=(data.get("backup") or {}).get("consistency", "stop"),
        backup_trial=dict((data.get("backup") or {}).get("trial") or {}),
        endpoints=tuple(dict(e) for e in data.get("endpoints", ())),
        setting_endpoints=tuple(dict(e) for e in data.get("setting_endpoints", ())),
        remote_access=dict(remote) if remote else None,
        path=file.parent,
    )


def _trial_problems(where: str, data: dict[str, Any]) -> list[Problem]:
    """backup.trial names files of the restored user data, and regular expressions."""
    trial = (data.get("backup") or {}).get("trial") or {}
    user = {v["name"] for v in data["volumes"] if v["user_data"]}
    problems = []
    if trial and not user:
        problems.append(Problem(where, "backup.trial", "the stack has no user-data volume, "
                                "so a backup holds nothing to restore on trial"))
        return problems

    def in_user_data(field: str, path: str) -> None:
        parts = path.split("/")
        if ".." in parts or "" in parts:
            problems.append(Problem(where, field, f"{path!r} must be a plain path in the "
                                    "stack's directory (no '..', no empty part)"))
        elif parts[0] not in user or len(parts) < 2:
            problems.append(Problem(where, field, f"{path!r} is not a file in a user-data "
                                    f"volume ({', '.join(sorted(user))}/...): only those are "
                                    "restored on trial"))

    for i, path in enumerate(trial.get("sqlite", ())):
        in_user_data(f"backup.trial.sqlite[{i}]", path)
    for i, rule in enumerate(trial.get("counts", ())):
        in_user_data(f"backup.trial.counts[{i}].file", rule["file"])
        if "key" in rule and rule["count"] != "json_items":
            problems.append(Problem(where, f"backup.trial.counts[{i}].key", "only a "
                                    "json_items count reads a key; a yaml_items count counts "
                                    "the top level"))
    for i, pattern in enumerate(trial.get("log_errors", ())):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.append(Problem(where, f"backup.trial.log_errors[{i}]",
                                    f"is not a regular expression: {exc}"))
    return problems


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

    def remote_access(self, role: str) -> list[str]:
        """The stacks whose manifest gives them this part in remote access (proxy or
        upstream)."""
        return [s.name for s in self if (s.remote_access or {}).get("role") == role]

    def providers(self, capability: str) -> list[str]:
        return [s.name for s in self if capability in s.provides]

    def ordered(self, names: list[str] | set[str]) -> list[str]:
        """The given stacks in deploy order: providers before the stacks that use them."""
        wanted = sorted(names)
        done: list[str] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if name in done or name in trail:
                return
            for cap in (*self.stacks[name].uses, *self.stacks[name].wants):
                for provider in self.providers(cap):
                    if provider in wanted:
                        visit(provider, (*trail, name))
            done.append(name)

        for name in wanted:
            visit(name, ())
        return done
