"""The headless engine is importable without the UI (as harlequin enforces for its adapters)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE_MODULES = sorted(p.stem for p in (ROOT / "tui" / "core").glob("*.py") if p.stem != "__init__")


def test_importing_every_core_module_does_not_import_textual():
    code = ("import sys\n"
            + "".join(f"import tui.core.{m}\n" for m in CORE_MODULES)
            + "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')"
              " or m.startswith('tui.app'))\n"
            + "print(','.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"tui.core pulled in: {proc.stdout}"


def test_import_linter_contract_holds():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint_imports)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout
