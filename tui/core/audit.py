"""The sovereignty audit: every outside endpoint a site's stacks reach, and whose law reaches it.

What a stack calls is declared in its manifest (``endpoints``); the image registry is derived
from ``image.registry`` here, for every stack alike (the site's ``registry_mirror`` replaces
it). Who operates each host, and whether a US parent makes it subject to the US CLOUD Act, is
in the kit's data file tui/data/endpoints.yml, with its sources (a host of a service's own
project is described in its manifest instead: ``endpoints[].jurisdiction``).

The site setting ``sovereignty`` decides what plan and apply accept (:func:`gate`):

* ``strict``: no endpoint under US jurisdiction may remain in use (build, run or install);
* ``eu`` (the default): US endpoints are reported, one warning line each; the run goes on;
* ``off``: no check.

An endpoint is *in use* unless a mitigation is in force: the mirror for image pulls,
``disabled`` (the configuration abri writes does not load it) or ``removed_after_onboarding``
(abri removes the config entry right after onboarding). ``install`` endpoints (a requirement,
node or library installed while the service runs) count as run time.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

SCHEMA_VERSION = 1
DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "endpoints.yml"

#: what each mitigation means in the report
MITIGATION_TEXT = {
    "mirror": "images come from the site's registry mirror (registry_mirror)",
    "disabled": "disabled in the configuration abri writes",
    "removed_after_onboarding": "the config entry is removed by abri right after onboarding",
    "none": "none in force",
}

#: the JSON schema of 'abri audit --json' (documented in README, tested)
JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "site", "sovereignty", "summary", "findings"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "site": {"type": "string"},
        "sovereignty": {"enum": ["strict", "eu", "off"]},
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpoints", "by_country", "cloud_act", "us_in_use_run",
                         "us_in_use_build"],
            "properties": {
                "endpoints": {"type": "integer", "minimum": 0},
                "by_country": {"type": "object",
                               "additionalProperties": {"type": "integer", "minimum": 0}},
                "cloud_act": {"type": "integer", "minimum": 0},
                "us_in_use_run": {"type": "array", "items": {"type": "string"}},
                "us_in_use_build": {"type": "array", "items": {"type": "string"}},
            },
        },
        # one entry per vps host: who operates the machine, under whose law (optional: sites
        # without a vps leave it out)
        "hosting": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host", "provider", "operator", "country", "cloud_act", "source",
                             "region", "region_country"],
                "properties": {
                    "host": {"type": "string"}, "provider": {"type": "string"},
                    "operator": {"type": "string"}, "country": {"type": "string"},
                    "cloud_act": {"type": "boolean"}, "source": {"type": "string"},
                    "region": {"type": "string"}, "region_country": {"type": "string"},
                },
            },
        },
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["host", "stack", "endpoint", "purpose", "when", "operator",
                             "country", "cloud_act", "source", "mitigation", "mitigated",
                             "in_use", "fix"],
                "properties": {
                    "host": {"type": "string"},
                    "stack": {"type": "string"},
                    "endpoint": {"type": "string"},
                    "purpose": {"type": "string"},
                    "when": {"enum": ["build", "run", "install"]},
                    "operator": {"type": "string"},
                    "country": {"type": "string"},
                    "cloud_act": {"type": "boolean"},
                    "source": {"type": "string"},
                    "mitigation": {"enum": list(MITIGATION_TEXT)},
                    "mitigated": {"type": "boolean"},
                    "in_use": {"type": "boolean"},
                    "fix": {"type": ["string", "null"]},
                },
            },
        },
    },
}


@functools.cache
def operators(path: Path = DATA_FILE) -> dict[str, Any]:
    """The data file, read once."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def jurisdiction(host: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The operator entry of a host name (or *.domain pattern): the longest matching suffix."""
    data = data or operators()
    name = host.lower().removeprefix("*.").split(":")[0].rstrip(".")
    best, length = data["unknown"], -1
    for entry in data["operators"]:
        for suffix in entry["suffixes"]:
            if (name == suffix or name.endswith("." + suffix)) and len(suffix) > length:
                best, length = entry, len(suffix)
    return best


