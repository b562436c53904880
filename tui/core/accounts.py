"""Device accounts: the users a site adds to a stack that keeps accounts (manifest:
``accounts:``), besides abri's own (the stack's admin and one per client stack).

A Tasmota plug, a Shelly relay or a Zigbee2MQTT on another machine logs in to the broker with
a user of its own. Such an account lives in the site: its name and its topic rules in
host_vars/<host>/abri.yml (``abri_accounts: {<stack>: {<name>: {acl: [...]}}}``), its password
in the host's vault under the stack, key ``account.<name>`` (never in plaintext, never
printed). The resolved state renders it into the stack's password and ACL files by the same
path as abri's own users; applies keep it, and only ``abri stack user remove`` takes it away
(its password too).

Topic rules are ACL lines without the ``topic`` keyword: ``ACCESS TOPIC`` with ACCESS one of
read, write, readwrite, deny. By default a device account may use the topics under its own
name: ``readwrite <name>/#``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

#: what a device account's name may be: a letter or digit first, then letters, digits and
#: _ . - (no ':' which separates the password file's fields, no spaces, no MQTT wildcards)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NAME_VALID = ("1 to 64 characters: letters, digits, '_', '.' or '-', starting with a letter "
              "or digit")
ACCESS = ("read", "write", "readwrite", "deny")
MAX_PASSWORD = 256


def secret_key(name: str) -> str:
    """The vault key of a device account's password (under the stack's secrets)."""
    return f"account.{name}"


def default_acl(name: str) -> list[str]:
    return [f"readwrite {name}/#"]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{name!r} is not a valid account name; valid: {NAME_VALID}")
    return name


def check_acl_line(line: str) -> str:
    """One topic rule, normalised to 'ACCESS TOPIC'; ValueError says what is valid."""
    words = str(line).split()
    if len(words) == 1 and words[0] not in ACCESS:
        words = ["readwrite", words[0]]
    if len(words) != 2 or words[0] not in ACCESS:
        raise ValueError(f"{line!r} is not a topic rule; give ACCESS TOPIC with ACCESS one of "
                         f"{', '.join(ACCESS)} (e.g. 'readwrite tasmota/#')")
    access, topic = words
    if any(ord(c) < 32 or ord(c) == 127 for c in topic) or len(topic) > 512:
        raise ValueError(f"{line!r}: the topic holds control characters or is too long")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{line!r}: '#' may only be the whole last level of a topic "
                             "(e.g. tasmota/#)")
        if "+" in level and level != "+":
            raise ValueError(f"{line!r}: '+' must be a whole level of a topic (e.g. "
                             "shellies/+/relay/0)")
    return f"{access} {topic}"


def check_password(password: str) -> str:
    if not password:
        raise ValueError("is empty; give a file holding the password")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"is longer than {MAX_PASSWORD} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValueError("holds a line break or another control character; give the "
                         "password alone on one line")
    return password


def _where(host: str, stack: str) -> str:
    return f"host '{host}', stack '{stack}'"


def keeper(site: Site, host: str, stack: str) -> dict[str, Any]:
    """The manifest's accounts block of a stack that is on host; AbriError otherwise."""
    where = _where(host, stack)
    if host not in site.hosts:
        raise AbriError(Problem(f"host '{host}'", "name", "is not in this site; hosts: "
                                + (", ".join(site.hosts) or "none yet")))
    if stack not in site.catalog:
        raise AbriError(Problem(where, "stack", f"{stack!r} is not in the catalog; valid: "
                                + ", ".join(site.catalog.names())))
    accounts = site.catalog[stack].accounts
    if not accounts:
        keepers = [s.name for s in site.catalog if s.accounts]
        raise AbriError(Problem(where, "stack", f"{stack} keeps no user accounts; stacks "
                                "that do: " + (", ".join(keepers) or "none")))
    if stack not in site.hosts[host].stacks:
        raise AbriError(Problem(where, "stack", f"{stack} is not on {host}; add it with "
                                f"'abri stack add {host} {stack}' first"))
    return accounts


def own_users(site: Site, host: str, stack: str) -> dict[str, str]:
    """abri's own users of the stack on host: name -> what it is (the admin, a client)."""
    from tui.core import resolve

    accounts = site.catalog[stack].accounts or {}
    out = {accounts["admin_user"]: "abri's admin"} if accounts else {}
    links, _ = resolve.bindings(site)
    for b in links:
        if (b.provider_host, b.provider, b.capability) == (host, stack,
                                                           accounts.get("capability")):
            out[b.username] = f"client stack {b.consumer} on {b.consumer_host}"
    return out


def device_accounts(site: Site, host: str, stack: str) -> dict[str, dict[str, Any]]:
    return site.hosts[host].accounts.get(stack, {})


