"""`abri`: with no arguments opens the installer; subcommands run the same engine headless.

Exit status: 0 success (or nothing to do, which is said), 1 a run or check failed, 2 invalid
input (nothing on disk changed), 141 the reader of abri's output went away (`abri ... | head`),
as for any command ended by SIGPIPE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tui import __version__
from tui.core.errors import AbriError, Problem

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_PIPE = 128 + 13  # SIGPIPE, as the shell reports a command it ended


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: exit 2, one clear line
        self.print_usage(sys.stderr)
        sys.stderr.write(f"abri: error: {message}\n")
        raise SystemExit(EXIT_INVALID)


def _site_option(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Only the top-level parser has a default: a subcommand's own --site must not override
    # one given before the subcommand (`abri --site DIR init`).
    p.add_argument("--site", type=Path, default=Path.cwd() if top else argparse.SUPPRESS,
                   metavar="DIR", help="the site directory (default: the current directory)")


def _password_options(p: argparse.ArgumentParser, top: bool = False) -> None:
    # as --site: given before or after the command; a subcommand's own has no default
    default = None if top else argparse.SUPPRESS
    p.add_argument("--vault-password-file", metavar="FILE", type=Path, default=default,
                   help="the site's vault password from this file (also "
                   "ABRI_VAULT_PASSWORD_FILE, or the password itself in "
                   "ABRI_VAULT_PASSWORD), for cron and CI")
    p.add_argument("--become-password-file", metavar="FILE", type=Path, default=default,
                   help="the sudo password of the SSH user, for hosts whose sudo asks "
                   "for one (also ABRI_BECOME_PASSWORD_FILE); never stored")


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser(commands: bool = True) -> argparse.ArgumentParser:
    """The command line. Without `commands`, only the top-level options: enough to open the
    installer, and quicker to build than the whole tree of subcommands."""
    parser = _Parser(prog="abri", description="Sovereign smart home: Home Assistant, a secured "
                     "Mosquitto and friends on your own machines, deployed with Ansible. "
                     "Without a command, abri opens the installer.")
    parser.add_argument("--version", action="version", version=f"abri {__version__}")
    _site_option(parser, top=True)
    _password_options(parser, top=True)
    if not commands:
        parser.set_defaults(command=None)
        return parser
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("init", help="create an empty site")
    _site_option(p)
    p.add_argument("--registry-mirror", default="", metavar="HOST[:PORT]",
                   help="pull every image from this registry instead of Docker Hub/ghcr.io")
    p.add_argument("--registry-insecure", action="store_true",
                   help="the mirror speaks plain HTTP (a registry on your LAN)")
    p.add_argument("--stacks-root", default="/opt/abri", metavar="PATH",
                   help="folder on each host that holds the stacks (default /opt/abri)")

    p = sub.add_parser("site", help="show or change site settings")
    ssub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = ssub.add_parser("show", help="print the site settings")
    _site_option(q)
    _json_option(q)
    q = ssub.add_parser("set", help="set site settings: registry_mirror, registry_insecure, "
                        "stacks_root, backup_repository, backup_keep_daily, "
                        "backup_keep_weekly, backup_keep_monthly, upgrade_timer, "
                        "verify_timer and backup_timer (systemd calendars such as 'Sun 04:00' "
                        "for unattended patch upgrades, trial restores and backups; empty: "
                        "off), sovereignty "
                        "(strict, eu or off: which outside endpoints plan and apply accept), "
                        "image_bundle (this machine only: an archive from 'abri images "
                        "bundle' that apply loads on hosts lacking an image; empty: off), "
                        "remote_access (a vps of the site: a WireGuard tunnel from the home "
                        "host to it and HTTPS there for Home Assistant; empty: off)")
    _site_option(q)
    q.add_argument("assignments", nargs="+", metavar="KEY=VALUE")

    p = sub.add_parser("images", help="the site's images in a registry of your own, or in "
                       "one archive for hosts with no registry access")
    isub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = isub.add_parser(
        "mirror", help="copy every pinned image into the site's registry mirror",
        description="Copy every image the site pins (each stack of each host, at its pinned "
        "tag or digest) from its upstream registry into the site's registry_mirror (or "
        "--to), pinned by digest: the mirror then serves the very same images, and the "
        "site's pins stay valid. Blobs the mirror holds already are not sent again; a second "
        "run copies nothing and says so.")
    _site_option(q)
    q.add_argument("--to", metavar="REGISTRY", help="copy into this registry (host[:port]) "
                   "instead of the site's registry_mirror")
    q.add_argument("--insecure", action="store_true", help="the target speaks plain HTTP (a "
                   "registry on your LAN; default: the site's registry_insecure when copying "
                   "into its mirror)")
    q.add_argument("--from", dest="source", metavar="REGISTRY", help="read every image from "
                   "this registry, which holds the upstream paths (a LAN cache, another "
                   "mirror), instead of each image's upstream registry")
    q.add_argument("--from-insecure", action="store_true", help="the --from registry speaks "
                   "plain HTTP")
    q.add_argument("--limit", metavar="HOST", help="only the images of these hosts (or Ansible "
                   "pattern)")
    q = isub.add_parser(
        "bundle", help="write every pinned image into one archive that docker load reads",
        description="Write one archive (the layout 'docker load' reads) holding every image "
        "the site pins, or those of the hosts --limit names, for one platform, read from the "
        "site's registry mirror (or --from). Then 'abri site set image_bundle=FILE' makes "
        "apply copy it to each host that lacks an image and load it there, so that no host "
        "pulls anything.")
    _site_option(q)
    q.add_argument("file", type=Path, metavar="FILE", help="the archive to write (replaced "
                   "atomically)")
    q.add_argument("--limit", metavar="HOST", help="only the images of these hosts (or Ansible "
                   "pattern)")
    q.add_argument("--from", dest="source", metavar="REGISTRY", help="read the images from "
                   "this registry (holding the upstream paths) instead of the site's mirror")
    q.add_argument("--insecure", action="store_true", help="that registry speaks plain HTTP "
                   "(default: the site's registry_insecure when reading its mirror)")
    q.add_argument("--platform", default="linux/amd64", metavar="OS/ARCH", help="the "
                   "hosts' platform (default linux/amd64; linux/arm64 for a Raspberry Pi 4/5)")

    p = sub.add_parser("audit", help="every outside endpoint the site's stacks reach: who "
                       "operates it, under which law, the mitigation in force and the fix")
    _site_option(p)
    _json_option(p)

    p = sub.add_parser("host", help="add, change, list or remove hosts")
    hsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = hsub.add_parser("add", help="add a host")
    _site_option(q)
    q.add_argument("name")
    q.add_argument("--kind", required=True, help="local, ssh, proxmox, guest or vps")
    q.add_argument("--address", help="IP address or DNS name (not for local)")
    q.add_argument("--port", help="SSH port (default 22)")
    q.add_argument("--user", help="SSH user")
    q.add_argument("--key", help="path of the SSH private key")
    q.add_argument("--parent", help="guest only: the proxmox host that owns it")
    _hosting_options(q, add=True)
    g = q.add_argument_group("proxmox (a Proxmox VE node, reached through its API)")
    g.add_argument("--api-url", metavar="URL", help="the node's API, https://HOST:8006")
    g.add_argument("--node", help="the node's name in its cluster (e.g. pve)")
    g.add_argument("--token-id", metavar="USER@REALM!ID", help="an API token (it cannot "
                   "create guests for Docker: keyctl is root@pam's only)")
    g.add_argument("--token-secret-file", metavar="FILE", type=Path,
                   help="the token's secret, read from this file (kept in the vault)")
    g.add_argument("--password-file", metavar="FILE", type=Path,
                   help="with --user root@pam: its password, read from this file (kept in "
                   "the vault)")
    g.add_argument("--ca-fingerprint", metavar="SHA256",
                   help="the SHA-256 fingerprint of the certificate the node presents, as "
                   "its web interface shows it (System > Certificates, pve-ssl.pem); without "
                   "it abri prints the fingerprint it sees and stops")
    g = q.add_argument_group("guest (an LXC container or a VM abri creates on a proxmox host)")
    g.add_argument("--type", default=None, metavar="lxc|vm", help="lxc (a container, the "
                   "default) or vm (a QEMU VM from Debian 13's cloud image with cloud-init; "
                   "a fixed --ip, reached as user abri)")
    g.add_argument("--cores", default="2", help="CPU cores (default 2)")
    g.add_argument("--memory", default="2048", metavar="MIB", help="memory in MiB "
                   "(default 2048)")
    g.add_argument("--disk", default="16", metavar="GIB", help="root disk in GiB (default 16)")
    g.add_argument("--bridge", default="vmbr0", help="the node's bridge (default vmbr0)")
    g.add_argument("--ip", default=None, metavar="dhcp|CIDR",
                   help="dhcp, or a fixed address with prefix length (192.168.1.50/24)")
    g.add_argument("--gateway", metavar="IP", help="the default gateway with a fixed --ip")
    g.add_argument("--vmid", help="the guest's id on the node (default: a free one)")
    g.add_argument("--storage", help="the storage of its root disk (default: the one with "
                   "the most free space for rootdir, or for images with --type vm)")
    g.add_argument("--usb", action="append", metavar="/dev/serial/by-id/...",
                   help="a USB device of the node to pass into the guest, by id (repeat for "
                   "more; root@pam only, as Proxmox allows)")
    q = hsub.add_parser(
        "set", help="change how a host is reached (address, port, user, key)",
        description="Change how abri reaches a host. Only the options given change; an empty "
        "value clears one (--port '' goes back to 22, --user '' to your own user). A local "
        "host takes none of them. Renaming is not offered: a host's name is the key of its "
        "host_vars/NAME folder and of its vault (the secrets its services were set up with). "
        "To rename, add the host under the new name, add its stacks there, then remove the "
        "old one. The kind is not changed here either.")
    _site_option(q)
    q.add_argument("name")
    q.add_argument("--address", help="IP address or DNS name")
    q.add_argument("--port", help="SSH port")
    q.add_argument("--user", help="SSH user")
    q.add_argument("--key", help="path of the SSH private key")
    q.add_argument("--cores", help="guest: CPU cores (the next apply changes them)")
    q.add_argument("--memory", metavar="MIB", help="guest: memory in MiB")
    q.add_argument("--disk", metavar="GIB", help="guest: root disk in GiB (grows only)")
    q.add_argument("--usb", action="append", metavar="/dev/serial/by-id/...",
                   help="guest: the USB devices of the node passed into it, by id (repeat "
                   "for more; they replace the list; --usb '' passes none)")
    _hosting_options(q, add=False)
    q = hsub.add_parser("list", help="list the site's hosts")
    _site_option(q)
    _json_option(q)
    q = hsub.add_parser(
        "destroy", help="destroy a guest abri created on its Proxmox node, then remove it "
        "from the site",
        description="Destroys the LXC container or VM of a guest abri created (its vmid "
        "carries the site's tag; any other guest is never touched), after a backup of its "
        "stacks' data when the site backs up to another machine (backup_repository "
        "sftp:...). Asks for the guest's name to be typed; --confirm NAME gives it headless. "
        "Its secrets stay in the vault until 'abri secrets purge'.")
    _site_option(q)
    q.add_argument("name")
    q.add_argument("--confirm", metavar="NAME", help="the guest's name again (no question)")
    q.add_argument("--no-backup", action="store_true", help="destroy its data without a "
                   "backup (needed when its backups would live on the guest itself)")
    q = hsub.add_parser("remove", help="remove a host from the site (the machine is not touched)")
    _site_option(q)
    q.add_argument("name")

    p = sub.add_parser("stack", help="the catalog, and stacks on hosts")
    tsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = tsub.add_parser("list", help="list the stacks in the catalog")
    _site_option(q)
    _json_option(q)
    q = tsub.add_parser("add", help="put a stack on a host")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="a stack setting (repeatable); see 'abri stack show STACK'")
    q = tsub.add_parser("set", help="change settings of a stack on a host")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q.add_argument("--set", action="append", required=True, metavar="KEY=VALUE", dest="sets")
    q = tsub.add_parser(
        "certificate", help="give a stack your own TLS certificate (kept in the host's vault)",
        description="Keep your certificate for a stack that takes one: with --cert-file and "
        "--key-file the server's certificate (its chain after it) and its unencrypted key, "
        "used by the remote-access proxy when its setting certificate is own; with "
        "--acme-root-file alone the root certificate a private ACME CA's directory is served "
        "with (certificate acme with your own CA, such as step-ca). Checked first (PEM, the "
        "key belongs to the certificate, not expired); the key is never printed.")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q.add_argument("--cert-file", type=Path, help="the certificate (PEM, chain after it)")
    q.add_argument("--key-file", type=Path, help="its private key (PEM, unencrypted)")
    q.add_argument("--acme-root-file", type=Path,
                   help="the root certificate of a private ACME CA (PEM)")
    q = tsub.add_parser("show", help="a stack's settings, ports and volumes")
    _site_option(q)
    _json_option(q)
    q.add_argument("stack")
    q = tsub.add_parser("remove", help="take a stack off a host (its data is kept)")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    _stack_user_parser(tsub)

    q = sub.add_parser(
        "upgrade", help="move stacks to newer releases, rolling back by itself on failure",
        description="Show each stack's release and the newest known (the kit's catalog, and "
        "the site's registry mirror when one is set), then upgrade host by host, stack by "
        "stack: a snapshot of the stack's data, the new image (pinned by digest when the "
        "registry gives one), and a health gate. A stack that fails the gate is rolled back "
        "to its old release on its data from before, and abri stops there. Exit codes: 0 "
        "upgraded (or nothing to do), 1 failed before anything changed, 3 rolled back, 4 the "
        "rollback failed too. Run it again to complete an interrupted upgrade.")
    _site_option(q)
    _password_options(q)
    q.add_argument("stacks", nargs="*", metavar="STACK", help="only these stacks")
    q.add_argument("--limit", metavar="HOST", help="only this host (or Ansible pattern)")
    q.add_argument("--dry-run", action="store_true", help="show from -> to and change nothing")
    q.add_argument("--to", metavar="TAG", help="this release of the one STACK named")
    q.add_argument("--patch", action="store_true", help="patch releases only (2026.11.0 -> "
                   "2026.11.1, never 2026.12.0)")
    q.add_argument("--timeout", metavar="SECONDS", type=int, help="how long the new release "
                   "may take to become healthy (default: its manifest's health timeout)")

    p = sub.add_parser("secrets", help="the site's generated secrets (kept until purged)")
    xsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    q = xsub.add_parser("purge", help="forget the secrets of a host, or of one stack on it "
                        "(only for stacks no longer on the host; the data they protect on "
                        "the machine then cannot be reached by abri any more)")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack", nargs="?")
    q = xsub.add_parser("s3", help="keep the keys of the site's S3 backup storage "
                        "(backup_repository=s3:...) in the vault of every host; never printed")
    _site_option(q)
    q.add_argument("--access-key-file", type=Path, required=True, metavar="FILE",
                   help="a file holding the access key id")
    q.add_argument("--secret-key-file", type=Path, required=True, metavar="FILE",
                   help="a file holding the secret access key")

    for name, text in (("plan", "show what apply would change (check mode with diff)"),
                       ("apply", "deploy the site onto its hosts, then verify"),
                       ("verify", "check the deployed services end to end")):
        q = sub.add_parser(name, help=text)
        _site_option(q)
        _password_options(q)
        q.add_argument("--limit", metavar="HOST", help="only this host (or Ansible pattern)")
        if name == "apply":
            q.add_argument("--no-verify", action="store_true", help="skip the checks after apply")
        if name == "verify":
            _json_option(q)

    q = sub.add_parser("backup", help="back up the user data of every stack (restic, into "
                       "each host's repository)")
    _site_option(q)
    q.add_argument("--limit", metavar="HOST", help="only this host (or Ansible pattern)")
    q.add_argument("--prune", action="store_true", help="then apply the retention "
                   "(site settings backup_keep_daily, _weekly, _monthly)")
    q.add_argument("--verify", action="store_true", help="make no backup: restore the newest "
                   "backup of each stack on trial into a scratch copy next to the live one "
                   "(no published port, an internal network of its own, removed afterwards), "
                   "start it and check it (health check, and what its manifest declares in "
                   "backup.trial); exit 1 naming each stack that failed")
    q = sub.add_parser("backups", help="list the snapshots per host and stack")
    _site_option(q)
    q.add_argument("--limit", metavar="HOST", help="only this host (or Ansible pattern)")
    _json_option(q)
    q = sub.add_parser("restore", help="put a host's data back from its latest backup (or "
                       "--snapshot ID), deploy, start and verify",
                       description="Put the user data of HOST's stacks back from its backup "
                       "repository: the latest backup, or the backup the snapshot ID belongs "
                       "to. The stacks are stopped first; data that exists on the host is "
                       "saved in a safety snapshot before it is overwritten. Then the stacks "
                       "are deployed, started and verified.")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("--snapshot", metavar="ID", help="a snapshot id from 'abri backups' "
                   "(its whole backup run is restored)")
    q.add_argument("--from", dest="from_host", metavar="OTHER_HOST",
                   help="restore from OTHER_HOST's backups (its repository must be reachable "
                   "from HOST: an SFTP repository)")
    q = sub.add_parser("migrate", help="move every stack of SOURCE to TARGET, data included",
                       description="Move every stack of SOURCE to TARGET with its data and "
                       "credentials: deploy TARGET, copy the data while SOURCE runs, stop "
                       "SOURCE's stacks, copy what changed, restore and start on TARGET, "
                       "verify there, and move the stacks in the site. SOURCE's stacks stay "
                       "stopped with their data; 'abri migrate TARGET SOURCE' moves back. "
                       "Run it again to complete an interrupted migration.")
    _site_option(q)
    q.add_argument("source")
    q.add_argument("target")
    q = sub.add_parser("import-ha-backup", help="bring a Home Assistant backup (from Home "
                       "Assistant OS, a Raspberry Pi, another install) into HOST's Home "
                       "Assistant",
                       description="Read a backup downloaded from Home Assistant (Settings > "
                       "System > Backups), show what it holds and check it (the archive, the "
                       "password, the Home Assistant version). Then, unless --dry-run: "
                       "deploy HOST, take a safety snapshot of its Home Assistant data, put "
                       "the backup's configuration and database in place (with abri's rules: "
                       "no cloud integrations, MQTT on the site's broker), keep the backup's "
                       "owner account, apply and verify. A refused backup exits 2 and "
                       "changes nothing.")
    _site_option(q)
    _password_options(q)
    q.add_argument("file", type=Path, metavar="FILE", help="the backup (.tar)")
    q.add_argument("--host", required=True, metavar="HOST", help="the host whose Home "
                   "Assistant receives it")
    q.add_argument("--password-file", type=Path, metavar="F", help="a file holding the "
                   "backup's password (its encryption key), for a protected backup")
    q.add_argument("--owner-password-file", type=Path, metavar="F", help="a file holding "
                   "the password of the backup's owner account (abri logs in with it; kept "
                   "in the site's vault)")
    q.add_argument("--no-database", action="store_true", help="leave the recorder's "
                   "history (home-assistant_v2.db) out")
    q.add_argument("--dry-run", action="store_true", help="show what the backup holds, "
                   "check it, and change nothing")
    _json_option(q)
    return parser


def _stack_user_parser(tsub) -> None:
    """abri stack user add|list|remove: device accounts on a stack that keeps accounts."""
    p = tsub.add_parser("user", help="device accounts on a stack that keeps users (the "
                        "broker: a Tasmota, a Shelly, a Zigbee2MQTT elsewhere)")
    usub = p.add_subparsers(dest="user_action", metavar="ACTION", required=True,
                            parser_class=_Parser)
    q = usub.add_parser("add", help="add a device account (applied by the next 'abri apply')",
                        description="Add a user of its own for a device or a program on "
                        "another machine. Its password is kept in the site's vault only and "
                        "never printed: give it with --password-file, or let abri generate "
                        "one (read it with 'ansible-vault view host_vars/HOST/vault.yml', key "
                        "account.NAME). By default the account may use the topics under its "
                        "own name (readwrite NAME/#).")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q.add_argument("name", help="the account's user name (letters, digits, _ . -)")
    q.add_argument("--password-file", type=Path, metavar="F", help="a file holding the "
                   "password (default: a generated one)")
    q.add_argument("--topics", action="append", default=[], metavar="'ACCESS TOPIC'",
                   help="a topic rule (repeatable): ACCESS is read, write, readwrite or deny, "
                   "e.g. 'readwrite tasmota/#' (default: readwrite NAME/#)")
    q = usub.add_parser("list", help="the users of a stack on a host (abri's own and "
                        "device accounts), with their topics")
    _site_option(q)
    _json_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q = usub.add_parser("remove", help="remove a device account and forget its password")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")
    q.add_argument("name")


def cmd_stack_user(args) -> int:
    from tui.core import accounts, ha_backup

    site = _load(args)
    if args.user_action == "list":
        rows = accounts.rows(site, args.host, args.stack)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            width = max(len(r["name"]) for r in rows) + 2
            print(f"{'USER':<{width}} {'KIND':<36} TOPICS")
            for r in rows:
                print(f"{r['name']:<{width}} {r['kind']:<36} {', '.join(r['topics'])}")
        return EXIT_OK
    if args.user_action == "remove":
        accounts.remove(site, args.host, args.stack, args.name)
        site.save()
        print(f"Removed the device account {args.name} from {args.stack} on {args.host}; the "
              "next apply takes it off the broker")
        return EXIT_OK
    password = ha_backup.read_password_file(args.password_file, "--password-file",
                                            command="stack user add")
    generated = accounts.add(site, args.host, args.stack, args.name, password, args.topics)
    site.save()
    how = ("a generated password" if generated else "the password from "
           f"{args.password_file}")
    print(f"Added the device account {args.name} to {args.stack} on {args.host}, with {how} "
          "(kept in the site's vault); 'abri apply' puts it on the broker")
    if generated:
        from tui.core import secrets

        print(f"  read it with: ansible-vault view --vault-password-file "
              f"{secrets.vault_password_file(site.site_id)} host_vars/{args.host}/vault.yml "
              f"(key account.{args.name} under {args.stack})")
    return EXIT_OK


def _parse_sets(items: list[str], where: str, example: str,
                field: str = "--set") -> dict[str, str]:
    """KEY=VALUE items as a dict; a malformed item or a key given twice is refused."""
    out: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            # never the value: it may be a secret
            problems.append(Problem(where, field, f"{item.split('=')[0]!r} is not KEY=VALUE "
                                    f"(e.g. {example})"))
            continue
        if key in out:
            problems.append(Problem(where, key, "is given twice; give it once (the values "
                                    "are not shown: one may be a secret)"))
            continue
        out[key] = value
    if problems:
        raise AbriError(problems)
    return out


def _load(args):
    from tui.core import secrets
    from tui.core.site import Site

    site = Site.load(args.site)
    warning = secrets.password_file_warning(site.site_id)
    if warning:
        print(f"abri: warning: {warning}", file=sys.stderr)
    return site


def cmd_init(args) -> int:
    from tui.core.site import Site, SiteSettings

    # the site folder, or the first of its parents that exists, must be a folder
    existing = next(p for p in (args.site, *args.site.parents) if p.exists())
    if not existing.is_dir():
        raise AbriError(Problem(str(existing), "", "is a file, not a folder; give the path "
                                "of a new or empty folder for the site"))
    settings = SiteSettings()
    problems = []
    for key, value in (("registry_mirror", args.registry_mirror),
                       ("registry_insecure", str(args.registry_insecure)),
                       ("stacks_root", args.stacks_root)):
        try:
            settings.set(key, value)
        except ValueError as exc:
            problems.append(Problem("site", key, str(exc)))
    if problems:
        raise AbriError(problems)
    site = Site.init(args.site, settings=settings)
    site.save()
    print(f"Created an empty abri site in {args.site}")
    print("Next: abri host add NAME --kind local|ssh|vps ...  then  abri stack add HOST STACK")
    return EXIT_OK


def cmd_site(args) -> int:
    from tui.core.validate import shown

    site = _load(args)
    if args.action == "set":
        sets = _parse_sets(args.assignments, "site", "abri site set "
                           "registry_mirror=registry.example.eu", field="")
        # this machine's settings (never committed: .abri/local.json)
        bundle = sets.pop("image_bundle", None)
        for key, value in sets.items():
            if key == "remote_access":  # adds the proxy stack to the vps, or takes it off
                from tui.core import remote

                remote.enable(site, value)
                continue
            try:
                site.settings.set(key, value)
            except KeyError:
                raise AbriError(Problem("site", key, "is not a site setting; valid: "
                                        + ", ".join((*site.settings.FIELDS, "image_bundle"))
                                        )) from None
            except ValueError as exc:
                raise AbriError(Problem("site", key, str(exc))) from None
        if bundle is not None:
            from tui.core import images

            images.check_image_bundle(bundle)  # refused before anything is written
        site.save()
        if bundle is not None:
            images.set_image_bundle(site, bundle)
        from tui.core import timers

        for key in (k for k in sets if k in timers.SETTINGS):
            try:
                for line in timers.apply(site, [key]):
                    print(f"abri: {line}", file=sys.stderr)
            except (ValueError, OSError) as exc:
                raise AbriError(Problem("site", key, "the setting is saved, but the timer "
                                        f"could not be written: {exc}")) from None
    from tui.core import images

    data = {k: getattr(site.settings, k) for k in site.settings.FIELDS}
    data["image_bundle"] = images.local_settings(site).get("image_bundle", "")
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:<18} {shown(value)}")
        from tui.core import remote

        for line in remote.summary(site):
            print(line)
    return EXIT_OK


def cmd_images(args) -> int:
    from tui.core import images

    site = _load(args)
    chosen = site.match_hosts(args.limit) if args.limit else None
    mirror, insecure = site.settings.registry_mirror, site.settings.registry_insecure
    if args.action == "mirror":
        if args.to is not None:
            target = images.check_registry(args.to, "--to")
            insecure = args.insecure or (target == mirror and insecure)
        elif mirror:
            target, insecure = mirror, args.insecure or insecure
        else:
            raise AbriError(Problem("images mirror", "--to", "the site has no registry_mirror; "
                                    "give --to REGISTRY, or set one first with 'abri site set "
                                    "registry_mirror=HOST:PORT'"))
        source = images.check_registry(args.source, "--from") if args.source else ""
        if not images.pins(site, chosen):
            return _nothing(args, "nothing to copy: no host has a stack yet")
        try:
            done = images.mirror(site, target, insecure, source, args.from_insecure, chosen,
                                 say=print)
        except images.RegistryError as exc:
            print(f"abri: error: images mirror: {exc}", file=sys.stderr)
            return EXIT_FAILED
        sent = [c for c in done if not c.already]
        if not sent:
            print(f"Nothing to copy: {target} holds every pinned image already ({len(done)})")
        else:
            print(f"Copied {len(sent)} image(s) to {target} "
                  f"({sum(c.bytes for c in sent) / 1e6:.1f} MB); "
                  f"{len(done) - len(sent)} were there already")
            if target != mirror:
                print(f"Point the site at it with: abri site set registry_mirror={target}"
                      + (" registry_insecure=true" if insecure else ""))
        return EXIT_OK
    # bundle
    if args.source:
        source = images.check_registry(args.source, "--from")
        insecure = args.insecure
    elif mirror:
        source, insecure = mirror, args.insecure or insecure
    else:
        raise AbriError(Problem("images bundle", "--from", "the site has no registry_mirror "
                                "to read the images from; give --from REGISTRY, or fill a "
                                "mirror first ('abri images mirror --to HOST:PORT')"))
    images.platform_of(args.platform)
    path = images.check_bundle_file(args.file)
    if not images.pins(site, chosen):
        return _nothing(args, "nothing to bundle: no host" + (f" matching {args.limit}"
                        if args.limit else "") + " has a stack yet")
    try:
        index = images.bundle(site, path, source, insecure, chosen, args.platform, say=print)
    except images.RegistryError as exc:
        print(f"abri: error: images bundle: {exc} (nothing was written)", file=sys.stderr)
        return EXIT_FAILED
    print(f"Wrote {len(index)} image(s) for {args.platform} to {path} "
          f"({path.stat().st_size / 1e6:.1f} MB)")
    print(f"Hosts without registry access load it on apply after: abri site set "
          f"image_bundle={path}")
    return EXIT_OK


def cmd_audit(args) -> int:
    from tui.core import audit

    site = _load(args)
    held = audit.mirror_check(site)  # strict with a mirror: the images it lacks
    if held and held[1]:
        print(f"abri: warning: could not check that the registry mirror holds the site's "
              f"images ({held[1]})", file=sys.stderr)
    data = audit.report(site, held[0] if held else None)
    print(json.dumps(data, indent=2) if args.json else audit.format_report(data))
    return EXIT_OK


def _hosting_options(q, add: bool) -> None:
    from tui.core.hosting import PROVIDERS

    g = q.add_argument_group("vps and hardening")
    g.add_argument("--provider", help="vps only: its hosting provider, one of "
                   + ", ".join(PROVIDERS) + (" (default other)" if add else ""))
    g.add_argument("--region", help="vps only: the provider's region (e.g. fr-par, fsn1, "
                   "de/fra, gra); checked against the provider's regions")
    g.add_argument("--hardening", choices=("on", "off"), help="the hardening profile (admin "
                   "user, sshd keys only, security upgrades, default-deny firewall); on by "
                   "default for a vps, off for other kinds")


HOSTING_OPTIONS = ("provider", "region", "hardening")


def cmd_host(args) -> int:
    site = _load(args)
    if args.action == "add" and args.kind in ("proxmox", "guest"):
        given = [o for o in HOSTING_OPTIONS if getattr(args, o) is not None]
        if given:
            raise AbriError([Problem(f"host '{args.name}'", o, f"is not taken by 'host add "
                                     f"--kind {args.kind}'" + ("; switch a guest's hardening "
                                     "on with 'abri host set NAME --hardening on' once added"
                                     if o == "hardening" else "; only a vps has it"))
                             for o in given])
        return _add_pve_host(site, args)
    if args.action == "add":
        _no_pve_options(args)
        host = site.add_host(args.name, args.kind, args.address, args.port, args.user,
                             args.key, args.parent, args.provider, args.region)
        if args.hardening is not None:
            site.set_hosting(host.name, hardening=args.hardening)
        site.save()
        print(f"Added {host.kind} host {host.name}")
    elif args.action == "set" and any(getattr(args, f) is not None
                                      for f in ("cores", "memory", "disk", "usb")):
        usb = None if args.usb is None else [d for d in args.usb if d != ""]
        host = site.set_guest(args.name, cores=args.cores, memory=args.memory, disk=args.disk,
                              usb=usb)
        if any(getattr(args, f) is not None for f in ("address", "port", "user", "key")):
            raise AbriError(Problem(f"host '{args.name}'", "", "change a guest's size apart "
                                    "from how it is reached (two 'abri host set' commands)"))
        site.save()
        g = host.guest
        print(f"Updated guest {host.name}: {g['cores']} cores, {g['memory']} MiB, "
              f"{g['disk']} GiB, usb {', '.join(g.get('usb') or []) or 'none'}; the next "
              f"apply changes it on {host.parent}")
    elif args.action == "set" and any(getattr(args, f) is not None for f in HOSTING_OPTIONS):
        host = site.set_hosting(args.name, args.hardening, args.provider, args.region)
        if any(getattr(args, f) is not None for f in ("address", "port", "user", "key")):
            host = site.set_host(args.name, args.address, args.port, args.user, args.key)
        site.save()
        where = (f", {host.vps['provider']}" + (f" {host.vps['region']}"
                                                 if host.vps.get("region") else "")
                 if host.vps else "")
        print(f"Updated host {host.name}: hardening {'on' if host.hardened else 'off'}{where}")
    elif args.action == "set":
        if all(getattr(args, f) is None for f in ("address", "port", "user", "key")):
            raise AbriError(Problem(f"host '{args.name}'", "", "nothing to change; give "
                                    "--address, --port, --user, --key, --hardening, "
                                    "--provider or --region (see 'abri host set --help')"))
        host = site.set_host(args.name, args.address, args.port, args.user, args.key)
        site.save()
        where = host.address or ("this machine" if host.kind == "local" else host.name)
        print(f"Updated host {host.name}: {host.user + '@' if host.user else ''}{where}"
              f"{':' + str(host.port) if host.port else ''}"
              f"{', key ' + host.key if host.key else ''}")
    elif args.action == "destroy":
        return _destroy_guest(site, args)
    elif args.action == "remove":
        site.remove_host(args.name)
        site.save()
        print(f"Removed host {args.name} from the site (nothing on the machine was touched)")
    else:
        rows = [{"name": h.name, "kind": h.kind, "address": h.address, "port": h.port,
                 "user": h.user, "key": h.key, "parent": h.parent,
                 "stacks": list(h.stacks), "hardening": h.hardened,
                 **({"vps": dict(h.vps)} if h.kind == "vps" else {}),
                 **({"guest": dict(h.guest)} if h.kind == "guest" else {}),
                 **({"proxmox": {k: v for k, v in h.proxmox.items() if k != "ca_pem"}}
                    if h.kind == "proxmox" else {})}
                for h in site.hosts.values()]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("No hosts yet. Add one with: abri host add NAME --kind local")
        else:
            print(f"{'NAME':<16} {'KIND':<8} {'ADDRESS':<24} STACKS")
            for r in rows:
                addr = r["address"] or ("this machine" if r["kind"] == "local" else "-")
                if r["port"]:
                    addr += f":{r['port']}"
                print(f"{r['name']:<16} {r['kind']:<8} {addr:<24} {', '.join(r['stacks']) or '-'}")
    return EXIT_OK


PVE_NODE_OPTIONS = ("api_url", "node", "token_id", "token_secret_file", "password_file",
                    "ca_fingerprint")
PVE_GUEST_OPTIONS = ("ip", "gateway", "vmid", "storage", "usb", "type")


def _no_pve_options(args) -> None:
    given = [o for o in PVE_NODE_OPTIONS + PVE_GUEST_OPTIONS if getattr(args, o) is not None]
    if given:
        raise AbriError([Problem(f"host '{args.name}'", o, f"is for proxmox and guest hosts, "
                                 f"not {args.kind}") for o in given])


def _read_secret_file(where: str, fieldname: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise AbriError(Problem(where, fieldname, f"{path} cannot be read: "
                                f"{exc.strerror or exc}")) from None
    if not text or "\n" in text:
        raise AbriError(Problem(where, fieldname, f"{path} must hold the secret on one line"))
    return text


def _forget_host_key(site, address: str | None) -> None:
    """A destroyed guest's SSH host key leaves the site's known hosts: a new guest at the
    same address has a key of its own, which SSH would refuse as changed."""
    import subprocess

    from tui.core.render import LOCAL_DIR

    known = site.path / LOCAL_DIR / "known_hosts"
    if address and known.exists():
        subprocess.run(["ssh-keygen", "-R", address, "-f", str(known)], capture_output=True,
                       stdin=subprocess.DEVNULL, check=False)
        Path(f"{known}.old").unlink(missing_ok=True)


def _destroy_guest(site, args) -> int:
    """abri host destroy GUEST: typed confirmation, a backup when it can outlive the guest,
    the container or VM destroyed on its node, the host out of the site."""
    from tui.core import backup, proxmox, runner, validate

    where = f"host '{args.name}'"
    host = site.hosts.get(args.name)
    if host is None:
        site.remove_host(args.name)  # the engine's own "not in this site" message
    if host.kind != "guest":
        raise AbriError(Problem(where, "kind", f"only a guest can be destroyed; this is "
                                f"{validate.a_kind(host.kind)} host ('abri host remove "
                                f"{args.name}' takes it out of the site)"))
    trial = site.copy()  # the site must stay valid without it (a stack wired to its broker)
    trial.remove_host(args.name)
    trial.check()
    data = backup.hosts_with_data(site, [args.name])
    off_host = bool(validate.sftp_parts(site.settings.backup_repository))
    if data and not off_host and not args.no_backup:
        raise AbriError(Problem(where, "backup", "its stacks hold user data, and the site's "
                                f"backups are kept on each host ({site.settings.backup_repository}"
                                "), so they would go with the guest. Set an off-host "
                                "repository (abri site set backup_repository=sftp:USER@HOST:"
                                "/path), or give --no-backup to destroy the data"))
    confirm = args.confirm
    if confirm is None:
        if not sys.stdin.isatty():
            raise AbriError(Problem(where, "--confirm", "type the guest's name to destroy it; "
                                    f"headless: --confirm {args.name}"))
        confirm = input(f"Destroy guest {args.name} (vmid {host.guest.get('vmid', '?')} on "
                        f"{host.parent}) and everything in it? Type its name: ").strip()
    if confirm != args.name:
        raise AbriError(Problem(where, "--confirm", f"{confirm!r} is not the guest's name; "
                                "nothing was destroyed"))
    if data and off_host and not args.no_backup:
        backup.prepare(site, [args.name])
        result = runner.run_site(site, "backup", limit=args.name,
                                 on_progress=runner.TerminalProgress())
        runner.print_recap(result)
        if not result.ok:
            print(f"abri: error: {where}: backup: the backup before destroying failed; "
                  "nothing was destroyed", file=sys.stderr)
            return EXIT_FAILED
    try:
        proxmox.destroy_guest(site, args.name,
                              say=lambda line: print(f"abri: {line}", file=sys.stderr))
    except proxmox.GuestError as exc:
        for problem in exc.problems:
            print(f"abri: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    address = host.address
    site.remove_host(args.name)
    site.save()
    _forget_host_key(site, address)
    print(f"Destroyed guest {args.name} and removed it from the site (its secrets stay in "
          f"the vault: 'abri secrets purge {args.name}' forgets them)")
    return EXIT_OK


def _add_pve_host(site, args) -> int:
    """abri host add NAME --kind proxmox|guest: every field checked before anything is
    written; a proxmox node's certificate is pinned only once its fingerprint is confirmed
    and the credentials work. The checks and the change are tui.core.proxmox's (the TUI's
    host editor uses the same); this reads the secret files and names the flags."""
    from tui.core import proxmox

    where = f"host '{args.name}'"
    problems: list[Problem] = []
    node_only = [o for o in PVE_NODE_OPTIONS if getattr(args, o) is not None]
    guest_only = [o for o in PVE_GUEST_OPTIONS if getattr(args, o) is not None]
    for o in ("address", "port", "key"):
        if getattr(args, o) not in (None, ""):
            problems.append(Problem(where, o, f"is not taken by a {args.kind} host: "
                                    + ("its address comes from --api-url" if args.kind ==
                                       "proxmox" else "abri reaches it with its own key, at "
                                       "the --ip address")))
    if args.kind == "proxmox":
        problems += [Problem(where, o, "is for a guest, not a proxmox node") for o in guest_only]
        if args.parent:
            problems.append(Problem(where, "parent", "only a guest has a parent"))
        password = token_secret = None
        if args.token_id and args.password_file:
            problems.append(Problem(where, "password_file", "goes with --user, not with "
                                    "--token-id"))
        elif args.password_file:
            password = _read_secret_file(where, "password_file", args.password_file)
        if args.user and args.token_secret_file:
            problems.append(Problem(where, "token_secret_file", "goes with --token-id"))
        elif args.token_secret_file:
            token_secret = _read_secret_file(where, "token_secret_file",
                                             args.token_secret_file)
        found, creds = proxmox.node_problems(
            site, args.name, api_url=args.api_url, node=args.node, user=args.user,
            password=password, token_id=args.token_id, token_secret=token_secret,
            ca_fingerprint=args.ca_fingerprint,
            secret_fields={"password": "password_file", "token_secret": "token_secret_file"})
        problems += [p for p in found if (p.field, p.message) not in
                     {(q.field, q.message) for q in problems}]
        if problems:
            raise AbriError(problems)
        # validated offline; now the node itself (nothing is written before this succeeds)
        host = proxmox.add_node(site, args.name, api_url=args.api_url, node=args.node,
                                creds=creds, ca_fingerprint=args.ca_fingerprint)
        site.save()
        conf = host.proxmox
        print(f"Added proxmox host {host.name} (node {conf['node']} at {conf['api_url']})")
        print(f"Pinned the CA that signed its certificate: SHA-256 {conf['ca_fingerprint']}")
        if creds.is_token:
            print("Note: an API token cannot create LXC guests for Docker (the keyctl feature "
                  "is root@pam's only); guests that exist can still be changed and started, "
                  "and VM guests created", file=sys.stderr)
        return EXIT_OK
    problems += [Problem(where, o, "is for a proxmox node, not a guest") for o in node_only]
    values = {k: getattr(args, k) for k in proxmox.GUEST_FIELDS}
    try:
        host = proxmox.add_guest(site, args.name, args.parent, values, usb=args.usb,
                                 user=args.user)
    except AbriError as exc:
        raise AbriError(problems + exc.problems) from None
    if problems:
        raise AbriError(problems)
    site.save()
    guest = host.guest
    print(f"Added guest {host.name} ({'VM' if guest.get('type') == 'vm' else 'LXC'}) on "
          f"{host.parent}: {guest['cores']} cores, "
          f"{guest['memory']} MiB, {guest['disk']} GiB, {guest['bridge']}, ip {guest['ip']}"
          + (f", vmid {guest['vmid']}" if guest.get("vmid") else "")
          + (f", usb {', '.join(guest['usb'])}" if guest.get("usb") else "")
          + "; 'abri apply' creates it")
    return EXIT_OK


EXPOSURE = {"lan": "reachable on the LAN", "local": "this host only",
            "public": "open to the internet"}


def _stack_data(s) -> dict:
    defaults = s.defaults()
    return {
        "name": s.name, "title": s.title, "description": s.description,
        "image": s.image_ref(), "provides": list(s.provides), "uses": list(s.uses),
        "wants": list(s.wants),
        "settings": [{"key": x.key, "type": x.type, "default": None if x.secret else x.default,
                      "help": x.help, "secret": x.secret, "valid": x.describe_valid(),
                      "choices": list(x.choices)} for x in s.settings],
        "ports": [{"name": p.name, "setting": p.setting, "number": defaults.get(p.setting),
                   "protocol": p.protocol, "purpose": p.purpose, "exposure": p.exposure,
                   "when": p.when} for p in s.ports],
        "volumes": [{"name": v.name, "path": v.path, "user_data": v.user_data}
                    for v in s.volumes],
    }


def _print_stack(s) -> None:
    import shutil
    import textwrap

    from tui.core.validate import shown

    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    data = _stack_data(s)
    print(f"{s.title} ({s.name})")
    print(textwrap.fill(s.description, width, initial_indent="  ", subsequent_indent="  "))
    print(f"image:    {data['image']}")
    if s.uses:
        print(f"needs:    {', '.join(s.uses)} (a stack that provides it, on this or another host)")
    if s.wants:
        print(f"uses:     {', '.join(s.wants)} when the site has it (else goes without)")
    if s.provides:
        print(f"provides: {', '.join(s.provides)}")
    print(f"\nsettings (abri stack add HOST {s.name} --set KEY=VALUE):")
    for x in s.settings:
        default = "generated when not given" if x.secret else f"default {shown(x.default)}"
        valid = x.describe_valid()
        print(f"  {x.key:<16} {x.type:<9} {default}" + (f"; {valid}" if x.choices else ""))
        text = x.help
        said = valid.removeprefix("an ").removeprefix("a ").lower()
        if valid != "text" and not x.choices and said not in x.help.lower():  # not said twice
            text += f" Valid: {valid}."
        print(textwrap.fill(text, width, initial_indent=" " * 19, subsequent_indent=" " * 19))
    print("\nports (the defaults; each follows its setting):")
    for p in data["ports"]:
        when = f", only when {p['when']} is true" if p["when"] else ""
        print(f"  {p['name']:<8} {str(p['number']) + '/' + p['protocol']:<10} "
              f"{EXPOSURE.get(p['exposure'], p['exposure']):<22} setting {p['setting']}{when}")
        print(textwrap.fill(p["purpose"], width, initial_indent=" " * 11,
                            subsequent_indent=" " * 11))
    if not data["ports"]:
        print("  none")
    print("\nvolumes (kept on the host when the stack is removed):")
    path_width = max((len(v.path) for v in s.volumes), default=0)
    for v in s.volumes:
        what = "user data (backed up, moved with the site)" if v.user_data else \
            "no user data (abri writes it again)"
        print(f"  {v.path:<{path_width}}  {what}")
    if not s.volumes:
        print("  none")


def cmd_stack(args) -> int:
    from tui.core.catalog import Catalog

    if args.action in ("list", "show"):
        catalog = Catalog.load()
        if args.action == "list":
            rows = [{"name": s.name, "title": s.title, "description": s.description,
                     "image": s.image_ref(), "provides": list(s.provides),
                     "uses": list(s.uses)} for s in catalog]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    needs = f" (needs {', '.join(r['uses'])})" if r["uses"] else ""
                    print(f"{r['name']:<16} {r['title']}{needs}")
            return EXIT_OK
        if args.stack not in catalog:
            raise AbriError(Problem("stack", "name", f"{args.stack!r} is not in the catalog; "
                                    "valid: " + ", ".join(catalog.names())))
        if args.json:
            print(json.dumps(_stack_data(catalog[args.stack]), indent=2))
        else:
            _print_stack(catalog[args.stack])
        return EXIT_OK
    if args.action == "user":
        return cmd_stack_user(args)
    site = _load(args)
    where = f"host '{args.host}', stack '{args.stack}'"
    example = f"--set {_example_setting(site, args.stack)}"
    if args.action == "certificate":
        return _stack_certificate(site, args, where)
    if args.action == "add":
        sets = _parse_sets(args.sets, where, example)
        host = site.hosts.get(args.host)
        if host is not None and args.stack in host.stacks:
            raise AbriError(Problem(where, "", f"{args.stack} is already on {args.host}; "
                                    "change its settings with 'abri stack set "
                                    f"{args.host} {args.stack} --set KEY=VALUE'"))
        site.add_stack(args.host, args.stack, sets)
        site.save()
        print(f"Added {args.stack} to {args.host}")
    elif args.action == "set":
        site.set_stack(args.host, args.stack, _parse_sets(args.sets, where, example))
        site.save()
        print(f"Updated {args.stack} on {args.host}")
    else:
        site.remove_stack(args.host, args.stack)
        site.save()
        print(f"Removed {args.stack} from {args.host}; the next apply stops it, its data kept")
    return EXIT_OK


def _stack_certificate(site, args, where: str) -> int:
    from tui.core import remote

    def text(path: Path, option: str) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AbriError(Problem(where, option, f"{path} cannot be read "
                                    f"({exc.__class__.__name__}); give a PEM file")) from None

    if args.acme_root_file and not (args.cert_file or args.key_file):
        cert, key, option = text(args.acme_root_file, "--acme-root-file"), None, \
            "--acme-root-file"
    elif args.cert_file and args.key_file and not args.acme_root_file:
        cert, key, option = (text(args.cert_file, "--cert-file"),
                             text(args.key_file, "--key-file"), "--cert-file")
    else:
        raise AbriError(Problem(where, "--cert-file", "give --cert-file with --key-file (your "
                                "certificate), or --acme-root-file alone (a private ACME "
                                "CA's root)"))
    try:
        cert_pem, key_pem = remote.read_user_certificate(cert, key)
    except ValueError as exc:
        field = "--key-file" if str(exc).startswith("the key") else option
        raise AbriError(Problem(where, field, str(exc))) from None
    fingerprint = remote.set_user_certificate(site, args.host, args.stack, cert_pem, key_pem)
    site.save()
    names = ", ".join(remote.certificate_names(cert_pem)) or "no DNS name"
    print(f"Kept the certificate for {args.stack} on {args.host} in its vault ({names}; "
          f"SHA-256 fingerprint {fingerprint})")
    return EXIT_OK


def _example_setting(site, stack_name: str) -> str:
    """KEY=VALUE for a hint: the stack's first plain setting with its default."""
    from tui.core.validate import shown

    if stack_name in site.catalog:
        for s in site.catalog[stack_name].settings:
            if not s.secret and s.default not in (None, ""):
                return f"{s.key}={shown(s.default)}"
    return "KEY=VALUE"


