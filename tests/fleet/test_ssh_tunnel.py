"""Services bound to a host's loopback, reached over the host's own SSH connection
(tui.core.tunnel), against real Debian 13 hosts:

* a service on the host's 127.0.0.1 does not answer at the host's address, and answers
  through forward(); two ports share one ssh process, which is gone after the with block;
* a taken local port (ExitOnForwardFailure) costs one retry, not the tunnel;
* a host whose firewall lets the controller reach only sshd: the tunnel still works, a
  service on 0.0.0.0 no longer answers directly;
* a host the controller cannot reach at all (not even SSH), behind a jump host on the same
  network: ProxyJump from the inventory's ssh arguments carries the tunnel.

Connections are built from the variables ansible-core reads from an inventory, as abri does.
Every address used is loopback or a fleet host of the test's own.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import harness
import pytest

from tui.core import tunnel
from tui.core.tunnel import Connection, TunnelError, exposure, forward


def ansible_vars(inventory: Path, name: str) -> dict:
    """A host's variables as ansible-core's inventory gives them."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    from tui.core.inventory import _init_ansible

    _init_ansible()
    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    return dict(manager.get_host(name).get_vars())


def connection(host: harness.Host, inventory: Path) -> Connection:
    return Connection.from_ansible_vars(ansible_vars(inventory, host.name), name=host.name)


def serve(host: harness.Host, port: int, bind: str = "127.0.0.1") -> str:
    """An HTTP server inside the host on bind:port (a systemd unit) serving /marker.txt with a
    text unique to that host and port; returns that text once the port listens."""
    marker = f"{host.name}:{port}:{bind}"
    host.exec(
        f"mkdir -p /srv/t{port} && echo '{marker}' > /srv/t{port}/marker.txt"
        f" && systemd-run --quiet --unit abri-test-http-{port} python3 -m http.server"
        f" --bind {bind} {port} --directory /srv/t{port}"
        f" && for i in $(seq 100); do ss -ltnH 'sport = :{port}' | grep -q . && exit 0;"
        " sleep 0.1; done; exit 1")
    return marker


def get(address: tuple[str, int]) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/marker.txt",
                                timeout=10) as resp:
        return resp.status, resp.read().decode().strip()


