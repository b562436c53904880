"""The headless CLI over the site model: happy paths, and every refused input of the
foundation issue (exit status 2, a message naming the field, nothing on disk changed)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import fingerprint


def test_help_on_every_command(abri):
    for args in ([], ["init"], ["host", "add"], ["host", "list"], ["host", "remove"],
                 ["stack", "list"], ["stack", "add"], ["stack", "remove"], ["plan"],
                 ["apply"], ["verify"], ["site", "set"]):
        result = abri(*args, "--help")
        assert result.code == 0, args
        assert "usage: abri" in result.out


def test_init_host_and_stacks(abri, site_dir, ssh_key):
    r = abri("host", "add", "pi", "--kind", "ssh", "--address", "192.168.1.20", "--port", "2222",
             "--user", "pi", "--key", ssh_key, "--site", site_dir)
    assert r.code == 0, r.err
    assert abri("host", "add", "home", "--kind", "local", "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "mosquitto", "--set", "bind=loopback",
                "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "homeassistant", "--set", "name=Chez nous",
                "--set", "time_zone=Europe/Paris", "--site", site_dir).code == 0
    hosts = json.loads(abri("host", "list", "--json", "--site", site_dir).out)
    assert {h["name"]: h["kind"] for h in hosts} == {"pi": "ssh", "home": "local"}
    pi = next(h for h in hosts if h["name"] == "pi")
    assert pi["port"] == 2222 and pi["user"] == "pi" and pi["key"] == str(ssh_key)
    assert pi["stacks"] == ["mosquitto", "homeassistant"]
    host_vars = yaml.safe_load((site_dir / "host_vars/pi/abri.yml").read_text())
    assert list(host_vars["abri_stacks"]) == ["mosquitto", "homeassistant"]
    assert host_vars["abri_stacks"]["mosquitto"]["bind"] == "loopback"
    assert host_vars["abri_stacks"]["homeassistant"]["time_zone"] == "Europe/Paris"
    assert host_vars["abri_stacks"]["homeassistant"]["port"] == 8123  # default filled in
    assert "owner_password" not in host_vars["abri_stacks"]["homeassistant"]
    inventory = (site_dir / "inventory.ini").read_text()
    assert "pi ansible_host=192.168.1.20 ansible_port=2222 ansible_user=pi" in inventory
    assert "home ansible_connection=local ansible_python_interpreter=/usr/bin/python3" in inventory
    catalog = json.loads(abri("stack", "list", "--json", "--site", site_dir).out)
    assert {"homeassistant", "mosquitto"} <= {s["name"] for s in catalog}


def test_remove_stack_and_host(abri, site_dir):
    abri("host", "add", "box", "--kind", "ssh", "--address", "box.home.arpa", "--site", site_dir)
    abri("stack", "add", "box", "mosquitto", "--site", site_dir)
    (site_dir / "host_vars/box/mine.yml").write_text("my_var: 1\n")
    assert abri("stack", "remove", "box", "mosquitto", "--site", site_dir).code == 0
    assert yaml.safe_load((site_dir / "host_vars/box/abri.yml").read_text())["abri_stacks"] == {}
    assert abri("host", "remove", "box", "--site", site_dir).code == 0
    assert "box" not in (site_dir / "inventory.ini").read_text().split("# END")[0].split(
        "BEGIN")[1]
    assert not (site_dir / "host_vars/box/abri.yml").exists()
    assert (site_dir / "host_vars/box/mine.yml").read_text() == "my_var: 1\n"  # user file kept


def test_hand_edits_outside_the_block_are_kept(abri, site_dir):
    inv = site_dir / "inventory.ini"
    inv.write_text(inv.read_text() + "\n[printers]\nlaser ansible_host=10.1.1.1\n")
    assert abri("host", "add", "nas", "--kind", "ssh", "--address", "10.1.1.2",
                "--site", site_dir).code == 0
    text = inv.read_text()
    assert "[printers]\nlaser ansible_host=10.1.1.1\n" in text
    assert "nas ansible_host=10.1.1.2" in text


def test_no_plaintext_secret_anywhere_in_the_site(abri, site_dir, abri_config_home):
    from tui.core.site import Site

    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    r = abri("stack", "add", "pi", "homeassistant", "--set", "owner_password=MyOwnSecret-123456",
             "--site", site_dir)
    assert r.code == 0
    site = Site.load(site_dir)
    secrets = site.all_secret_values()
    assert len(secrets) == 3 and "MyOwnSecret-123456" in secrets
    assert all(len(s) >= 12 for s in secrets)
    blobs = [p.read_bytes() for p in site_dir.rglob("*") if p.is_file()]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in blobs), "plaintext secret in site"
        assert secret not in r.out + r.err
    vault = (site_dir / "host_vars/pi/vault.yml")
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert vault.stat().st_mode & 0o777 == 0o600
    password_files = list((abri_config_home / "vault").glob("*.pass"))
    assert len(password_files) == 1 and password_files[0].stat().st_mode & 0o777 == 0o600
    assert not password_files[0].is_relative_to(site_dir)


def test_secrets_survive_stack_removal_and_readding(abri, site_dir):
    from tui.core.site import Site

    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    before = Site.load(site_dir).secrets["pi"]["mosquitto"]["admin_password"]
    abri("stack", "remove", "pi", "mosquitto", "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    assert Site.load(site_dir).secrets["pi"]["mosquitto"]["admin_password"] == before


def _prepared(abri, site_dir, ssh_key):
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--key", ssh_key,
         "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    abri("host", "add", "pve", "--kind", "proxmox", "--address", "10.0.0.3", "--site", site_dir)


INVALID = [
    # (argv after the site is prepared, field expected in the message, a fragment of advice)
    (["host", "add", "bad_name!", "--kind", "ssh", "--address", "10.0.0.9"], "name", "letters"),
    (["host", "add", "-x", "--kind", "ssh", "--address", "10.0.0.9"], None, "arguments"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "300.1.1.1"], "address", "IP address"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "bad host"], "address", "DNS name"),
    (["host", "add", "n1", "--kind", "ssh"], "address", "required"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "h", "--port", "0"], "port", "1 to 65535"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "h", "--port", "70000"], "port",
     "1 to 65535"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "h", "--port", "ssh"], "port",
     "1 to 65535"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "h", "--user", "Root Admin"], "user",
     "lowercase"),
    (["host", "add", "n1", "--kind", "ssh", "--address", "h", "--key", "/nonexistent/key"],
     "key", "does not exist"),
    (["host", "add", "n1", "--kind", "mainframe", "--address", "h"], "kind", "local, ssh"),
    (["host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.5"], "name", "already"),
    (["host", "add", "g1", "--kind", "guest", "--parent", "pi"], "parent", "pve"),
    (["host", "add", "l1", "--kind", "local", "--address", "10.0.0.1"], "address", "local"),
    (["stack", "add", "pi", "nextcloud"], "stack", "homeassistant, mosquitto"),
    (["stack", "add", "ghost", "mosquitto"], "name", "hosts: pi"),
    (["stack", "add", "pve", "mosquitto"], "host", "guests"),
    (["stack", "set", "pi", "mosquitto", "--set", "colour=blue"], "colour", "valid: port"),
    (["stack", "set", "pi", "mosquitto", "--set", "port=99999"], "port", "1 to 65535"),
    (["stack", "set", "pi", "mosquitto", "--set", "bind=wan"], "bind", "lan, loopback"),
    (["stack", "set", "pi", "mosquitto", "--set", "noequals"], "--set", "KEY=VALUE"),
    (["stack", "set", "pi", "mosquitto", "--set", "port=22"], "port", "SSH"),
    (["stack", "add", "pi", "homeassistant", "--set", "port=1883"], "port", "mosquitto"),
    (["stack", "remove", "pi", "homeassistant"], "stack", "on it: mosquitto"),
    (["site", "set", "registry_mirror=not a registry"], "registry_mirror", "host:port"),
    (["site", "set", "colour=blue"], "colour", "registry_mirror"),
]


@pytest.mark.parametrize(("argv", "field", "advice"), INVALID,
                         ids=[" ".join(a[:4]) + f" [{i}]" for i, (a, _, _) in enumerate(INVALID)])
def test_invalid_input_is_refused_cleanly(abri, site_dir, ssh_key, argv, field, advice):
    _prepared(abri, site_dir, ssh_key)
    before = fingerprint(site_dir)
    result = abri(*argv, "--site", site_dir)
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err
    if field:
        assert f"{field}:" in result.err, result.err
    assert advice in result.err, result.err
    assert fingerprint(site_dir) == before


def test_missing_dependency_is_refused(abri, site_dir):
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    before = fingerprint(site_dir)
    result = abri("stack", "add", "pi", "homeassistant", "--site", site_dir)
    assert result.code == 2
    assert "host 'pi', stack 'homeassistant': uses: needs mqtt" in result.err
    assert "add mosquitto" in result.err
    assert fingerprint(site_dir) == before


def test_removing_a_provider_that_is_used_is_refused(abri, site_dir):
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    abri("stack", "add", "pi", "mosquitto", "--site", site_dir)
    abri("stack", "add", "pi", "homeassistant", "--site", site_dir)
    before = fingerprint(site_dir)
    result = abri("stack", "remove", "pi", "mosquitto", "--site", site_dir)
    assert result.code == 2 and "needs mqtt" in result.err
    assert fingerprint(site_dir) == before


def test_commands_outside_a_site_explain(abri, tmp_path):
    result = abri("host", "list", "--site", tmp_path / "nowhere")
    assert result.code == 2 and "abri init" in result.err
    (tmp_path / "empty").mkdir()
    result = abri("host", "list", "--site", tmp_path / "empty")
    assert result.code == 2 and "is not an abri site" in result.err


def test_init_refuses_an_existing_site(abri, site_dir):
    before = fingerprint(site_dir)
    result = abri("init", "--site", site_dir)
    assert result.code == 2 and "already holds an abri site" in result.err
    assert fingerprint(site_dir) == before


def test_broken_files_are_reported_with_place(abri, site_dir):
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    (site_dir / "host_vars/pi/abri.yml").write_text("abri_stacks:\n  mosquitto: {port: x\n")
    result = abri("host", "list", "--site", site_dir)
    assert result.code == 2 and "host_vars/pi/abri.yml" in result.err and "line" in result.err
    (site_dir / "host_vars/pi/abri.yml").write_text("abri_stacks:\n  nextcloud: {}\n")
    result = abri("host", "list", "--site", site_dir)
    assert result.code == 2 and "stack 'nextcloud'" in result.err
    (site_dir / "inventory.ini").write_text("[abri_ssh\npi\n")
    result = abri("host", "list", "--site", site_dir)
    assert result.code == 2 and "inventory.ini" in result.err and "Traceback" not in result.err


def test_site_option_before_or_after_the_command(abri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert abri("--site", tmp_path / "a", "init").code == 0
    assert abri("init", "--site", tmp_path / "b").code == 0
    assert (tmp_path / "a" / "inventory.ini").exists()
    assert (tmp_path / "b" / "inventory.ini").exists()
    assert not (tmp_path / "inventory.ini").exists()
    assert abri("--site", tmp_path / "a", "host", "add", "h", "--kind", "local").code == 0
    assert "h " in abri("host", "list", "--site", tmp_path / "a").out