def _nothing(args, message: str) -> int:
    if getattr(args, "json", False):
        print("[]")
        print(message, file=sys.stderr)
    else:
        print(message)
    return EXIT_OK


def cmd_run(args) -> int:
    from tui.core import runner
    from tui.core.inventory import TARGET_KINDS

    site = _load(args)
    verb = "verify" if args.command == "verify" else "deploy"
    if not site.hosts:
        return _nothing(args, f"nothing to {verb}: this site has no hosts yet; add one with "
                        "'abri host add NAME --kind local' (this machine) or 'abri host add "
                        "NAME --kind ssh --address ADDRESS', then 'abri stack add NAME STACK'")
    chosen = site.match_hosts(args.limit) if args.limit else list(site.hosts)
    if not any(site.hosts[name].stacks for name in chosen):
        targets = [n for n in chosen if site.hosts[n].kind in TARGET_KINDS] or ["HOST"]
        hint = (f"add one with 'abri stack add {targets[0]} STACK' "
                "('abri stack list' shows the catalog)")
        if args.limit:
            they = "it has" if len(chosen) == 1 else "they have"
            return _nothing(args, f"nothing to {verb} on {', '.join(chosen)}: {they} no stack "
                            f"yet; {hint}")
        return _nothing(args, f"nothing to {verb}: no host has a stack yet; {hint}")
    # the hosts by name: what Ansible selects is exactly what was checked here
    limit = ",".join(chosen) if args.limit else None
    if args.command == "verify":
        return runner.verify_cli(site, limit=limit, as_json=args.json)
    mode = "plan" if args.command == "plan" else "apply"
    if mode == "apply":
        _no_unfinished_upgrade(site, "apply")
    rc = runner.run_cli(site, mode, limit=limit,
                        verify=(mode == "apply" and not args.no_verify))
    if mode == "apply" and rc == EXIT_OK:
        from tui.core import remote

        for line in remote.summary(site):  # where it answers, the certificate to compare
            print(line)
    return rc


