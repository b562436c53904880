"""Print the pip requirements of Home Assistant integrations and their dependencies.

Run with the Python that has homeassistant installed:
    python3 requirements.py integrations.txt > reqs.txt
Reads each integration's manifest.json from the installed package; follows "dependencies"
recursively (not after_dependencies, which load only when configured themselves).
"""

import json
import sys
from pathlib import Path

import homeassistant.components as components

SKIP = {
    # needs a supervisor; never loaded on a plain container
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
            if domain == "homeassistant":
                continue
            print(f"unknown integration: {domain}", file=sys.stderr)
            return 1
        data = json.loads(manifest.read_text())
        for req in data.get("requirements", []):
            reqs.setdefault(req, domain)
        todo.extend(data.get("dependencies", []))
    for req in sorted(reqs):
        print(req)
    print(f"{len(seen)} integrations, {len(reqs)} requirements", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
