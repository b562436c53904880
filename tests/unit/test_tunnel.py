"""tui.core.tunnel without test hosts: how a host's Ansible variables become an ssh command line,
checked with ssh itself (``ssh -G`` prints the configuration ssh would use for exactly those
arguments, without connecting), and the tunnel's failure paths against real ssh processes on
this machine's loopback. The tunnel through real hosts is in tests/fleet/test_tunnel.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tui.core import tunnel
from tui.core.tunnel import Connection, TunnelError, exposure, forward, ssh_command

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client")

#: keeps ~/.ssh/config of whoever runs the tests out of the resolved configuration
HERMETIC = "-F /dev/null"


def resolved(conn: Connection, forwards=()) -> dict[str, list[str]]:
    """What ssh makes of the tunnel's argv: ``ssh -G`` with the same arguments."""
    argv = ssh_command(conn, list(forwards))
    proc = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    config: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key, []).append(value)
    return config


def ssh_children() -> list[int]:
    """Child processes of this test process that run ssh."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with open(task / "children") as fh:
            pids += [int(p) for p in fh.read().split()]
    out = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ssh":
                out.append(pid)
        except FileNotFoundError:
            pass
    return out


# ------------------------------------------------------------------ from Ansible's variables


def test_common_and_extra_args_are_split_like_a_shell_and_kept_in_order():
    conn = Connection.from_ansible_vars({
        "ansible_host": "vps.example.org",
        "ansible_ssh_common_args": "-o ProxyJump=admin@bastion:2200 "
                                   "-o 'UserKnownHostsFile=/etc/abri/known hosts'",
        "ansible_ssh_extra_args": "-J other -o ServerAliveInterval=5",
    }, name="vps1")
    assert conn.ssh_args == ("-o", "ProxyJump=admin@bastion:2200",
                             "-o", "UserKnownHostsFile=/etc/abri/known hosts",
                             "-J", "other", "-o", "ServerAliveInterval=5")
    assert conn.host == "vps.example.org" and conn.name == "vps1" and not conn.local


def test_inventory_values_as_ansible_core_gives_them():
    conn = Connection.from_ansible_vars({"ansible_host": "10.0.0.5", "ansible_port": "2222",
                                         "ansible_user": "pi"}, name="pi")
    assert (conn.host, conn.port, conn.user, conn.key_file) == ("10.0.0.5", 2222, "pi", None)
    # without ansible_host, Ansible connects to the inventory name
    assert Connection.from_ansible_vars({}, name="nas.lan").host == "nas.lan"
    assert Connection.from_ansible_vars({"ansible_host": "[2001:db8::7]"}).host == "2001:db8::7"


def test_local_connection_needs_no_address():
    conn = Connection.from_ansible_vars({"ansible_connection": "local",
                                         "ansible_python_interpreter": "/usr/bin/python3"},
                                        name="localhost")
    assert conn.local and conn.host == "127.0.0.1"
    with pytest.raises(ValueError):
        ssh_command(conn, [])


def test_key_path_expands_home_and_relative_paths(tmp_path):
    conn = Connection.from_ansible_vars({"ansible_host": "h",
                                         "ansible_ssh_private_key_file": "~/.ssh/id_ed25519"})
    assert conn.key_file == os.path.expanduser("~/.ssh/id_ed25519")
    conn = Connection.from_ansible_vars({"ansible_host": "h",
                                         "ansible_ssh_private_key_file": "keys/site key"},
                                        base_dir=tmp_path)
    assert conn.key_file == str(tmp_path / "keys" / "site key")


def test_host_key_checking_site_setting_and_host_override():
    assert Connection.from_ansible_vars({"ansible_host": "h"}).host_key_checking is None
    assert Connection.from_ansible_vars({"ansible_host": "h"},
                                        host_key_checking=False).host_key_checking is False
    conn = Connection.from_ansible_vars({"ansible_host": "h", "ansible_host_key_checking": "yes"},
                                        host_key_checking=False)
    assert conn.host_key_checking is True


@pytest.mark.parametrize(("variables", "words"), [
    ({"ansible_host": "h", "ansible_connection": "docker"}, "ansible_connection=docker"),
    ({"ansible_host": "h", "ansible_port": "ssh"}, "not a port number"),
    ({"ansible_host": "h", "ansible_port": 70000}, "out of range"),
    ({"ansible_host": "{{ vault_address }}"}, "is a template"),
    ({"ansible_host": "h", "ansible_ssh_common_args": "-o 'unclosed"}, "cannot be split"),
    ({"ansible_host": "h", "ansible_host_key_checking": "maybe"}, "not a boolean"),
])
def test_what_cannot_become_a_tunnel_says_so(variables, words):
    with pytest.raises(TunnelError, match=words) as info:
        Connection.from_ansible_vars(variables, name="box")
    assert str(info.value).startswith("box: ")


# ------------------------------------------------------------------ the command, as ssh reads it


@needs_ssh
def test_proxyjump_passes_through_both_spellings():
    for args, want in ((f"{HERMETIC} -o ProxyJump=admin@bastion.example.org:2200",
                        "admin@bastion.example.org:2200"),
                       (f"{HERMETIC} -J jump1,jump2", "jump1,jump2")):
        conn = Connection.from_ansible_vars({"ansible_host": "10.1.2.3", "ansible_user": "root",
                                             "ansible_ssh_common_args": args})
        config = resolved(conn, [(40001, "127.0.0.1", 8123)])
        assert config["proxyjump"] == [want]
        assert config["hostname"] == ["10.1.2.3"] and config["user"] == ["root"]


@needs_ssh
def test_key_path_with_a_space(tmp_path):
    key = tmp_path / "site keys" / "id abri"
    key.parent.mkdir()
    key.write_text("not read by ssh -G\n")
    key.chmod(0o600)
    conn = Connection.from_ansible_vars({"ansible_host": "h", "ansible_ssh_common_args": HERMETIC,
                                         "ansible_ssh_private_key_file": str(key)})
    assert resolved(conn)["identityfile"] == [str(key)]


@needs_ssh
def test_ipv6_address_and_forwards():
    conn = Connection.from_ansible_vars({"ansible_host": "2001:db8::42", "ansible_port": 2222,
                                         "ansible_user": "abri",
                                         "ansible_ssh_common_args": HERMETIC})
    config = resolved(conn, [(40001, "127.0.0.1", 1883), (40002, "::1", 8123)])
    assert config["hostname"] == ["2001:db8::42"]
    assert config["port"] == ["2222"] and config["user"] == ["abri"]
    assert config["localforward"] == ["[127.0.0.1]:40001 [127.0.0.1]:1883",
                                      "[127.0.0.1]:40002 [::1]:8123"]
    assert conn.destination == "abri@[2001:db8::42]:2222"


@needs_ssh
def test_abri_options_win_over_the_inventory_ones():
    """Ansible's own multiplexing options in the inventory must not reach the tunnel: ssh
    keeps the first value of an option, and abri's come first."""
    conn = Connection.from_ansible_vars({
        "ansible_host": "h",
        "ansible_ssh_args": "-C -o ControlMaster=auto -o ControlPersist=60s",
        "ansible_ssh_common_args": f"{HERMETIC} -o ControlPath=/tmp/cp-%C -o BatchMode=no "
                                   "-o ExitOnForwardFailure=no -o Compression=yes",
    })
    config = resolved(conn, [(40001, "127.0.0.1", 1883)])
    assert config["controlmaster"] == ["false"]
    assert "controlpath" not in config or config["controlpath"] == ["none"]
    assert config["batchmode"] == ["yes"]
    assert config["exitonforwardfailure"] == ["yes"]
    assert config["serveraliveinterval"] == ["10"]
    assert config["compression"] == ["yes"]  # everything else passes


