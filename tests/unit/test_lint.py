"""Linters run as part of the test command: ruff over the Python, yamllint over the YAML.
(ansible-lint, production profile, runs in test_playbooks.py over playbooks/.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_ruff():
    proc = _run("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint():
    proc = _run("yamllint", "--strict", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_test_modules_have_unique_basenames():
    """pytest imports tests/unit/test_x.py and tests/fleet/test_x.py under one module name
    (rootdir-based 'prepend' import): the second is an import-file-mismatch error that only
    a whole-suite run shows (a CI run was red for it twice)."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, "test modules sharing a name: " + "; ".join(clashes)
