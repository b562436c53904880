"""vps hosts (provider, region, jurisdiction in the audit) and the hardening profile: what
the CLI accepts and refuses, what the site stores, what the state hands to the kit, and the
kit's own firewall and sshd texts (the fleet test test_vps.py runs them on a real host)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import fingerprint, load_kit_util
from tui.core import audit

ROOT = Path(__file__).resolve().parents[2]


def _harden_core():
    """The kit's module_utils file, loaded without Ansible's module loader."""
    return load_kit_util("abri_harden_core", {"os_release": None, "run": None,
                                              "write_atomic": None})


def _vars(site: Path, host: str) -> dict:
    return yaml.safe_load((site / f"host_vars/{host}/abri.yml").read_text())


def test_vps_provider_region_and_hardening_state(abri, site_dir, ssh_key):
    r = abri("host", "add", "v1", "--kind", "vps", "--address", "203.0.113.10", "--key",
             ssh_key, "--provider", "scaleway", "--region", "fr-par", "--site", site_dir)
    assert r.code == 0, r.err
    assert abri("stack", "add", "v1", "mosquitto", "--site", site_dir).code == 0
    data = _vars(site_dir, "v1")
    assert data["abri_vps"] == {"provider": "scaleway", "region": "fr-par"}
    assert "abri_hardening" not in data  # the kind's default: on
    hard = data["abri_state"]["hardening"]
    assert hard["admin_user"] == "abri" and hard["ssh_port"] == 22
    assert hard["admin_keys"] == [Path(f"{ssh_key}.pub").read_text().strip()]
    # the broker is lan, not public: a vps opens nothing but SSH for it
    assert hard["open"] == []
    listed = {h["name"]: h for h in json.loads(abri("host", "list", "--json", "--site",
                                                    site_dir).out)}
    assert listed["v1"]["hardening"] is True and listed["v1"]["vps"]["region"] == "fr-par"

    # an ssh host is not hardened unless asked; hardened, it keeps its LAN ports open
    abri("host", "add", "pi", "--kind", "ssh", "--address", "192.168.1.20", "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    assert "hardening" not in _vars(site_dir, "pi")["abri_state"]
    assert abri("host", "set", "pi", "--hardening", "on", "--site", site_dir).code == 0
    data = _vars(site_dir, "pi")
    assert data["abri_hardening"] is True
    assert data["abri_state"]["hardening"]["admin_keys"] == []  # no key: the host's own
    assert [p["port"] for p in data["abri_state"]["hardening"]["open"]] == [1883]
    abri("stack", "set", "pi", "mosquitto", "--set", "bind=loopback", "--site", site_dir)
    assert _vars(site_dir, "pi")["abri_state"]["hardening"]["open"] == []
    # switched off on a vps: no hardening state at all
    assert abri("host", "set", "v1", "--hardening", "off", "--site", site_dir).code == 0
    assert "hardening" not in _vars(site_dir, "v1")["abri_state"]


def test_refused_hosting_input_names_the_field(abri, site_dir):
    before = fingerprint(site_dir)
    cases = [
        (("host", "add", "v", "--kind", "vps", "--address", "203.0.113.1", "--provider",
          "aws"), "provider: 'aws' is not a provider abri knows"),
        (("host", "add", "v", "--kind", "vps", "--address", "203.0.113.1", "--provider",
          "hetzner", "--region", "fr-par"), "region: 'fr-par' is not a region of hetzner"),
        (("host", "add", "v", "--kind", "vps", "--address", "203.0.113.1", "--provider",
          "other", "--region", "bad region"), "region: 'bad region' is not a region name"),
        (("host", "add", "s", "--kind", "ssh", "--address", "203.0.113.1", "--region",
          "fsn1"), "region: only a vps host has a region"),
        (("host", "add", "home", "--kind", "local", "--hardening", "on"),
         "hardening: a local host is this machine"),
    ]
    for args, message in cases:
        result = abri(*args, "--site", site_dir)
        assert result.code == 2, (args, result.out)
        assert message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert fingerprint(site_dir) == before


def test_hardening_in_host_vars_is_checked(abri, site_dir):
    abri("host", "add", "v", "--kind", "vps", "--address", "203.0.113.1", "--site", site_dir)
    path = site_dir / "host_vars/v/abri.yml"
    data = _vars(site_dir, "v")
    assert data["abri_vps"] == {"provider": "other"}
    data["abri_hardening"] = "sometimes"
    data["abri_vps"] = {"provider": "hetzner", "region": "mars"}
    path.write_text(yaml.safe_dump(data))
    result = abri("host", "list", "--site", site_dir)
    assert result.code == 2
    assert "abri_hardening" in result.err and "abri_vps.region" in result.err, result.err


def test_audit_reports_each_vps_jurisdiction(abri, site_dir):
    abri("host", "add", "v1", "--kind", "vps", "--address", "203.0.113.1", "--provider",
         "hetzner", "--region", "ash", "--site", site_dir)
    abri("host", "add", "v2", "--kind", "vps", "--address", "203.0.113.2", "--provider",
         "infomaniak", "--region", "dc3-a", "--site", site_dir)
    out = abri("audit", "--site", site_dir).out
    assert "vps v1: hetzner, Hetzner Online GmbH, DE, not under the US CLOUD Act; region ash " \
           "(US); outside Europe" in out, out
    assert "vps v2: infomaniak, Infomaniak Network SA, CH" in out and "region dc3-a (CH)" in out
    data = json.loads(abri("audit", "--json", "--site", site_dir).out)
    import jsonschema

    jsonschema.validate(data, audit.JSON_SCHEMA)
    assert [h["host"] for h in data["hosting"]] == ["v1", "v2"]
    assert data["hosting"][0]["region_country"] == "US"


def test_firewall_rules_are_default_deny_and_cover_docker():
    core = _harden_core()
    rules = core.firewall_rules([22, 2222], [{"port": 443, "protocol": "tcp", "why": "x"},
                                             {"port": 51820, "protocol": "udp", "why": "y"}])
    assert "flush ruleset" not in rules
    # replaced alone, in one transaction
    assert rules.index("table inet abri\ndelete table inet abri\n") < rules.index("chain")
    assert "hook input priority filter - 10; policy drop;" in rules
    assert "hook forward priority filter - 10; policy drop;" in rules
    assert "tcp dport { 22, 443, 2222 } accept" in rules
    assert "udp dport { 51820 } accept" in rules
    assert "ct status dnat meta l4proto tcp ct original proto-dst { 443 } accept" in rules
    only_ssh = core.firewall_rules([22], [])
    assert "tcp dport { 22 } accept" in only_ssh and "ct original" not in only_ssh


def test_sshd_dropin_keeps_openssh_key_exchange_and_local_forwards():
    core = _harden_core()
    text = core.sshd_dropin()
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "PermitRootLogin no", "PubkeyAuthentication yes", "MaxAuthTries 3",
                 "AllowTcpForwarding local", "X11Forwarding no"):
        assert f"\n{line}\n" in text, line
    assert "KexAlgorithms" not in text and "Ciphers" not in text
    conf = core.upgrades_conf("Debian")
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in conf
    assert "label=Debian-Security" in conf and "-updates" not in conf


def test_inventory_user_becomes_the_admin_once_sshd_is_tightened(abri, site_dir):
    from tui.core import runner
    from tui.core.site import Site

    abri("host", "add", "v1", "--kind", "vps", "--address", "203.0.113.1", "--user", "root",
         "--site", site_dir)
    abri("host", "add", "v2", "--kind", "vps", "--address", "203.0.113.2", "--user", "root",
         "--site", site_dir)
    site = Site.load(site_dir)

    def ok(host, res, action="abri_harden"):
        return {"event": "runner_on_ok",
                "event_data": {"host": host, "task_action": action, "res": res}}

    recorded = [
        ok("v1", {"changed": True, "switched": False, "admin_user": "abri"}),  # base phase
        ok("v2", {"changed": True, "switched": True, "admin_user": "abri"}, "other_module"),
        ok("v1", {"changed": True, "switched": True, "admin_user": "abri"}),
    ]
    assert runner.switch_to_admin(site, recorded) == ["v1"]
    inventory = (site_dir / "inventory.ini").read_text()
    assert "v1 ansible_host=203.0.113.1 ansible_user=abri" in inventory
    assert "v2 ansible_host=203.0.113.2 ansible_user=root" in inventory
    assert runner.switch_to_admin(Site.load(site_dir), recorded) == []  # once


def test_a_public_port_is_opened_on_a_vps(abri, site_dir, tmp_path):
    """exposure public (no stack of the catalog declares one yet): a manifest that does gets
    that port opened on a vps; its lan ports stay closed."""
    import shutil

    from tui.core import resolve
    from tui.core.catalog import Catalog
    from tui.core.site import Site

    stacks = tmp_path / "stacks"
    shutil.copytree(ROOT / "stacks" / "mosquitto", stacks / "mosquitto")
    manifest = stacks / "mosquitto" / "stack.yml"
    data = yaml.safe_load(manifest.read_text())
    data["ports"][0]["exposure"] = "public"
    manifest.write_text(yaml.safe_dump(data))
    abri("host", "add", "v1", "--kind", "vps", "--address", "203.0.113.1", "--site", site_dir)
    site = Site.load(site_dir, catalog=Catalog.load(stacks))
    site.add_stack("v1", "mosquitto", {"tls": "true"})
    state = resolve.hardening_state(site, site.hosts["v1"])
    assert state["open"] == [{"port": 1883, "protocol": "tcp", "why": "mosquitto mqtt"}]
    site.set_stack("v1", "mosquitto", {"bind": "loopback"})
    assert resolve.hardening_state(site, site.hosts["v1"])["open"] == []
