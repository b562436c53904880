"""pytest fixtures and hooks for the fleet tests (loaded by tests/fleet/conftest.py).

Kept in a plain module so that a pytest run elsewhere can load it with ``-p fleet_plugin``
(with tests/fleet on sys.path), which the teardown test does for an inner, failing run.

Fixtures
--------
fleet_engine   (session)  the engine is usable; skips (developers) or fails (CI=true) otherwise
fleet_images   (session)  harness.Images: every image built or reused by recipe hash
fleet_registry (session)  harness.Registry: address "172.17.0.1:5000", refs, upstream, pushed
prepared_host_image (session)  "abri-test/host-prepared:<run id>": a "plain" host on which
                          abri's own engine step ran earlier in this session, committed
fleet          (function) factory: fleet(n=1, image="docker", timeout=120) -> harness.Fleet;
                          image="prepared" starts hosts from prepared_host_image
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import harness
import pytest

IN_CI = os.environ.get("CI") == "true"
FLEET_DIR = os.path.dirname(os.path.abspath(__file__))
#: one id per test session (the prepared host image's tag)
SESSION_RUN = secrets.token_hex(3)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fleet: needs the Docker engine and boots real Debian 13 test hosts"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fleet_items = []
    for item in items:
        if str(item.path).startswith(FLEET_DIR + os.sep) and not item.get_closest_marker("fleet"):
            item.add_marker(pytest.mark.fleet)
        if item.get_closest_marker("fleet"):
            fleet_items.append(item)
    if not fleet_items or IN_CI:
        return  # in CI a missing engine is a failure (fleet_engine fails), never a skip
    ok, reason = harness.engine_status()
    if not ok:
        skip = pytest.mark.skip(reason=f"fleet tests skipped: {reason}")
        for item in fleet_items:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.when in ("setup", "call") and report.failed:
        for fleet in getattr(item, "_abri_fleets", []):
            for host in fleet.hosts:
                try:
                    tail = host.journal_tail(80)
                except Exception as exc:  # the report must not break on a dead host
                    tail = f"(could not read the journal: {exc})"
                report.sections.append((f"journal tail of {host.name}", tail))


@pytest.fixture(scope="session")
def fleet_engine() -> None:
    ok, reason = harness.engine_status()
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true and the fleet engine is missing: {reason}", pytrace=False)
        pytest.skip(f"fleet tests skipped: {reason}")
    harness.reap_orphans()


@pytest.fixture(scope="session")
def fleet_images(fleet_engine) -> harness.Images:
    """Every image (hosts and services), built once per recipe hash."""
    return harness.build_images()


@pytest.fixture(scope="session")
def fleet_registry(fleet_images) -> harness.Registry:
    """The local registry with the service images under their upstream repository paths."""
    return harness.ensure_registry(fleet_images)


def _engine_only_apply(host: harness.Host, work: Path, registry: str) -> str:
    """Converge only the engine on host with abri itself: the CLI writes a site with the host
    and no stacks (the registry mirror and the nested engine's address ranges set as the
    tests set them), and `abri apply --no-verify` runs abri's kit on it. When the CLI says
    there is nothing to deploy (no stacks), the site's own playbook is run as abri runs it
    (`ansible-playbook site.yml`, the plain path every site keeps). Returns the output."""
    abri = str(Path(sys.executable).parent / "abri")
    site = work / "site"
    env = dict(os.environ, ABRI_CONFIG_HOME=str(work / "abri-config"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(*args: str, cwd: Path | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)}:\n{proc.stdout[-6000:]}{proc.stderr}"
        return proc.stdout + proc.stderr

    run(abri, "init", "--site", str(site), "--registry-mirror", registry, "--registry-insecure")
    run(abri, "host", "add", "prep", "--kind", "ssh", "--address", host.address, "--port", "22",
        "--user", host.ssh_user, "--key", str(host.key_path), "--site", str(site))
    nested = {k: v for k, v in harness.host_daemon_config(registry).items()
              if k != "insecure-registries"}
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\ndocker_engine_daemon_options: " + json.dumps(nested) + "\n")
    out = run(abri, "apply", "--no-verify", "--site", str(site), timeout=1800)
    if "Recap:" not in out:
        harness.say(f"prepared host: abri apply ran nothing ({out.strip()[:120]!r}); running "
                    "the site's playbook as abri does")
        cmd = ["ansible-playbook", "site.yml"]
        if any(site.rglob("vault.yml")):
            site_id = re.search(r"abri_site_id: (\S+)",
                                (site / "group_vars" / "all" / "abri.yml").read_text()).group(1)
            cmd += ["--vault-password-file", str(work / "abri-config" / "vault" /
                                                 f"{site_id}.pass")]
        env["ANSIBLE_CONFIG"] = str(site / "ansible.cfg")
        out = run(*cmd, cwd=site, timeout=1800)
        assert re.search(r"^prep\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0",
                         out, re.M), out[-4000:]
    else:
        assert re.search(r"^\s*prep\s+ok=\d+ changed=[1-9]\d* failed=0", out, re.M), \
            out[-4000:]
    return out


@pytest.fixture(scope="session")
def prepared_host_image(fleet_registry, tmp_path_factory):
    """A host image prepared by abri itself, once per session: a "plain" Debian 13 host (no
    Docker) on which abri's engine step ran (Docker engine and Compose from Debian's archive,
    daemon.json, abri's engine state), committed as abri-test/host-prepared:<run id>. For tests
    that are not about a fresh host (never a hand-made image); removed at session end.
    /var/lib/docker is each host's own volume, so hosts from it start with an empty engine."""
    work = tmp_path_factory.mktemp("prepared-host")
    ref = f"{harness.PREPARED_REPO}:{SESSION_RUN}"
    start = time.monotonic()
    with harness.start_fleet(1, image="plain", workdir=work / "fleet",
                             registry=fleet_registry.address) as fl:
        host = fl.hosts[0]
        _engine_only_apply(host, work, fleet_registry.address)
        assert host.exec("docker compose version && systemctl is-enabled docker",
                         check=False).returncode == 0, "the engine step left no engine"
        applied = time.monotonic() - start
        harness.commit_host(host, ref, {harness.LABEL_RUN: SESSION_RUN,
                                        harness.LABEL_PID: str(os.getpid())})
    harness.say(f"prepared host image {ref}: engine step {applied:.0f}s, commit "
                f"{time.monotonic() - start - applied:.0f}s")
    yield ref
    harness.docker("rmi", "-f", ref, check=False)


@pytest.fixture
def fleet(request: pytest.FixtureRequest, fleet_engine, tmp_path):
    """Factory: ``fleet(n=1, image="docker", timeout=120)`` starts n hosts and returns a
    harness.Fleet (iterable and indexable; .hosts, .network, .inventory(), .journal_tails()).
    image: "docker" (Debian 13 with docker.io + compose), "plain" (Debian 13), "bookworm"
    (Debian 12), "prepared" (a plain host on which abri's engine step ran, see
    prepared_host_image), or an image reference. Everything is removed after the test, pass
    or fail."""
    fleets: list[harness.Fleet] = []
    request.node._abri_fleets = fleets

    def factory(n: int = 1, image: str = "docker", timeout: float = 120) -> harness.Fleet:
        if image == "prepared":
            image = request.getfixturevalue("prepared_host_image")
        fl = harness.Fleet(workdir=tmp_path / f"fleet{len(fleets)}")
        fleets.append(fl)
        fl.add_hosts(n, image=image, timeout=timeout)
        return fl

    yield factory
    problems = []
    for fl in fleets:
        problems += fl.teardown()
    assert not problems, f"fleet teardown left something behind: {problems}"
