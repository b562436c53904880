"""Proxmox VE guests end to end: a site with one node (the API stand-in, strict about the
published schema), a QEMU VM guest and an LXC guest. One apply creates both through the API
(each a real Debian 13 fleet host: the VM's from what cloud-init would do with its name,
sshkeys, ciuser and ipconfig0; the container's with the requested hostname, its DHCP address
and abri's key for root), deploys Mosquitto on the VM and Home Assistant on the container,
wired across the guests, and verify passes; a second apply sends no create request and
changes nothing.

The error cases (wrong credentials, unknown node, a CA that does not match, a full storage,
a token asked for keyctl, a failing create task) need no guest to boot: they are in
tests/unit/test_proxmox_hosts.py, against the same stand-in."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest
import yaml

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

import pve_schema  # noqa: E402
from proxmox_standin import StandIn  # noqa: E402

from tui.core import proxmox  # noqa: E402

NESTED_ENGINE_OPTIONS = {
    "bip": "10.213.0.1/24",
    "default-address-pools": [{"base": "10.214.0.0/16", "size": 24}],
}


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 for the node's bridge that no docker network and no route of this machine uses."""
    used = []
    names = harness.docker("network", "ls", "-q").stdout.split()
    if names:
        out = harness.docker("network", "inspect", *names).stdout
        for net in json.loads(out):
            for conf in (net.get("IPAM") or {}).get("Config") or []:
                if conf.get("Subnet") and ":" not in conf["Subnet"]:
                    used.append(ipaddress.ip_network(conf["Subnet"], strict=False))
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for word in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", routes, re.M):
        used.append(ipaddress.ip_network(word, strict=False))
    for third in range(64, 250):
        candidate = ipaddress.ip_network(f"10.251.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free /24 under 10.251.0.0/16 for the stand-in's bridge")


