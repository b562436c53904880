"""The headless CLI over the site model: happy paths, and every refused input of the
foundation issue (exit status 2, a message naming the field, nothing on disk changed)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import fingerprint
from tui.core.site import Site


def test_help_on_every_command(abri):
    for args in ([], ["init"], ["host", "add"], ["host", "set"], ["host", "list"],
                 ["host", "destroy"], ["host", "remove"], ["stack", "show"], ["site", "show"],
                 ["stack", "list"], ["stack", "add"], ["stack", "remove"], ["plan"],
                 ["apply"], ["verify"], ["site", "set"], ["backup"], ["backups"],
                 ["restore"], ["import-ha-backup"], ["stack", "user", "add"],
                 ["stack", "user", "list"], ["stack", "user", "remove"]):
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
    blobs = [p.read_bytes() for p in site_dir.rglob("*")
             if p.is_file() and ".abri" not in p.relative_to(site_dir).parts]
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
    # a proxmox node as 'abri host add --kind proxmox' leaves it, without a node to ask
    # (tests/unit/test_proxmox_hosts.py adds one against the API stand-in)
    site = Site.load(site_dir)
    site.add_host("pve", "proxmox", "10.0.0.3")
    site.configure_proxmox("pve", {"api_url": "https://10.0.0.3:8006", "node": "pve",
                                   "ca_pem": "(a pinned CA)", "user": "root@pam"},
                           {"password": "not-used"})
    site.save()


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


# ---------------------------------------------------------------- issue 9: what a new user hit

def test_relative_site_works_for_every_command(abri, tmp_path, monkeypatch, ssh_key):
    import tui.core.runner as runner

    calls = []
    monkeypatch.setattr(runner, "run_cli", lambda site, mode, **kw: calls.append(site.path) or 0)
    monkeypatch.setattr(runner, "verify_cli", lambda site, **kw: calls.append(site.path) or 0)
    monkeypatch.chdir(tmp_path)
    steps = [
        ["--site", "rel", "init"],
        ["--site", "rel", "host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2"],
        ["host", "add", "home", "--kind", "local", "--site", "rel"],
        ["--site", "rel", "host", "set", "pi", "--key", ssh_key],
        ["--site", "rel", "stack", "add", "pi", "mosquitto"],
        ["--site", "rel", "stack", "set", "pi", "mosquitto", "--set", "port=1884"],
        ["--site", "rel", "site", "set", "stacks_root=/srv/abri"],
        ["--site", "rel", "site", "show"],
        ["--site", "rel", "host", "list"],
        ["--site", "rel", "plan"],
        ["--site", "./rel/", "apply", "--limit", "pi"],
        ["verify", "--site", "rel"],
        ["--site", "rel", "stack", "remove", "pi", "mosquitto"],
        ["--site", "rel", "host", "remove", "home"],
    ]
    for argv in steps:
        result = abri(*argv)
        assert result.code == 0, (argv, result.err)
    assert calls == [tmp_path / "rel"] * 3  # one absolute path, resolved once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id_ed25519", "id_ed25519.pub", "rel"]
    assert "pi ansible_host=10.0.0.2" in (tmp_path / "rel/inventory.ini").read_text()


def test_init_on_a_file_is_invalid_input(abri, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for target in (notes, notes / "site"):
        result = abri("init", "--site", target)
        assert result.code == 2, result.err
        assert "is a file, not a folder" in result.err and "File exists" not in result.err
    assert notes.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def _abri_process(argv, stdout, cwd, buffered=True):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, "-m", "tui", *map(str, argv)], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, timeout=120)


def _argparse_drops_unwritable_help() -> bool:
    """Newer Pythons' argparse ignores an OSError while it prints help (3.11.7 does; Debian
    12's 3.11.2 does not, and the BrokenPipeError then ends abri as any other command)."""
    import argparse
    import inspect

    return "OSError" in inspect.getsource(argparse.ArgumentParser._print_message)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("argv", [["stack", "list"], ["stack", "show", "homeassistant"],
                                  ["host", "list"], ["--help"]])
