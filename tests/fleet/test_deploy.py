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
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))


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
    site_id = yaml.safe_load((site / "group_vars/all/abri.yml").read_text())["abri_site_id"]
    password = Path(_CONFIG_HOME["ABRI_CONFIG_HOME"], "vault", f"{site_id}.pass")
    run = subprocess.run([_tool("ansible-vault"), "view", f"host_vars/{host}/vault.yml",
                          "--vault-password-file", str(password)],
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


def _changes(output: str) -> str:
    """The 'changed:' lines and the kit modules' own change lines of a run's output."""
    return "\n".join(line for line in output.splitlines() if "changed" in line or "~" in line)


def test_two_bare_hosts_wired_across_hosts(fleet, fleet_registry, tmp_path):
    """The user's starting point: two bare Debian 13 servers (no Docker). The broker on one,
    Home Assistant on the other, wired to it; the Home Assistant host answers only SSH from
    the controller (issue 16): onboarding, token and checks travel over SSH."""
    fl = fleet(2, image="plain")
    broker, home = fl.hosts
    # the test network: the controller may reach `home` on SSH only (packages for the
    # firewall itself first; abri installs nothing of the kind)
    home.exec("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
              "--no-install-recommends nftables >/dev/null", timeout=600)
    home.firewall_ssh_only()
    # something of the user's own on the broker host that abri must keep
    broker.exec("mkdir -p /etc/docker && echo '{\"insecure-registries\": "
                "[\"registry.lan:5000\"], \"log-level\": \"warn\"}' > /etc/docker/daemon.json")

    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    for name, host in (("h1", broker), ("h2", home)):
        _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
              "--user", host.ssh_user, "--key", str(host.key_path), name)
    _abri("stack", "add", "--site", str(site), "h1", "mosquitto")
    _abri("stack", "add", "--site", str(site), "h2", "homeassistant")
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n"
    )
    state = yaml.safe_load((site / "host_vars" / "h2" / "abri.yml").read_text())["abri_state"]
    wired = state["stacks"][0]["api"]["integrations"][0]
    assert (wired["host"], wired["port"], wired["username"]) == (broker.address, 1883,
                                                                 "homeassistant")

    # a plan (check mode) on the fresh hosts runs through, changes nothing, writes nothing
    def committed() -> dict:  # .abri/ is this machine's part (known hosts, kit link)
        return {p: p.read_bytes() for p in site.rglob("*")
                if p.is_file() and ".abri" not in p.relative_to(site).parts}

    before = committed()
    plan, plan_s = _apply(site, "plan")
    _show("plan on the fresh hosts", plan, plan_s)
    assert plan.returncode == 0, plan.stdout[-8000:] + plan.stderr[-3000:]
    for host in fl.hosts:
        assert host.exec("test -e /opt/abri", check=False).returncode != 0
        assert host.exec("command -v docker", check=False).returncode != 0
    assert committed() == before, "abri plan wrote the site"
    listed = plan.stdout.split("Plan: what apply would change")[1]
    for name in ("h1", "h2"):
        count = int(re.search(rf"{name}: (\d+) change", listed).group(1))
        assert count > 0, plan.stdout[-4000:]
    assert "install docker.io, docker-cli, docker-compose" in listed, listed

    first, first_s = _apply(site)
    _show("first apply", first, first_s)
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    assert _recap(first.stdout, "h1")["failed"] == 0 and _recap(first.stdout, "h2")["failed"] == 0
    report = first.stdout.split("Recap:")[-1]
    assert "FAIL" not in report and "CHECK NOT RUN" not in report, report
    # the docker CLI came with the engine (docker.io only recommends docker-cli on Debian 13)
    assert broker.exec("docker version --format '{{.Client.Version}}'").stdout.strip()
    # the user's own engine settings survived, abri's registry was added beside them
    daemon = json.loads(broker.exec("cat /etc/docker/daemon.json").stdout)
    assert daemon["log-level"] == "warn"
    assert daemon["insecure-registries"] == ["registry.lan:5000", fleet_registry.address]
    # Home Assistant answers nobody but SSH from here, and was checked over SSH
    for name in ("homeassistant onboarded", "homeassistant mqtt integration",
                 "homeassistant sees an mqtt sensor", "homeassistant token",
                 "mqtt round trip as homeassistant",
                 "mqtt acl: homeassistant cannot write outside its topics",
                 "exposure 8123/tcp (homeassistant http)"):
        assert f"ok   {name}" in report, (name, report)
    assert f"{home.address}:8123 is closed from this machine" in report, report
    secrets = {"h1": _secrets(site, "h1"), "h2": _secrets(site, "h2")}
    token = secrets["h2"]["homeassistant"].get("token", "")
    assert len(token) > 100, "no long-lived token in the vault"
    log = broker.exec("docker logs abri-mosquitto-mosquitto-1 2>&1").stdout
    assert "mosquitto version" in log, log[-2000:]
    assert not [line for line in log.splitlines() if "Warning" in line or "Error" in line], log
    modes = broker.exec("stat -c '%n %u:%g %a' /opt/abri/mosquitto/config/passwd "
                        "/opt/abri/mosquitto/config/acl").stdout
    assert modes.count("1883:1883 600") == 2, modes

    second, second_s = _apply(site)
    _show("no-op apply", second, second_s)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    for name in ("h1", "h2"):
        assert _recap(second.stdout, name)["changed"] == 0, (name, _changes(second.stdout))
        # one module call per host: the whole-host check found it converged, no step ran
        assert _recap(second.stdout, name)["ok"] == 1, (name, second.stdout[-3000:])
    assert "Converge each stack" not in second.stdout, second.stdout[-3000:]
    # ... and Home Assistant's owner did not log in again: abri remembers (0600, on the
    # host) that the vault's password works against HA's store as it is, never the password
    checked = home.exec("stat -c '%a' /opt/abri/homeassistant/.abri/owner-checked.json && "
                        "cat /opt/abri/homeassistant/.abri/owner-checked.json").stdout
    assert checked.startswith("600\n") and '"store"' in checked, checked
    assert secrets["h2"]["homeassistant"]["owner_password"] not in checked
    assert _secrets(site, "h2")["homeassistant"]["token"] == token, "the token was replaced"

    # drift: a managed file edited by hand is restored and reported, a stopped container
    # started; the user's own lines in their configuration.yaml stay
    home.exec("sed -i 's/^name: .*/name: \"hacked\"/' "
              "/opt/abri/homeassistant/config/abri/core.yaml")
    home.exec("echo 'logger:' >> /opt/abri/homeassistant/config/configuration.yaml")
    broker.exec("docker stop abri-mosquitto-mosquitto-1")
    third, _ = _apply(site, "apply", "--no-verify")
    assert third.returncode == 0, third.stdout[-6000:] + third.stderr[-2000:]
    assert _recap(third.stdout, "h1")["changed"] == 1 and _recap(third.stdout, "h2")["changed"] == 1
    core = home.exec("cat /opt/abri/homeassistant/config/abri/core.yaml").stdout
    assert 'name: "Home"' in core, core
    assert "logger:" in home.exec("cat /opt/abri/homeassistant/config/configuration.yaml").stdout
    assert "abri-mosquitto-mosquitto-1" in broker.exec("docker ps --format '{{.Names}}'").stdout

    # the broker moves to another port: Home Assistant's MQTT entry follows it
    _abri("stack", "set", "--site", str(site), "h1", "mosquitto", "--set", "port=1884")
    moved, moved_s = _apply(site)
    _show("apply with the broker on 1884", moved, moved_s)
    assert moved.returncode == 0, moved.stdout[-8000:] + moved.stderr[-3000:]
    report = moved.stdout.split("Recap:")[-1]
    assert "ok   homeassistant sees an mqtt sensor" in report, report
    assert "re-create the mqtt entry" in moved.stdout, _changes(moved.stdout)

    # no generated secret anywhere in the output, the runner's artifacts, the site's files
    values = [v for host in secrets.values() for stack in host.values() for v in stack.values()
              if isinstance(v, str)]
    assert len(values) >= 4 and all(len(v) >= 12 for v in values)
    outputs = "".join(r.stdout + r.stderr for r in (plan, first, second, third, moved))
    for value in values:
        assert value not in outputs, "a secret appeared in the ansible output"
    artifacts = [p.read_bytes() for p in Path(_CONFIG_HOME["ABRI_CONFIG_HOME"], "runs").rglob("*")
                 if p.is_file()]
    assert len(artifacts) > 10, "the runner's artifacts were not kept"
    for value in values:
        assert not any(value.encode() in blob for blob in artifacts), \
            "a secret appeared in the runner's artifacts"
    for path in site.rglob("*"):
        if ".abri" in path.relative_to(site).parts:  # the kit link: the kit's own files
            continue
        if path.is_file() and path.name != "vault.yml":
            text = path.read_text(errors="replace")
            for value in values:
                assert value not in text, f"a secret appeared in {path.relative_to(site)}"

    # taking Home Assistant off its host brings it down and keeps its data
    _abri("stack", "remove", "--site", str(site), "h2", "homeassistant")
    fourth, fourth_s = _apply(site, "apply", "--no-verify")
    _show("apply without homeassistant", fourth, fourth_s)
    assert fourth.returncode == 0, fourth.stdout[-8000:] + fourth.stderr[-3000:]
    assert "abri-homeassistant" not in home.exec("docker ps --format '{{.Names}}'").stdout
    assert home.exec("test -s /opt/abri/homeassistant/config/.storage/auth", check=False
                     ).returncode == 0, "Home Assistant's data was not kept"


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
    assert "Converge each stack" not in out, out
    after = host.exec("cat /etc/docker/daemon.json 2>/dev/null; ls /opt", check=False).stdout
    assert after == before
    assert host.exec("test -e /opt/abri", check=False).returncode != 0
