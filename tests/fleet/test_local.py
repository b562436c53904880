"""The local path: abri installed on a home server and run there against itself.

A Debian 13 fleet host gets Debian's python3-venv and abri's wheel (built from this
checkout), installed with pip from PyPI as a user would. Inside the host, `abri init`,
`abri host add home --kind local`, both stacks, then `abri apply` (which ends with verify
against 127.0.0.1) and a second `abri apply` that must change nothing. The host is a
prepared one (abri's engine step ran on it earlier in the session): this test is about the
local path, not about a fresh host.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import harness
from tests.fleet.test_deploy import NESTED_ENGINE_OPTIONS, _prepare_nested_engine

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ABRI = "/opt/abri-venv/bin/abri"
SITE = "/root/home-site"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(out.glob("abri-*.whl"))


# Home Assistant's own login flow, run on the host against its loopback port: prints the
# HTTP outcome of the credentials ("ok", or the error the flow answered)
LOGIN = r"""
import json, sys, urllib.request
base = "http://127.0.0.1:8123"
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)
flow = post("/auth/login_flow", {"client_id": base + "/", "handler": ["homeassistant", None],
                                 "redirect_uri": base + "/"})
step = post("/auth/login_flow/" + flow["flow_id"], {"client_id": base + "/",
            "username": sys.argv[1], "password": sys.stdin.read()})
print("ok" if step.get("type") == "create_entry" else step.get("errors"))
"""


def _login(host, username: str, password: str) -> str:
    host.exec("cat > /root/login.py", input=LOGIN)
    return host.exec(f"python3 /root/login.py {username}", input=password).stdout.strip()


def _abri(host, *args: str, check: bool = True, timeout: float = 1800):
    proc = host.exec(" ".join([ABRI, *args]), check=False, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"abri {' '.join(args)}:\n{proc.stdout[-6000:]}{proc.stderr}"
    return proc


def test_abri_on_the_home_server_deploys_onto_itself(fleet, fleet_registry, wheel):
    host = fleet(1, image="prepared")[0]
    _prepare_nested_engine(host)
    harness.docker("cp", str(wheel), f"{host.name}:/root/{wheel.name}")
    harness.docker("cp", str(CA_BUNDLE), f"{host.name}:/root/ca.crt")
    host.exec("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
              "python3-venv >/dev/null", timeout=900)
    host.exec(f"python3 -m venv /opt/abri-venv && PIP_CERT=/root/ca.crt SSL_CERT_FILE="
              f"/root/ca.crt /opt/abri-venv/bin/pip install -q /root/{wheel.name}", timeout=1800)

    _abri(host, "init", "--site", SITE, "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri(host, "host", "add", "home", "--kind", "local", "--site", SITE)
    _abri(host, "stack", "add", "home", "mosquitto", "--site", SITE)
    _abri(host, "stack", "add", "home", "homeassistant", "--set", "time_zone=Europe/Vienna",
          "--site", SITE)
    host.exec(f"cat > {SITE}/group_vars/all/local.yml", input="---\ndocker_engine_daemon_options: "
              + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")

    first = _abri(host, "apply", "--site", SITE)
    passed = re.search(r"verify: (\d+) passed, 0 failed", first.stdout)
    assert passed and int(passed.group(1)) >= 11, first.stdout[-6000:]
    assert re.search(r"home\s+ok=\d+ changed=[1-9]", first.stdout), first.stdout[-3000:]
    second = _abri(host, "apply", "--site", SITE)
    assert re.search(r"home\s+ok=\d+ changed=0 failed=0", second.stdout), second.stdout[-6000:]
    assert f"verify: {passed.group(1)} passed, 0 failed" in second.stdout, second.stdout[-4000:]

    # the kit came from the wheel (the site's git-ignored .abri/kit links into it), and the
    # stacks run on this very host
    site_yml = host.exec(f"cat {SITE}/site.yml").stdout
    assert ".abri/kit/playbooks/deploy.yml" in site_yml and "/opt/abri-venv" not in site_yml
    kit = host.exec(f"readlink -f {SITE}/.abri/kit").stdout.strip()
    assert kit.startswith("/opt/abri-venv/lib/") and kit.endswith("tui/_kit"), kit
    assert host.exec(f"test -f {SITE}/.abri/kit/playbooks/deploy.yml", check=False
                     ).returncode == 0
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert {"abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1"} <= set(running)
    # secrets: encrypted at rest, password file outside the site, never printed
    vault = host.exec(f"head -c 40 {SITE}/host_vars/home/vault.yml").stdout
    assert vault.startswith("$ANSIBLE_VAULT;1.1;AES256")
    mode = host.exec("stat -c %a /root/.config/abri/vault/*.pass").stdout.strip()
    assert mode == "600"
    plain = host.exec(f"/opt/abri-venv/bin/ansible-vault view {SITE}/host_vars/home/vault.yml "
                      f"--vault-password-file /root/.config/abri/vault/*.pass").stdout
    values = re.findall(r":\s+(\S{24,})\s*$", plain, re.M)
    assert len(values) == 4 and "token:" in plain  # 3 passwords, HA's long-lived token
    for value in values:
        assert value not in first.stdout + second.stdout
        grep = host.exec(f"grep -rlF -- '{value}' {SITE} --exclude=vault.yml", check=False)
        assert grep.stdout == "", f"plaintext secret in {grep.stdout}"

    # a local host is reached on its LAN address, not 127.0.0.1: Home Assistant's internal
    # URL names the address other machines on the network use
    core = host.exec("cat /opt/abri/homeassistant/config/abri/core.yaml").stdout
    assert f'internal_url: "http://{host.address}:8123"' in core, core

    # the owner's password changed in the site: abri moves Home Assistant to it (the old
    # one is refused afterwards), and the next apply changes nothing
    old = re.search(r"owner_password:\s+(\S+)", plain).group(1)
    assert _login(host, "owner", old) == "ok"
    new = "a-new-owner-password-" + host.name[-6:]
    _abri(host, "stack", "set", "home", "homeassistant", f"--set owner_password={new}",
          "--site", SITE)
    moved = _abri(host, "apply", "--site", SITE)
    assert "change the owner password of owner" in moved.stdout, moved.stdout[-4000:]
    assert f"verify: {passed.group(1)} passed, 0 failed" in moved.stdout, moved.stdout[-4000:]
    assert new not in moved.stdout + moved.stderr
    assert _login(host, "owner", new) == "ok"
    assert _login(host, "owner", old) != "ok"
    again = _abri(host, "apply", "--no-verify", "--site", SITE)
    assert re.search(r"home\s+ok=\d+ changed=0 failed=0", again.stdout), again.stdout[-4000:]