def ssh_children() -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:  # a thread of this process may end between the listing and the read
            pids += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return [p for p in pids if _comm(p) == "ssh"]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def process_group(pgid: int) -> list[int]:
    """Live processes of a process group (a zombie is gone, waiting for init to reap it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                out.append(int(entry.name))
    return out


def note(label: str, seconds: float) -> None:
    """Tunnel setup times, for the report (visible with pytest -s)."""
    print(f"[tunnel timing] {label}: {seconds:.3f}s", file=sys.stderr)


def test_loopback_services_through_one_ssh_process(fleet, tmp_path):
    host = fleet(1, image="plain").hosts[0]
    one, two = serve(host, 18123), serve(host, 18124)

    # (a) from the controller, the host answers (sshd) but its loopback services do not
    assert exposure(host.address, [22, 18123, 18124]) == {22: True, 18123: False, 18124: False}

    # the key in a folder with a space, quoted in the inventory as Ansible wants it
    key = tmp_path / "site keys" / "id abri"
    key.parent.mkdir()
    shutil.copy(host.key_path, key)
    key.chmod(0o600)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"{host.name} ansible_host={host.ssh_host} ansible_port={host.ssh_port}"
        f" ansible_user=root ansible_ssh_private_key_file='{key}'"
        " ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n")
    conn = connection(host, inventory)
    assert conn.key_file == str(key) and conn.port == host.ssh_port

    # (b) both ports through one ssh process
    assert ssh_children() == []
    with forward(conn, [18123, 18124]) as ports:
        note("plain host, 2 ports", ports.seconds)
        assert ssh_children() == [ports.pid]
        assert set(ports) == {18123, 18124}
        assert all(addr[0] == "127.0.0.1" for addr in ports.values())
        assert get(ports[18123]) == (200, one)
        assert get(ports[18124]) == (200, two)
        # the host sees exactly one SSH session, from the controller
        sessions = host.exec("ss -tnH state established '( sport = :22 )'").stdout.splitlines()
        assert len(sessions) == 1, sessions
        pid = ports.pid
        local_ports = [addr[1] for addr in ports.values()]
    # on exit ssh is terminated and reaped, its local ports are closed
    assert not Path(f"/proc/{pid}").exists()
    assert ssh_children() == []
    assert exposure("127.0.0.1", local_ports, timeout=1) == dict.fromkeys(local_ports, False)

    # a second tunnel to the same host opens as fast (no ControlMaster either way)
    with forward(conn, [18123]) as ports:
        note("plain host, 1 port, again", ports.seconds)
        assert get(ports[18123]) == (200, one)


def test_a_taken_local_port_costs_one_retry(fleet, monkeypatch):
    host = fleet(1, image="plain").hosts[0]
    marker = serve(host, 18123)
    conn = connection(host, _inventory(host))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    calls: list[list[int]] = []
    real = tunnel._free_ports

    def free_ports(n: int) -> list[int]:
        # first the port somebody took meanwhile, then the kernel's choice
        ports = [taken.getsockname()[1]] if not calls else real(n)
        calls.append(ports)
        return ports

    monkeypatch.setattr(tunnel, "_free_ports", free_ports)
    try:
        with forward(conn, [18123]) as ports:
            note("plain host, after a bind retry", ports.seconds)
            assert len(calls) == 2
            assert ports[18123] == ("127.0.0.1", calls[1][0])
            assert get(ports[18123]) == (200, marker)
    finally:
        taken.close()


def _inventory(host: harness.Host) -> Path:
    path = host.key_path.parent / f"{host.name}.ini"
    path.write_text(f"{host.name} {host.inventory_vars()}\n")
    return path


def test_refused_key_names_the_host_and_what_ssh_said(fleet, tmp_path):
    host = fleet(1, image="plain").hosts[0]
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True)
    conn = connection(host, _inventory(host))
    conn = dataclasses.replace(conn, key_file=str(other),
                               ssh_args=(*conn.ssh_args, "-o", "IdentitiesOnly=yes"))
    with pytest.raises(TunnelError) as info, forward(conn, [18123]):
        pass
    message = str(info.value)
    assert message.startswith(f"{host.name}: ssh to root@127.0.0.1:{host.ssh_port} ended")
    assert "Permission denied" in message
    assert other.read_text().split("\n")[1] not in message
    assert ssh_children() == []


def test_host_that_lets_the_controller_reach_only_ssh(fleet):
    host = fleet(1, image="docker").hosts[0]
    loopback = serve(host, 18123)
    public = serve(host, 18125, bind="0.0.0.0")
    assert exposure(host.address, [18125]) == {18125: True}  # open before the firewall

    host.firewall_ssh_only()
    start = time.monotonic()
    assert exposure(host.address, [22, 18123, 18125], timeout=2) == {
        22: True, 18123: False, 18125: False}
    assert time.monotonic() - start < 4  # probed in parallel: one timeout, not three

    conn = connection(host, _inventory(host))
    with forward(conn, [18123, 18125]) as ports:
        note("ssh-only firewall, 2 ports", ports.seconds)
        assert get(ports[18123]) == (200, loopback)
        assert get(ports[18125]) == (200, public)
        assert len(ssh_children()) == 1


def test_host_behind_a_jump_host(fleet, tmp_path):
    fl = fleet(1, image="plain")
    jump = fl.hosts[0]
    (target,) = fl.add_hosts(1, image="docker")
    marker = serve(target, 18123)
    # the target trusts the same key as the jump host, and drops everything from the
    # controller, SSH included: only the jump host, on the fleet network, reaches it
    target.exec("cat >> /root/.ssh/authorized_keys",
                input=Path(f"{jump.key_path}.pub").read_text())
    controller = target.controller_address()
    target.firewall(controller)
    assert exposure(target.address, [22, 18123], timeout=2) == {22: False, 18123: False}

    config = tmp_path / "ssh_config"
    config.write_text(
        "Host abri-jump\n"
        f"  HostName {jump.ssh_host}\n  Port {jump.ssh_port}\n  User root\n"
        f"  IdentityFile {jump.key_path}\n  IdentitiesOnly yes\n  BatchMode yes\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"{target.name} ansible_host={target.address} ansible_user=root"
        f" ansible_ssh_private_key_file={jump.key_path}"
        f" ansible_ssh_common_args='-F {config} -o ProxyJump=abri-jump"
        " -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n")
    conn = connection(target, inventory)
    assert conn.host == target.address and conn.port is None

    with forward(conn, [18123]) as ports:
        note("behind a jump host, 1 port", ports.seconds)
        assert get(ports[18123]) == (200, marker)
        # the target's one SSH session comes from the jump host, not from the controller
        sessions = target.exec("ss -tnH state established '( sport = :22 )'").stdout.split()
        assert f"{jump.address}:" in " ".join(sessions) and controller not in " ".join(sessions)
        pgid = ports.pid
        group = process_group(pgid)
        assert len(group) >= 2, group  # ssh and the jump's ssh -W it started
    # ssh and its jump child are gone when the with block ends (ssh reaped, not a zombie)
    assert process_group(pgid) == [] and not Path(f"/proc/{pgid}").exists()
    assert ssh_children() == []