class Launcher:
    """Boots a guest the stand-in was asked to create as a real fleet host on the node's
    bridge (a docker network with the bridge's subnet): the requested hostname, the fixed
    address, the keys. A container's keys are root's (ssh-public-keys); a VM's go to the
    user cloud-init makes (ciuser, in the sudo group with sudo without a password, as
    cloud-init's default user), and root gets none."""

    def __init__(self, fleet: harness.Fleet, subnet: ipaddress.IPv4Network, registry: str):
        self.fleet = fleet
        self.subnet = subnet
        self.registry = registry
        self.ref = harness._resolve_host_image("docker")
        harness.docker("network", "create", *fleet._labels, "--subnet", str(subnet),
                       "--gateway", str(subnet.network_address + 1), fleet.network)
        fleet._network_created = True

    def __call__(self, vmid: int, hostname: str, ip: str, gateway: str | None,
                 ssh_keys: str, user: str = "root") -> str:
        fl = self.fleet
        name = f"{fl.prefix}-ct{vmid}"
        volume = f"{name}-docker"
        harness.docker("volume", "create", *fl._labels, volume)
        fl._volumes.append(volume)
        address = ["--ip", ip.split("/")[0]] if ip != "dhcp" else []
        harness.docker("create", "--name", name, "--hostname", hostname, *fl._labels,
                       "--network", fl.network, *address, "-p", "127.0.0.1::22",
                       "-v", f"{volume}:/var/lib/docker", *harness.SYSTEMD_FLAGS, self.ref,
                       "/sbin/init")
        fl._containers.append(name)
        daemon = json.dumps(harness.host_daemon_config(self.registry)).encode()
        keys = (ssh_keys.strip() + "\n").encode()
        files = {"etc/docker/daemon.json": (daemon, 0o644)}
        if user == "root":
            files["root/.ssh/authorized_keys"] = (keys, 0o600)
        else:  # cloud-init's default user: its own keys, sudo without a password
            files["etc/sudoers.d/90-cloud-init-users"] = (
                f"{user} ALL=(ALL) NOPASSWD:ALL\n".encode(), 0o440)
        harness.docker("cp", "-", f"{name}:/", input=harness._tar_files(files))
        harness.docker("start", name)
        got = harness.docker("inspect", "-f", f"{{{{(index .NetworkSettings.Networks "
                             f"\"{fl.network}\").IPAddress}}}}", name).stdout.strip()
        port = harness.docker("port", name, "22/tcp").stdout.split("\n")[0].rsplit(":", 1)[1]
        host = harness.Host(name=name, ssh_port=int(port), ssh_user="root",
                            key_path=Path("/nonexistent"), address=got, network=fl.network,
                            image=self.ref)
        fl.hosts.append(host)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # systemd up (as harness.Host.wait_ready)
            state = harness.docker("exec", name, "systemctl", "is-system-running",
                                   check=False, timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        if user != "root":
            harness.docker("exec", "-i", name, "sh", "-ec",
                           f"useradd -m -s /bin/bash -G sudo {user}; "
                           f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh; "
                           f"cat >/home/{user}/.ssh/authorized_keys; "
                           f"chown {user}:{user} /home/{user}/.ssh/authorized_keys; "
                           f"chmod 0600 /home/{user}/.ssh/authorized_keys", input=keys)
        return got

    def remove(self, vmid: int) -> None:
        """The stand-in destroyed the container: its host goes."""
        name = f"{self.fleet.prefix}-ct{vmid}"
        harness.docker("rm", "-f", "-v", name, timeout=600)
        self.fleet._containers.remove(name)
        self.fleet.hosts = [h for h in self.fleet.hosts if h.name != name]


def _abri(*args: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run([str(BIN / "abri"), *args], capture_output=True, text=True,
                         timeout=1800, env=env)
    if ok:
        assert run.returncode == 0, f"abri {' '.join(args)}: {run.stdout[-6000:]}{run.stderr}"
    return run


def _recap(output: str, host: str) -> dict[str, int]:
    match = re.search(rf"^\s*{re.escape(host)}\s+(ok=.*)$", output.split("Recap:")[-1], re.M)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


@pytest.fixture
def node(request, fleet_registry, tmp_path):
    fl = harness.Fleet(workdir=tmp_path / "guests", registry=fleet_registry.address)
    request.node._abri_fleets = [fl]  # a failure's report carries the guests' journals
    subnet = _free_subnet()
    standin = None
    try:
        launcher = Launcher(fl, subnet, fleet_registry.address)
        standin = StandIn(node="pve", schema=pve_schema.Schema.load(), launcher=launcher,
                          bridges={"vmbr0": f"{subnet.network_address + 1}/24"}).start()
        yield standin, fl, subnet
    finally:
        if standin:
            standin.stop()
        problems = fl.teardown()
        assert not problems, problems


def test_vm_and_lxc_guests_created_and_deployed(node, fleet_registry, tmp_path):
    standin, fl, subnet = node
    standin.on_destroy = standin.launcher.remove
    env = dict(os.environ, ABRI_CONFIG_HOME=str(tmp_path / "abri-config"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    site = tmp_path / "site"
    password = tmp_path / "root-password"
    password.write_text(standin.password + "\n")
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure", env=env)
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# the test machine's networks overlap Docker's default ranges\n"
        f"docker_engine_daemon_options: {json.dumps(NESTED_ENGINE_OPTIONS)}\n")
    added = _abri("host", "add", "pve", "--kind", "proxmox", "--api-url", standin.url,
                  "--node", "pve", "--user", "root@pam", "--password-file", str(password),
                  "--ca-fingerprint", standin.certs.leaf_fingerprint, "--site", str(site),
                  env=env)
    assert standin.certs.ca_fingerprint in added.stdout
    gateway = str(subnet.network_address + 1)
    # the broker's guest a VM at a fixed address, Home Assistant's a container with an
    # address from the node's DHCP
    _abri("host", "add", "mq-vm", "--kind", "guest", "--parent", "pve", "--type", "vm",
          "--cores", "2", "--memory", "1024", "--disk", "8", "--bridge", "vmbr0", "--ip",
          f"{subnet.network_address + 50}/24", "--gateway", gateway, "--site", str(site),
          env=env)
    _abri("host", "add", "ha-lxc", "--kind", "guest", "--parent", "pve", "--cores", "2",
          "--memory", "2048", "--disk", "8", "--ip", "dhcp", "--site", str(site), env=env)
    _abri("stack", "add", "mq-vm", "mosquitto", "--site", str(site), env=env)
    _abri("stack", "add", "ha-lxc", "homeassistant", "--site", str(site), env=env)
    state = yaml.safe_load((site / "host_vars/ha-lxc/abri.yml").read_text())["abri_state"]
    wired = state["stacks"][0]["api"]["integrations"][0]
    assert wired["host"] == str(subnet.network_address + 50)  # across the guests

    start = time.monotonic()
    first = _abri("apply", "--site", str(site), env=env, ok=False)
    print(f"\n[test_proxmox] first apply: {time.monotonic() - start:.1f}s, "
          f"rc={first.returncode}")
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    assert not standin.refused(), standin.refused()  # every request was schema-valid
    creates = {r["path"].rsplit("/", 1)[1]: r["params"] for r in standin.creates()}
    assert sorted(creates) == ["lxc", "qemu"]
    assert creates["lxc"]["features"] == "nesting=1,keyctl=1"
    assert creates["lxc"]["unprivileged"] == "1"
    vm = creates["qemu"]
    assert "import-from=local:import/debian-13-genericcloud-amd64.qcow2" in vm["scsi0"]
    assert vm["ciuser"] == "abri" and vm["sshkeys"].startswith("ssh-ed25519%20")
    assert standin.downloads == [proxmox.VM_IMAGE_URL]  # recorded, never fetched
    assert [ct["config"]["hostname"] for ct in standin.cts.values()] == ["ha-lxc"]
    assert [v["config"]["name"] for v in standin.vms.values()] == ["mq-vm"]
    [vm_state] = standin.vms.values()
    assert vm_state["config"]["scsi0"].endswith(",size=8G")  # grown from the image's 3
    assert sorted(h.exec("hostname").stdout.strip() for h in fl.hosts) == ["ha-lxc", "mq-vm"]
    inventory = (site / "inventory.ini").read_text()
    assert "ansible_user=abri" in next(x for x in inventory.splitlines()
                                       if x.startswith("mq-vm "))
    report = first.stdout.split("Recap:")[-1]
    assert "FAIL" not in report and "CHECK NOT RUN" not in report, report
    for name in ("homeassistant mqtt integration", "mqtt round trip as homeassistant"):
        assert f"ok   {name}" in report, (name, report)
    for host in ("mq-vm", "ha-lxc"):
        assert _recap(first.stdout, host)["failed"] == 0
    recorded = yaml.safe_load((site / "host_vars/ha-lxc/abri.yml").read_text())["abri_guest"]
    assert recorded["vmid"] in standin.cts
    ha_line = next(x for x in (site / "inventory.ini").read_text().splitlines()
                   if x.startswith("ha-lxc "))
    ha_host = next(h for h in fl.hosts if h.exec("hostname").stdout.strip() == "ha-lxc")
    assert f"ansible_host={ha_host.address} " in ha_line  # learnt from the node

    count = len(standin.requests)
    start = time.monotonic()
    second = _abri("apply", "--site", str(site), env=env, ok=False)
    print(f"[test_proxmox] second apply: {time.monotonic() - start:.1f}s, "
          f"rc={second.returncode}")
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    later = standin.requests[count:]
    assert not [r for r in later if r["method"] != "GET" and r["path"] != "/access/ticket"], \
        later
    assert len(standin.creates()) == 2 and not standin.refused()
    for host in ("mq-vm", "ha-lxc"):
        assert _recap(second.stdout, host)["changed"] == 0, second.stdout[-3000:]
    assert second.stderr.count("exists and runs; nothing to change") == 2

    # destroying: the broker's guest is still used by Home Assistant's; Home Assistant's
    # guest goes (its data without a backup: the site keeps backups on each host)
    refused = _abri("host", "destroy", "mq-vm", "--confirm", "mq-vm", "--no-backup",
                    "--site", str(site), env=env, ok=False)
    assert refused.returncode == 2 and "mqtt" in refused.stderr, refused.stderr
    _abri("host", "destroy", "ha-lxc", "--confirm", "ha-lxc", "--no-backup", "--site",
          str(site), env=env)
    assert not standin.cts and len(standin.vms) == 1 and not standin.refused()
    assert [h.exec("hostname").stdout.strip() for h in fl.hosts] == ["mq-vm"]