def test_closed_stdout_pipe_ends_quietly(tmp_path, argv, buffered):
    import os

    assert _abri_process(["init", "--site", tmp_path / "site"], None, tmp_path).returncode == 0
    if argv != ["--help"]:
        argv = [*argv, "--site", tmp_path / "site"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before abri writes a byte: every write is EPIPE
    try:
        proc = _abri_process(argv, write_end, tmp_path, buffered)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    if argv == ["--help"] and not buffered and _argparse_drops_unwritable_help():
        assert proc.returncode == 0  # argparse itself drops help it cannot write
    else:
        assert proc.returncode == 141  # as a shell reports a command ended by SIGPIPE


def test_pipe_into_a_reader_that_stops_reading(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = (f"set -o pipefail; PYTHONPATH={root} {sys.executable} -m tui stack show "
              "homeassistant | head -c0; echo \"rc=$?\"")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() in ("rc=0", "rc=141")


def test_adding_a_stack_that_is_already_there(abri, site_dir, ssh_key):
    _prepared(abri, site_dir, ssh_key)
    before = fingerprint(site_dir)
    result = abri("stack", "add", "pi", "mosquitto", "--set", "port=1884", "--site", site_dir)
    assert result.code == 2
    assert ("mosquitto is already on pi; change its settings with "
            "'abri stack set pi mosquitto --set KEY=VALUE'") in result.err
    assert "Added" not in result.out
    assert fingerprint(site_dir) == before


def test_hints_fit_the_command(abri, site_dir, ssh_key):
    _prepared(abri, site_dir, ssh_key)
    before = fingerprint(site_dir)
    result = abri("site", "set", "registry_mirror", "--site", site_dir)
    assert result.code == 2
    assert "registry_mirror=registry.example.eu" in result.err and "port=" not in result.err
    result = abri("stack", "set", "pi", "mosquitto", "--set", "noequals", "--site", site_dir)
    assert result.code == 2 and "--set port=" in result.err
    for kind in ("ssh", "vps"):
        result = abri("host", "add", "n1", "--kind", kind, "--site", site_dir)
        assert result.code == 2
        assert f"is required for {'an' if kind == 'ssh' else 'a'} {kind} host" in result.err
    assert fingerprint(site_dir) == before


def test_settings_are_shown_as_typed(abri, site_dir):
    out = abri("stack", "show", "mosquitto", "--site", site_dir).out
    assert "False" not in out and "True" not in out and "'lan'" not in out
    assert "tls" in out and "false" in out
    out = abri("site", "show", "--site", site_dir).out
    assert "False" not in out
    assert "registry_insecure  false" in out
    assert json.loads(abri("site", "show", "--json", "--site", site_dir).out)[
        "registry_insecure"] is False


@pytest.mark.parametrize("argv", [
    ["stack", "set", "pi", "mosquitto", "--set", "port=1884", "--set", "port=1885"],
    ["stack", "add", "pi", "homeassistant", "--set", "port=8124", "--set", " port=8125"],
    ["site", "set", "stacks_root=/srv/a", "stacks_root=/srv/b"],
])
def test_a_setting_given_twice_is_refused(abri, site_dir, ssh_key, argv):
    _prepared(abri, site_dir, ssh_key)
    before = fingerprint(site_dir)
    result = abri(*argv, "--site", site_dir)
    assert result.code == 2
    key = "stacks_root" if argv[0] == "site" else "port"
    assert f"{key}: is given twice" in result.err, result.err
    assert "/srv/b" not in result.err and "8125" not in result.err  # values could be secrets
    assert fingerprint(site_dir) == before


@pytest.mark.parametrize(("option", "value"), [("--user", "pi"), ("--address", "10.0.0.1"),
                                               ("--port", "22"), ("--key", "KEY")])
def test_a_local_host_takes_no_ssh_fields(abri, site_dir, ssh_key, option, value):
    before = fingerprint(site_dir)
    value = str(ssh_key) if value == "KEY" else value
    result = abri("host", "add", "home", "--kind", "local", option, value, "--site", site_dir)
    assert result.code == 2
    assert f"{option[2:]}: a local host is this machine and takes no" in result.err
    assert fingerprint(site_dir) == before


def test_host_set_changes_the_connection(abri, site_dir, ssh_key):
    _prepared(abri, site_dir, ssh_key)
    result = abri("host", "set", "pi", "--address", "pi.home.arpa", "--port", "2222",
                  "--user", "admin", "--site", site_dir)
    assert result.code == 0, result.err
    assert "Updated host pi" in result.out
    inventory = (site_dir / "inventory.ini").read_text()
    assert (f"pi ansible_host=pi.home.arpa ansible_port=2222 ansible_user=admin "
            f"ansible_ssh_private_key_file={ssh_key}") in inventory
    stacks = yaml.safe_load((site_dir / "host_vars/pi/abri.yml").read_text())["abri_stacks"]
    assert list(stacks) == ["mosquitto"]  # the stacks and their secrets stay
    # an empty value clears a field back to Ansible's default
    assert abri("host", "set", "pi", "--port", "", "--user", "", "--site", site_dir).code == 0
    pi = next(h for h in json.loads(abri("host", "list", "--json", "--site", site_dir).out)
              if h["name"] == "pi")
    assert (pi["address"], pi["port"], pi["user"], pi["key"]) == (
        "pi.home.arpa", None, None, str(ssh_key))


HOST_SET_INVALID = [
    (["host", "set", "pi", "--port", "0"], "port", "1 to 65535"),
    (["host", "set", "pi", "--address", "bad host"], "address", "DNS name"),
    (["host", "set", "pi", "--address", ""], "address", "required for an ssh host"),
    (["host", "set", "pi", "--user", "Root Admin"], "user", "lowercase"),
    (["host", "set", "pi", "--key", "/nonexistent/key"], "key", "does not exist"),
    (["host", "set", "pi", "--port", "1883"], "port", "is used by mosquitto (mqtt)"),
    (["host", "set", "pi"], "", "nothing to change"),
    (["host", "set", "ghost", "--port", "22"], "name", "hosts: home, pi, pve"),
    (["host", "set", "home", "--user", "pi"], "user", "a local host is this machine"),
    (["host", "set", "home", "--address", "10.0.0.1"], "address", "a local host"),
    (["host", "set", "pi", "--name", "pi2"], None, "unrecognized arguments"),
]


@pytest.mark.parametrize(("argv", "field", "advice"), HOST_SET_INVALID,
                         ids=[" ".join(a[2:]) for a, _, _ in HOST_SET_INVALID])
def test_host_set_refuses_bad_input(abri, site_dir, ssh_key, argv, field, advice):
    _prepared(abri, site_dir, ssh_key)
    abri("host", "add", "home", "--kind", "local", "--site", site_dir)
    before = fingerprint(site_dir)
    result = abri(*argv, "--site", site_dir)
    assert result.code == 2, (result.out, result.err)
    if field:
        assert f"{field}: " in result.err, result.err
    assert advice in result.err, result.err
    assert fingerprint(site_dir) == before


def test_host_set_help_explains_why_there_is_no_rename(abri):
    out = abri("host", "set", "--help").out
    assert "--address" in out and "--port" in out and "--user" in out and "--key" in out
    assert "rename" in out.lower() and "host_vars" in out


def test_stack_show_lists_choices_ports_and_volumes(abri, site_dir):
    out = abri("stack", "show", "homeassistant", "--site", site_dir).out
    assert "one of metric, us_customary" in out
    assert "8123/tcp" in out and "Web interface and REST API" in out
    assert "/config" in out and "user data" in out
    out = abri("stack", "show", "mosquitto", "--site", site_dir).out
    assert "1883/tcp" in out and "8883/tcp" in out and "only when tls is true" in out
    assert "/mosquitto/data" in out
    data = json.loads(abri("stack", "show", "mosquitto", "--json", "--site", site_dir).out)
    assert data["uses"] == [] and data["provides"] == ["mqtt"]
    ports = {p["name"]: p for p in data["ports"]}
    assert ports["mqtt"] == {"name": "mqtt", "setting": "port", "number": 1883,
                             "protocol": "tcp", "purpose": ports["mqtt"]["purpose"],
                             "exposure": "lan", "when": None}
    assert ports["mqtts"]["when"] == "tls"
    volumes = {v["path"]: v["user_data"] for v in data["volumes"]}
    assert volumes["/mosquitto/data"] is True and volumes["/mosquitto/config"] is False
    bind = next(s for s in data["settings"] if s["key"] == "bind")
    assert bind["choices"] == ["lan", "loopback"] and bind["valid"] == "one of lan, loopback"


_REGEX_SIGNS = set("^$[]{}\\|")


def _messages_for(setting):
    yield setting.describe_valid()
    yield setting.help
    for bad in ("", "x" * 2000, "bad value", "Home\n", "UPPER", "42", "-1", "http//x"):
        try:
            setting.convert(bad)
        except ValueError as exc:
            yield str(exc).replace(repr(bad), "VALUE")


def test_no_regular_expression_in_any_setting_message():
    from tui.core.catalog import Catalog

    catalog = Catalog.load()
    for stack in catalog:
        for setting in stack.settings:
            assert not setting.pattern or setting.valid, (stack.name, setting.key)
            for message in _messages_for(setting):
                assert not _REGEX_SIGNS & set(message), (stack.name, setting.key, message)
                assert setting.pattern is None or setting.pattern not in message


def test_a_pattern_needs_its_words(tmp_path):
    import shutil

    from tui.core import paths
    from tui.core.catalog import load_stack
    from tui.core.errors import AbriError

    target = tmp_path / "stacks" / "homeassistant"
    shutil.copytree(paths.stacks_dir() / "homeassistant", target)
    data = yaml.safe_load((target / "stack.yml").read_text())
    language = next(i for i, s in enumerate(data["settings"]) if s["key"] == "language")
    del data["settings"][language]["valid"]
    (target / "stack.yml").write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        load_stack(target / "stack.yml")
    assert f"settings[{language}]" in str(info.value) and "valid" in str(info.value)


def test_pattern_messages_say_it_in_words(abri, site_dir, ssh_key):
    _prepared(abri, site_dir, ssh_key)
    result = abri("stack", "add", "pi", "homeassistant", "--set", "language=EN",
                  "--site", site_dir)
    assert result.code == 2
    assert "language: 'EN' is not a language code" in result.err and "such as" in result.err
    assert not _REGEX_SIGNS & set(result.err)


TZ_COUNTRY = [
    ("time_zone=Europe/Berln", "time_zone", "did you mean Europe/Berlin?"),
    ("time_zone=Mars/Olympus", "time_zone", "is not a time zone of the IANA database"),
    ("time_zone=Europe", "time_zone", "is not a time zone"),
    ("country=XX", "country", "is not an ISO 3166 country code"),
    ("country=Portugl", "country", "did you mean PT (Portugal)?"),
    ("country=PRT", "country", "such as DE, FR or PT"),
]


@pytest.mark.parametrize(("assignment", "field", "advice"), TZ_COUNTRY)
def test_time_zone_and_country_are_checked_against_their_lists(abri, site_dir, ssh_key,
                                                                assignment, field, advice):
    _prepared(abri, site_dir, ssh_key)
    before = fingerprint(site_dir)
    result = abri("stack", "add", "pi", "homeassistant", "--set", assignment, "--site", site_dir)
    assert result.code == 2
    assert f"{field}: " in result.err and advice in result.err, result.err
    assert fingerprint(site_dir) == before


def test_time_zone_and_country_are_written_in_their_own_spelling(abri, site_dir, ssh_key):
    from tui.core.catalog import Catalog
    from tui.core.iso3166 import CODES
    from tui.core.site import Site

    _prepared(abri, site_dir, ssh_key)
    result = abri("stack", "add", "pi", "homeassistant", "--set", "country=pt",
                  "--set", "time_zone=europe/lisbon", "--site", site_dir)
    assert result.code == 0, result.err
    values = Site.load(site_dir).hosts["pi"].stacks["homeassistant"]
    assert (values["country"], values["time_zone"]) == ("PT", "Europe/Lisbon")
    assert "country: PT" in (site_dir / "host_vars/pi/abri.yml").read_text()
    ha = Catalog.load()["homeassistant"]
    assert (ha.setting("time_zone").type, ha.setting("country").type) == ("timezone", "country")
    assert ha.setting("time_zone").pattern is None and ha.setting("country").pattern is None
    assert len(CODES) == 249 and {"DE", "PT", "FR", "GB", "AX"} <= CODES
    assert not {"EU", "UK", "XX"} & CODES


@pytest.fixture
def no_ansible(monkeypatch):
    """Fails the test if the runner is called; records the calls it was allowed to make."""
    import tui.core.runner as runner

    calls = []

    def refuse(*args, **kwargs):
        raise AssertionError(f"Ansible was run: {args} {kwargs}")

    monkeypatch.setattr(runner, "run_site", refuse)
    monkeypatch.setattr(runner, "run_cli", refuse)
    monkeypatch.setattr(runner, "verify_cli", refuse)
    return calls


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_nothing_to_deploy_says_so(abri, site_dir, no_ansible, command):
    result = abri(command, "--site", site_dir)
    assert result.code == 0, result.err
    assert "nothing to deploy: this site has no hosts yet" in result.out
    assert "abri host add" in result.out
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    result = abri(command, "--site", site_dir)
    assert result.code == 0
    assert "nothing to deploy: no host has a stack yet" in result.out
    assert "abri stack add pi STACK" in result.out


def test_nothing_to_verify_says_so(abri, site_dir, no_ansible):
    abri("host", "add", "pi", "--kind", "ssh", "--address", "10.0.0.2", "--site", site_dir)
    result = abri("verify", "--site", site_dir)
    assert result.code == 0 and "nothing to verify: no host has a stack yet" in result.out
    result = abri("verify", "--json", "--site", site_dir)
    assert result.code == 0 and json.loads(result.out) == []


@pytest.mark.parametrize("command", ["plan", "apply", "verify"])
@pytest.mark.parametrize(("limit", "advice"), [
    ("nosuch", "'nosuch' matches no host of this site; hosts: home, pi, pve"),
    ("pi,nosuch", "'nosuch' matches no host"),
    ("x*", "'x*' matches no host"),
    ("!pi,!pve,!home", "matches no host of this site"),
    ("~p.*", "regular expression"),
])
def test_a_limit_that_matches_no_host_is_refused(abri, site_dir, ssh_key, no_ansible,
                                                 command, limit, advice):
    _prepared(abri, site_dir, ssh_key)
    abri("host", "add", "home", "--kind", "local", "--site", site_dir)
    before = fingerprint(site_dir)
    result = abri(command, "--limit", limit, "--site", site_dir)
    assert result.code == 2
    assert "abri: error: --limit: " in result.err and advice in result.err, result.err
    assert fingerprint(site_dir) == before


def test_a_limit_on_hosts_without_stacks(abri, site_dir, ssh_key, no_ansible):
    _prepared(abri, site_dir, ssh_key)
    abri("host", "add", "home", "--kind", "local", "--site", site_dir)
    result = abri("plan", "--limit", "home", "--site", site_dir)
    assert result.code == 0
    assert "nothing to deploy on home: it has no stack yet" in result.out


def test_a_limit_that_matches_is_passed_to_the_runner(abri, site_dir, ssh_key, monkeypatch):
    import tui.core.runner as runner

    calls = []
    monkeypatch.setattr(runner, "run_cli", lambda site, mode, limit=None, verify=False:
                        calls.append((mode, limit, verify)) or 0)
    _prepared(abri, site_dir, ssh_key)
    for argv in (["plan", "--limit", "pi*"], ["apply", "--limit", "pi,pve"], ["apply"]):
        assert abri(*argv, "--site", site_dir).code == 0
    assert calls == [("plan", "pi", False), ("apply", "pi,pve", True), ("apply", None, True)]


def test_match_hosts_reads_ansible_patterns(tmp_path):
    from tui.core.errors import AbriError
    from tui.core.site import Site

    site = Site.init(tmp_path / "site")
    for name in ("pi", "pi2", "nas"):
        site.add_host(name, "ssh", "10.0.0.2")
    site.add_host("home", "local")
    assert site.match_hosts("pi") == ["pi"]
    assert site.match_hosts("pi*") == ["pi", "pi2"]
    assert site.match_hosts("nas, pi") == ["pi", "nas"]  # the site's order
    assert site.match_hosts("all") == site.match_hosts("*") == ["pi", "pi2", "nas", "home"]
    assert site.match_hosts("all,!pi*") == ["nas", "home"]
    assert site.match_hosts("pi*:&pi2") == ["pi2"]
    assert site.match_hosts("abri_local") == ["home"]
    assert site.match_hosts("abri_targets,!home") == ["pi", "pi2", "nas"]
    assert site.match_hosts("!pi") == ["pi2", "nas", "home"]  # as Ansible: all but pi
    for bad in ("", " , ", "nosuch", "pi,nosuch", "!pi,!pi2,!nas,!home", "~pi.*", "pi[0]"):
        with pytest.raises(AbriError):
            site.match_hosts(bad)
