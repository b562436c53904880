"""`pip install .` into a fresh virtual environment gives a working `abri` anywhere:
the wheel ships playbooks/ and stacks/, and a site made with it passes Ansible's checks."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.create(env_dir, with_pip=True)
    proc = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q",
                           str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return env_dir


def test_installed_abri_works_outside_the_checkout(fresh_env, tmp_path, ssh_key):
    bin_dir = fresh_env / "bin"
    # PYTHONPATH too: a checkout on it (as when testing a worktree) would shadow the install
    env = {k: v for k, v in os.environ.items()
           if k not in ("ABRI_KIT_DIR", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    env["ANSIBLE_NOCOLOR"] = "1"

    def run(*argv, cwd=tmp_path):
        return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)

    abri = bin_dir / "abri"
    assert "usage: abri" in run(abri, "--help").stdout
    site = tmp_path / "site"
    for argv in (("init", "--site", site),
                 ("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--key", ssh_key,
                  "--site", site),
                 ("stack", "add", "pi", "mosquitto", "--site", site),
                 ("stack", "add", "pi", "homeassistant", "--site", site)):
        proc = run(abri, *argv)
        assert proc.returncode == 0, (argv, proc.stderr)
    kit = next(fresh_env.glob("lib/python*/site-packages/tui/_kit"))
    # the site reaches the installed kit through its machine-local link, never by path
    assert os.readlink(site / ".abri" / "kit") == str(kit), "the site must use the installed kit"
    assert str(fresh_env) not in (site / "site.yml").read_text()
    assert (kit / "stacks" / "mosquitto" / "stack.yml").is_file()
    assert (kit / "playbooks" / "library" / "abri_stack.py").is_file()
    env["ANSIBLE_CONFIG"] = str(site / "ansible.cfg")
    password = next((Path(os.environ["ABRI_CONFIG_HOME"]) / "vault").glob("*.pass"))
    proc = run(bin_dir / "ansible-inventory", "--list", "--vault-password-file", password,
               cwd=site)
    assert proc.returncode == 0 and '"pi"' in proc.stdout, proc.stderr
    proc = run(bin_dir / "ansible-playbook", "--syntax-check", "site.yml", cwd=site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(sys.executable, "-c", "print(1)")  # sanity: the outer interpreter is untouched
    assert proc.returncode == 0