@needs_ssh
def test_known_hosts_options(tmp_path):
    known = tmp_path / "known hosts"
    conn = Connection(host="h", ssh_args=("-F", "/dev/null"), host_key_checking=False,
                      known_hosts_file=str(known))
    config = resolved(conn)
    assert config["stricthostkeychecking"] == ["false"]
    assert config["userknownhostsfile"] == [str(known)]
    # left alone, ssh keeps its own checking (Ansible's default, host_key_checking = True)
    assert resolved(Connection(host="h", ssh_args=("-F", "/dev/null")))[
        "stricthostkeychecking"] == ["ask"]


# ------------------------------------------------------------------ forward() on this machine


def test_local_connection_forwards_nothing():
    conn = Connection.from_ansible_vars({"ansible_connection": "local"}, name="localhost")
    before = ssh_children()
    with forward(conn, [8123, 1883, 8123]) as ports:
        assert ports == {8123: ("127.0.0.1", 8123), 1883: ("127.0.0.1", 1883)}
        assert ports.pid is None and ports.alive()
        assert ssh_children() == before


def test_bad_port_is_refused_before_ssh():
    with pytest.raises(ValueError), forward(Connection(host="h"), [0]):
        pass


@needs_ssh
def test_unreachable_host_fails_fast_with_ssh_error_and_no_leftover():
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    conn = Connection.from_ansible_vars({"ansible_host": "127.0.0.1", "ansible_port": closed,
                                         "ansible_user": "root",
                                         "ansible_ssh_common_args": HERMETIC}, name="vps1")
    start = time.monotonic()
    with pytest.raises(TunnelError) as info, forward(conn, [1883, 8123]):
        pytest.fail("the tunnel opened to a closed port")
    message = str(info.value)
    assert time.monotonic() - start < 5
    assert message.startswith("vps1: ssh to root@127.0.0.1:")
    assert "1883, 8123" in message and "Connection refused" in message
    assert isinstance(info.value, OSError)
    assert ssh_children() == []


@needs_ssh
def test_a_server_that_never_speaks_ssh_hits_the_timeout_and_ssh_is_reaped():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and say nothing: ssh waits for a banner
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    conn = Connection(host="127.0.0.1", port=server.getsockname()[1], ssh_args=("-F", "/dev/null"),
                      name="silent")
    try:
        start = time.monotonic()
        with pytest.raises(TunnelError, match=r"^silent: .* was not up within 1\.5s"), \
                forward(conn, [8123], timeout=1.5):
            pass
        assert 1.5 <= time.monotonic() - start < 8
        assert ssh_children() == []
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        server.close()


def test_missing_ssh_client_is_a_tunnel_error():
    conn = Connection(host="h", ssh_executable="/nonexistent/ssh", name="box")
    with pytest.raises(TunnelError, match=r"^box: cannot start /nonexistent/ssh"), \
            forward(conn, [1]):
        pass


def test_free_ports_are_distinct_and_bindable():
    ports = tunnel._free_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


# ------------------------------------------------------------------ exposure()


def test_exposure_tells_open_from_closed_ports():
    with socket.socket() as listening, socket.socket() as unused:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        unused.bind(("127.0.0.1", 0))  # bound, not listening: refused
        open_port, closed_port = listening.getsockname()[1], unused.getsockname()[1]
        assert exposure("127.0.0.1", [open_port, closed_port, open_port], timeout=1) == {
            open_port: True, closed_port: False}
    assert exposure("127.0.0.1", []) == {}
