"""The first real deploy: Mosquitto + Home Assistant onto a Debian 13 fleet host over SSH.

The site is written by the abri CLI (init, host add, stack add, site set) and run with
`abri plan`, `abri apply` and `abri verify`, exactly as a user does, then:

* Home Assistant answers on its port and has its MQTT integration loaded;
* tui.core.verify passes every check (MQTT round trips, refusals, ACL, discovery -> REST state);
* `abri plan` (check mode with diff) before the first apply exits 0, lists the changes per
  host and leaves the host untouched;
* the broker's log has no warning (file modes and owners right);
* a second apply changes nothing (changed=0);
* no generated secret shows in any run's output, the runner's artifacts, nor in the site's
  plaintext files;
* taking Home Assistant off the host brings its container down and keeps its data.

Timings of the first and the no-op apply are printed (run with -s to see them); tests never
assert on wall-clock time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))

from tui.core import verify  # noqa: E402

# Address ranges for the nested engine: its defaults (172.17.0.0/16 for docker0, then the
# 172.x pools for compose networks) would shadow the test registry at 172.17.0.1 inside the
# host. A real LAN with the same clash uses the same kit option.
NESTED_ENGINE_OPTIONS = {
    "bip": "10.213.0.1/24",
    "default-address-pools": [{"base": "10.214.0.0/16", "size": 24}],
}


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


#: the vault password files of the test sites stay in the test's tmp dir (set per test)
_CONFIG_HOME: dict[str, str] = {}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(_CONFIG_HOME)
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_HOST_KEY_CHECKING="False",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _abri(*args: str) -> str:
    run = subprocess.run([_tool("abri"), *args], capture_output=True, text=True, timeout=120,
                         env=_env())
    assert run.returncode == 0, f"abri {' '.join(args)}: {run.stdout}{run.stderr}"
    return run.stdout


def _apply(site: Path, command: str = "apply", *extra: str
           ) -> tuple[subprocess.CompletedProcess, float]:
    """`abri apply|plan --site SITE` (apply verifies at its end)."""
    start = time.monotonic()
    run = subprocess.run([_tool("abri"), command, "--site", str(site), *extra], env=_env(),
                         capture_output=True, text=True, timeout=1800)
    return run, time.monotonic() - start


def _recap(output: str, host: str) -> dict[str, int]:
    match = re.search(rf"^\s*{re.escape(host)}\s+(ok=.*)$", output.split("Recap:")[-1], re.M)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _secrets(site: Path, host: str) -> dict:
    run = subprocess.run([_tool("ansible-vault"), "view", f"host_vars/{host}/vault.yml"],
                         cwd=site, env=_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return yaml.safe_load(run.stdout)["abri_secrets"]


def _prepare_nested_engine(host) -> None:
    """Quirk of Docker-in-Docker test hosts (not of real servers): the nested engine cannot
    switch IPv6 off on container interfaces when /proc/sys is read-only: tell it to carry on."""
    if host.exec("touch /proc/sys/net/ipv6/conf/all/disable_ipv6", check=False).returncode == 0:
        return  # the harness gave the host a writable /proc/sys
    host.exec(
        "mkdir -p /etc/systemd/system/docker.service.d && printf '[Service]\\n"
        "Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1\\n' "
        "> /etc/systemd/system/docker.service.d/abri-test.conf"
        " && systemctl daemon-reload && systemctl restart docker"
    )


def _show(label: str, run: subprocess.CompletedProcess, seconds: float) -> None:
    print(f"\n[test_deploy] {label}: {seconds:.1f}s, rc={run.returncode}")


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def test_deploy_homeassistant_and_mosquitto(fleet, fleet_registry, tmp_path):
    fl = fleet(1)
    host = fl.hosts[0]
    _prepare_nested_engine(host)

    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--port", "22", "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    _abri("stack", "add", "--site", str(site), "h1", "mosquitto")
    _abri("stack", "add", "--site", str(site), "h1", "homeassistant")
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true")
    # a file of the user's own next to abri's: abri leaves it alone, the kit reads it
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n"
    )
    host_vars = yaml.safe_load((site / "host_vars" / "h1" / "abri.yml").read_text())
    stacks = host_vars["abri_stacks"]
    assert host_vars["abri_address"] == host.address

    # a plan (check mode) on the fresh host runs through and changes nothing there
    plan, plan_s = _apply(site, "plan")
    _show("plan on the fresh host", plan, plan_s)
    assert plan.returncode == 0, plan.stdout[-8000:] + plan.stderr[-3000:]
    assert host.exec("test -e /opt/abri", check=False).returncode != 0
    listed = plan.stdout.split("Plan: what apply would change")[1]
    count = int(re.search(r"h1: (\d+) change", listed).group(1))
    assert count > 0 and "~ " in listed, plan.stdout[-4000:]

    first, first_s = _apply(site)
    _show("first apply", first, first_s)
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    assert _recap(first.stdout, "h1")["failed"] == 0
    # apply ends with the verify report, every check passed
    assert "h1" in first.stdout.split("Recap:")[-1] and "FAIL" not in first.stdout

    # Home Assistant answers from here, on the host's network address
    ha_port = stacks["homeassistant"]["port"]
    with urllib.request.urlopen(f"http://{host.address}:{ha_port}/manifest.json",
                                timeout=10) as resp:
        assert resp.status == 200

    secrets = _secrets(site, "h1")
    # apply kept a long-lived Home Assistant token in the vault, and it works
    token = secrets["homeassistant"].get("token", "")
    assert len(token) > 100, "no long-lived token in the vault"
    request = urllib.request.Request(f"http://{host.address}:{ha_port}/api/",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    info = {"name": "h1", "address": host.address, "stacks": stacks}
    start = time.monotonic()
    checks = verify.verify_host(info, secrets)
    print(f"[test_deploy] verify: {time.monotonic() - start:.1f}s")
    report = verify.format_report([("h1", checks)])
    print(report)
    assert all(c.ok for c in checks), report
    run = subprocess.run([_tool("abri"), "verify", "--json", "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    cli_checks = json.loads(run.stdout)[0]["checks"]
    assert cli_checks and all(c["ok"] for c in cli_checks), run.stdout
    names = {c["name"] for c in cli_checks}
    for wanted in ("mqtt round trip as admin", "mqtt round trip as homeassistant",
                   "mqtt anonymous refused", "mqtt wrong password refused",
                   "mqtt acl: homeassistant cannot write outside its topics",
                   "homeassistant mqtt integration", "homeassistant sees an mqtt sensor",
                   "homeassistant token"):
        assert wanted in names, report

    # the broker is content with its files (owner 1883, mode 0600) and its configuration
    log = host.exec("docker logs abri-mosquitto 2>&1").stdout
    assert "mosquitto version" in log, log[-2000:]
    assert not [line for line in log.splitlines() if "Warning" in line or "Error" in line], log
    modes = host.exec("stat -c '%n %u:%g %a' /opt/abri/mosquitto/config/passwd "
                      "/opt/abri/mosquitto/config/acl").stdout
    assert modes.count("1883:1883 600") == 2, modes

    second, second_s = _apply(site)
    _show("no-op apply", second, second_s)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    recap = _recap(second.stdout, "h1")
    changed = [line for line in second.stdout.splitlines() if line.startswith("changed:")]
    assert recap["changed"] == 0, (recap, changed, second.stdout[-6000:])
    assert _secrets(site, "h1")["homeassistant"]["token"] == token, "the token was replaced"

    # a token Home Assistant no longer accepts is replaced by the next apply
    os.environ["ABRI_CONFIG_HOME"], saved = _CONFIG_HOME["ABRI_CONFIG_HOME"], os.environ.get(
        "ABRI_CONFIG_HOME")
    try:
        from tui.core.site import Site

        broken = Site.load(site)
        broken.secrets["h1"]["homeassistant"]["token"] = "revoked-" + "x" * 120
        broken.save()
    finally:
        if saved is None:
            os.environ.pop("ABRI_CONFIG_HOME")
        else:
            os.environ["ABRI_CONFIG_HOME"] = saved
    healed, _ = _apply(site)
    assert healed.returncode == 0, healed.stdout[-6000:] + healed.stderr[-2000:]
    renewed = _secrets(site, "h1")["homeassistant"]["token"]
    assert renewed != token and not renewed.startswith("revoked-")

    # no generated secret anywhere in the output or in the site's plaintext files
    values = [v for stack in secrets.values() for v in stack.values() if isinstance(v, str)]
    assert values and all(len(v) >= 12 for v in values)
    values.append(renewed)
    outputs = (first.stdout + first.stderr + second.stdout + second.stderr + plan.stdout
               + healed.stdout + healed.stderr)
    for value in values:
        assert value not in outputs, "a secret appeared in the ansible output"
    artifacts = [p.read_bytes() for p in Path(_CONFIG_HOME["ABRI_CONFIG_HOME"], "runs").rglob("*")
                 if p.is_file()]
    assert len(artifacts) > 10, "the runner's artifacts were not kept"
    for value in values:
        assert not any(value.encode() in blob for blob in artifacts), \
            "a secret appeared in the runner's artifacts"
    for path in site.rglob("*"):
        if path.is_file() and path.name != "vault.yml":
            text = path.read_text(errors="replace")
            for value in values:
                assert value not in text, f"a secret appeared in {path.relative_to(site)}"

    # taking Home Assistant off the host brings it down and keeps its data
    _abri("stack", "remove", "--site", str(site), "h1", "homeassistant")
    third, third_s = _apply(site)
    _show("apply without homeassistant", third, third_s)
    assert third.returncode == 0, third.stdout[-8000:] + third.stderr[-3000:]
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    assert "abri-homeassistant" not in running and "abri-mosquitto" in running, running
    assert host.exec("test -s /opt/abri/homeassistant/config/.storage/auth", check=False
                     ).returncode == 0, "Home Assistant's data was not kept"
    for value in values:
        assert value not in third.stdout + third.stderr


def test_unsupported_system_is_refused_before_any_change(fleet, tmp_path):
    """A Debian 12 host: the run stops at the precheck, naming the system, and the host is
    left as it was (no /opt/abri, daemon.json untouched)."""
    fl = fleet(1, image="bookworm")
    host = fl.hosts[0]
    before = host.exec("cat /etc/docker/daemon.json 2>/dev/null; ls /opt", check=False).stdout
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--port", "22", "--user", host.ssh_user, "--key", str(host.key_path), "old")
    _abri("stack", "add", "--site", str(site), "old", "mosquitto")
    run, _ = _apply(site)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "runs Debian 12" in out and "abri supports Debian 13 (trixie) and Ubuntu 24.04" in out
    assert "Deploy the stacks" not in out, out
    after = host.exec("cat /etc/docker/daemon.json 2>/dev/null; ls /opt", check=False).stdout
    assert after == before
    assert host.exec("test -e /opt/abri", check=False).returncode != 0
