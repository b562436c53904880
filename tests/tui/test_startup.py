"""The first frame comes before the site is read (issue 8's startup target): the overview
shows at once with a loading indicator, and fills in when a worker has read the site."""

from __future__ import annotations

import subprocess
import sys
import threading

from textual.widgets import DataTable

from tests.tui.conftest import make_site, opened
from tui.app.app import SITE_MARKER
from tui.app.screens.overview import OverviewScreen
from tui.app.screens.welcome import WelcomeScreen


def test_the_app_module_leaves_the_engine_unloaded():
    """What makes reading a site slow (the catalog's JSON Schema, YAML, Ansible) is not
    imported with the app: only once the first frame is up."""
    code = ("import sys, tui.app.app, tui.app.screens.overview, tui.app.screens.welcome; "
            "heavy = [m for m in ('tui.core.site', 'tui.core.catalog', 'jsonschema', 'yaml',"
            " 'ansible') if m in sys.modules]; print(' '.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == []


def test_the_site_marker_is_the_engines():
    from tui.core.site import SITE_VARS

    assert SITE_MARKER == SITE_VARS


async def test_the_overview_shows_before_the_site_is_read_then_fills_in(tmp_path, new_app,
                                                                      monkeypatch):
    from tui.core.site import Site

    site_dir = tmp_path / "site"
    make_site(site_dir)
    release, reading = threading.Event(), threading.Event()
    load = Site.load

    def slow_load(path, catalog=None):
        reading.set()
        assert release.wait(10)
        return load(path, catalog)

    monkeypatch.setattr(Site, "load", staticmethod(slow_load))
    app = new_app(site_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        assert reading.wait(5)
        await pilot.pause()
        assert app.screen.query_one("#hosts-reading").loading and not app.opened
        assert not app.screen.query("#hosts")  # the tables come with the site
        assert "Reading the site" in str(app.screen.query_one("#summary").render())
        await pilot.press("a", "g")  # nothing to act on yet: the keys wait
        await pilot.pause()
        assert isinstance(app.screen, OverviewScreen)
        release.set()
        await opened(pilot)
        assert not app.screen.query(".reading")
        hosts = app.screen.query_one("#hosts", DataTable)
        assert hosts.row_count == 1
        assert app.screen.focused is hosts
        assert "1 host, 2 stacks: saved" in str(app.screen.query_one("#summary").render())


async def test_a_site_without_hosts_gives_way_to_the_welcome(tmp_path, new_app):
    from tui.core.site import Site

    site_dir = tmp_path / "site"
    Site.init(site_dir).save()
    app = new_app(site_dir)
    async with app.run_test(size=(80, 24)) as pilot:
        await opened(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        assert app.site is not None
