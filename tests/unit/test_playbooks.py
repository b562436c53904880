"""The kit's Ansible content: syntax, lint (production profile), its modules' documentation,
the secrets filter, and the engine module's refusal of this (unsupported) machine."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def _site(abri, tmp_path: Path) -> Path:
    """A site written by abri: this machine as a local host with the broker."""
    site = tmp_path / "site"
    assert abri("init", "--site", site).code == 0
    assert abri("host", "add", "h1", "--kind", "local", "--site", site).code == 0
    assert abri("stack", "add", "h1", "mosquitto", "--site", site).code == 0
    return site


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(site / "ansible.cfg")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    return env


def _password_file(site: Path) -> str:
    from tui.core.secrets import vault_password_file
    from tui.core.site import Site

    return str(vault_password_file(Site.load(site).site_id))


@pytest.mark.parametrize("playbook", ["site.yml", str(PLAYBOOKS / "deploy.yml"),
                                      str(PLAYBOOKS / "backup.yml"),
                                      str(PLAYBOOKS / "restore.yml"),
                                      str(PLAYBOOKS / "import.yml")])
def test_syntax_check(abri, tmp_path, playbook):
    site = _site(abri, tmp_path)
    run = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", playbook],
        cwd=site, env=_env(site), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ansible_lint_production(abri, tmp_path):
    site = _site(abri, tmp_path)
    run = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--nocolor", "playbooks/"],
        cwd=REPO, env=_env(site) | {"ANSIBLE_LIBRARY": str(PLAYBOOKS / "library"),
                                    "ANSIBLE_MODULE_UTILS": str(PLAYBOOKS / "module_utils"),
                                    "ANSIBLE_FILTER_PLUGINS": str(PLAYBOOKS / "filter_plugins")},
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:]


@pytest.mark.parametrize("module", ["abri_engine", "abri_stack", "abri_api", "abri_backup"])
def test_modules_are_documented(module):
    """Each kit module carries its documentation like any collection module: ansible-doc
    parses it and lists its options."""
    run = subprocess.run([_tool("ansible-doc"), "-M", str(PLAYBOOKS / "library"), "--json",
                          module], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "ANSIBLE_MODULE_UTILS":
                                        str(PLAYBOOKS / "module_utils")})
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)[module]["doc"]
    assert doc["short_description"] and doc["options"], doc


def test_unsupported_system_is_refused_before_any_change(abri, tmp_path):
    """This machine is no supported target unless it is Debian 13 / Ubuntu 24.04: the engine
    module refuses it in the first task, naming the system, and the stacks are not touched."""
    release = Path("/etc/os-release").read_text()
    if 'VERSION_ID="13"' in release or 'VERSION_ID="24.04"' in release:
        pytest.skip("this machine is a supported target")
    site = _site(abri, tmp_path)
    (site / "group_vars" / "all" / "py.yml").write_text(
        f"---\nansible_python_interpreter: {sys.executable}\nansible_become: false\n"
    )
    run = subprocess.run(
        [_tool("ansible-playbook"), "site.yml", "--vault-password-file", _password_file(site)],
        cwd=site, env=_env(site), capture_output=True, text=True, timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "abri supports Debian 13 (trixie) and Ubuntu 24.04 (noble) only" in out, out
    assert "Converge each stack" not in out, out
    assert not Path("/opt/abri/mosquitto").exists()


def _filters():
    path = PLAYBOOKS / "filter_plugins" / "abri_state.py"
    spec = importlib.util.spec_from_file_location("abri_test_state", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def test_secrets_filter_resolves_references_across_hosts():
    from ansible.errors import AnsibleFilterError

    secrets = _filters()["abri_secrets"]
    stack = {"accounts": {"users_ref": {"admin": "h1/mosquitto/admin_password",
                                        "homeassistant": "h2/homeassistant/mqtt_password"}},
             "health": {"password_ref": "h1/mosquitto/admin_password"}}
    hostvars = {"h1": {"abri_secrets": {"mosquitto": {"admin_password": "a" * 20}}},
                "h2": {"abri_secrets": {"homeassistant": {"mqtt_password": "b" * 20}}}}
    assert secrets(stack, hostvars) == {"h1/mosquitto/admin_password": "a" * 20,
                                        "h2/homeassistant/mqtt_password": "b" * 20}
    with pytest.raises(AnsibleFilterError, match=r"missing from host_vars/h2/vault\.yml"):
        secrets(stack, {**hostvars, "h2": {}})