def _no_unfinished_upgrade(site, command: str) -> None:
    """A command that deploys waits for an interrupted upgrade to end (on the new release
    or back on the old one): it would deploy the half-made state."""
    from tui.core import upgrade

    pending = upgrade.unfinished(site)
    if pending:
        raise AbriError(Problem(command, "upgrade", pending))


def cmd_upgrade(args) -> int:
    from tui.core import upgrade

    site = _load(args)
    if args.timeout is not None and args.timeout < 10:
        raise AbriError(Problem("upgrade", "--timeout", f"{args.timeout} is too short for a "
                                "service to start; give 10 seconds or more"))
    chosen = site.match_hosts(args.limit) if args.limit else list(site.hosts)
    moves, notes = upgrade.plan(site, chosen, args.stacks, to=args.to, patch_only=args.patch)
    for note in notes:
        print(f"abri: {note}", file=sys.stderr)
    pending = upgrade.unfinished(site)
    if pending:
        print(f"abri: {pending}", file=sys.stderr)
    print(upgrade.format_plan(moves))
    if args.dry_run:
        return EXIT_OK
    if not moves and not pending:
        return EXIT_OK
    from tui.core import images

    bundle = images.local_settings(site).get("image_bundle")
    if bundle:  # refused before the snapshot: the new release could not reach the hosts
        raise AbriError(Problem("upgrade", "image_bundle", f"this machine deploys the site's "
                                f"images from the bundle {bundle}, which holds the pinned "
                                "releases only; an upgrade pulls the new release from the "
                                "registry mirror: clear it first ('abri site set "
                                "image_bundle='), or upgrade where the hosts reach the mirror"))
    return upgrade.run(site, moves, timeout=args.timeout)


