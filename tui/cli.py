"""`abri`: with no arguments opens the installer; subcommands run the same engine headless.

Exit status: 0 success, 1 a run or check failed, 2 invalid input (nothing on disk changed).
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


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="abri", description="Sovereign smart home: Home Assistant, a secured "
                     "Mosquitto and friends on your own machines, deployed with Ansible. "
                     "Without a command, abri opens the installer.")
    parser.add_argument("--version", action="version", version=f"abri {__version__}")
    _site_option(parser, top=True)
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
                        "stacks_root")
    _site_option(q)
    q.add_argument("assignments", nargs="+", metavar="KEY=VALUE")

    p = sub.add_parser("host", help="add, list or remove hosts")
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
    q = hsub.add_parser("list", help="list the site's hosts")
    _site_option(q)
    _json_option(q)
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
    q = tsub.add_parser("show", help="a stack's settings, ports and volumes")
    _site_option(q)
    _json_option(q)
    q.add_argument("stack")
    q = tsub.add_parser("remove", help="take a stack off a host (its data is kept)")
    _site_option(q)
    q.add_argument("host")
    q.add_argument("stack")

    for name, text in (("plan", "show what apply would change (check mode with diff)"),
                       ("apply", "deploy the site onto its hosts, then verify"),
                       ("verify", "check the deployed services end to end")):
        q = sub.add_parser(name, help=text)
        _site_option(q)
        q.add_argument("--limit", metavar="HOST", help="only this host (or Ansible pattern)")
        if name == "apply":
            q.add_argument("--no-verify", action="store_true", help="skip the checks after apply")
        if name == "verify":
            _json_option(q)
    return parser


def _parse_sets(items: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(where, "--set", f"{item.split('=')[0]!r} is not KEY=VALUE "
                                    "(e.g. --set port=1884)"))
            continue
        out[key.strip()] = value
    if problems:
        raise AbriError(problems)
    return out


def _load(args):
    from tui.core.site import Site

    return Site.load(args.site)


def cmd_init(args) -> int:
    from tui.core.site import Site, SiteSettings

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
    site = _load(args)
    if args.action == "set":
        for key, value in _parse_sets(args.assignments, "site").items():
            try:
                site.settings.set(key, value)
            except KeyError:
                raise AbriError(Problem("site", key, "is not a site setting; valid: "
                                        + ", ".join(site.settings.FIELDS))) from None
            except ValueError as exc:
                raise AbriError(Problem("site", key, str(exc))) from None
        site.save()
    data = {k: getattr(site.settings, k) for k in site.settings.FIELDS}
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key:<18} {value}")
    return EXIT_OK


def cmd_host(args) -> int:
    site = _load(args)
    if args.action == "add":
        host = site.add_host(args.name, args.kind, args.address, args.port, args.user,
                             args.key, args.parent)
        site.save()
        print(f"Added {host.kind} host {host.name}")
    elif args.action == "remove":
        site.remove_host(args.name)
        site.save()
        print(f"Removed host {args.name} from the site (nothing on the machine was touched)")
    else:
        rows = [{"name": h.name, "kind": h.kind, "address": h.address, "port": h.port,
                 "user": h.user, "key": h.key, "parent": h.parent,
                 "stacks": list(h.stacks)} for h in site.hosts.values()]
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
        s = catalog[args.stack]
        if args.json:
            print(json.dumps({"name": s.name, "title": s.title, "image": s.image_ref(),
                              "settings": [{"key": x.key, "type": x.type, "default": x.default,
                                            "help": x.help, "secret": x.secret}
                                           for x in s.settings]}, indent=2))
            return EXIT_OK
        print(f"{s.title} ({s.name}): {s.description}\nimage: {s.image_ref()}\nsettings:")
        for x in s.settings:
            default = "(generated secret)" if x.secret else repr(x.default)
            print(f"  {x.key:<16} {x.type:<7} default {default}: {x.help}")
        return EXIT_OK
    site = _load(args)
    where = f"host '{args.host}', stack '{args.stack}'"
    if args.action == "add":
        site.add_stack(args.host, args.stack, _parse_sets(args.sets, where))
        site.save()
        print(f"Added {args.stack} to {args.host}")
    elif args.action == "set":
        site.set_stack(args.host, args.stack, _parse_sets(args.sets, where))
        site.save()
        print(f"Updated {args.stack} on {args.host}")
    else:
        site.remove_stack(args.host, args.stack)
        site.save()
        print(f"Removed {args.stack} from {args.host}; the next apply stops it, its data kept")
    return EXIT_OK


def cmd_run(args) -> int:
    from tui.core import runner

    site = _load(args)
    if args.command == "verify":
        return runner.verify_cli(site, limit=args.limit, as_json=args.json)
    mode = "plan" if args.command == "plan" else "apply"
    return runner.run_cli(site, mode, limit=args.limit,
                          verify=(mode == "apply" and not args.no_verify))


def open_tui(site_dir: Path) -> int:
    from tui.app.app import make_app

    app = make_app(site_dir)
    app.run()
    return app.return_code or EXIT_OK


COMMANDS = {"init": cmd_init, "site": cmd_site, "host": cmd_host, "stack": cmd_stack,
            "plan": cmd_run, "apply": cmd_run, "verify": cmd_run}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
