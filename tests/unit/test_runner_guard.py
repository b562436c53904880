"""When abri ends, its Ansible run ends with it.

ansible-runner starts ansible-playbook in a session of its own (pexpect, SIGHUP ignored) and
Ansible runs each task in a worker of a session of its own, so nothing of abri's own end
(Ctrl+C, a closed terminal or SSH session, SIGKILL) used to reach them: the task being run
went on in the background, every item of its loop, racing the next apply. The runner puts a
guard in front of ansible-playbook (tui.core.runner._guarded_path): the kernel sends it
SIGTERM when abri ends, and ansible-playbook stops its workers.

Here a process standing in for abri runs a playbook whose one task loops over three slow
items, and is killed (SIGKILL of its whole process group) once the first item has started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the guard uses Linux's PR_SET_PDEATHSIG")

DRIVER = """\
import os, sys
sys.path.insert(0, {repo!r})
import ansible_runner
from tui.core.runner import _guarded_path

private = {private!r}
path = _guarded_path(__import__("pathlib").Path(private), {bindir!r} + os.pathsep
                     + os.environ.get("PATH", ""))
ansible_runner.run(private_data_dir=private, project_dir={project!r}, playbook="pb.yml",
                   inventory={inventory!r}, quiet=True, envvars={{"PATH": path}},
                   event_handler=lambda event: True)
"""


def _alive(marker: str) -> list[int]:
    """Processes (but this one) whose command line names marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


def test_killing_abri_ends_its_playbook_and_the_loop_it_was_in(tmp_path):
    marks = tmp_path / "marks"
    project = tmp_path / "project"
    private = tmp_path / "private"
    for folder in (marks, project, private):
        folder.mkdir()
    (project / "pb.yml").write_text(textwrap.dedent(f"""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: Three slow items
              ansible.builtin.shell: >-
                touch {marks}/started-{{{{ item }}}}; sleep 3; touch {marks}/done-{{{{ item }}}}
              loop: [1, 2, 3]
              changed_when: true
            - name: After the loop
              ansible.builtin.command: touch {marks}/next-task
              changed_when: true
        """))
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"local ansible_connection=local ansible_python_interpreter="
                         f"{sys.executable}\n")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(repo=str(REPO), private=str(private),
                                    bindir=str(BIN), project=str(project),
                                    inventory=str(inventory)))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               ANSIBLE_NOCOLOR="1")
    abri = subprocess.Popen([sys.executable, str(driver)], env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (marks / "started-1").exists():
            assert abri.poll() is None, "the run ended before its first item started"
            assert time.monotonic() < deadline, "the first item did not start"
            time.sleep(0.05)
        os.killpg(abri.pid, signal.SIGKILL)
        abri.wait()
        deadline = time.monotonic() + 10
        while _alive(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _alive(str(tmp_path))
        assert not left, f"processes of the killed run live on: {left}"
        assert sorted(p.name for p in marks.iterdir()) == ["started-1"]
    finally:
        for pid in _alive(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
