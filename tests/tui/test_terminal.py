"""The real thing in a real terminal: `abri` in tmux, driven by keystrokes.

Adds this machine with Home Assistant and (offered as its dependency) Mosquitto, saves and
quits; then checks what was written, and that Ansible's own ansible-inventory accepts it.
At 80x24, every key the overview's footer shows is pressed and does what it says, and a
validation message holding square brackets is shown whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tui.core import inventory
from tui.core.catalog import Catalog
from tui.core.secrets import vault_password_file
from tui.core.site import Site

BIN = Path(sys.executable).parent
TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed "
                                "(apt-get install tmux; .ci/setup does)")


class Terminal:
    def __init__(self, command: list[str], env: dict[str, str], status_file: Path,
                 width=100, height=30):
        self.name = f"abri-test-{uuid.uuid4().hex[:8]}"
        self.status_file = status_file
        wrapped = ["sh", "-c", '"$@"; echo $? > "$0"', str(status_file), *command]
        self.socket = ["-L", self.name]  # a private tmux server: never the user's sessions
        env_args = [f"{k}={v}" for k, v in env.items()]
        subprocess.run([TMUX, *self.socket, "new-session", "-d", "-s", self.name,
                        "-x", str(width), "-y", str(height),
                        "env", *env_args, *wrapped], check=True)
        subprocess.run([TMUX, *self.socket, "set-option", "-t", self.name,
                        "remain-on-exit", "on"], check=True)

    def screen(self) -> str:
        out = subprocess.run([TMUX, *self.socket, "capture-pane", "-p", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout

    def wait_for(self, text: str, timeout: float = 30, pattern: bool = False) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if (re.search(text, screen) if pattern else text in screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{screen}")

    def wait_gone(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text not in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} stayed; the terminal shows:\n{screen}")

    def keys(self, *keys: str) -> None:
        subprocess.run([TMUX, *self.socket, "send-keys", "-t", self.name, *keys], check=True)

    def exited(self, timeout: float = 15) -> int | None:
        """abri's exit status, written by the wrapping shell (tmux's own pane status is
        not reliably there when the pane's pty closes first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_file.exists() and self.status_file.read_text().strip():
                return int(self.status_file.read_text())
            time.sleep(0.1)
        return None

    def close(self) -> None:
        subprocess.run([TMUX, *self.socket, "kill-server"], capture_output=True)


def terminal_env(tmp_path, abri_config_home) -> dict[str, str]:
    env = {"ABRI_CONFIG_HOME": str(abri_config_home), "TERM": "xterm-256color",
           "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for name in ("PYTHONPATH", "ABRI_KIT_DIR"):  # the caller's choice of abri and kit
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def test_add_this_machine_with_both_stacks_in_a_real_terminal(tmp_path, abri_config_home):
    site = tmp_path / "site"
    abri = BIN / "abri"
    assert abri.exists(), f"no abri next to {sys.executable}"
    env = terminal_env(tmp_path, abri_config_home)
    term = Terminal([str(abri), "--site", str(site)], env, tmp_path / "status")
    try:
        term.wait_for("Welcome to abri")
        term.keys("l")
        term.wait_for("Add a host")
        term.keys("Enter")  # name "home", kind local
        term.wait_for("Add a stack to home")
        order = [stack.name for stack in Catalog.load()]  # the picker lists the catalog
        term.keys(*["Down"] * order.index("homeassistant"), "Enter")
        term.wait_for("as well?")  # it needs mqtt: add Mosquitto too
        term.keys("y")
        term.wait_for("Add Home Assistant on home")
        term.keys("C-o")
        term.wait_for("1 host, 2 stacks: unsaved changes")
        term.keys("C-s")
        term.wait_for("1 host, 2 stacks: saved")
        term.keys("q")
        status = term.exited()
        assert status == 0, f"abri did not exit cleanly ({status}):\n{term.screen()}"
        assert "Traceback" not in term.screen()
    finally:
        term.close()

    hosts = inventory.parse(site / "inventory.ini")
    assert list(hosts) == ["home"] and hosts["home"].kind == "local"
    data = yaml.safe_load((site / "host_vars" / "home" / "abri.yml").read_text())
    assert data["abri_host_kind"] == "local"
    assert list(data["abri_stacks"]) == ["mosquitto", "homeassistant"]
    assert data["abri_stacks"]["mosquitto"]["port"] == 1883
    assert data["abri_stacks"]["homeassistant"]["port"] == 8123

    site_id = yaml.safe_load((site / "group_vars/all/abri.yml").read_text())["abri_site_id"]
    password = vault_password_file(site_id)  # plain Ansible is given it, as the README says
    listed = subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory.ini", "--list",
                             "--vault-password-file", str(password)],
                            cwd=site, capture_output=True, text=True,
                            env={**os.environ, "ABRI_CONFIG_HOME": str(abri_config_home),
                                 "ANSIBLE_CONFIG": str(site / "ansible.cfg")})
    assert listed.returncode == 0, listed.stderr
    tree = json.loads(listed.stdout)
    assert tree["abri_local"]["hosts"] == ["home"]
    assert "abri_local" in tree["abri_targets"]["children"]
    home = tree["_meta"]["hostvars"]["home"]
    assert home["ansible_connection"] == "local"
    assert set(home["abri_stacks"]) == {"mosquitto", "homeassistant"}  # JSON keys sorted


