"""Reach a host's services over its own SSH connection (headless, never imports textual).

abri's checks talk to what a deploy put on a host: the MQTT broker, Home Assistant's HTTP and
websocket API. Many hosts answer only on SSH (a VPS whose firewall opens port 22, an SSH port
forwarded by a router, a host behind a jump host), so every such call travels through one
``ssh -N`` process per host with a local forward per service port:

    conn = Connection.from_ansible_vars(host_vars, name="vps1")
    with forward(conn, [1883, 8123]) as ports:
        mqtt_host, mqtt_port = ports[1883]      # ("127.0.0.1", <free local port>)
        ha_base = "http://%s:%d" % ports[8123]

The ssh process is built the way Ansible's ssh connection builds its own (same address, port,
user, key, ``ansible_ssh_common_args`` and ``ansible_ssh_extra_args``, so ProxyJump and
ProxyCommand carry over), but never rides on Ansible's ControlMaster socket. A host with
``ansible_connection=local`` needs no tunnel: its services are on 127.0.0.1.

``exposure(address, ports)`` is the opposite question, asked from this machine without SSH:
which of those ports answer at the host's address directly. A port meant to stay on the host's
loopback that answers there is a finding.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["Connection", "Forwards", "TunnelError", "exposure", "forward", "ssh_command"]

#: ansible_connection values served by OpenSSH (None: Ansible's default, ssh)
SSH_CONNECTIONS = frozenset({
    None, "", "ssh", "smart", "ansible.builtin.ssh", "paramiko", "paramiko_ssh",
    "ansible.builtin.paramiko_ssh",
})
LOCAL_CONNECTIONS = frozenset({"local", "ansible.builtin.local"})
#: what ssh prints when a local forward cannot be bound (the port was taken meanwhile)
_BIND_FAILURES = ("Address already in use", "cannot listen to port",
                  "Could not request local forwarding")
_TRUE = frozenset({"yes", "on", "1", "true", "y", "t"})
_FALSE = frozenset({"no", "off", "0", "false", "n", "f", ""})


class TunnelError(OSError):
    """An SSH tunnel could not be opened. The message names the host and ends with the tail of
    ssh's own error output; it never holds a secret. A subclass of OSError, so code that treats
    "cannot reach the service" as OSError handles it too."""


@dataclass(frozen=True)
class Connection:
    """How to reach one host over SSH, as Ansible's ssh connection would.

    host: address or name to connect to (ansible_host), without brackets for IPv6;
    port/user: None leaves them to ssh (its config, then 22 and the local user);
    key_file: private key (``-i``); ssh_args: extra ssh arguments, already split;
    host_key_checking: False adds ``StrictHostKeyChecking=no`` (Ansible's host_key_checking =
    False), None/True leave ssh's own handling; known_hosts_file: ``UserKnownHostsFile``;
    local: ansible_connection=local, no SSH at all; name: the inventory name, for messages;
    ssh_executable: the ssh client to run (ansible_ssh_executable).
    """

    host: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    ssh_args: tuple[str, ...] = ()
    host_key_checking: bool | None = None
    known_hosts_file: str | None = None
    local: bool = False
    name: str = ""
    ssh_executable: str = "ssh"

    @classmethod
    def from_ansible_vars(cls, variables: Mapping[str, object], name: str | None = None, *,
                          host_key_checking: bool | None = None,
                          base_dir: str | os.PathLike | None = None) -> Connection:
        """Build a Connection from one host's Ansible variables (as ansible-core's inventory
        gives them: ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file,
        ansible_ssh_args, ansible_ssh_common_args, ansible_ssh_extra_args,
        ansible_connection, ansible_host_key_checking, ansible_ssh_executable).

        name is the inventory hostname: the address when ansible_host is missing, and the
        label in messages. host_key_checking is the site-wide setting (ansible.cfg's
        host_key_checking) that a host's own ansible_host_key_checking overrides. A relative
        key path is taken relative to base_dir (default: the working directory, as Ansible).
        Raises TunnelError for a connection type that SSH cannot carry or a value that is
        still a Jinja template.
        """
        label = name or str(variables.get("ansible_host") or "")

        def get(*keys: str) -> str | None:
            for key in keys:
                value = variables.get(key)
                if value is None or value == "":
                    continue
                text = str(value)
                if "{{" in text or "{%" in text:
                    raise TunnelError(f"{label}: {key} is a template ({text!r}); abri reads "
                                      "inventory values as written and cannot open a tunnel")
                return text
            return None

        connection = get("ansible_connection")
        if connection in LOCAL_CONNECTIONS:
            return cls(host="127.0.0.1", local=True, name=label)
        if connection not in SSH_CONNECTIONS:
            raise TunnelError(f"{label}: ansible_connection={connection} cannot carry an SSH "
                              "tunnel (abri reaches services over ssh or locally)")
        host = get("ansible_host", "ansible_ssh_host") or name
        if not host:
            raise TunnelError("a host without ansible_host and without a name")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port_text = get("ansible_port", "ansible_ssh_port")
        try:
            port = int(port_text) if port_text is not None else None
        except ValueError:
            raise TunnelError(f"{label}: ansible_port {port_text!r} is not a port number"
                              ) from None
        if port is not None and not 0 < port < 65536:
            raise TunnelError(f"{label}: ansible_port {port} is out of range")
        key = get("ansible_ssh_private_key_file", "ansible_private_key_file")
        if key is not None:
            key = os.path.expanduser(key)
            if not os.path.isabs(key):
                key = os.path.join(os.fspath(base_dir) if base_dir else os.getcwd(), key)
        args: list[str] = []
        for var in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
            text = get(var)
            if text:
                try:
                    args += shlex.split(text)
                except ValueError as exc:
                    raise TunnelError(f"{label}: {var} cannot be split ({exc})") from None
        checking = get("ansible_host_key_checking", "ansible_ssh_host_key_checking")
        if checking is not None:
            host_key_checking = _boolean(checking, label, "ansible_host_key_checking")
        return cls(host=host, port=port, user=get("ansible_user", "ansible_ssh_user"),
                   key_file=key, ssh_args=tuple(args), host_key_checking=host_key_checking,
                   name=label, ssh_executable=get("ansible_ssh_executable") or "ssh")

    @property
    def destination(self) -> str:
        """user@host:port as far as known (for messages)."""
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        return (f"{self.user}@" if self.user else "") + host + (f":{self.port}" if self.port
                                                               else "")

    @property
    def label(self) -> str:
        return self.name or self.destination


def _boolean(text: str, label: str, key: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise TunnelError(f"{label}: {key}={text!r} is not a boolean")


def _forward_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _config_quote(value: str) -> str:
    """A value for ``-o Key=value``: ssh splits those like a config line, so quote spaces."""
    if any(c.isspace() for c in value) or '"' in value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def ssh_command(conn: Connection, forwards: Sequence[tuple[int, str, int]], *,
                connect_timeout: float = 10, remote: str | None = None) -> list[str]:
    """The argv of the tunnel process: ``ssh -N`` with one ``-L 127.0.0.1:LOCAL:HOST:PORT`` per
    (local port, remote host, remote port) in forwards; with remote, that command runs on the
    host instead of -N (abri's own, never user input).

    abri's own options come first, because ssh keeps the first value it is given for an
    option: whatever the inventory's ssh arguments say, the tunnel runs in batch mode, fails
    when a forward cannot be bound, and does not use a ControlMaster socket. The inventory's
    arguments follow unchanged (ProxyJump, ProxyCommand, -F, other -o options).
    """
    if conn.local:
        raise ValueError(f"{conn.label}: a local connection needs no ssh")
    argv = [
        conn.ssh_executable, *(() if remote else ("-N",)), "-T",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ControlPath=none",
        "-o", "ControlMaster=no",
        "-o", "ServerAliveInterval=10",
        "-o", "ServerAliveCountMax=3",
        "-o", f"ConnectTimeout={max(1, round(connect_timeout))}",
        "-o", "LogLevel=ERROR",
    ]
    if conn.host_key_checking is False:
        argv += ["-o", "StrictHostKeyChecking=no"]
    if conn.known_hosts_file:
        argv += ["-o", f"UserKnownHostsFile={_config_quote(conn.known_hosts_file)}"]
    if conn.key_file:
        argv += ["-i", conn.key_file]
    if conn.user:
        argv += ["-l", conn.user]
    if conn.port:
        argv += ["-p", str(conn.port)]
    argv += list(conn.ssh_args)
    for local_port, remote_host, remote_port in forwards:
        argv += ["-L", f"127.0.0.1:{local_port}:{_forward_host(remote_host)}:{remote_port}"]
    argv += ["--", conn.host]
    if remote:
        argv.append(remote)
    return argv


class Forwards(dict):
    """{remote port: ("127.0.0.1", local port)}, plus what the tunnel process is:
    pid (None without ssh), seconds (time to open the tunnel), alive()."""

    def __init__(self, mapping: Mapping[int, tuple[str, int]], proc=None, seconds: float = 0.0):
        super().__init__(mapping)
        self._proc = proc
        self.pid: int | None = proc.pid if proc is not None else None
        self.seconds = seconds

    def alive(self) -> bool:
        return self._proc is None or self._proc.poll() is None


def _free_ports(n: int) -> list[int]:
    """n distinct ports that were free on 127.0.0.1 a moment ago (the kernel's choice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(errfile, limit: int = 600) -> str:
    """The last of ssh's error output, on one line. pread leaves the file offset alone, which
    ssh shares with us (it writes through a copy of the same descriptor)."""
    fd = errfile.fileno()
    size = os.fstat(fd).st_size
    data = os.pread(fd, min(size, 64 * 1024), max(0, size - 64 * 1024))
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    return " | ".join(line for line in lines if line)[-limit:]


def _listening(pid: int) -> set[int] | None:
    """The TCP ports process pid listens on (Linux: its socket descriptors matched against
    /proc/net/tcp); None where /proc cannot tell. A connect() alone cannot tell ssh's listener
    from another program's that took the port meanwhile."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        with open("/proc/net/tcp") as fh:
            table = fh.read().splitlines()[1:]
    except OSError:
        return None
    ports = set()
    for line in table:
        fields = line.split()
        # local address, state 0A (LISTEN), inode
        if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    """End the tunnel: SIGTERM to its process group (ssh and a ProxyJump/ProxyCommand child
    it started), SIGKILL if ssh does not go within 5 s (the rest of the group: 2 s); ssh is
    always reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # a proxy command (ProxyJump's ssh -W) is ssh's child, not ours, but in the group ssh led:
    # wait (bounded) until the group is empty, so that nothing of the tunnel outlives it
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while _group_lives(proc.pid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _group_lives(pgid: int) -> bool:
    """Whether a process of group pgid still runs. Zombies do not count: an orphaned proxy
    command is reaped by init, whenever init gets to it. Without /proc: whether the group
    exists at all."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class _BindFailed(Exception):
    pass


def _open(conn: Connection, plan: list[tuple[int, str, int]], deadline: float,
          timeout: float) -> tuple[subprocess.Popen, object]:
    """Start ssh for plan and wait until it listens on every local port; (proc, errfile)."""
    argv = ssh_command(conn, plan, connect_timeout=min(timeout, 10))
    errfile = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the tunnel
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=errfile, start_new_session=True)
    except OSError as exc:
        errfile.close()
        raise TunnelError(f"{conn.label}: cannot start {conn.ssh_executable}: "
                          f"{exc.strerror or exc}") from None
    waiting = [local for local, _, _ in plan]
    try:
        while True:
            if proc.poll() is not None:
                tail = _tail(errfile)
                if any(marker in tail for marker in _BIND_FAILURES):
                    raise _BindFailed(tail)
                raise TunnelError(
                    f"{conn.label}: ssh to {conn.destination} ended (exit {proc.returncode}) "
                    f"before the tunnel for port(s) {_ports_text(plan)} was up"
                    + (f"; ssh said: {tail}" if tail else ""))
            owned = _listening(proc.pid)
            if owned is None:
                waiting = [port for port in waiting if not _accepts(port)]
            else:
                waiting = [port for port in waiting if port not in owned]
            if not waiting and proc.poll() is None:
                return proc, errfile
            if time.monotonic() >= deadline:
                tail = _tail(errfile)
                raise TunnelError(
                    f"{conn.label}: the ssh tunnel to {conn.destination} for port(s) "
                    f"{_ports_text(plan)} was not up within {timeout:g}s"
                    + (f"; ssh said: {tail}" if tail else ""))
            time.sleep(0.05)
    except BaseException:
        _stop(proc)
        errfile.close()
        raise


def _ports_text(plan: list[tuple[int, str, int]]) -> str:
    return ", ".join(str(remote) for _, _, remote in plan)


@contextlib.contextmanager
def forward(conn: Connection, remote_ports: Sequence[int], remote_host: str = "127.0.0.1",
            timeout: float = 20) -> Iterator[Forwards]:
    """Forward remote_ports on conn's host to free ports on this machine's 127.0.0.1, all
    through one ``ssh -N`` process, for the duration of the with block.

    remote_host is where the host itself connects (its loopback by default). Yields
    {remote port: ("127.0.0.1", local port)} once ssh listens on every local port;
    raises TunnelError when that does not happen within timeout seconds or ssh fails
    (unreachable, key refused, unknown host key in batch mode). A local connection yields
    {port: (remote_host, port)} without ssh. On exit ssh is terminated and reaped.
    """
    ports = list(dict.fromkeys(int(p) for p in remote_ports))
    for port in ports:
        if not 0 < port < 65536:
            raise ValueError(f"not a TCP port: {port}")
    if conn.local or not ports:
        yield Forwards({p: (remote_host, p) for p in ports})
        return
    start = time.monotonic()
    deadline = start + timeout
    proc = errfile = None
    for attempt in (1, 2):
        plan = [(local, remote_host, remote)
                for local, remote in zip(_free_ports(len(ports)), ports, strict=True)]
        try:
            proc, errfile = _open(conn, plan, deadline, timeout)
            break
        except _BindFailed as exc:
            # a local port was taken between our probe and ssh's bind: once more, new ports
            if attempt == 2 or time.monotonic() >= deadline:
                raise TunnelError(f"{conn.label}: ssh could not bind local ports for "
                                  f"{_ports_text(plan)} twice; ssh said: {exc}") from None
    assert proc is not None and errfile is not None
    mapping = {remote: ("127.0.0.1", local) for local, _, remote in plan}
    try:
        yield Forwards(mapping, proc, time.monotonic() - start)
    finally:
        _stop(proc)
        errfile.close()


def exposure(address: str, ports: Sequence[int], timeout: float = 3) -> dict[int, bool]:
    """{port: True if a TCP connection to address:port succeeds from this machine}, tried in
    parallel; no SSH involved. A refused, filtered (timeout) or unroutable port is False."""
    host = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    unique = list(dict.fromkeys(int(p) for p in ports))

    def probe(port: int) -> bool:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            return False
        return True

    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(unique))) as pool:
        return dict(zip(unique, pool.map(probe, unique), strict=True))
