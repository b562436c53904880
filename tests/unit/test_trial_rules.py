"""Trial restores on the controller: the manifests' backup.trial block (what 'abri backup
--verify' checks) is validated with clear refusals naming the file and the field, reaches the
resolved state, and the record of proven restores is kept and shown."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tui.core import backup, paths, resolve
from tui.core.catalog import Catalog
from tui.core.errors import AbriError
from tui.core.site import Site


def test_the_shipped_stacks_declare_their_trial_checks():
    catalog = Catalog.load()
    ha, mq = catalog["homeassistant"].backup_trial, catalog["mosquitto"].backup_trial
    assert ha["sqlite"] == ["config/home-assistant_v2.db"]
    assert {c["what"] for c in ha["counts"]} == {"automations", "entities"}
    assert mq["log_errors"]
    assert catalog["nodered"].backup_trial == {}  # the health check alone


def _refused(tmp_path: Path, name: str, trial) -> str:
    target = tmp_path / "stacks" / name
    shutil.copytree(paths.stacks_dir() / name, target)
    data = yaml.safe_load((target / "stack.yml").read_text())
    data.setdefault("backup", {"consistency": "stop"})["trial"] = trial
    (target / "stack.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    text = str(info.value)
    assert "stack.yml" in text and "Traceback" not in text, text
    return text


COUNT = {"file": "config/automations.yaml", "count": "yaml_items", "what": "automations"}


@pytest.mark.parametrize(
    ("name", "trial", "field", "fragment"),
    [
        ("homeassistant", {"sqlite": ["../etc/shadow"]}, "backup.trial.sqlite[0]", ".."),
        ("homeassistant", {"sqlite": ["/config/home-assistant_v2.db"]},
         "backup.trial.sqlite[0]", "does not match"),
        # a file outside the user data is not restored on trial
        ("mosquitto", {"sqlite": ["config/broker.db"]}, "backup.trial.sqlite[0]",
         "not a file in a user-data volume (data/...)"),
        ("homeassistant", {"sqlite": ["config"]}, "backup.trial.sqlite[0]",
         "not a file in a user-data volume"),
        ("homeassistant", {"counts": [{**COUNT, "count": "lines"}]},
         "backup.trial.counts[0].count", "lines"),
        ("homeassistant", {"counts": [{k: v for k, v in COUNT.items() if k != "what"}]},
         "backup.trial.counts[0]", "'what' is a required property"),
        ("homeassistant", {"counts": [{**COUNT, "key": "data.entities"}]},
         "backup.trial.counts[0].key", "only a json_items count reads a key"),
        ("homeassistant", {"counts": [{**COUNT, "count": "json_items", "key": "data..x"}]},
         "backup.trial.counts[0].key", "does not match"),
        ("homeassistant", {"counts": [{**COUNT, "file": "config/a/../../b"}]},
         "backup.trial.counts[0].file", ".."),
        ("homeassistant", {"log_errors": ["Setup failed for (recorder"]},
         "backup.trial.log_errors[0]", "is not a regular expression"),
        ("homeassistant", {"log_errors": []}, "backup.trial.log_errors", "should be non-empty"),
        ("homeassistant", {}, "backup.trial", "should be non-empty"),
        ("homeassistant", {"health": "yes"}, "backup.trial", "'health' was unexpected"),
        ("mosquitto", "sometimes", "backup.trial", "is not of type 'object'"),
    ],
)
def test_a_broken_trial_block_is_refused_naming_the_field(tmp_path, name, trial, field,
                                                          fragment):
    text = _refused(tmp_path, name, trial)
    assert field in text and fragment in text, text


def test_a_trial_block_needs_user_data(tmp_path):
    target = tmp_path / "stacks" / "mosquitto"
    shutil.copytree(paths.stacks_dir() / "mosquitto", target)
    data = yaml.safe_load((target / "stack.yml").read_text())
    for volume in data["volumes"]:
        volume["user_data"] = False
    data["backup"]["trial"] = {"log_errors": ["Error"]}
    (target / "stack.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    assert "backup.trial" in str(info.value) and "no user-data volume" in str(info.value)


def _site(tmp_path: Path) -> Site:
    site = Site.init(tmp_path / "site")
    site.add_host("h1", "ssh", "192.0.2.10", None, "root")
    site.add_stack("h1", "mosquitto", {})
    site.add_stack("h1", "homeassistant", {})
    site.save()
    return Site.load(tmp_path / "site")


def test_the_backup_state_carries_the_trial_checks(tmp_path):
    site = _site(tmp_path)
    site.add_stack("h1", "nodered", {})
    site.save()
    nodered = next(s for s in resolve.resolve_host(site, "h1")["backup"]["stacks"]
                   if s["name"] == "nodered")
    assert nodered["trial"]["unwired"] == ["HOMEASSISTANT_TOKEN", "HOMEASSISTANT_URL",
                                           "MQTT_HOST", "MQTT_PASSWORD", "MQTT_PORT",
                                           "MQTT_USER"]
    stacks = {s["name"]: s for s in resolve.resolve_host(site, "h1")["backup"]["stacks"]}
    ha = stacks["homeassistant"]["trial"]
    assert ha["sqlite"] == ["config/home-assistant_v2.db"]
    assert ha["counts"][1] == {"file": "config/.storage/core.entity_registry",
                               "count": "json_items", "key": "data.entities",
                               "what": "entities"}
    assert stacks["mosquitto"]["trial"]["sqlite"] == []
    assert stacks["homeassistant"]["trial"]["unwired"] == []
    assert stacks["mosquitto"]["health"]["kind"] == "mqtt"  # probed at the scratch address


def test_proven_restores_are_kept_per_host_and_stack(tmp_path):
    site = _site(tmp_path)
    rows = [{"host": "h1", "stack": "mosquitto", "ok": True, "reason": "", "id": "ab" * 32,
             "short_id": "abababab", "time": "2026-12-02T10:00:00.5Z", "seconds": 4.2,
             "checks": ["started"]},
            {"host": "h1", "stack": "homeassistant", "ok": False, "reason": "restic failed",
             "id": "cd" * 32, "short_id": "cdcdcdcd", "time": "2026-12-02T10:00:01Z",
             "seconds": 1.0, "checks": []}]
    backup.record_trials(site, rows)
    kept = backup.proven(site)
    assert list(kept["h1"]) == ["mosquitto"]
    assert kept["h1"]["mosquitto"]["short_id"] == "abababab"
    text = backup.format_trials(rows)
    assert "mosquitto        passed  snapshot abababab" in text
    assert "homeassistant    FAILED  snapshot cdcdcdcd: restic failed" in text
    shown = backup.format_proven(site, ["h1"])
    assert "h1           homeassistant    never" in shown
    assert "snapshot abababab of 2026-12-02 10:00:00 UTC" in shown
    listed = backup.with_proven(site, [{"host": "h1", "stack": "mosquitto"},
                                       {"host": "h1", "stack": "homeassistant"}])
    assert listed[0]["last_proven_restore"]["snapshot"] == "ab" * 32
    assert listed[1]["last_proven_restore"] is None
    # a broken record is read as none, never a traceback
    (site.path / ".abri" / backup.PROVEN).write_text("{not json")
    assert backup.proven(site) == {}
    (site.path / ".abri" / backup.PROVEN).write_text(json.dumps(["x"]))
    assert backup.proven(site) == {}


def test_verify_refusals_run_nothing(abri, site_dir):
    assert abri("host", "add", "h1", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    r = abri("backup", "--verify", "--site", site_dir)
    assert r.code == 0 and "nothing to verify" in r.out, r.out + r.err
    assert abri("stack", "add", "h1", "mosquitto", "--site", site_dir).code == 0
    r = abri("backup", "--verify", "--prune", "--site", site_dir)
    assert r.code == 2 and "--verify" in r.err and "--prune" in r.err, r.err
    # no backup yet: said, exit 1, nothing run
    r = abri("backup", "--verify", "--site", site_dir)
    assert r.code == 1 and "h1: no backup yet, nothing to verify" in r.err, r.out + r.err


def _module():
    """playbooks/library/abri_backup.py, its module_utils reachable as on a host."""
    import importlib.util

    import ansible.module_utils

    utils = str(paths.kit_dir() / "playbooks" / "module_utils")
    if utils not in ansible.module_utils.__path__:
        ansible.module_utils.__path__.append(utils)
    spec = importlib.util.spec_from_file_location(
        "abri_backup_under_test", paths.kit_dir() / "playbooks" / "library" / "abri_backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: docker compose config --format json of two live stacks, as Compose 2.26 gives it
LIVE_HOST_NETWORK = {
    "name": "abri-homeassistant",
    "services": {"homeassistant": {
        "image": "mirror:5000/homeassistant/home-assistant:2026.11.0",
        "network_mode": "host", "restart": "unless-stopped",
        "environment": {"TZ": "Europe/Berlin"},
        "labels": {"org.abri.stack": "homeassistant"},
        "devices": [{"source": "/dev/ttyUSB0", "target": "/dev/ttyUSB0",
                     "permissions": "rwm"}],
        "volumes": [
            {"type": "bind", "source": "/opt/abri/homeassistant/config", "target": "/config",
             "bind": {"create_host_path": True}},
            {"type": "bind", "source": "/etc/localtime", "target": "/etc/localtime",
             "read_only": True, "bind": {"create_host_path": True}}]}}}
LIVE_PUBLISHED = {
    "name": "abri-mosquitto",
    "services": {"mosquitto": {
        "image": "mirror:5000/library/eclipse-mosquitto:2.0.21", "container_name": "broker",
        "ports": [{"mode": "ingress", "host_ip": "0.0.0.0", "target": 1883,
                   "published": "1883", "protocol": "tcp"}],
        "networks": {"default": None}, "restart": "unless-stopped",
        "labels": {"org.abri.stack": "mosquitto", "keep": "me"},
        "environment": {"MQTT_HOST": "host.docker.internal", "TZ": "Europe/Lisbon"},
        "extra_hosts": ["host.docker.internal:host-gateway", "nas:192.0.2.5"],
        "volumes": [
            {"type": "bind", "source": "/opt/abri/mosquitto/config",
             "target": "/mosquitto/config"},
            {"type": "bind", "source": "/opt/abri/mosquitto/data/", "target": "/mosquitto/data"},
            {"type": "volume", "source": "cache", "target": "/cache"}]}},
    "networks": {"default": {"name": "abri-mosquitto_default"}},
    "volumes": {"cache": {"name": "abri-mosquitto_cache", "external": True}}}


def test_the_scratch_project_publishes_nothing_and_writes_nothing_of_the_live_stack():
    m = _module()
    ha = m.scratch_model(LIVE_HOST_NETWORK, {"name": "homeassistant", "paths": ["config"],
                                             "dir": "/opt/abri/homeassistant"},
                         "abri-trial-homeassistant", "abri-trial-homeassistant_trial",
                         "/var/lib/abri/trial/homeassistant/data")
    svc = ha["services"]["homeassistant"]
    assert ha["name"] == "abri-trial-homeassistant"
    assert ha["networks"] == {"trial": {"name": "abri-trial-homeassistant_trial",
                                        "internal": True}}
    assert "network_mode" not in svc and svc["networks"] == {"trial": {}}
    assert "devices" not in svc and svc["restart"] == "no"
    assert svc["labels"] == {"org.abri.trial": "homeassistant"}
    assert svc["volumes"][0]["source"] == "/var/lib/abri/trial/homeassistant/data/config"
    assert svc["volumes"][1]["source"] == "/etc/localtime"  # outside the stack: as it is
    mq = m.scratch_model(LIVE_PUBLISHED, {"name": "mosquitto", "paths": ["data"],
                                          "dir": "/opt/abri/mosquitto",
                                          "trial": {"unwired": ["MQTT_HOST"]}},
                         "abri-trial-mosquitto", "abri-trial-mosquitto_trial", "/scratch")
    svc = mq["services"]["mosquitto"]
    assert "ports" not in svc and "container_name" not in svc
    assert svc["networks"] == {"trial": {}} and list(mq["networks"]) == ["trial"]
    assert svc["labels"] == {"keep": "me", "org.abri.trial": "mosquitto"}
    # cut off from the live stacks it is wired to
    assert svc["environment"] == {"MQTT_HOST": "", "TZ": "Europe/Lisbon"}
    assert svc["extra_hosts"] == ["nas:192.0.2.5"]
    config, data, cache = svc["volumes"]
    assert config["source"] == "/opt/abri/mosquitto/config" and config["read_only"]
    assert data["source"] == "/scratch/data" and not data.get("read_only")
    assert cache["source"] == "cache" and mq["volumes"] == {"cache": {}}  # fresh, not shared


def test_trial_counts_read_yaml_and_json(tmp_path):
    m = _module()
    automations = tmp_path / "automations.yaml"
    automations.write_text("- id: 'a'\n  alias: A\n  triggers: []\n- id: b\n  alias: !secret x\n")
    assert m._count(str(automations), "yaml_items", None) == 2
    automations.write_text("[]\n")
    assert m._count(str(automations), "yaml_items", None) == 0
    registry = tmp_path / "core.entity_registry"
    registry.write_text(json.dumps({"version": 1, "data": {"entities": [{}, {}, {}]}}))
    assert m._count(str(registry), "json_items", "data.entities") == 3
    with pytest.raises(m.Failed, match=r"has no data\.devices"):
        m._count(str(registry), "json_items", "data.devices")
    with pytest.raises(m.Failed, match="is missing"):
        m._count(str(tmp_path / "absent.yaml"), "yaml_items", None)
    assert m._one_line("a\nb\nFatal: There were 2 errors\n") == "a; b"


def test_trial_counts_without_pyyaml_on_the_host(tmp_path, monkeypatch):
    m = _module()
    monkeypatch.setitem(sys.modules, "yaml", None)  # a host whose python3 has no PyYAML
    automations = tmp_path / "automations.yaml"
    automations.write_text("# mine\n- id: 'a'\n  alias: A\n- id: b\n  actions:\n  - delay: 1\n")
    assert m._count(str(automations), "yaml_items", None) == 2
    automations.write_text("[]\n")
    assert m._count(str(automations), "yaml_items", None) == 0
    automations.write_text("a: 1\nb:\n  c: 2\n")
    assert m._count(str(automations), "yaml_items", None) == 2