def cmd_secrets(args) -> int:
    site = _load(args)
    if args.action == "s3":
        from tui.core import backup
        from tui.core.ha_backup import read_password_file

        keys = [read_password_file(f, option, "secrets s3") for f, option in (
            (args.access_key_file, "--access-key-file"),
            (args.secret_key_file, "--secret-key-file"))]
        changed = backup.set_s3_keys(site, *keys)
        print(f"The S3 keys are in the vault of {', '.join(changed)}" if changed
              else "The S3 keys were already in the vault of every host")
        if not backup.uses_s3(site):
            print("(the site's backup_repository is not S3 yet: abri site set "
                  "backup_repository=s3:PROVIDER:REGION/BUCKET)")
        return EXIT_OK
    names = site.purge_secrets(args.host, args.stack)
    site.save()
    print(f"Purged the secrets of {', '.join(names)} on {args.host}")
    return EXIT_OK


def _backup_targets(site, limit: str | None) -> list[str]:
    from tui.core import backup
    from tui.core.inventory import TARGET_KINDS

    chosen = site.match_hosts(limit) if limit else list(site.hosts)
    return backup.hosts_with_data(site, [n for n in chosen
                                         if site.hosts[n].kind in TARGET_KINDS])


def cmd_backup(args) -> int:
    from tui.core import backup, runner, transfers

    site = _load(args)
    targets = _backup_targets(site, args.limit)
    if not targets:
        verb = "verify" if args.verify else "back up"
        return _nothing(args, f"nothing to {verb}: no host" + (f" matching {args.limit}"
                        if args.limit else "") + " has a stack with user data")
    if args.verify:
        if args.prune:
            raise AbriError(Problem("backup", "--verify", "makes no backup; give --prune "
                                    "without it"))
        return _backup_verify(site, targets)
    backup.prepare(site, targets)
    result = runner.run_site(site, "backup", limit=",".join(targets),
                             on_progress=runner.TerminalProgress(),
                             on_transfer=transfers.TerminalTransfers(),
                             extra_vars={"abri_backup_prune": True} if args.prune else None)
    runner.print_recap(result)
    made = backup.made_rows(result)
    if made:
        print("\nSnapshots made:")
        print(backup.format_made(made))
    return EXIT_OK if result.ok else EXIT_FAILED