def test_every_key_the_footer_shows_works_at_80x24(tmp_path, abri_config_home):
    site = tmp_path / "site"
    # ports nothing listens on: verify fails at once instead of waiting on a service
    built = Site.init(site)
    built.add_host("home", "local")
    built.add_stack("home", "mosquitto", {"port": "47883"})
    built.add_stack("home", "homeassistant", {"port": "48123"})
    built.save()
    env = terminal_env(tmp_path, abri_config_home)
    term = Terminal([str(BIN / "abri"), "--site", str(site)], env, tmp_path / "status",
                    width=80, height=24)

    def footer() -> str:
        return term.screen().rstrip("\n").splitlines()[-1]

    def back(key: str, gone: str) -> None:
        term.keys(key)
        term.wait_gone(gone)
        term.wait_for("1 host, 2 stacks")

    try:
        term.wait_for("1 host, 2 stacks: saved")
        term.wait_for("^s Save")  # the footer shows the keys of the site, now read
        shown = footer()
        for item in ("a Add", "e Edit", "d Remove", "r Review", "g Apply", "v Verify",
                     "q Quit", "^s Save", "^p palette"):
            assert item in shown, f"{item!r} is not in the footer at 80 columns: {shown!r}"
        term.keys("a")
        term.wait_for("Add a host")
        # a validation message with square brackets, whole
        term.keys("[", "p", "i", "]")
        term.wait_for("'[pi]' is not a valid host name")
        back("Escape", "Add a host")
        term.keys("e")
        term.wait_for("Edit host home")
        term.wait_for("new host and move the stacks.")  # the note on the fixed name
        back("Escape", "Edit host home")
        term.keys("d")
        term.wait_for("Remove home from the site?")
        back("n", "Remove home from the site?")
        term.keys("r")
        term.wait_for("[abri_local]")  # the inventory tab
        back("Escape", "[abri_local]")
        term.keys("g")
        term.wait_for("Apply saves the site")
        back("Enter", "Apply saves the site")  # Cancel has the focus: nothing is deployed
        term.keys("v")
        term.wait_for(r"Verify: (\d+ check\(s\) failed|every check passed)", pattern=True)
        back("Escape", "Verify:")
        term.keys("C-s")
        term.wait_for("Saved the site to")
        term.keys("C-p")
        term.wait_for("Search for commands")
        back("Escape", "Search for commands")

        term.keys("Tab")  # the stacks panel
        term.wait_for("⏎ Settings")
        shown = footer()
        for item in ("s Add", "⏎ Settings", "x Remove", "r Review", "g Apply", "v Verify",
                     "q Quit", "^s Save", "^p palette"):
            assert item in shown, f"{item!r} is not in the footer at 80 columns: {shown!r}"
        term.keys("s")
        term.wait_for("Add a stack to home")
        back("Escape", "Add a stack to home")
        term.keys("Enter")
        term.wait_for("Settings of Mosquitto")
        back("Escape", "Settings of Mosquitto")
        term.keys("x")
        term.wait_for("Take mosquitto off home?")
        back("n", "Take mosquitto off home?")
        term.wait_for("1 host, 2 stacks: saved")  # nothing above changed the site
        term.keys("q")
        status = term.exited()
        assert status == 0, f"abri did not exit cleanly ({status}):\n{term.screen()}"
        assert "Traceback" not in term.screen()
    finally:
        term.close()
