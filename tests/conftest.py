"""Fixtures shared by every test layer: an isolated abri config home, the CLI in-process,
and a fingerprint of a directory to prove that refused input changed nothing on disk."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tui.cli import main as abri_main
from tui.core.site import _unsafe

# abri writes values that could look like templates with Ansible's !unsafe tag; the tests
# read its files with yaml.safe_load, which then gives the plain value (as Ansible does)
yaml.SafeLoader.add_constructor("!unsafe", _unsafe)


@pytest.fixture(autouse=True)
def abri_config_home(tmp_path_factory, monkeypatch):
    """Vault password files and run artifacts go to a per-test folder, never ~/.config."""
    home = tmp_path_factory.mktemp("abri-config")
    monkeypatch.setenv("ABRI_CONFIG_HOME", str(home))
    return home


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_abri(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = abri_main([str(a) for a in args])
        except SystemExit as exc:  # argparse's --help / usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


@pytest.fixture
def abri():
    return run_abri


@pytest.fixture
def ssh_key(tmp_path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


@pytest.fixture
def site_dir(tmp_path, abri) -> Path:
    site = tmp_path / "site"
    assert abri("init", "--site", site).code == 0
    return site


def fingerprint(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under directory: content hash and mode."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        # .abri/ is this machine's part of a site; its kit link would walk the whole kit
        if ".abri" in path.relative_to(directory).parts:
            continue
        if path.is_file():
            out[str(path.relative_to(directory))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return out


def load_kit_util(name: str, stand_ins: dict[str, object] | None = None):
    """The kit's playbooks/module_utils/NAME.py loaded without Ansible's module loader: its
    import of ansible.module_utils.abri_engine_core gets a stand-in whose attributes are
    stand_ins (None each by default)."""
    root = Path(__file__).resolve().parents[1]
    engine = "ansible.module_utils.abri_engine_core"
    fake = types.ModuleType(engine)
    for attr, value in (stand_ins or {}).items():
        setattr(fake, attr, value)
    before = sys.modules.get(engine)
    sys.modules[engine] = fake
    try:
        spec = importlib.util.spec_from_file_location(
            name, root / "playbooks" / "module_utils" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if before is None:
            del sys.modules[engine]
        else:
            sys.modules[engine] = before
    return mod
