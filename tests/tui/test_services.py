"""The TUI's default outside-world callables against the real engine and real Ansible."""

from __future__ import annotations

from tests.tui.conftest import make_site
from tui.app import services
from tui.core.site import Site


def test_test_connection_pings_this_machine_for_real(tmp_path):
    site = make_site(tmp_path / "site", stacks=())
    ok, detail = services.ping(site, "home")
    assert ok, detail
    assert "pong" in detail


def test_test_connection_reports_an_unreachable_host_without_a_traceback(tmp_path):
    site = Site.init(tmp_path / "site")
    site.add_host("nowhere", "ssh", "192.0.2.1", 22, "pi")  # TEST-NET-1: never answers
    ok, detail = services.ping(site, "nowhere", timeout=30)
    assert not ok
    assert detail.startswith(("unreachable:", "no answer", "failed:"))
    assert "Traceback" not in detail
