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
