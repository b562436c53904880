"""Where a vps runs (provider, region, jurisdiction) and whether a host is hardened.

A vps host names its provider and region (``abri host add NAME --kind vps --provider P
--region R``); the providers, their seats and regions are in tui/data/endpoints.yml
(``providers``), next to the operators of the audit, so 'abri audit' reports under whose law
each rented machine runs. Hardening (tui.core.resolve builds its state, the kit's
abri_harden module converges it) is on by default for vps hosts and can be switched on or
off for any target host (``abri host set NAME --hardening on|off``).
"""

from __future__ import annotations

import re
from typing import Any

PROVIDERS = ("scaleway", "ovhcloud", "hetzner", "ionos", "infomaniak", "other")
#: a region as providers spell them: fr-par, fsn1, de/fra, dc3-a
_REGION = re.compile(r"^[a-z0-9][a-z0-9/_-]{0,31}$")
#: the user abri creates on a hardened host and reaches it as afterwards
ADMIN_USER = "abri"
#: countries whose law is the EU's data protection law (EU, EEA) or close to it (CH, GB by
#: adequacy decision): a region elsewhere is reported as such by the audit
EUROPE = frozenset((
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO",
    "CH", "GB"))


def providers() -> dict[str, Any]:
    from tui.core import audit

    return audit.operators()["providers"]


def provider(value: str) -> str:
    value = (value or "").strip().lower()
    if value not in PROVIDERS:
        raise ValueError(f"{value!r} is not a provider abri knows; use one of "
                         + ", ".join(PROVIDERS))
    return value


def region(provider_name: str, value: str) -> str:
    """A region of the provider (any well-formed name for 'other')."""
    value = (value or "").strip().lower()
    known = providers()[provider_name].get("regions") or {}
    if known:
        if value not in known:
            raise ValueError(f"{value!r} is not a region of {provider_name}; use one of "
                             + ", ".join(known))
        return value
    if not _REGION.match(value):
        raise ValueError(f"{value!r} is not a region name; use 1-32 lowercase letters, "
                         "digits, '-', '_' or '/' (e.g. fr-par)")
    return value


def check(conf: Any) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """A vps host's abri_vps mapping as read from its host_vars: the clean mapping and the
    problems (field, message)."""
    if conf in (None, ""):
        return {}, []
    if not isinstance(conf, dict):
        return {}, [("abri_vps", "must be a mapping with provider and region")]
    out: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    try:
        out["provider"] = provider(str(conf.get("provider") or ""))
    except ValueError as exc:
        problems.append(("abri_vps.provider", str(exc)))
        return out, problems
    if conf.get("region") not in (None, ""):
        try:
            out["region"] = region(out["provider"], str(conf["region"]))
        except ValueError as exc:
            problems.append(("abri_vps.region", str(exc)))
    return out, problems


def on_off(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"{value!r} is neither on nor off")


def hardened(kind: str, setting: bool | None) -> bool:
    """Whether a host is hardened: its own setting, else on for a vps only."""
    return setting if setting is not None else kind == "vps"


def jurisdiction(conf: dict[str, str]) -> dict[str, Any]:
    """Who operates a vps and under whose law, for the audit."""
    name = conf.get("provider") or "other"
    entry = providers()[name]
    reg = conf.get("region") or ""
    return {"provider": name, "operator": entry["operator"], "country": entry["country"],
            "cloud_act": bool(entry["cloud_act"]), "source": entry["source"],
            "region": reg, "region_country": (entry.get("regions") or {}).get(reg, "unknown")}