def _fix(ep: dict[str, Any], mitigation: str) -> str:
    if mitigation == "mirror":
        return ("abri images mirror --to HOST:PORT (copies the site's pinned images into a "
                "registry of your own, on your LAN or with a European operator), then abri "
                "site set registry_mirror=HOST:PORT")
    offered = ep.get("offered")
    text = f"not offered by abri yet: {offered}" if offered else "none offered by abri yet"
    return f"{text}; or accept it with abri site set sovereignty=eu"


def mirror_check(site: Site, hosts: list[str] | None = None) -> tuple[set[str], str] | None:
    """In strict mode with a registry mirror: which pinned images the mirror lacks (one
    manifest HEAD request each, to the mirror only), and why the check could not run ("" when
    it ran). None otherwise (eu and off never ask the mirror)."""
    if site.settings.sovereignty != "strict" or not site.settings.registry_mirror:
        return None
    from tui.core import images

    return images.mirror_holds(site, hosts)


def findings(site: Site, mirror_missing: set[str] | None = None) -> list[dict[str, Any]]:
    """Every outside endpoint of every stack on every host, in host and stack order.
    `mirror_missing`: pinned images the site's mirror was found not to hold (their pull is
    then not mitigated by the mirror)."""
    data = operators()
    mirror = site.settings.registry_mirror
    missing = mirror_missing or set()
    out: list[dict[str, Any]] = []
    for host_name in sorted(site.hosts):
        host = site.hosts[host_name]
        for stack_name in site.catalog.ordered(list(host.stacks)):
            stack = site.catalog[stack_name]
            pin = site.image_pin(host_name, stack_name)
            shown = pin.partition("/")[2] if mirror else pin
            registry = {"host": mirror or stack.image["registry"], "when": "build",
                        "purpose": f"image pull ({shown})"
                        + (", from the site's registry mirror" if mirror else ""),
                        "mitigation": "mirror" if mirror else "none",
                        "lacking": bool(mirror) and pin in missing, "pin": pin}
            for ep in (registry, *stack.endpoints):
                mitigation = ep["mitigation"]
                if mirror and ep is registry:
                    owner = data["site_mirror"]
                elif ep.get("jurisdiction"):
                    owner = ep["jurisdiction"]
                else:
                    owner = jurisdiction(ep["host"], data)
                # a mirror keeps the image pulls in use, from a registry of the site's own
                in_use = mitigation in ("none", "mirror")
                us = bool(owner["cloud_act"]) or owner["country"] == "US"
                fix = None
                lacking = bool(ep.get("lacking"))
                if in_use and us:
                    fix = _fix(ep, "mirror" if ep is registry else mitigation)
                elif lacking:
                    fix = (f"abri images mirror (the mirror {mirror} does not hold "
                           f"{ep['pin']})")
                out.append({
                    "host": host_name, "stack": stack_name, "endpoint": ep["host"],
                    "purpose": " ".join(str(ep["purpose"]).split()), "when": ep["when"],
                    "operator": owner["operator"], "country": str(owner["country"]),
                    "cloud_act": bool(owner["cloud_act"]), "source": owner["source"],
                    "mitigation": mitigation,
                    "mitigated": mitigation != "none" and not lacking,
                    "in_use": in_use, "fix": fix,
                })
            out.extend(_setting_endpoints(site, host_name, data))
        storage = _backup_storage(site, host_name, data)
        if storage is not None:
            out.append(storage)
    return out


