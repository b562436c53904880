"""The hardening step of abri's convergence (abri_harden): an admin user with sudo and the
key abri reaches the host with, security upgrades from the distribution, a default-deny
firewall of abri's own (nftables table inet abri, its own systemd unit), and an sshd
drop-in (keys only, no root login).

Generic: it knows ports, never services. `module` is an AnsibleModule or a stand-in with
check_mode, fail_json and warn; the functions return their changes (one line each) and
change nothing in check mode.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile

from ansible.module_utils.abri_engine_core import os_release, run, write_atomic

FIREWALL_FILE = "/etc/abri/firewall.nft"
FIREWALL_UNIT = "/etc/systemd/system/abri-firewall.service"
NFTABLES_DROPIN = "/etc/systemd/system/nftables.service.d/50-abri-firewall.conf"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-abri-hardening.conf"
SUDOERS = "/etc/sudoers.d/abri-admin"
UPGRADES = "/etc/apt/apt.conf.d/52abri-unattended-upgrades"
PERIODIC = "/etc/apt/apt.conf.d/21abri-auto-upgrades"
PACKAGES = ("nftables", "unattended-upgrades", "sudo")
#: interfaces of the host's own container networks: traffic from them is the host's own
BRIDGES = ("docker0", "br-*")

#: sshd settings of the drop-in. It sorts first in sshd_config.d (sshd takes the first value
#: it reads), so a provider's drop-in (50-cloud-init.conf with passwords on) cannot undo it.
#: AllowTcpForwarding local: abri's checks reach services through local forwards (ssh -L);
#: remote forwards are refused. KexAlgorithms and ciphers are left to OpenSSH's defaults
#: (OpenSSH 10's include the post-quantum mlkem768x25519-sha256).
SSHD = (
    ("PubkeyAuthentication", "yes"),
    ("PasswordAuthentication", "no"),
    ("KbdInteractiveAuthentication", "no"),
    ("PermitRootLogin", "no"),
    ("PermitEmptyPasswords", "no"),
    ("MaxAuthTries", "3"),
    ("AllowTcpForwarding", "local"),
    ("AllowAgentForwarding", "no"),
    ("AllowStreamLocalForwarding", "no"),
    ("PermitTunnel", "no"),
    ("X11Forwarding", "no"),
    ("PermitUserEnvironment", "no"),
)

UNIT = """\
# Managed by abri (hardening): loads abri's firewall, table inet abri, alone: nothing else in
# the ruleset is flushed. At boot before docker.service, so published ports are never
# unguarded, and after nftables.service when that is enabled (its /etc/nftables.conf starts
# with 'flush ruleset'). A later restart or reload of nftables loads the table again in
# nftables.service itself (drop-in nftables.service.d/50-abri-firewall.conf).
[Unit]
Description=abri firewall (nftables table inet abri)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target docker.service shutdown.target
After=nftables.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {path}
ExecReload=/usr/sbin/nft -f {path}

