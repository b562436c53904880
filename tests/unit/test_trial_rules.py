"""Trial restores on the controller: the manifests' backup.trial block (what 'abri backup
--verify' checks) is validated with clear refusals naming the file and the field, reaches the
resolved state, and the record of proven restores is kept and shown."""

from __future__ import annotations

import json
import shutil
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
    stacks = {s["name"]: s for s in resolve.resolve_host(site, "h1")["backup"]["stacks"]}
    ha = stacks["homeassistant"]["trial"]
    assert ha["sqlite"] == ["config/home-assistant_v2.db"]
    assert ha["counts"][1] == {"file": "config/.storage/core.entity_registry",
                               "count": "json_items", "key": "data.entities",
                               "what": "entities"}
    assert stacks["mosquitto"]["trial"]["sqlite"] == []
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
