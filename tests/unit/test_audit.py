"""The sovereignty audit: manifests' endpoints, the jurisdiction data file, 'abri audit
[--json]' against its documented schema, and the sovereignty gate of plan and apply."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from tests.conftest import fingerprint
from tui.core import audit
from tui.core.catalog import Catalog
from tui.core.errors import AbriError
from tui.core.site import Site


def _site(abri, site_dir, *stacks, mirror=""):
    assert abri("host", "add", "home", "--kind", "local", "--site", site_dir).code == 0
    for stack in stacks:
        r = abri("stack", "add", "home", stack, "--site", site_dir)
        assert r.code == 0, r.err
    if mirror:
        assert abri("site", "set", f"registry_mirror={mirror}", "--site", site_dir).code == 0
    return Site.load(site_dir)


# ------------------------------------------------------------------ the data file
def test_every_operator_entry_is_complete():
    data = yaml.safe_load(audit.DATA_FILE.read_text())
    entries = [*data["operators"], data["site_mirror"], data["unknown"]]
    seen: set[str] = set()
    for entry in entries:
        for key in ("id", "operator", "country", "source"):
            assert isinstance(entry.get(key), str) and entry[key], (entry, key)
        assert isinstance(entry["cloud_act"], bool), entry
    for entry in data["operators"]:
        assert entry["suffixes"], entry
        for suffix in entry["suffixes"]:
            assert suffix not in seen, f"{suffix} listed twice"
            seen.add(suffix)
        assert entry["source"].startswith("https://"), entry
    # a site's own mirror is never counted as US
    assert data["site_mirror"]["cloud_act"] is False
    assert data["site_mirror"]["country"] != "US"


@pytest.mark.parametrize("host,country,cloud_act", [
    ("docker.io", "US", True), ("registry-1.docker.io", "US", True),
    ("auth.docker.io", "US", True), ("ghcr.io", "US", True), ("quay.io", "US", True),
    ("pypi.org", "US", True), ("files.pythonhosted.org", "US", True),
    ("registry.npmjs.org", "US", True), ("api.github.com", "US", True),
    ("github.com", "US", True), ("objects.githubusercontent.com", "US", True),
    ("version.home-assistant.io", "US", True), ("translate.google.com", "US", True),
    ("de1.api.radio-browser.info", "DE", False), ("api.met.no", "NO", False),
    ("2.europe.pool.ntp.org", "community", False), ("deb.debian.org", "US", True),
    ("*.pool.ntp.org", "community", False), ("registry.example.eu", "unknown", False),
])
def test_jurisdiction_of_a_host(host, country, cloud_act):
    entry = audit.jurisdiction(host)
    assert (entry["country"], entry["cloud_act"]) == (country, cloud_act)


def test_every_manifest_endpoint_has_a_known_operator():
    for stack in Catalog.load():
        for ep in stack.endpoints:
            known = ep.get("jurisdiction") or audit.jurisdiction(ep["host"])
            assert known.get("id") != "unknown", (stack.name, ep["host"])
        assert audit.jurisdiction(stack.image["registry"])["id"] != "unknown", stack.name


def test_manifests_declare_what_the_services_call():
    catalog = Catalog.load()
    hosts = {s.name: {e["host"]: e for e in s.endpoints} for s in catalog}
    assert hosts["mosquitto"] == {}
    assert hosts["homeassistant"]["pypi.org"]["when"] == "install"
    assert {h for h, e in hosts["homeassistant"].items()
            if e["mitigation"] == "removed_after_onboarding"} == {
        "translate.google.com", "*.radio-browser.info", "api.met.no"}
    # what the manifest says abri removes is what the onboarding really removes
    removed = {e["integration"] for e in hosts["homeassistant"].values()
               if e["mitigation"] == "removed_after_onboarding"}
    assert removed == set(catalog["homeassistant"].api["remove_after_onboarding"])
    # the Marketplace, which Home Assistant loads by itself (seen by the fleet's recorder)
    assert hosts["homeassistant"]["data-v2.hacs.xyz"]["jurisdiction"]["cloud_act"] is True
    assert hosts["homeassistant"]["data-v2.hacs.xyz"]["mitigation"] == "none"
    assert "registry.npmjs.org" in hosts["nodered"]
    assert hosts["nodered"]["catalogue.nodered.org"]["jurisdiction"]["country"] == "US"
    assert "api.registry.platformio.org" in hosts["esphome"]


def test_a_removed_integration_must_be_one_the_onboarding_removes(tmp_path):
    import shutil

    shutil.copytree(Catalog.load()["homeassistant"].path, tmp_path / "homeassistant")
    manifest = tmp_path / "homeassistant" / "stack.yml"
    text = manifest.read_text()
    assert "    integration: met\n" in text
    manifest.write_text(text.replace("    integration: met\n", "    integration: metx\n"))
    from tui.core.catalog import load_stack

    with pytest.raises(AbriError) as err:
        load_stack(manifest)
    (problem,) = err.value.problems
    assert problem.field.endswith(".integration")
    assert "'metx' is not in api.remove_after_onboarding" in str(problem)


# ------------------------------------------------------------------ the report
def test_report_lists_image_and_service_endpoints(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", "homeassistant")
    data = audit.report(site)
    jsonschema.Draft202012Validator(audit.JSON_SCHEMA).validate(data)
    by = {(f["stack"], f["endpoint"]): f for f in data["findings"]}
    image = by[("homeassistant", "docker.io")]
    assert (image["when"], image["in_use"], image["cloud_act"]) == ("build", True, True)
    assert "abri site set registry_mirror=" in image["fix"]
    met = by[("homeassistant", "api.met.no")]
    assert (met["in_use"], met["mitigated"], met["fix"]) == (False, True, None)
    assert by[("homeassistant", "pypi.org")]["in_use"] is True
    assert "pypi.org (homeassistant on home)" in data["summary"]["us_in_use_run"]
    assert data["summary"]["us_in_use_build"] == [
        "docker.io (mosquitto on home)", "docker.io (homeassistant on home)"]
    assert data["summary"]["endpoints"] == len(data["findings"])
    assert sum(data["summary"]["by_country"].values()) == len(data["findings"])


def test_a_mirror_replaces_the_image_registry(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", mirror="registry.lan:5000")
    (finding,) = audit.report(site)["findings"]
    assert finding["endpoint"] == "registry.lan:5000"
    assert (finding["cloud_act"], finding["mitigation"], finding["fix"]) == (False, "mirror",
                                                                            None)
    assert finding["country"] == "the site's own"


def test_cli_audit_json_matches_the_documented_schema(abri, site_dir):
    _site(abri, site_dir, "mosquitto", "homeassistant", "nodered", "esphome")
    r = abri("audit", "--json", "--site", site_dir)
    assert r.code == 0, r.err
    data = json.loads(r.out)
    jsonschema.Draft202012Validator(audit.JSON_SCHEMA).validate(data)
    assert data["schema_version"] == 1 and data["sovereignty"] == "eu"
    stacks = {f["stack"] for f in data["findings"]}
    assert stacks == {"mosquitto", "homeassistant", "nodered", "esphome"}


def test_readme_documents_every_json_field():
    readme = (audit.DATA_FILE.parents[2] / "README.md").read_text()
    for name in (*audit.JSON_SCHEMA["properties"],
                 *audit.JSON_SCHEMA["properties"]["summary"]["properties"],
                 *audit.JSON_SCHEMA["properties"]["findings"]["items"]["properties"]):
        assert f"`{name}`" in readme, name


def test_cli_audit_text_has_summary_and_fix(abri, site_dir):
    _site(abri, site_dir, "mosquitto")
    r = abri("audit", "--site", site_dir)
    assert r.code == 0, r.err
    assert r.out.startswith("Sovereignty: eu")
    assert "US in use at build time: 1" in r.out
    assert "fix: abri images mirror --to HOST:PORT" in r.out
    assert "then abri site set registry_mirror=HOST:PORT" in r.out


# ------------------------------------------------------------------ the setting and gate
@pytest.mark.parametrize("value", ["bogus", "STRICTER", ""])
def test_a_bad_sovereignty_is_refused(abri, site_dir, value):
    before = fingerprint(site_dir)
    r = abri("site", "set", f"sovereignty={value}", "--site", site_dir)
    assert r.code == 2
    assert "sovereignty" in r.err and "strict" in r.err and "eu" in r.err and "off" in r.err
    assert "Traceback" not in r.err
    assert fingerprint(site_dir) == before


def test_sovereignty_is_saved_and_shown(abri, site_dir):
    assert Site.load(site_dir).settings.sovereignty == "eu"
    assert abri("site", "set", "sovereignty=strict", "--site", site_dir).code == 0
    assert Site.load(site_dir).settings.sovereignty == "strict"
    r = abri("site", "show", "--json", "--site", site_dir)
    assert json.loads(r.out)["sovereignty"] == "strict"


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_strict_refuses_before_touching_a_host(abri, site_dir, command):
    _site(abri, site_dir, "mosquitto")
    assert abri("site", "set", "sovereignty=strict", "--site", site_dir).code == 0
    before = fingerprint(site_dir)
    r = abri(command, "--site", site_dir)
    assert r.code == 2, r.err
    assert "docker.io" in r.err and "mosquitto" in r.err and "'home'" in r.err
    assert "abri site set registry_mirror=HOST:PORT" in r.err
    assert "Traceback" not in r.err
    assert fingerprint(site_dir) == before
    assert not (site_dir / ".abri" / "runs").exists() or not any(
        (site_dir / ".abri" / "runs").iterdir())


def test_strict_passes_the_image_part_with_a_mirror(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", mirror="registry.lan:5000")
    site.settings.sovereignty = "strict"
    assert audit.gate(site) == []


def test_strict_still_names_run_time_endpoints_with_a_mirror(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", "homeassistant", mirror="registry.lan:5000")
    site.settings.sovereignty = "strict"
    with pytest.raises(AbriError) as err:
        audit.gate(site)
    text = "\n".join(map(str, err.value.problems))
    assert "pypi.org" in text and "homeassistant" in text
    assert "docker.io" not in text
    # removed onboarding integrations are not in use
    assert "api.met.no" not in text and "translate.google.com" not in text


def test_eu_warns_and_off_says_nothing(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", "homeassistant")
    lines = audit.gate(site)
    assert any("docker.io" in x and "build time" in x for x in lines)
    assert any("pypi.org" in x and "install time" in x for x in lines)
    site.settings.sovereignty = "off"
    assert audit.gate(site) == []


def test_the_gate_only_looks_at_the_chosen_hosts(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto")
    site.settings.sovereignty = "strict"
    assert audit.gate(site, hosts=[]) == []


@pytest.mark.parametrize(("repository", "endpoint", "country"), [
    ("s3:scaleway:fr-par/my-home", "s3.fr-par.scw.cloud", "FR"),
    ("s3:ovhcloud:gra/my-home/abri", "s3.gra.io.cloud.ovh.net", "FR"),
    ("s3:hetzner:fsn1/my-home", "fsn1.your-objectstorage.com", "DE"),
    ("sftp:backup@nas.example.eu:/srv/abri", "nas.example.eu", "unknown"),
])
def test_the_backup_storage_is_a_finding_of_its_own(abri, site_dir, repository, endpoint,
                                                     country):
    site = _site(abri, site_dir, "mosquitto", mirror="registry.lan:5000")
    site.settings.set("backup_repository", repository)
    found = [f for f in audit.findings(site) if f["stack"] == audit.BACKUP_STACK]
    assert [(f["host"], f["endpoint"], f["country"], f["when"], f["in_use"]) for f in found] \
        == [("home", endpoint, country, "run", True)], found
    assert found[0]["fix"] is None and not found[0]["cloud_act"]
    site.settings.sovereignty = "strict"
    assert audit.gate(site) == []  # European storage (or the user's own) passes strict
    jsonschema.validate(audit.report(site), audit.JSON_SCHEMA)


def test_backup_storage_under_us_jurisdiction_fails_strict(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto", mirror="registry.lan:5000")
    site.settings.set("backup_repository",
                      "s3:https://s3.eu-central-1.amazonaws.com/my-home/abri")
    finding, = [f for f in audit.findings(site) if f["stack"] == audit.BACKUP_STACK]
    assert finding["country"] == "US" and finding["cloud_act"]
    assert "s3:PROVIDER:REGION/BUCKET" in finding["fix"]
    site.settings.sovereignty = "strict"
    with pytest.raises(AbriError) as err:
        audit.gate(site)
    text = "\n".join(map(str, err.value.problems))
    assert "amazonaws.com" in text and "(backup)" in text, text


def test_a_folder_or_a_site_host_is_no_outside_storage(abri, site_dir):
    site = _site(abri, site_dir, "mosquitto")
    assert not [f for f in audit.findings(site) if f["stack"] == audit.BACKUP_STACK]
    site.settings.set("backup_repository", "sftp:root@home:/srv/abri")  # a host of the site
    assert not [f for f in audit.findings(site) if f["stack"] == audit.BACKUP_STACK]