def _backup_verify(site, targets: list[str]) -> int:
    """abri backup --verify: a trial restore of every stack with user data on targets."""
    from tui.core import backup, runner

    never = [n for n in targets if not backup.has_password(site, n)]
    for name in never:
        print(f"{name}: no backup yet, nothing to verify ('abri backup --limit {name}' makes "
              "one)", file=sys.stderr)
    targets = [n for n in targets if n not in never]
    rows: list[dict] = []
    ok = not never
    if targets:
        backup.prepare(site, targets)
        result = runner.run_site(site, "backup", limit=",".join(targets),
                                 on_progress=runner.TerminalProgress(),
                                 extra_vars={"abri_backup_action": "trial"})
        rows = backup.trial_rows(result)
        backup.record_trials(site, rows)
        tried = {r["host"] for r in rows}
        if any(n not in tried for n in targets):  # failed before any trial: say why
            runner.print_recap(result)
        ok = ok and result.ok and all(r["ok"] for r in rows) and tried >= set(targets)
    if rows:
        print("\nTrial restores:")
        print(backup.format_trials(rows))
    for r in rows:
        if not r["ok"]:
            print(f"abri: trial restore failed: {r['host']} {r['stack']}: {r['reason']}",
                  file=sys.stderr)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_backups(args) -> int:
    from tui.core import backup, runner

    site = _load(args)
    targets = _backup_targets(site, args.limit)
    never = [n for n in targets if not backup.has_password(site, n)]
    targets = [n for n in targets if n not in never]
    for name in never:
        print(f"{name}: no backup yet ('abri backup --limit {name}' makes one)",
              file=sys.stderr)
    rows: list[dict] = []
    if targets:
        backup.prepare_access(site, targets)
        result = runner.run_site(site, "backup", limit=",".join(targets),
                                 extra_vars={"abri_backup_action": "snapshots"})
        if not result.ok:
            runner.print_recap(result, stream=sys.stderr)
            return EXIT_FAILED
        rows = backup.with_proven(site, backup.snapshot_rows(result))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(backup.format_snapshots(rows))
        if targets:
            print("\n" + backup.format_proven(site, targets))
    return EXIT_OK


