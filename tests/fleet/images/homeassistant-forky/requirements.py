"""Print the pip requirements of Home Assistant integrations and their dependencies.

Run with the Python that has homeassistant installed:
    python3 requirements.py integrations.txt > reqs.txt
Reads each integration's manifest.json from the installed package; follows "dependencies"
recursively (not after_dependencies, which load only when configured themselves). The
integrations Home Assistant loads on every start whatever the configuration says (the sets in
homeassistant.bootstrap: since 2026 they include every base entity platform, tts among them,
and marketplace) are added to the listed ones, so that a first start installs nothing.
"""

import contextlib
import importlib
import json
import sys
from pathlib import Path

import homeassistant.bootstrap as bootstrap
import homeassistant.components as components

#: the sets of homeassistant.bootstrap that are set up on every start
ALWAYS_LOADED = ("CORE_INTEGRATIONS", "FRONTEND_INTEGRATIONS", "DEFAULT_INTEGRATIONS")

SKIP = {
    # needs a supervisor; never loaded on a plain container (its client library is still
    # installed through the after_dependencies of others)
    "hassio",
    # go2rtc needs its own binary (not on PyPI); not part of what the kit configures
    "go2rtc",
}


def main() -> int:
    base = Path(components.__file__).parent
    wanted = []
    for line in Path(sys.argv[1]).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            wanted.append(line)
    listed = set(wanted)
    for name in ALWAYS_LOADED:
        wanted.extend(sorted(getattr(bootstrap, name, ())))
    seen: set[str] = set()
    reqs: dict[str, str] = {}
    todo = list(wanted)
    while todo:
        domain = todo.pop()
        if domain in seen or domain in SKIP:
            continue
        seen.add(domain)
        manifest = base / domain / "manifest.json"
        if not manifest.exists():
            if domain == "homeassistant" or domain not in listed:
                # bootstrap's sets may name what is no integration folder here
                continue
            print(f"unknown integration: {domain}", file=sys.stderr)
            return 1
        data = json.loads(manifest.read_text())
        for req in data.get("requirements", []):
            reqs.setdefault(req, domain)
        todo.extend(data.get("dependencies", []))
        # Home Assistant installs the requirements of after_dependencies too (it then loads
        # them first when they are configured): so do we, one level deep
        for after in data.get("after_dependencies", []):
            after_manifest = base / after / "manifest.json"
            if after_manifest.exists():
                for req in json.loads(after_manifest.read_text()).get("requirements", []):
                    reqs.setdefault(req, after)
    # the auth modules Home Assistant loads on demand (the owner's settings page asks for the
    # TOTP one) name their own requirements
    for module in ("homeassistant.auth.mfa_modules.totp", "homeassistant.auth.mfa_modules.notify"):
        with contextlib.suppress(ImportError):
            for req in getattr(importlib.import_module(module), "REQUIREMENTS", []):
                reqs.setdefault(req, module)
    for req in sorted(reqs):
        print(req)
    print(f"{len(seen)} integrations, {len(reqs)} requirements", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