def _setting_endpoints(site: Site, host_name: str, data: dict[str, Any]
                       ) -> list[dict[str, Any]]:
    """The outside endpoints a stack's settings name on a host (manifest
    setting_endpoints: an ACME CA's directory), while their `when` holds."""
    from urllib.parse import urlsplit

    from tui.core.catalog import when_holds

    host = site.hosts[host_name]
    out = []
    for stack_name in site.catalog.ordered(list(host.stacks)):
        stack = site.catalog[stack_name]
        values = {**stack.defaults(), **(host.stacks.get(stack_name) or {})}
        for ep in stack.setting_endpoints:
            value = str(values.get(ep["setting"]) or "")
            if not value or not when_holds(ep["when"], values):
                continue
            endpoint = urlsplit(value).hostname if "://" in value else value
            owner = jurisdiction(endpoint or value, data)
            us = bool(owner["cloud_act"]) or owner["country"] == "US"
            out.append({
                "host": host_name, "stack": stack_name, "endpoint": endpoint or value,
                "purpose": " ".join(str(ep["purpose"]).split()), "when": "run",
                "operator": owner["operator"], "country": str(owner["country"]),
                "cloud_act": bool(owner["cloud_act"]), "source": owner["source"],
                "mitigation": "none", "mitigated": False, "in_use": True,
                "fix": (f"choose a European provider for {ep['setting']} (abri stack set "
                        f"{host_name} {stack_name} --set {ep['setting']}=...)") if us else None})
    return out


#: the "stack" of a finding that is the host's backup repository, not a service
BACKUP_STACK = "(backup)"


