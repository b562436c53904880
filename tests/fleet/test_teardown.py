"""Nothing named abri-fleet-* survives a fleet: not after a passing test, not after a failing
one, not when the harness is used directly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import harness
import pytest

pytestmark = pytest.mark.fleet

_seen_runs: list[str] = []


def test_fixture_fleet_in_use(fleet):
    fl = fleet(1, image="plain")
    _seen_runs.append(fl.id)
    found = harness.leftovers(run=fl.id)
    assert len(found["containers"]) == 1 and len(found["volumes"]) == 1
    assert found["networks"] == [fl.network]


def test_fixture_teardown_left_nothing(fleet_engine):
    # runs after the test above (file order); its fixture has torn down by now
    assert _seen_runs, "test_fixture_fleet_in_use did not run first"
    for run in _seen_runs:
        assert harness.leftovers(run=run) == {"containers": [], "volumes": [], "networks": []}


def test_harness_context_manager_cleans_up_after_an_error(fleet_engine):
    with pytest.raises(RuntimeError, match="boom"), harness.start_fleet(1, image="plain") as fl:
        run = fl.id
        assert harness.leftovers(run=run)["containers"]
        raise RuntimeError("boom")
    assert harness.leftovers(run=run) == {"containers": [], "volumes": [], "networks": []}


def test_failing_test_tears_down_and_reports_the_journal(fleet_engine, tmp_path):
    """An inner pytest run whose fleet test fails: teardown still happens and the report
    carries each host's journal tail."""
    (tmp_path / "test_inner.py").write_text(textwrap.dedent("""
        import pytest
        pytestmark = pytest.mark.fleet

        def test_deliberately_failing(fleet):
            fl = fleet(1, image="plain")
            print(f"FLEET_RUN={fl.id}")
            assert False, "deliberate failure"
    """))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(harness.__file__))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fleet_plugin", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "deliberate failure" in out
    runs = [line.split("=", 1)[1].strip() for line in out.splitlines()
            if line.startswith("FLEET_RUN=")]
    assert runs, out
    assert f"journal tail of abri-fleet-{runs[0]}-h1" in out, out
    assert "systemd" in out
    assert harness.leftovers(run=runs[0]) == {"containers": [], "volumes": [], "networks": []}
