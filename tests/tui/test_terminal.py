"""The real thing in a real terminal: `abri` in tmux, driven by keystrokes.

Adds this machine with Home Assistant and (offered as its dependency) Mosquitto, saves and
quits; then checks what was written, and that Ansible's own ansible-inventory accepts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tui.core import inventory

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

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{screen}")

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


def test_add_this_machine_with_both_stacks_in_a_real_terminal(tmp_path, abri_config_home):
    site = tmp_path / "site"
    abri = BIN / "abri"
    assert abri.exists(), f"no abri next to {sys.executable}"
    env = {"ABRI_CONFIG_HOME": str(abri_config_home), "TERM": "xterm-256color",
           "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    term = Terminal([str(abri), "--site", str(site)], env, tmp_path / "status")
    try:
        term.wait_for("Welcome to abri")
        term.keys("l")
        term.wait_for("Add a host")
        term.keys("Enter")  # name "home", kind local
        term.wait_for("Add a stack to home")
        term.keys("Enter")  # Home Assistant
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

    listed = subprocess.run([str(BIN / "ansible-inventory"), "-i", "inventory.ini", "--list"],
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
