"""Engine v2 on the controller: the resolved state, values rendered literally, wiring across
hosts, and secrets that survive (each a defect of engine v1, reproduced and fixed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui.core import checks, resolve
from tui.core.catalog import Catalog
from tui.core.site import Site

BIN = Path(sys.executable).parent
CATALOG = Catalog.load()


class _HaLoader(yaml.SafeLoader):
    """Home Assistant's YAML: !include and friends are values, not errors."""


_HaLoader.add_multi_constructor("!", lambda loader, suffix, node: f"<{suffix}>")


def _site(tmp_path: Path) -> Site:
    site = Site.init(tmp_path / "site")
    site.save()
    return Site.load(tmp_path / "site")


def _files(state: dict, stack: str) -> dict[str, str]:
    for s in state["stacks"]:
        if s["name"] == stack:
            return {f["path"]: f["content"] for f in s["files"]}
    raise KeyError(stack)


TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF,
                             blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=int(os.environ.get("ABRI_HYPOTHESIS_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=TEXT)
def test_hostile_strings_render_literally_in_every_template(tmp_path_factory, value):
    """Every free-text setting of every stack, set to arbitrary text (quotes, backslashes,
    braces, YAML syntax), renders into files that parse and hold the value as typed."""
    site = _site(tmp_path_factory.mktemp("hostile"))
    site.add_host("h1", "ssh", "192.0.2.10", None, "root")
    for stack in CATALOG:
        sets = {}
        for s in stack.settings:
            if s.type == "str":
                try:
                    s.convert(value)
                except ValueError:
                    continue
                sets[s.key] = value
        site.add_stack("h1", stack.name, sets)
    state = resolve.resolve_host(site, "h1")
    for stack in state["stacks"]:
        for f in stack["files"]:
            if f["path"].endswith((".yml", ".yaml")):
                parsed = yaml.load(f["content"], Loader=_HaLoader)
                assert parsed is None or isinstance(parsed, (dict, list)), f["path"]
    values = site.hosts["h1"].stacks.get("homeassistant", {})
    if values.get("name") == value:
        core = yaml.load(_files(state, "homeassistant")["config/abri/core.yaml"],
                         Loader=_HaLoader)
        assert core["name"] == value


def test_a_template_in_a_value_is_never_evaluated(tmp_path, abri):
    """--set "name={{ lookup('pipe','id -un') }}" ran a command on the controller in v1. Now
    Ansible itself, templating the site's variables, keeps the text as typed."""
    site_dir = tmp_path / "site"
    evil = "{{ lookup('pipe','id -un') }}"
    assert abri("init", "--site", site_dir).code == 0
    assert abri("host", "add", "h1", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    assert abri("stack", "add", "h1", "mosquitto", "--site", site_dir).code == 0
    assert abri("stack", "add", "h1", "homeassistant", "--set", f"name={evil}",
                "--site", site_dir).code == 0
    from tui.core.secrets import vault_password_file

    pw = vault_password_file(Site.load(site_dir).site_id)
    env = {**os.environ, "ANSIBLE_CONFIG": str(site_dir / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    run = subprocess.run(
        [str(BIN / "ansible"), "h1", "-c", "local", "--vault-password-file", str(pw), "-m",
         "ansible.builtin.debug", "-a",
         "msg={{ abri_state.stacks[1].files | map(attribute='content') | join('') }}"],
        cwd=site_dir, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "lookup(" in run.stdout
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert f'name: \\"{user}\\"' not in run.stdout


@pytest.mark.parametrize("value", ["line\nbreak", "tab\there", "bell\x07"])
def test_control_characters_are_refused(abri, site_dir, value):
    assert abri("host", "add", "h1", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    result = abri("stack", "add", "h1", "homeassistant", "--set", f"name={value}",
                  "--site", site_dir)
    assert result.code == 2 and "control character" in result.err, result.err


def test_broker_and_home_assistant_on_two_hosts_are_wired(tmp_path):
    site = _site(tmp_path)
    site.add_host("broker", "ssh", "192.0.2.10", None, "root")
    site.add_host("home", "ssh", "192.0.2.20", None, "root")
    site.add_stack("broker", "mosquitto")
    site.add_stack("home", "homeassistant")
    site.check()
    home = resolve.resolve_host(site, "home")
    mqtt = home["stacks"][0]["api"]["integrations"][0]
    assert (mqtt["domain"], mqtt["host"], mqtt["port"], mqtt["username"]) == (
        "mqtt", "192.0.2.10", 1883, "homeassistant")
    assert mqtt["password_ref"] == "home/homeassistant/mqtt_password"
    broker = resolve.resolve_host(site, "broker")["stacks"][0]
    assert broker["accounts"]["users_ref"] == {
        "admin": "broker/mosquitto/admin_password",
        "homeassistant": "home/homeassistant/mqtt_password"}
    acl = _files({"stacks": [broker]}, "mosquitto")["config/acl"]
    assert "user homeassistant\ntopic readwrite homeassistant/#\ntopic read #" in acl
    # the same port change reaches both sides
    site.set_stack("broker", "mosquitto", {"port": "1884"})
    assert resolve.resolve_host(site, "home")["stacks"][0]["api"]["integrations"][0][
        "port"] == 1884
    # a broker bound to loopback cannot serve another host: said, with the fix
    site.set_stack("broker", "mosquitto", {"bind": "loopback"})
    problems = [str(p) for p in site.problems()]
    assert any("listens on that host's loopback only" in p and "bind=lan" in p
               for p in problems), problems


def test_secrets_survive_removing_and_adding_a_host_again(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "homeassistant")
    site.add_stack("pi", "mosquitto")
    site.save()
    owner = site.secrets["pi"]["homeassistant"]["owner_password"]
    site = Site.load(site.path)
    site.remove_stack("pi", "homeassistant")
    site.remove_stack("pi", "mosquitto")
    site.remove_host("pi")
    site.save()
    site = Site.load(site.path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "homeassistant")
    site.add_stack("pi", "mosquitto")
    site.save()
    assert Site.load(site.path).secrets["pi"]["homeassistant"]["owner_password"] == owner


def test_a_save_keeps_secrets_another_copy_wrote(tmp_path):
    """The TUI applies on a copy of the site, which stores the minted token; the next save
    of the original must not drop it (v1 then minted a new token on every TUI apply)."""
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "homeassistant")
    site.save()
    copy = site.copy()
    copy.secrets["pi"]["homeassistant"]["token"] = "t" * 120
    copy.save()
    site.set_stack("pi", "homeassistant", {"name": "Casa"})
    site.save()
    assert Site.load(site.path).secrets["pi"]["homeassistant"]["token"] == "t" * 120
    # only an explicit purge drops secrets, and only of stacks no longer on the host
    with pytest.raises(Exception, match="still on the host"):
        site.purge_secrets("pi", "homeassistant")
    site.remove_stack("pi", "homeassistant")
    assert site.purge_secrets("pi", "homeassistant") == ["homeassistant"]
    site.save()
    assert "homeassistant" not in Site.load(site.path).secrets["pi"]


def test_a_changed_owner_password_keeps_the_old_one_for_the_move(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "homeassistant")
    old = site.secrets["pi"]["homeassistant"]["owner_password"]
    site.set_stack("pi", "homeassistant", {"owner_password": "a-new-password-123"})
    assert site.secrets["pi"]["homeassistant"]["owner_password_previous"] == old
    api = resolve.resolve_host(site, "pi")["stacks"][1]["api"]
    assert api["owner_previous_ref"] == "pi/homeassistant/owner_password_previous"


def test_a_token_that_cannot_be_minted_is_a_check_not_a_crash(tmp_path):
    """v1: a websocket or JSON error while minting the token turned a converged deploy into
    'internal error'. Now it is a check that could not run, with the reason."""
    site = _site(tmp_path)
    site.add_host("here", "local")
    site.add_stack("here", "mosquitto", {"port": "18830"})
    site.add_stack("here", "homeassistant", {"port": "18123"})  # nothing listens there
    site.save()
    failures = checks.store_tokens(site, ["here"])
    assert len(failures) == 1 and "deploy converged" in failures[0].message
    assert "token" not in site.secrets["here"]["homeassistant"]


def test_the_images_are_pinned_in_the_site(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "mosquitto")
    site.save()
    pins = yaml.safe_load((site.path / "group_vars/all/abri.yml").read_text())["abri_images"]
    assert pins == {"mosquitto": CATALOG["mosquitto"].image_ref()}
    # a kit whose catalog moved on changes nothing until the user upgrades
    site = Site.load(site.path)
    site.image_pins["mosquitto"] = "docker.io/library/eclipse-mosquitto:2.0.18"
    site.save()
    state = resolve.resolve_host(Site.load(site.path), "pi")
    assert state["stacks"][0]["image"].endswith(":2.0.18")


def test_a_vault_password_file_others_can_read_is_warned_about(abri, site_dir):
    from tui.core.secrets import vault_password_file

    file = vault_password_file(Site.load(site_dir).site_id)
    assert "warning" not in abri("host", "list", "--site", site_dir).err
    file.chmod(0o644)
    result = abri("host", "list", "--site", site_dir)
    assert result.code == 0
    assert f"can be read by other users (mode 0644); fix it with: chmod 600 {file}" in result.err


def test_verify_before_any_deploy_says_so(abri, site_dir):
    assert abri("host", "add", "pi", "--kind", "ssh", "--address", "192.0.2.10",
                "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "mosquitto", "--site", site_dir).code == 0
    result = abri("verify", "--site", site_dir)
    assert result.code == 1
    assert "not deployed yet" in result.out and "run 'abri apply' first" in result.out
    assert result.out.count("FAIL") == 1, result.out


def test_a_plan_shows_a_host_it_could_not_check_as_not_checked():
    """One unreachable host: the others' changes are listed, that one is 'not checked' with
    the reason, never '0 change(s)'."""
    import io

    from tui.core import events, runner

    recorded = [
        {"event": "playbook_on_task_start", "event_data": {"task": "Prepare", "task_uuid": "t"}},
        {"event": "runner_on_unreachable", "event_data": {
            "host": "far", "task_uuid": "t", "res": {"msg": "ssh: connect timed out"}}},
        {"event": "runner_on_ok", "event_data": {
            "host": "near", "task_uuid": "t",
            "res": {"changed": True, "changes": ["install docker.io"]}}},
        {"event": "playbook_on_stats", "event_data": {
            "ok": {"near": 1}, "changed": {"near": 1}, "dark": {"far": 1}}},
    ]
    progress = events.replay(recorded)
    out = io.StringIO()
    runner.print_recap(runner.RunResult("plan", "failed", 4, progress, Path("."), recorded), out)
    text = out.getvalue()
    assert "far: not checked: unreachable: ssh: connect timed out" in text, text
    assert "near: 1 change(s)" in text and "~ Prepare: install docker.io" in text, text
    assert "far: 0 change" not in text


# ---------------------------------------------------------------- a client's access token
# Node-RED declares `wants: [homeassistant]` and env wire:homeassistant.{url,token}; Home
# Assistant's api declares `client_tokens: homeassistant`. No engine code names either.


def _env_of(site: Site, host: str, stack: str) -> dict:
    return next(s for s in resolve.resolve_host(site, host)["stacks"] if s["name"] == stack)[
        "env"]


def test_a_wanted_provider_is_wired_on_the_same_host_first(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_host("nas", "ssh", "192.0.2.20", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "homeassistant")
    site.add_stack("nas", "homeassistant")
    site.add_stack("nas", "nodered")
    site.check()
    links, problems = resolve.bindings(site)
    wired = [b for b in links if b.consumer == "nodered" and b.capability == "homeassistant"]
    assert not problems and [(b.provider_host, b.provider) for b in wired] == [
        ("nas", "homeassistant")]
    assert resolve.mints_tokens(site, wired[0])
    assert resolve.token_client_name(wired[0]) == "abri: nodered on nas"
    env = _env_of(site, "nas", "nodered")
    assert env["HOMEASSISTANT_URL"] == {"value": "http://127.0.0.1:8123"}
    # no token yet (Home Assistant mints it after its first apply): empty, no reference the
    # kit could not resolve
    assert env["HOMEASSISTANT_TOKEN"] == {"value": ""}
    # a token is no generated secret: nothing made one up, and no broker-style password
    assert "homeassistant_token" not in site.secrets["nas"]["nodered"]
    assert "homeassistant_password" not in site.secrets["nas"]["nodered"]
    # 127.0.0.1 is Node-RED itself in its bridge network: compose sends it to the host
    compose = yaml.safe_load(_files(resolve.resolve_host(site, "nas"), "nodered")["compose.yml"])
    assert compose["services"]["nodered"]["environment"]["HOMEASSISTANT_URL"] == \
        "http://host.docker.internal:8123"


def test_a_wanted_provider_on_the_one_other_host_gets_its_address(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_host("nas", "ssh", "192.0.2.20", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "homeassistant", {"port": "8124"})
    site.add_stack("nas", "nodered")
    site.check()
    env = _env_of(site, "nas", "nodered")
    assert env["HOMEASSISTANT_URL"] == {"value": "http://192.0.2.10:8124"}
    compose = yaml.safe_load(_files(resolve.resolve_host(site, "nas"), "nodered")["compose.yml"])
    assert "HOMEASSISTANT_URL" not in compose["services"]["nodered"]["environment"]


def test_a_wanted_provider_the_site_lacks_is_left_out(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "nodered")
    site.check()  # wanted, not needed: no problem
    env = _env_of(site, "pi", "nodered")
    assert env["HOMEASSISTANT_URL"] == env["HOMEASSISTANT_TOKEN"] == {"value": ""}
    assert not [b for b in resolve.bindings(site)[0] if b.capability == "homeassistant"]


def test_a_wanted_provider_on_several_other_hosts_is_refused(tmp_path):
    site = _site(tmp_path)
    for i, name in enumerate(("a", "b", "c")):
        site.add_host(name, "ssh", f"192.0.2.{10 + i}", None, "root")
    site.add_stack("a", "mosquitto")
    site.add_stack("a", "homeassistant")
    site.add_stack("b", "homeassistant")
    site.add_stack("c", "nodered")
    problems = [str(p) for p in site.problems()]
    assert any("needs homeassistant, which several hosts provide (a, b)" in p
               and "stack 'nodered'" in p for p in problems), problems
    with pytest.raises(Exception, match="several hosts provide"):
        site.save()


def test_a_client_token_is_a_vault_reference_never_plain_text(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10", None, "root")
    site.add_host("nas", "ssh", "192.0.2.20", None, "root")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "homeassistant")
    site.add_stack("nas", "nodered")
    token = "eyJhbGciOiJIUzI1NiJ9." + "t0k3n" * 30
    site.secrets["nas"]["nodered"]["homeassistant_token"] = token  # as store_tokens keeps it
    site.save()
    site = Site.load(site.path)
    assert site.secrets["nas"]["nodered"]["homeassistant_token"] == token
    state = yaml.safe_load((site.path / "host_vars/nas/abri.yml").read_text())["abri_state"]
    nodered = next(s for s in state["stacks"] if s["name"] == "nodered")
    assert nodered["env"]["HOMEASSISTANT_TOKEN"] == {
        "value_ref": "nas/nodered/homeassistant_token"}
    assert "nas/nodered/homeassistant_token" in resolve.secret_refs(nodered)
    # nowhere in the site in plain text (the vault is encrypted)
    for file in site.path.rglob("*"):
        if file.is_file():
            assert token not in file.read_text(errors="replace"), file
    assert "$ANSIBLE_VAULT" in (site.path / "host_vars/nas/vault.yml").read_text()
    # and the kit's filter resolves the reference from the client's vault
    sys.path.insert(0, str(Path(__file__).parents[2] / "playbooks" / "filter_plugins"))
    try:
        from abri_state import abri_secrets
    finally:
        sys.path.pop(0)
    hostvars = {h: {"abri_secrets": site.secrets.get(h, {})} for h in site.hosts}
    assert abri_secrets(nodered, hostvars)["nas/nodered/homeassistant_token"] == token


def test_a_client_token_that_cannot_be_minted_is_a_check_not_a_crash(tmp_path):
    site = _site(tmp_path)
    site.add_host("here", "local")
    site.add_stack("here", "mosquitto", {"port": "18830"})
    site.add_stack("here", "homeassistant", {"port": "18123"})  # nothing listens there
    site.add_stack("here", "nodered", {"port": "18800"})
    site.save()
    minted: set[str] = set()
    failures = checks.store_tokens(site, ["here"], minted)
    assert [f.task for f in failures] == [
        "Store a long-lived Home Assistant token (for the checks)",
        "Mint nodered on here its access token"], failures
    assert "'abri apply' again" in failures[1].message
    assert not minted and "homeassistant_token" not in site.secrets["here"]["nodered"]


def test_one_apply_from_two_runs_adds_up_per_host():
    from tui.core import events, runner

    first = events.Progress(
        hosts=(events.HostRow("a", ok=3, changed=2), events.HostRow("b", ok=3, changed=1)),
        recap={"a": {"ok": 3, "changed": 2}, "b": {"ok": 3, "changed": 1}},
        changes=(("a", "x"),), finished=True, percent=100.0, tasks_started=4)
    again = events.Progress(hosts=(events.HostRow("b", ok=2, changed=1),),
                            recap={"b": {"ok": 2, "changed": 1}}, changes=(("b", "y"),),
                            finished=True, percent=100.0, tasks_started=4)
    merged = runner.merge(first, again)
    assert merged.recap == {"a": {"ok": 3, "changed": 2}, "b": {"ok": 5, "changed": 2}}
    assert merged.changes == (("a", "x"), ("b", "y")) and merged.ok
    assert {r.name: r.changed for r in merged.hosts} == {"a": 2, "b": 2}