[Install]
WantedBy=multi-user.target
"""

#: nftables.service's own start and reload load abri's table right after nftables.conf
#: flushed the ruleset, before 'systemctl restart nftables' returns
NFTABLES_HOOK = """\
# Managed by abri (hardening): /etc/nftables.conf starts with 'flush ruleset', which also
# removes abri's firewall (table inet abri): load it again right after, in the same job.
[Service]
ExecStartPost=/usr/sbin/nft -f {path}
ExecReload=/usr/sbin/nft -f {path}
"""


def _read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _ports(entries, proto):
    return sorted({int(e["port"]) for e in entries if e.get("protocol", "tcp") == proto})


def firewall_rules(ssh_ports, open_ports, tunnel=None):
    """The nftables file: replaces table inet abri in one transaction (and nothing else).

    input: default deny; loopback, the host's own container networks, replies and ICMP are
    let in, and TCP to the SSH ports and the open ports. forward (before Docker's chains,
    priority filter - 10; a drop here is final): Docker publishes ports by DNAT before the
    input hook, so new connections from outside to containers are dropped unless their
    original destination port is an open one; containers' own traffic and replies pass on to
    Docker's rules. tunnel ({interface, from, tcp}): the remote-access tunnel's far end may
    reach these TCP ports through the tunnel interface only."""
    tcp = sorted(set(ssh_ports) | set(_ports(open_ports, "tcp")))
    udp = _ports(open_ports, "udp")
    why = "".join(f"#   {e['port']}/{e.get('protocol', 'tcp')}: {e.get('why', '')}\n"
                  for e in open_ports)
    lines = [
        "#!/usr/sbin/nft -f",
        "# Managed by abri (hardening): a default-deny firewall in a table of its own.",
        "# Open: SSH (" + ", ".join(map(str, sorted(set(ssh_ports)))) + ")"
        + (" and the ports the site declares open:" if open_ports else ""),
        why.rstrip("\n") if why else "#   (no other port)",
        "table inet abri",
        "delete table inet abri",
        "table inet abri {",
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 10; policy drop;",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        '\t\tiif "lo" accept',
        *[f'\t\tiifname "{b}" accept' for b in BRIDGES],
        "\t\tmeta l4proto { icmp, ipv6-icmp } accept",
        "\t\ttcp dport { " + ", ".join(map(str, tcp)) + " } accept",
    ]
    if udp:
        lines.append("\t\tudp dport { " + ", ".join(map(str, udp)) + " } accept")
    if tunnel and tunnel.get("tcp"):
        lines.append(f'\t\tiifname "{tunnel["interface"]}" ip saddr {tunnel["from"]} '
                     "tcp dport { " + ", ".join(map(str, tunnel["tcp"])) + " } accept")
    lines += [
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter - 10; policy drop;",
        "\t\tct state established,related accept",
        *[f'\t\tiifname "{b}" accept' for b in BRIDGES],
    ]
    for proto, ports in (("tcp", _ports(open_ports, "tcp")), ("udp", udp)):
        if ports:
            lines.append(f"\t\tct status dnat meta l4proto {proto} ct original proto-dst "
                         "{ " + ", ".join(map(str, ports)) + " } accept")
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


def sshd_dropin():
    return ("# Managed by abri (hardening): keys only, no root login, no passwords. Checked\n"
            "# with sshd -t before it is installed; abri logged in as its admin user first.\n"
            + "".join(f"{k} {v}\n" for k, v in SSHD))


def upgrades_conf(distro):
    origin = ('"origin=Debian,codename=${distro_codename}-security,label=Debian-Security";'
              if distro == "Debian" else
              '"origin=Ubuntu,archive=${distro_codename}-security,label=Ubuntu";')
    return ("// Managed by abri (hardening): unattended upgrades from the distribution's\n"
            "// security archive only (the lists of 50unattended-upgrades are cleared).\n"
            "#clear Unattended-Upgrade::Origins-Pattern;\n"
            "#clear Unattended-Upgrade::Allowed-Origins;\n"
            "Unattended-Upgrade::Origins-Pattern {\n"
            f"        {origin}\n"
            "};\n")


PERIODIC_CONF = ("// Managed by abri (hardening): apt's daily timers update the lists and run\n"
                 "// unattended-upgrade.\n"
                 'APT::Periodic::Update-Package-Lists "1";\n'
                 'APT::Periodic::Unattended-Upgrade "1";\n')


class Harden:
    def __init__(self, module, spec, connect_user):
        self.m = module
        self.spec = spec
        self.user = spec["admin_user"]
        self.connect_user = connect_user or os.environ.get("SUDO_USER") or "root"
        self.changes = []

    def _file(self, path, text, mode, what, owner=None, validate=None):
        """Converge one file (content, mode, owner); validate(tmp) may refuse it."""
        current = _read(path)
        uid = gid = 0
        if owner is not None:
            pw = pwd.getpwnam(owner)
            uid, gid = pw.pw_uid, pw.pw_gid
        if current == text:
            st = os.stat(path)
            if (st.st_mode & 0o7777) == mode and (st.st_uid, st.st_gid) == (uid, gid):
                return False
        self.changes.append(what)
        if self.m.check_mode:
            return True
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".abri-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.chown(tmp, uid, gid)
            if validate is not None:
                validate(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return True

    def packages(self, distro):
        query = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\\n",
                                *PACKAGES], capture_output=True, text=True)
        installed = {line.split()[0] for line in query.stdout.splitlines()
                     if line.endswith(" installed")}
        missing = [p for p in PACKAGES if p not in installed]
        if not missing:
            return
        self.changes.append("install " + ", ".join(missing) + f" from the {distro} archive")
        if not self.m.check_mode:
            run(self.m, ["apt-get", "update", "-q"])
            run(self.m, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])

    def admin(self):
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            self.changes.append(f"create the admin user {self.user}")
            if self.m.check_mode:
                return
            run(self.m, ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group",
                         self.user])
            pw = pwd.getpwnam(self.user)
        keys = list(self.spec.get("admin_keys") or [])
        if not keys:  # the keys that let abri in today
            try:
                home = pwd.getpwnam(self.connect_user).pw_dir
            except KeyError:
                home = "/root"
            keys = [line for line in (_read(os.path.join(home, ".ssh/authorized_keys"))
                                      or "").splitlines() if line.strip()]
            if not keys:
                self.m.fail_json(msg=f"hardening: no key for the admin user {self.user}: the "
                                 "host has no SSH key in the site (abri host set NAME --key "
                                 f"PATH) and {self.connect_user} has no authorized_keys on "
                                 "the host. Nothing was switched off.")
        ssh_dir = os.path.join(pw.pw_dir, ".ssh")
        if not os.path.isdir(ssh_dir) and not self.m.check_mode:
            os.makedirs(ssh_dir, mode=0o700)
        if os.path.isdir(ssh_dir):
            st = os.stat(ssh_dir)
            if (st.st_mode & 0o777, st.st_uid) != (0o700, pw.pw_uid):
                self.changes.append(f"{ssh_dir}: mode 0700, owner {self.user}")
                if not self.m.check_mode:
                    os.chmod(ssh_dir, 0o700)
                    os.chown(ssh_dir, pw.pw_uid, pw.pw_gid)
        text = ("# Managed by abri (hardening): the key abri reaches this host with.\n"
                + "\n".join(keys) + "\n")
        self._file(os.path.join(ssh_dir, "authorized_keys"), text, 0o600,
                   f"authorize abri's key for {self.user}", owner=self.user)
        # NOPASSWD: the admin has no password (keys only), and abri's unattended runs
        # (timers, cron) must become root without asking
        self._file(SUDOERS, f"# Managed by abri (hardening)\n{self.user} ALL=(ALL:ALL) "
                   "NOPASSWD: ALL\n", 0o440, f"sudo for {self.user} ({SUDOERS})",
                   validate=lambda tmp: run(self.m, ["visudo", "-cq", "-f", tmp]))

    def upgrades(self, distro):
        self._file(UPGRADES, upgrades_conf(distro), 0o644,
                   "unattended upgrades from the security archive only")
        self._file(PERIODIC, PERIODIC_CONF, 0o644, "apt's daily unattended upgrades on")

    def ssh_ports(self):
        ports = {int(self.spec.get("ssh_port") or 22)}
        proc = subprocess.run(["sshd", "-T"], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "port" and value.strip().isdigit():
                ports.add(int(value))
        return sorted(ports)

    def firewall(self):
        rules = firewall_rules(self.ssh_ports(), self.spec.get("open") or [],
                               self.spec.get("tunnel"))
        if not self.m.check_mode:
            os.makedirs(os.path.dirname(FIREWALL_FILE), exist_ok=True)
        new_rules = self._file(FIREWALL_FILE, rules, 0o600, "the firewall's rules "
                               f"({FIREWALL_FILE})",
                               validate=lambda tmp: run(self.m, ["nft", "-c", "-f", tmp]))
        new_unit = self._file(FIREWALL_UNIT, UNIT.format(path=FIREWALL_FILE), 0o644,
                              "the firewall's unit (abri-firewall.service)")
        new_hook = self._file(NFTABLES_DROPIN, NFTABLES_HOOK.format(path=FIREWALL_FILE),
                              0o644, "nftables.service loads the firewall again after its "
                              "flush")
        new_unit = new_unit or new_hook
        if self.m.check_mode:
            return
        if new_unit:
            run(self.m, ["systemctl", "daemon-reload"])
        enabled = subprocess.run(["systemctl", "is-enabled", "abri-firewall.service"],
                                 capture_output=True, text=True).stdout.strip()
        if enabled != "enabled":
            self.changes.append("enable abri-firewall.service")
            run(self.m, ["systemctl", "enable", "abri-firewall.service"])
        loaded = subprocess.run(["nft", "list", "table", "inet", "abri"],
                                capture_output=True, text=True).returncode == 0
        active = subprocess.run(["systemctl", "is-active", "abri-firewall.service"],
                                capture_output=True, text=True).stdout.strip() == "active"
        if not active:
            if "start" not in " ".join(self.changes):
                self.changes.append("start abri-firewall.service")
            run(self.m, ["systemctl", "start", "abri-firewall.service"])
        elif new_rules or not loaded:
            if not loaded:
                self.changes.append("load the firewall again (table inet abri was gone)")
            run(self.m, ["systemctl", "reload", "abri-firewall.service"])

    def firewall_check(self):
        """In check mode: a table that is not loaded is a change too (nft itself may not be
        installed yet)."""
        try:
            loaded = subprocess.run(["nft", "list", "table", "inet", "abri"],
                                    capture_output=True, text=True).returncode == 0
        except FileNotFoundError:
            loaded = False
        if not loaded:
            self.changes.append("load the firewall (table inet abri)")

    def sshd_pending(self):
        return _read(SSHD_DROPIN) != sshd_dropin()

    def sshd(self):
        """Install the drop-in after sshd -t accepted the whole configuration with it, reload
        sshd, and check that sshd's effective settings are the drop-in's."""
        text = sshd_dropin()
        what = f"sshd: keys only, no root login ({SSHD_DROPIN})"
        if _read(SSHD_DROPIN) == text:
            return
        if self.m.check_mode:
            self.changes.append(what)
            return

        def validate(tmp):
            # the drop-in first, then the host's whole configuration, as sshd will read it
            fd, main = tempfile.mkstemp(prefix=".abri-sshd-", dir="/etc/ssh")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(f"Include {tmp}\nInclude /etc/ssh/sshd_config\n")
                proc = subprocess.run(["sshd", "-t", "-f", main], capture_output=True,
                                      text=True)
                if proc.returncode != 0:
                    self.m.fail_json(msg="sshd -t refused the hardened configuration, so it "
                                     "was not installed (root login and passwords still "
                                     f"work): {proc.stderr.strip()[-1500:]}")
            finally:
                os.unlink(main)

        self._file(SSHD_DROPIN, text, 0o644, what, validate=validate)
        # try-: Ubuntu 24.04 starts sshd from ssh.socket per need (then it reads the new
        # configuration on its next start); Debian 13 runs ssh.service, which reloads
        run(self.m, ["systemctl", "try-reload-or-restart", "ssh.service"])
        effective = subprocess.run(["sshd", "-T"], capture_output=True, text=True).stdout
        seen = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
        wrong = [k for k, v in SSHD if k.lower() in seen and seen[k.lower()] != v.lower()]
        if wrong:
            self.m.fail_json(msg="sshd's effective settings differ from abri's drop-in for "
                             + ", ".join(wrong) + f" (another file sets them before "
                             f"{SSHD_DROPIN}); fix that file and apply again")


def distro():
    return {"debian": "Debian", "ubuntu": "Ubuntu"}.get(os_release().get("ID", ""), "?")


__all__ = ["Harden", "distro", "firewall_rules", "sshd_dropin", "write_atomic"]