def _backup_storage(site: Site, host_name: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The outside place a host's backups go (S3 storage, or an SFTP server that is not a
    host of the site), as a finding of its own; None for a folder on the host, a site host,
    or a host with no user data."""
    from tui.core import backup, resolve, validate

    if not backup.hosts_with_data(site, [host_name]):
        return None
    repository = site.settings.backup_repository
    parts = validate.s3_parts(repository)
    sftp = resolve.sftp_server(site, repository)
    if parts is not None:
        endpoint = parts["endpoint"].split("://", 1)[1]
        purpose = f"backups (restic repository in S3 storage, bucket {parts['bucket']})"
    elif sftp is not None and not sftp["site_host"]:
        endpoint = sftp["address"]
        purpose = f"backups (restic repository over SFTP, {sftp['path']})"
    else:
        return None
    owner = jurisdiction(endpoint, data)
    us = bool(owner["cloud_act"]) or owner["country"] == "US"
    return {"host": host_name, "stack": BACKUP_STACK, "endpoint": endpoint.split(":")[0],
            "purpose": purpose, "when": "run", "operator": owner["operator"],
            "country": str(owner["country"]), "cloud_act": bool(owner["cloud_act"]),
            "source": owner["source"], "mitigation": "none", "mitigated": False,
            "in_use": True,
            "fix": ("keep the backups with a European provider: abri site set "
                    "backup_repository=s3:PROVIDER:REGION/BUCKET (scaleway, ovhcloud, "
                    "hetzner), or a folder or SFTP server of your own") if us else None}


def _us(f: dict[str, Any]) -> bool:
    return f["cloud_act"] or f["country"] == "US"


def report(site: Site, mirror_missing: set[str] | None = None) -> dict[str, Any]:
    """The audit as 'abri audit --json' prints it (JSON_SCHEMA)."""
    found = findings(site, mirror_missing)
    by_country: dict[str, int] = {}
    for f in found:
        by_country[f["country"]] = by_country.get(f["country"], 0) + 1

    def label(f: dict[str, Any]) -> str:
        return f"{f['endpoint']} ({f['stack']} on {f['host']})"

    from tui.core import hosting

    out = {
        "schema_version": SCHEMA_VERSION,
        "site": str(site.path),
        "sovereignty": site.settings.sovereignty,
        "summary": {
            "endpoints": len(found),
            "by_country": dict(sorted(by_country.items())),
            "cloud_act": sum(1 for f in found if f["cloud_act"]),
            "us_in_use_run": [label(f) for f in found
                              if _us(f) and f["in_use"] and f["when"] != "build"],
            "us_in_use_build": [label(f) for f in found
                                if _us(f) and f["in_use"] and f["when"] == "build"],
        },
        "findings": found,
    }
    vps = [{"host": h.name, **hosting.jurisdiction(h.vps)}
           for h in sorted(site.hosts.values(), key=lambda h: h.name) if h.kind == "vps"]
    if vps:
        out["hosting"] = vps
    return out


def format_report(data: dict[str, Any]) -> str:
    from tui.core import hosting

    s = data["summary"]
    lines = [f"Sovereignty: {data['sovereignty']}   {s['endpoints']} outside endpoints, "
             f"{s['cloud_act']} under the US CLOUD Act",
             "By country: " + (", ".join(f"{k} {v}" for k, v in s["by_country"].items())
                               or "none"),
             f"US in use at run time: {len(s['us_in_use_run'])}"
             + "".join(f"\n  {x}" for x in s["us_in_use_run"]),
             f"US in use at build time: {len(s['us_in_use_build'])}"
             + "".join(f"\n  {x}" for x in s["us_in_use_build"])]
    for h in data.get("hosting", ()):
        region = (f"region {h['region']} ({h['region_country']})" if h["region"]
                  else "region not given")
        lines.append(f"vps {h['host']}: {h['provider']}, {h['operator']}, {h['country']}"
                     + (", US CLOUD Act" if h["cloud_act"] else ", not under the US CLOUD Act"
                        if h["country"] != "unknown" else "")
                     + f"; {region}"
                     + ("" if h["region_country"] in hosting.EUROPE or not h["region"]
                        else "; outside Europe"))
    current = None
    for f in data["findings"]:
        if (f["host"], f["stack"]) != current:
            current = (f["host"], f["stack"])
            lines.append(f"\n{f['host']} / {f['stack']}")
        state = "in use" if f["in_use"] else "not in use"
        lines.append(f"  {f['endpoint']}  [{f['when']}, {state}]  {f['purpose']}")
        lines.append(f"    {f['operator']}, {f['country']}"
                     + (", US CLOUD Act" if f["cloud_act"] else ""))
        lines.append(f"    mitigation: {MITIGATION_TEXT[f['mitigation']]}")
        if f["fix"]:
            lines.append(f"    fix: {f['fix']}")
    return "\n".join(lines)


def gate(site: Site, hosts: list[str] | None = None,
         mirror_missing: tuple[set[str], str] | None = None) -> list[str]:
    """The sovereignty check of plan and apply, before any host is touched. strict: raises
    AbriError (exit 2) naming every US endpoint in use, its stack, host and fix, and every
    pinned image the site's mirror lacks (`mirror_missing`, from :func:`mirror_check`); eu:
    returns one warning line per US endpoint in use; off: nothing."""
    level = site.settings.sovereignty
    if level == "off":
        return []
    lacking, unchecked = mirror_missing or (set(), "")
    chosen = set(hosts) if hosts is not None else None
    every = [f for f in findings(site, lacking) if chosen is None or f["host"] in chosen]
    found = [f for f in every if _us(f) and f["in_use"]]
    absent = [f for f in every if f["when"] == "build" and f["mitigation"] == "mirror"
              and not f["mitigated"]]
    if level == "strict" and (found or absent):
        raise AbriError([Problem(f"host '{f['host']}', stack '{f['stack']}'", "sovereignty",
                                 f"strict: {f['endpoint']} ({f['operator']}, US) is used at "
                                 f"{f['when']} time for {f['purpose']}; fix: {f['fix']}")
                         for f in found]
                        + [Problem(f"host '{f['host']}', stack '{f['stack']}'", "sovereignty",
                                   f"strict: the registry mirror does not hold the image of "
                                   f"{f['purpose']}, so it mitigates nothing; fix: {f['fix']}")
                           for f in absent])
    if level == "strict" and unchecked:
        return [f"sovereignty strict: could not check that the registry mirror holds the "
                f"site's images ({unchecked})"]
    return [f"sovereignty eu: {f['endpoint']} ({f['operator']}, US CLOUD Act) used at "
            f"{f['when']} time by {f['stack']} on {f['host']}; fix: {f['fix']}"
            for f in found]