def cmd_restore(args) -> int:
    from tui.core import backup, runner, transfers
    from tui.core.inventory import TARGET_KINDS

    site = _load(args)
    _no_unfinished_upgrade(site, "restore")
    where = f"host '{args.host}'"
    host = site.hosts.get(args.host)
    if host is None:
        raise AbriError(Problem(where, "name", "is not in this site; 'abri host list' shows "
                                "its hosts"))
    if host.kind not in TARGET_KINDS or not backup.hosts_with_data(site, [host.name]):
        raise AbriError(Problem(where, "stacks", "has no stack with user data to restore"))
    extra: dict = {}
    other = args.from_host or host.name
    if other != host.name:
        extra["abri_backup_source"] = backup.source_of(site, host.name, other)
    if not backup.has_password(site, other):
        raise AbriError(Problem(f"host '{other}'", "backup", "no backup of it is known to "
                                "this site (the repository password comes with the first "
                                "'abri backup')"))
    if args.snapshot:
        extra["abri_backup_snapshot"] = backup.check_snapshot_id(args.snapshot)
    backup.prepare(site, [host.name])
    result = runner.run_site(site, "restore", limit=host.name,
                             on_progress=runner.TerminalProgress(),
                             on_transfer=transfers.TerminalTransfers(), extra_vars=extra or None)
    runner.print_recap(result)
    if not result.ok:
        return EXIT_FAILED
    return runner.verify_cli(site, hosts=[host.name])


