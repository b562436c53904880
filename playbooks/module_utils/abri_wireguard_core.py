"""The WireGuard step of abri's convergence (abri_wireguard): one tunnel interface of abri's
own, configured with wg-quick (/etc/wireguard/<interface>.conf, wg-quick@<interface>).

The kernel's WireGuard is used where it exists; where `ip link add ... type wireguard` is
refused (a kernel without the module, a container) Debian's wireguard-go (the userspace
implementation of the same protocol) is installed, and wg-quick falls back to it by itself.

Generic: it knows an interface, an address, a private key and peers, never a service.
`module` is an AnsibleModule or a stand-in with check_mode, fail_json and warn; the
functions return their changes (one line each) and change nothing in check mode. The
private key never appears in a change line, a diff or an error message.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

from ansible.module_utils.abri_engine_core import run

CONF_DIR = "/etc/wireguard"
PACKAGES = ("wireguard-tools",)
USERSPACE = "wireguard-go"
#: wg-quick's own rule for interface names
IFACE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")
_KEY = re.compile(r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$")


def valid_key(text):
    """A WireGuard key: 32 bytes in base64 (44 characters)."""
    return bool(_KEY.match(text or ""))


def render(spec, private_key):
    """The wg-quick configuration of the interface (holds the private key: mode 0600)."""
    lines = [
        "# Managed by abri (remote access): a change made here by hand is restored on the",
        "# next apply. The private key comes from the site's vault.",
        "[Interface]",
        f"Address = {spec['address']}",
    ]
    if spec.get("listen_port"):
        lines.append(f"ListenPort = {int(spec['listen_port'])}")
    lines.append(f"PrivateKey = {private_key}")
    for peer in spec.get("peers") or []:
        lines += ["", "[Peer]", f"# {peer.get('name', '')}".rstrip(),
                  f"PublicKey = {peer['public_key']}",
                  "AllowedIPs = " + ", ".join(peer["allowed_ips"])]
        if peer.get("endpoint"):
            lines.append(f"Endpoint = {peer['endpoint']}")
        if peer.get("keepalive"):
            lines.append(f"PersistentKeepalive = {int(peer['keepalive'])}")
    return "\n".join(lines) + "\n"


def _public(text):
    """The configuration without its private key (for diffs)."""
    return re.sub(r"(?m)^PrivateKey = .*$", "PrivateKey = (from the vault)", text)


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _quiet(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        return subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not installed")


class WireGuard:
    def __init__(self, module, spec, private_key):
        self.m = module
        self.spec = spec
        self.key = private_key
        self.iface = spec["interface"]
        self.conf = os.path.join(CONF_DIR, f"{self.iface}.conf")
        self.unit = f"wg-quick@{self.iface}.service"
        self.changes = []
        self.diff = None

    def check(self):
        if not IFACE.match(self.iface):
            self.m.fail_json(msg=f"wireguard.interface {self.iface!r} is not a valid name "
                             "(1 to 15 letters, digits or _=+.-)")
        if not valid_key(self.key):
            self.m.fail_json(msg="wireguard: the private key from the vault is not a "
                             "WireGuard key (32 bytes in base64); the value is not shown")
        for peer in self.spec.get("peers") or []:
            if not valid_key(peer.get("public_key", "")):
                self.m.fail_json(msg=f"wireguard: the public key of peer {peer.get('name')!r} "
                                 "is not a WireGuard key")

    def _installed(self, names):
        query = _quiet(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n", *names])
        return {line.split()[0] for line in query.stdout.splitlines()
                if line.endswith(" installed")}

    def kernel_has_wireguard(self):
        """Whether this kernel makes WireGuard devices: the interface exists already as one,
        or a probe interface can be made (and is removed at once). Check mode makes nothing:
        it reads whether the module is loaded or installed."""
        if _quiet(["ip", "link", "show", self.iface]).returncode == 0:
            kind = _quiet(["ip", "-d", "link", "show", self.iface]).stdout
            return "wireguard" in kind and USERSPACE not in self._process_names()
        if self.m.check_mode:
            return os.path.isdir("/sys/module/wireguard") or \
                _quiet(["modinfo", "-n", "wireguard"]).returncode == 0
        probe = "abri-wgprobe"
        made = _quiet(["ip", "link", "add", probe, "type", "wireguard"])
        if made.returncode == 0:
            _quiet(["ip", "link", "del", probe])
            return True
        return False

    @staticmethod
    def _process_names():
        names = []
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
                        names.append(fh.read().strip())
                except OSError:
                    pass
        return names

    def packages(self):
        want = list(PACKAGES)
        have = self._installed([*PACKAGES, USERSPACE])
        if USERSPACE in have or not self.kernel_has_wireguard():
            want.append(USERSPACE)  # kept once installed: the kernel did not change
        missing = [p for p in want if p not in have]
        if not missing:
            return
        why = " (this kernel has no WireGuard device: the userspace implementation)" \
            if USERSPACE in missing else ""
        self.changes.append("install " + ", ".join(missing) + why)
        if not self.m.check_mode:
            run(self.m, ["apt-get", "update", "-q"])
            run(self.m, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])

    def config(self):
        text = render(self.spec, self.key)
        current = _read(self.conf)
        mode_ok = False
        if current is not None:
            st = os.stat(self.conf)
            mode_ok = (st.st_mode & 0o777) == 0o600 and st.st_uid == 0
        if current == text and mode_ok:
            return False
        self.changes.append(("write " if current is None else "restore " if current != text
                             else "fix the mode of ") + self.conf)
        self.diff = {"before_header": self.conf, "after_header": self.conf,
                     "before": _public(current or ""), "after": _public(text)}
        if self.m.check_mode:
            return True
        os.makedirs(CONF_DIR, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".abri-", dir=CONF_DIR)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.conf)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return current != text

    def service(self, config_changed):
        enabled = _quiet(["systemctl", "is-enabled", self.unit]).stdout.strip()
        active = _quiet(["systemctl", "is-active", self.unit]).stdout.strip() == "active"
        up = _quiet(["ip", "link", "show", self.iface]).returncode == 0
        if enabled != "enabled":
            self.changes.append(f"enable {self.unit} (the tunnel comes up at boot)")
            if not self.m.check_mode:
                run(self.m, ["systemctl", "enable", self.unit])
        if not active or not up:
            self.changes.append(f"start {self.unit}")
            if not self.m.check_mode:
                # a unit that is active without its interface (the device went away) is
                # restarted, not only started
                run(self.m, ["systemctl", "restart", self.unit])
        elif config_changed:
            self.changes.append(f"restart {self.unit} (its configuration changed)")
            if not self.m.check_mode:
                run(self.m, ["systemctl", "restart", self.unit])
        if not self.m.check_mode and _quiet(["wg", "show", self.iface]).returncode != 0:
            status = _quiet(["systemctl", "status", "--no-pager", "-n", "20", self.unit])
            self.m.fail_json(msg=f"the tunnel interface {self.iface} is not up after "
                             f"starting {self.unit}: {status.stdout.strip()[-1500:]}")

    def converge(self):
        self.check()
        self.packages()
        if self.m.check_mode and not os.path.isdir(CONF_DIR):
            self.changes.append(f"write {self.conf}")
            self.changes.append(f"enable and start {self.unit}")
            return self.changes
        changed = self.config()
        self.service(changed)
        return self.changes


__all__ = ["WireGuard", "render", "valid_key"]
