"""The abri installer: a Textual front end over tui.core. It adds no logic of its own: every
change is made on a working copy of the Site through the engine, and "save" writes it."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.events import DescendantFocus
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.app import services
from tui.app.screens.dialogs import ErrorScreen, QuitScreen
from tui.core.errors import AbriError, Problem, SiteError
from tui.core.site import Site

READY_ENV = "ABRI_EXIT_WHEN_READY"  # bench/startup.py: exit once the first screen is up


def as_problems(error: BaseException) -> list[Problem]:
    """Any error as problems a user can read: the engine's own, or one line for the rest."""
    if isinstance(error, AbriError):
        return error.problems
    if isinstance(error, OSError):
        where = str(error.filename) if error.filename else ""
        return [Problem(where, "", error.strerror or str(error))]
    return [Problem("", "", f"internal error: {type(error).__name__}: {error}")]


class AbriApp(App[int]):
    TITLE = "abri"
    CSS_PATH = "abri.tcss"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("f2", "toggle_theme", "Theme"),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    dirty: reactive[bool] = reactive(False)

    def __init__(self, site_dir: Path, runner: services.Runner | None = None,
                 verifier: services.Verifier | None = None,
                 pinger: services.Pinger | None = None, blink: bool = True):
        super().__init__()
        self.site_dir = Path(site_dir)
        self.runner = runner or services.run_site
        self.verifier = verifier or services.verify_host
        self.pinger = pinger or services.ping
        self.blink = blink
        self.site: Site | None = None
        self.last_run: dict[str, tuple[str, str]] = {}  # host -> (status, label) of last run
        self.theme = "textual-dark"

    # ------------------------------------------------------------------ site
    async def on_mount(self) -> None:
        await self.open_site()
        if os.environ.get(READY_ENV):
            self.call_after_refresh(self.exit, 0)

    async def open_site(self) -> None:
        """Load the site and show the right first screen: overview, welcome or problems."""
        from tui.app.screens.broken import BrokenSiteScreen
        from tui.app.screens.overview import OverviewScreen
        from tui.app.screens.welcome import WelcomeScreen

        self.dirty = False
        self.site = None
        screen: Screen
        try:
            if Site.exists(self.site_dir):
                self.site = Site.load(self.site_dir)
                screen = OverviewScreen() if self.site.hosts else WelcomeScreen()
            else:
                screen = WelcomeScreen()
        except SiteError as exc:
            screen = BrokenSiteScreen(exc.problems)
        except AbriError as exc:  # e.g. a broken stack manifest in the kit
            screen = BrokenSiteScreen(exc.problems)
        self.update_subtitle()
        if len(self.screen_stack) > 1:
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    async def show_overview(self, new_host: str | None = None) -> None:
        """Leave the welcome screen for the overview; a new host goes on to the stack picker."""
        from tui.app.screens.overview import OverviewScreen

        overview = OverviewScreen()
        await self.switch_screen(overview)
        if new_host:
            overview.pick_stack(new_host)

    def create_site(self) -> bool:
        """An empty site in memory (written on save); False with an error modal if refused."""
        try:
            self.site = Site.init(self.site_dir)
        except AbriError as exc:
            self.show_problems("This folder cannot hold a new site", exc.problems)
            return False
        self.dirty = True
        return True

    def commit(self, site: Site) -> None:
        """Adopt a changed working copy (already checked by the engine)."""
        self.site = site
        self.dirty = True

    def save_site(self) -> bool:
        if self.site is None:
            return False
        try:
            self.site.save()
        except (AbriError, OSError) as exc:
            self.show_problems("Nothing was written: the site has problems", as_problems(exc))
            return False
        self.dirty = False
        return True

    def watch_dirty(self) -> None:
        self.update_subtitle()

    def update_subtitle(self) -> None:
        self.sub_title = str(self.site_dir) + ("  • unsaved changes" if self.dirty else "")

    def show_problems(self, title: str, problems: list[Problem]) -> None:
        self.push_screen(ErrorScreen(title, problems))

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save":
            return self.site is not None  # nothing to save on the welcome or problems screen
        return True

    def action_save(self) -> None:
        if self.site is None:
            self.notify("There is no site to save yet.", severity="warning")
            return
        if self.save_site():
            self.notify(f"Saved the site to {self.site_dir}", title="Saved")
            if isinstance(self.screen, Screen) and hasattr(self.screen, "refresh_view"):
                self.screen.refresh_view()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def action_quit(self) -> None:
        if not self.dirty:
            self.exit(0)
            return

        def decided(choice: str | None) -> None:
            if choice == "save":
                if self.save_site():
                    self.exit(0)
            elif choice == "discard":
                self.exit(0)

        self.push_screen(QuitScreen(classes="dialog"), decided)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Save the site", "Write every change to the site folder",
                            self.action_save)
        yield SystemCommand("Toggle dark/light theme", "Switch between the dark and light "
                            "themes", self.action_toggle_theme)
        for binding in screen.BINDINGS:
            if isinstance(binding, Binding) and binding.description and binding.show:
                action = binding.action
                yield SystemCommand(binding.description, f"key: {binding.key}",
                                    lambda a=action, s=screen: s.run_action(a))

    # ------------------------------------------------------------------ errors
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a failed worker becomes a message to the user."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.show_problems("The task stopped with an error", as_problems(event.worker.error))

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        if not self.blink and hasattr(event.widget, "cursor_blink"):
            event.widget.cursor_blink = False  # frozen for snapshots and tests

    def _fatal_error(self) -> None:
        """A bug in the UI: keep the traceback in a log file, tell the user one line."""
        if os.environ.get("ABRI_DEBUG"):
            super()._fatal_error()
            return
        from tui.core import paths

        log = paths.config_home() / "abri-tui-error.log"
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            where = f" (details in {log})"
        except OSError:
            where = " (set ABRI_DEBUG=1 for details)"
        self.bell()
        self._exit_renderables.append(f"abri: internal error{where}")
        self._return_code = 1
        self._close_messages_no_wait()


def quiet_ansible() -> None:
    """ansible-core probes the terminal the first time ansible.utils.color is imported
    (curses.setupterm on sys.stdout), which fails on the stream Textual puts in its place.
    The engine imports Ansible lazily, often after Textual has taken over the terminal; with
    colour off Ansible never probes. (Runs set ANSIBLE_NOCOLOR for ansible-playbook anyway.)
    This keeps Ansible's import cost off the welcome screen."""
    os.environ["ANSIBLE_NOCOLOR"] = "1"


def make_app(site_dir: Path, runner: services.Runner | None = None,
             verifier: services.Verifier | None = None, pinger: services.Pinger | None = None,
             blink: bool = True) -> AbriApp:
    """The one factory for the CLI, the tests and the snapshots."""
    quiet_ansible()
    return AbriApp(site_dir, runner=runner, verifier=verifier, pinger=pinger, blink=blink)