def add(site: Site, host: str, stack: str, name: str, password: str | None = None,
        topics: list[str] | None = None, replace: bool = False) -> bool:
    """Add a device account (the site is saved by the caller). password None: generated.
    Returns whether a password was generated. Refuses a bad name, a clash with abri's own
    users or an account that exists (unless replace)."""
    from tui.core import secrets as vault

    keeper(site, host, stack)
    where = _where(host, stack)
    problems: list[Problem] = []
    try:
        check_name(name)
    except ValueError as exc:
        raise AbriError(Problem(where, "name", str(exc))) from None
    own = own_users(site, host, stack)
    if name in own:
        raise AbriError(Problem(where, "name", f"{name!r} is one of abri's own users of "
                                f"{stack} ({own[name]}); choose another name"))
    if name in device_accounts(site, host, stack) and not replace:
        raise AbriError(Problem(where, "name", f"{name!r} is already a device account "
                                f"here; remove it first ('abri stack user remove {host} "
                                f"{stack} {name}')"))
    rules: list[str] = []
    for line in topics or []:
        try:
            rules.append(check_acl_line(line))
        except ValueError as exc:
            problems.append(Problem(where, "--topics", str(exc)))
    if password is not None:
        try:
            check_password(password)
        except ValueError as exc:
            problems.append(Problem(where, "--password-file", str(exc)))
    if problems:
        raise AbriError(problems)
    generated = password is None
    site.hosts[host].accounts.setdefault(stack, {})[name] = {
        "acl": rules or default_acl(name)}
    site.secrets.setdefault(host, {}).setdefault(stack, {})[secret_key(name)] = (
        vault.generate() if generated else password)
    return generated


def remove(site: Site, host: str, stack: str, name: str) -> None:
    """Remove a device account and forget its password (at the site's next save)."""
    keeper(site, host, stack)
    mine = device_accounts(site, host, stack)
    if name not in mine:
        own = own_users(site, host, stack)
        why = (f"{name!r} is one of abri's own users ({own[name]}), which abri keeps"
               if name in own else f"{name!r} is not a device account here")
        raise AbriError(Problem(_where(host, stack), "name", f"{why}; device accounts: "
                                + (", ".join(sorted(mine)) or "none")))
    del mine[name]
    if not mine:
        del site.hosts[host].accounts[stack]
    site.forget_secret(host, stack, secret_key(name))


def rows(site: Site, host: str, stack: str) -> list[dict[str, Any]]:
    """Every user of the stack on host, abri's own first: name, kind, topics (no secret)."""
    from tui.core import resolve

    accounts = keeper(site, host, stack)
    out: list[dict[str, Any]] = [{"name": accounts["admin_user"], "kind": "abri (admin)",
                                  "topics": ["readwrite #", "read $SYS/#"]}]
    links, _ = resolve.bindings(site)
    for b in sorted(links, key=lambda b: b.username):
        if (b.provider_host, b.provider, b.capability) == (host, stack, accounts["capability"]):
            lines = site.catalog[b.consumer].acl.get(b.capability) or ("readwrite {user}/#",)
            out.append({"name": b.username, "kind": f"abri (client {b.consumer} on "
                        f"{b.consumer_host})",
                        "topics": [x.replace("{user}", b.username) for x in lines]})
    for name, spec in sorted(device_accounts(site, host, stack).items()):
        out.append({"name": name, "kind": "device", "topics": list(spec.get("acl") or ())})
    return out


def problems(site: Site) -> list[Problem]:
    """Device accounts that cannot be kept: a bad name or rule in the site's files, or a name
    that is now one of abri's own users (a client stack added since)."""
    out: list[Problem] = []
    for host in site.hosts.values():
        for stack, users in host.accounts.items():
            where = f"host_vars/{host.name}/abri.yml"
            if stack not in site.catalog or not site.catalog[stack].accounts:
                out.append(Problem(where, f"abri_accounts.{stack}", "is not a stack that "
                                   "keeps user accounts"))
                continue
            own = own_users(site, host.name, stack) if stack in host.stacks else {}
            for name, spec in users.items():
                field = f"abri_accounts.{stack}.{name}"
                try:
                    check_name(name)
                    for line in spec.get("acl") or ():
                        check_acl_line(line)
                except ValueError as exc:
                    out.append(Problem(where, field, str(exc)))
                    continue
                if name in own:
                    out.append(Problem(f"host '{host.name}', stack '{stack}'", "accounts",
                                       f"the device account {name!r} has the name of one of "
                                       f"abri's own users ({own[name]}); remove the device "
                                       f"account ('abri stack user remove {host.name} {stack} "
                                       f"{name}') and add it under another name, or keep the "
                                       "other stack off"))
    return out


def parse(raw: Any, where: str) -> tuple[dict[str, dict[str, dict[str, Any]]], list[Problem]]:
    """abri_accounts as read from host_vars: stack -> name -> {acl: [lines]}."""
    if not raw:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [Problem(where, "abri_accounts", "must map stacks to their device "
                            "accounts")]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    bad: list[Problem] = []
    for stack, users in raw.items():
        if not isinstance(users, dict):
            bad.append(Problem(where, f"abri_accounts.{stack}", "must map account names to "
                               "{acl: [rules]}"))
            continue
        for name, spec in users.items():
            acl = (spec or {}).get("acl") if isinstance(spec, dict) else None
            if acl is None:
                acl = default_acl(str(name))
            if not isinstance(acl, list):
                bad.append(Problem(where, f"abri_accounts.{stack}.{name}.acl", "must be a list "
                                   "of topic rules"))
                continue
            out.setdefault(str(stack), {})[str(name)] = {"acl": [str(x) for x in acl]}
    return out, bad
