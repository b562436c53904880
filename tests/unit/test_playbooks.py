"""The kit's Ansible content: syntax, lint (production profile), and its filter plugins."""

from __future__ import annotations

import importlib.util
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


def _load_filters(name: str):
    path = PLAYBOOKS / "filter_plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"abri_test_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()


def _site(tmp_path: Path) -> Path:
    """A minimal site in the generated layout, pointing at this kit."""
    site = tmp_path / "site"
    (site / "group_vars" / "all").mkdir(parents=True)
    (site / "host_vars" / "h1").mkdir(parents=True)
    (site / "inventory.ini").write_text(
        "[abri_local]\nh1 ansible_connection=local\n\n[abri_ssh]\n[abri_vps]\n[abri_guest]\n"
        "[abri_proxmox]\n\n[abri_targets:children]\nabri_local\nabri_ssh\nabri_vps\nabri_guest\n"
    )
    (site / "group_vars" / "all" / "abri.yml").write_text(
        f"abri_kit_dir: {REPO}\nabri_registry_mirror: ''\nabri_registry_insecure: false\n"
        "abri_stacks_root: /opt/abri\n"
    )
    (site / "host_vars" / "h1" / "abri.yml").write_text(
        "abri_host_kind: local\nabri_address: 127.0.0.1\nabri_stacks:\n"
        "  mosquitto: {port: 1883, bind: lan, tls: false, tls_port: 8883}\n"
    )
    (site / "ansible.cfg").write_text(
        f"[defaults]\ninventory = inventory.ini\nroles_path = {PLAYBOOKS / 'roles'}\n"
    )
    (site / "site.yml").write_text(
        f"---\n- name: Deploy\n  ansible.builtin.import_playbook: {PLAYBOOKS / 'deploy.yml'}\n"
    )
    return site


def _env(site: Path) -> dict:
    env = dict(os.environ)
    env["ANSIBLE_CONFIG"] = str(site / "ansible.cfg")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.parametrize("playbook", ["site.yml", str(PLAYBOOKS / "deploy.yml")])
def test_syntax_check(tmp_path, playbook):
    site = _site(tmp_path)
    run = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", "-i", "inventory.ini", playbook],
        cwd=site, env=_env(site), capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_ansible_lint_production(tmp_path):
    run = subprocess.run(
        [_tool("ansible-lint"), "--profile", "production", "--nocolor", "playbooks/"],
        cwd=REPO, env=_env(_site(tmp_path)), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:]


def test_unsupported_system_is_refused_before_any_change(tmp_path):
    """This machine is no supported target unless it is Debian 13 / Ubuntu 24.04: the
    precheck must refuse it, naming the system, before the deploy play starts."""
    release = Path("/etc/os-release").read_text()
    if 'VERSION_ID="13"' in release or 'VERSION_ID="24.04"' in release:
        pytest.skip("this machine is a supported target")
    site = _site(tmp_path)
    (site / "group_vars" / "all" / "py.yml").write_text(
        f"ansible_python_interpreter: {sys.executable}\n"
    )
    run = subprocess.run(
        [_tool("ansible-playbook"), "-i", "inventory.ini", "site.yml"],
        cwd=site, env=_env(site), capture_output=True, text=True, timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "abri supports Debian 13 (trixie) and Ubuntu 24.04 (noble) only" in out, out
    assert "Deploy the stacks" not in out, out


def test_stack_order_puts_providers_first():
    order = _load_filters("abri_stacks")["abri_stack_order"]
    catalog = {
        "homeassistant": {"provides": ["homeassistant"], "uses": ["mqtt"]},
        "mosquitto": {"provides": ["mqtt"], "uses": []},
        "zigbee2mqtt": {"provides": [], "uses": ["mqtt"]},
        "aaa": {"uses": ["homeassistant"]},
    }
    assert order(["homeassistant", "zigbee2mqtt", "mosquitto", "aaa"], catalog) == [
        "mosquitto", "homeassistant", "aaa", "zigbee2mqtt"]
    # a user without its provider on the host still deploys
    assert order(["homeassistant"], catalog) == ["homeassistant"]


def test_image_ref_with_and_without_mirror():
    ref = _load_filters("abri_stacks")["abri_image_ref"]
    image = {"registry": "docker.io", "repository": "homeassistant/home-assistant",
             "tag": "2025.4.4"}
    assert ref(image) == "docker.io/homeassistant/home-assistant:2025.4.4"
    assert ref(image, "172.17.0.1:5000") == "172.17.0.1:5000/homeassistant/home-assistant:2025.4.4"
    other = {"registry": "ghcr.io", "repository": "a/b", "tag": "1"}
    assert ref(other, "m:5000/") == "m:5000/a/b:1"


def test_catalog_and_mqtt_clients_from_the_real_manifests():
    filters = _load_filters("abri_stacks")
    catalog = filters["abri_catalog"](str(REPO))
    assert {"mosquitto", "homeassistant"} <= set(catalog)
    clients = filters["abri_mqtt_clients"](
        ["mosquitto", "homeassistant"], catalog,
        {"homeassistant": {"mqtt_password": "p"}, "mosquitto": {"admin_password": "a"}})
    assert clients == {"homeassistant": "p"}