def cmd_migrate(args) -> int:
    from tui.core import migrate

    site = _load(args)
    _no_unfinished_upgrade(site, "migrate")
    return migrate.run(site, args.source, args.target)


def cmd_import_ha_backup(args) -> int:
    from tui.core import ha_backup, ha_import

    site = _load(args)
    password = ha_backup.read_password_file(args.password_file)
    owner = ha_backup.read_password_file(args.owner_password_file, "--owner-password-file")
    checked = ha_import.check(site, args.file.expanduser(), args.host, password, owner,
                              dry_run=args.dry_run)
    if args.json:
        print(json.dumps(checked.backup.summary(), indent=2))
    else:
        print(ha_import.describe(checked))
    if args.dry_run:
        print(f"\nThe backup can be imported into {checked.stack} on {args.host} (dry run: "
              "nothing changed)", file=sys.stderr if args.json else sys.stdout)
        return EXIT_OK
    return ha_import.run(site, checked, args.host, keep_database=not args.no_database)


def open_tui(site_dir: Path) -> int:
    from tui.app.app import make_app

    app = make_app(site_dir)
    app.run()
    return app.return_code or EXIT_OK


COMMANDS = {"init": cmd_init, "site": cmd_site, "audit": cmd_audit, "images": cmd_images,
            "host": cmd_host,
            "stack": cmd_stack,
            "plan": cmd_run, "apply": cmd_run, "verify": cmd_run, "upgrade": cmd_upgrade,
            "secrets": cmd_secrets, "backup": cmd_backup, "backups": cmd_backups,
            "restore": cmd_restore, "migrate": cmd_migrate,
            "import-ha-backup": cmd_import_ha_backup}


