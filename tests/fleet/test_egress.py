"""What a deployed host really asks for outside the home, measured, against what `abri audit`
says it reaches (issue 14).

A Recorder (tests/fleet/harness.py) sits on the fleet network: dnsmasq answers every DNS
question itself with NXDOMAIN (it never forwards one) and logs it, and nftables rules in the
watched host's network namespace count every new outbound connection of the host and of its
containers, refusing all but the recorder's DNS and the test registry. The host's resolver
points at the recorder (Home Assistant's host networking uses it too), and so does the nested
engine's daemon.json (`dns`, through the kit's docker_engine_daemon_options). With every name
unresolved and every other address refused, nothing a watched host asks for leaves it; every
destination it tries is on the record.

Two hosts are watched:

* test_more_stacks.py's host (Home Assistant, Mosquitto, Node-RED, ESPHome; sovereignty
  eu) from before its first apply to the end of that test (three applies, verify, the
  checks), topped up to WATCH_SECONDS after its first apply: the minutes after the apply
  cost no test of their own. It calls assert_audited() below;
* here, a strict site (`sovereignty=strict`, images from the registry mirror) with
  Mosquitto, the one catalog stack that passes strict today (Home Assistant's integration
  requirements come from PyPI, Node-RED's palette from npm, ESPHome's libraries from GitHub,
  none mitigated yet): applied twice (changed=0), watched for WATCH_SECONDS after its first
  apply; nothing it tries may be under US jurisdiction.

Every destination must be one the host's findings in `abri audit --json` list as reachable
(in use, or removed only after onboarding); an endpoint the audit calls disabled must not
be contacted. Allowances, each a hole in the claim and kept to what never leaves the home:
the recorder's own port 53 (the host's resolver: in a real home the LAN's DNS), link-local
multicast (224.0.0.0/24: the kernel's IGMP membership reports when the nested engine's
bridges come up, mDNS; routers never forward it), reverse lookups (PTR) of the addresses of
the host's own containers, and the probes this test makes on purpose.
Before trusting the record, each test proves it records: a name looked up on the host and
one inside a container must show up, and so must a connection the host opens to a refused
port.

test_the_check_fails_on_what_the_audit_does_not_allow plays records back through the same
check, without a host: it fails on a name or address the audit does not list, on an
endpoint the audit calls disabled, and in strict mode on one under US jurisdiction.

The recorded destinations are printed with their counts (run with -s).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import harness
import pytest
from test_deploy import (
    _CONFIG_HOME,
    NESTED_ENGINE_OPTIONS,
    _abri,
    _apply,
    _env,
    _recap,
    _tool,
)

pytestmark = pytest.mark.fleet

#: how long after the first apply a host is watched (the apply itself is watched too)
WATCH_SECONDS = 180

#: the container every watched site runs (Mosquitto, in both tests): a name looked up inside
#: it reaches the recorder through the nested engine's DNS, the path of every stack's container
PROBE_CONTAINER = "abri-mosquitto-mosquitto-1"


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def daemon_options(recorder: harness.Recorder) -> dict:
    """docker_engine_daemon_options for a watched host: the fleet's address ranges, and the
    recorder as the DNS server of every container the nested engine runs."""
    return {**NESTED_ENGINE_OPTIONS, "dns": [recorder.address]}


def audit(site: Path) -> dict:
    run = subprocess.run([_tool("abri"), "audit", "--json", "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout)


def _reachable(finding: dict) -> bool:
    """The audit says the host may reach this endpoint: it is in use, or its config entry is
    removed by abri right after onboarding (reached, at most, in the seconds before)."""
    return finding["in_use"] or finding["mitigation"] == "removed_after_onboarding"


def _reverse_of_own(name: str) -> bool:
    """A PTR question for an address of the nested engine's own networks (the host's
    containers): a question about the home, answered in the home by any resolver that
    follows RFC 6303; no outside destination."""
    if not name.endswith(".in-addr.arpa"):
        return False
    try:
        addr = ipaddress.ip_address(".".join(reversed(name.removesuffix(".in-addr.arpa")
                                                     .split("."))))
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(net) for net in harness.nested_networks())


def _finding_for_name(name: str, findings: list[dict]) -> dict | None:
    for f in findings:
        endpoint = f["endpoint"].lower().rstrip(".")
        host_part = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
        if endpoint.startswith("*."):
            if name.endswith(endpoint[1:]):
                return f
        elif name in (endpoint, host_part):
            return f
    return None


def _finding_for_address(addr: str, proto: str, port: int | None,
                         findings: list[dict]) -> dict | None:
    for f in findings:
        host_part, _, port_part = f["endpoint"].rpartition(":")
        if proto == "tcp" and host_part == addr and port_part == str(port):
            return f
    return None


def assert_audited(recorder: harness.Recorder, host: harness.Host, site: Path,
                   host_name: str, probes: list[str], *, strict: bool = False,
                   label: str = "") -> dict:
    """Check everything recorder saw host try against the site's `abri audit --json`
    findings for host_name; print the record with its counts. strict: no destination may be
    under US jurisdiction either. Returns the record (names, connections) for the caller."""
    report = audit(site)
    findings = [f for f in report["findings"] if f["host"] == host_name]
    queries = recorder.queries(host)
    names = Counter(q.name for q in queries)
    qtypes: dict[str, set[str]] = {}
    seen: dict[str, list[float]] = {}  # first and last time, seconds after watch() began
    for q in queries:
        qtypes.setdefault(q.name, set()).add(q.qtype)
        since = q.at - recorder.since[host.name]
        seen.setdefault(q.name, [since, since])[1] = since
    connections = recorder.connections(host)
    # the fleet's own, allowed by name (see the module's docstring)
    own_dns = {(recorder.address, proto, 53) for proto in ("udp", "tcp")}
    probe_conn = (recorder.address, "tcp", recorder.PROBE_PORT)
    link_local = ipaddress.ip_network("224.0.0.0/24")

    lines, unaccounted, disabled, us = [], [], [], []
    for name, count in sorted(names.items()):
        why, f = "", None
        if name in probes:
            why = "probe (made by the test)"
        elif _reverse_of_own(name):
            why = "reverse lookup of an address of the host's own containers"
        else:
            f = _finding_for_name(name, findings)
            if f is None:
                unaccounted.append(name)
                why = "NOT IN THE AUDIT"
            elif not _reachable(f):
                disabled.append(f"{name} ({f['stack']}: {f['mitigation']})")
                why = f"audit says {f['mitigation']}: {f['stack']}"
            else:
                why = f"audit: {f['stack']}, {f['when']}, {f['country']}"
        if f is not None and (f["cloud_act"] or f["country"] == "US"):
            us.append(name)
        first, last = seen[name]
        lines.append(f"  dns  {name:40} {'/'.join(sorted(qtypes[name])):8} x{count:<3} "
                     f"+{first:.0f}..{last:.0f}s  {why}")
    for (addr, proto, port), count in sorted(connections.items(), key=str):
        f = None
        where = f"{addr}:{port}/{proto}" if port is not None else f"{addr} ({proto})"
        if (addr, proto, port) in own_dns:
            why = "the host's resolver (the recorder)"
        elif (addr, proto, port) == probe_conn:
            why = "probe (made by the test)"
        elif ipaddress.ip_address(addr) in link_local:
            why = "link-local multicast (IGMP, mDNS: never routed off the link)"
        else:
            f = _finding_for_address(addr, proto, port, findings)
            if f is None:
                unaccounted.append(where)
                why = "NOT IN THE AUDIT"
            elif not _reachable(f):
                disabled.append(f"{where} ({f['stack']}: {f['mitigation']})")
                why = f"audit says {f['mitigation']}: {f['stack']}"
            else:
                why = f"audit: {f['endpoint']} ({f['stack']}, {f['when']}, {f['country']})"
        if f is not None and (f["cloud_act"] or f["country"] == "US"):
            us.append(where)
        lines.append(f"  conn {where:40} {'':8} x{count:<3} {'':12} {why}")
    watched = time.time() - recorder.since[host.name]
    print(f"\n[egress] {label or host_name}, watched {watched:.0f}s: {sum(names.values())} DNS "
          f"questions for {len(names)} names, {sum(connections.values())} connection attempts "
          f"to {len(connections)} destinations (sovereignty {report['sovereignty']}; dns: "
          "name, types, count, first..last seen after the watch began)")
    print("\n".join(lines))
    assert not unaccounted, f"destinations the audit does not list: {unaccounted}"
    assert not disabled, f"endpoints the audit calls disabled were contacted: {disabled}"
    if strict:
        assert not us, f"strict site contacted endpoints under US jurisdiction: {us}"
    return {"names": names, "connections": connections}


def watch_until(deadline: float) -> None:
    """Let the host run, watched, until the monotonic deadline (nothing is asserted on it)."""
    left = deadline - time.monotonic()
    if left > 0:
        print(f"[egress] watching {left:.0f}s more")
        time.sleep(left)


def test_strict_site_contacts_nothing_under_us_jurisdiction(fleet, fleet_registry, tmp_path):
    fl = fleet(1, image="prepared")
    host = fl.hosts[0]
    recorder = fl.add_recorder()
    recorder.watch(host, allow=[fleet_registry.address])
    probes = [recorder.probe(host)]
    probe_conn = recorder.probe_connection(host)

    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", fleet_registry.address,
          "--registry-insecure")
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    _abri("stack", "add", "--site", str(site), "h1", "mosquitto")
    _abri("site", "set", "--site", str(site), "sovereignty=strict")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# the fleet's address ranges, and the recorder as the containers' DNS server\n"
        f"docker_engine_daemon_options: {json.dumps(daemon_options(recorder))}\n")
    summary = audit(site)["summary"]
    assert summary["us_in_use_run"] == [] and summary["us_in_use_build"] == [], summary

    first, first_s = _apply(site)
    applied = time.monotonic()
    print(f"\n[egress] first apply (strict, mosquitto): {first_s:.1f}s, rc={first.returncode}")
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    second, second_s = _apply(site)
    print(f"[egress] no-op apply: {second_s:.1f}s, rc={second.returncode}")
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    assert _recap(second.stdout, "h1")["changed"] == 0, second.stdout[-3000:]

    # the nested engine's containers ask the recorder too
    assert json.loads(host.exec("cat /etc/docker/daemon.json").stdout)["dns"] == \
        [recorder.address]
    probes.append(recorder.probe(host, container=PROBE_CONTAINER))
    watch_until(applied + WATCH_SECONDS)
    record = assert_audited(recorder, host, site, "h1", probes, strict=True,
                            label="strict site, mosquitto")
    assert record["connections"].get(probe_conn), record
    # the images came from the mirror, the one outside destination this site has
    registry_ip, _, registry_port = fleet_registry.address.rpartition(":")
    assert record["connections"].get((registry_ip, "tcp", int(registry_port))), record


class _Played:
    """A recorder stand-in that plays back a record (the check itself, without a host)."""

    PROBE_PORT = harness.Recorder.PROBE_PORT

    def __init__(self, names: list[str], connections: dict | None = None):
        self.address = "192.0.2.53"
        self.since = {"h": time.time() - 60}
        self._names = names
        self._connections = connections or {}

    def queries(self, host):
        return [harness.Query(n, "A", "192.0.2.10", time.time()) for n in self._names]

    def connections(self, host):
        return dict(self._connections)


def test_the_check_fails_on_what_the_audit_does_not_allow(tmp_path):
    """assert_audited on played-back records: it passes what the audit lists, and fails on
    a name it does not list, on an endpoint it calls disabled, and, for a strict site, on
    one under US jurisdiction (no host needed)."""
    site = tmp_path / "site"
    _abri("init", "--site", str(site), "--registry-mirror", "192.0.2.5:5000")
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", "192.0.2.10",
          "--user", "root", "h1")
    for stack in ("mosquitto", "homeassistant"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    host = harness.Host(name="h", ssh_port=0, ssh_user="root", key_path=tmp_path / "k",
                        address="192.0.2.10", network="n", image="i")
    mirror = {("192.0.2.5", "tcp", 5000): 3}
    listed = ["files.pythonhosted.org", "de1.api.radio-browser.info", "4.0.214.10.in-addr.arpa"]
    assert_audited(_Played(listed, mirror), host, site, "h1", [])
    for names, conns, wanted in (
            (["example.org"], {}, "the audit does not list"),
            ([], {("203.0.113.7", "tcp", 443): 1}, "the audit does not list"),
            (["version.home-assistant.io"], {}, "calls disabled"),
            (["9.9.9.9.in-addr.arpa"], {}, "the audit does not list")):
        with pytest.raises(AssertionError, match=wanted):
            assert_audited(_Played(names, conns), host, site, "h1", [])
    assert_audited(_Played(["abri-probe-1.invalid"]), host, site, "h1",
                   ["abri-probe-1.invalid"])
    with pytest.raises(AssertionError, match=r"US jurisdiction: \['pypi\.org'\]"):
        assert_audited(_Played(["pypi.org"], mirror), host, site, "h1", [], strict=True)
