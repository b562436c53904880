"""pytest fixtures and hooks for the fleet tests (loaded by tests/fleet/conftest.py).

Kept in a plain module so that a pytest run elsewhere can load it with ``-p fleet_plugin``
(with tests/fleet on sys.path), which the teardown test does for an inner, failing run.

Fixtures
--------
fleet_engine   (session)  the engine is usable; skips (developers) or fails (CI=true) otherwise
fleet_images   (session)  harness.Images: every image built or reused by recipe hash
fleet_registry (session)  harness.Registry: address "172.17.0.1:5000", refs, upstream, pushed
fleet          (function) factory: fleet(n=1, image="docker", timeout=120) -> harness.Fleet
"""

from __future__ import annotations

import os

import harness
import pytest

IN_CI = os.environ.get("CI") == "true"
FLEET_DIR = os.path.dirname(os.path.abspath(__file__))


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


@pytest.fixture
def fleet(request: pytest.FixtureRequest, fleet_engine, tmp_path):
    """Factory: ``fleet(n=1, image="docker", timeout=120)`` starts n hosts and returns a
    harness.Fleet (iterable and indexable; .hosts, .network, .inventory(), .journal_tails()).
    image: "docker" (Debian 13 with docker.io + compose), "plain" (Debian 13), "bookworm"
    (Debian 12), or an image reference. Everything is removed after the test, pass or fail."""
    fleets: list[harness.Fleet] = []
    request.node._abri_fleets = fleets

    def factory(n: int = 1, image: str = "docker", timeout: float = 120) -> harness.Fleet:
        fl = harness.Fleet(workdir=tmp_path / f"fleet{len(fleets)}")
        fleets.append(fl)
        fl.add_hosts(n, image=image, timeout=timeout)
        return fl

    yield factory
    problems = []
    for fl in fleets:
        problems += fl.teardown()
    assert not problems, f"fleet teardown left something behind: {problems}"