def _stdout_gone() -> int:
    """The reader of our output went away: say nothing more (there is no one to say it to),
    and keep Python's final flush from complaining about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass
    return EXIT_PIPE


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            code = _main(argv)
        except SystemExit:  # argparse's --help, --version and usage errors
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # a closed pipe shows here, not in Python's exit handler
        return code
    except BrokenPipeError:
        return _stdout_gone()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Opening the installer (no command) must be quick: the top-level options are parsed
    first, and the whole command tree is built only when something is left over or help is
    asked for."""
    given = sys.argv[1:] if argv is None else argv
    if not {"-h", "--help"} & set(given):
        args, rest = build_parser(commands=False).parse_known_args(given)
        if not rest:
            return args
    return build_parser().parse_args(given)


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
    # one absolute path for every command: Ansible and the generated files need it, and a
    # relative --site must mean the folder it meant where abri was started
    args.site = Path(os.path.abspath(os.path.expanduser(args.site)))
    for option, variable in (("vault_password_file", "ABRI_VAULT_PASSWORD_FILE"),
                             ("become_password_file", "ABRI_BECOME_PASSWORD_FILE")):
        given = getattr(args, option, None)
        if given is not None:
            if not given.expanduser().is_file():
                print(f"abri: error: --{option.replace('_', '-')}: {given} is not a file; give "
                      "the path of a file holding the password", file=sys.stderr)
                return EXIT_INVALID
            os.environ[variable] = str(given.expanduser().resolve())
    try:
        if args.command is None:
            return open_tui(args.site)
        return COMMANDS[args.command](args)
    except AbriError as exc:
        for problem in exc.problems:
            print(f"abri: error: {problem}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("abri: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"abri: error:{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if os.environ.get("ABRI_DEBUG"):
            raise
        print(f"abri: internal error: {type(exc).__name__}: {exc} "
              "(set ABRI_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
