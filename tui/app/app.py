"""The abri installer: a Textual front end over tui.core. It adds no logic of its own: every
change is made on a working copy of the Site through the engine, and "save" writes it."""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.events import DescendantFocus
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.app import services
from tui.app.messages import SiteLoaded
from tui.core.errors import AbriError, Problem

if TYPE_CHECKING:
    from tui.core.site import Site

# bench/startup.py: exit once the first screen is up ("1"), or once the site it shows has
# been loaded and filled in ("loaded")
READY_ENV = "ABRI_EXIT_WHEN_READY"
# The file that makes a folder an abri site (tui.core.site.SITE_VARS, checked equal by a
# test): looked at before the first frame without importing the engine, whose catalog and
# Ansible imports are what makes loading a site slow.
SITE_MARKER = Path("group_vars/all/abri.yml")


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
        Binding("f2", "toggle_theme", "Theme", show=False),
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
        self.loading = False  # the site is being read in a worker
        self.opened = False  # the first screen shows the site as it is on disk
        self.last_run: dict[str, tuple[str, str]] = {}  # host -> (status, label) of last run
        self.become_password: str | None = None  # sudo's password, asked for, memory only

    # ------------------------------------------------------------------ site
    async def on_mount(self) -> None:
        await self.open_site()

    def site_marked(self) -> bool:
        return (self.site_dir / SITE_MARKER).is_file()

    def first_screen(self) -> Screen:
        """Show the first screen at once; the site is read in a worker after it is drawn.

        A folder with an abri site opens on the overview, which shows a loading indicator
        until the site is read (ansible-core's inventory parser and the vault take a
        while); it then fills in, or gives way to the welcome (no hosts) or to the list of
        problems. Any other folder opens on the welcome."""
        self.dirty = False
        self.site = None
        self.opened = False
        self.loading = self.site_marked()
        if self.loading:
            from tui.app.screens.overview import OverviewScreen

            return OverviewScreen()
        from tui.app.screens.welcome import WelcomeScreen

        return WelcomeScreen()

    def after_first_screen(self, screen: Screen) -> None:
        ready = os.environ.get(READY_ENV)
        if self.loading and ready != "1":
            self.call_after_refresh(self.start_loading, screen)
        else:
            self.opened = True
        if ready == "1" or (ready and not self.loading):
            self.call_after_refresh(self.exit, 0)

    async def open_site(self) -> None:
        """Open the site folder: at start, and on the problems screen's reload."""
        screen = self.first_screen()
        self.update_subtitle()
        await self.show_first(screen)
        self.after_first_screen(screen)

    def start_loading(self, screen: Screen) -> None:
        """After the first frame: the loading indicator, and the worker that reads the site."""
        show = getattr(screen, "show_loading", None)
        if show is not None:
            show()
        self.load_site(self.site_dir)

    async def show_first(self, screen: Screen) -> None:
        """Show the first screen, in place of the one before (and of anything opened over
        it, such as the command palette)."""
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        if len(self.screen_stack) > 1:
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load_site(self, site_dir: Path) -> None:
        from tui.core.site import Site

        try:
            site: Site | None = Site.load(site_dir)
            problems: list[Problem] = []
        except Exception as exc:  # a broken site or kit: its problems, never a traceback
            site, problems = None, as_problems(exc)
        self.post_message(SiteLoaded(site, problems))

    async def on_site_loaded(self, message: SiteLoaded) -> None:
        from tui.app.screens.broken import BrokenSiteScreen
        from tui.app.screens.overview import OverviewScreen
        from tui.app.screens.welcome import WelcomeScreen

        self.loading = False
        self.site = message.site
        if message.problems or self.site is None:
            await self.show_first(BrokenSiteScreen(message.problems))
        elif not self.site.hosts:
            await self.show_first(WelcomeScreen())
        else:
            overview = next((s for s in self.screen_stack if isinstance(s, OverviewScreen)),
                            None)
            if overview is None:
                await self.show_first(OverviewScreen())
            else:
                await overview.site_loaded()
        self.opened = True
        self.refresh_bindings()
        if os.environ.get(READY_ENV) == "loaded":
            self.call_after_refresh(self.exit, 0)

    async def show_overview(self, new_host: str | None = None) -> None:
        """Leave the welcome screen for the overview; a new host goes on to the stack picker."""
        from tui.app.screens.overview import OverviewScreen

        overview = OverviewScreen()
        await self.switch_screen(overview)
        if new_host:
            overview.pick_stack(new_host)

    def create_site(self) -> bool:
        """An empty site in memory (written on save); False with an error modal if refused
        (the engine refuses a folder holding files abri would write but did not).

        Creating it changes nothing yet: the site becomes unsaved once a host is added."""
        from tui.core.site import Site

        try:
            self.site = Site.init(self.site_dir)
        except AbriError as exc:
            self.show_problems("This folder cannot hold a new site", exc.problems)
            return False
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
        self.refresh_bindings()

    def update_subtitle(self) -> None:
        self.sub_title = str(self.site_dir) + ("  • unsaved changes" if self.dirty else "")

    def show_problems(self, title: str, problems: list[Problem]) -> None:
        from tui.app.screens.dialogs import ErrorScreen

        self.push_screen(ErrorScreen(title, problems))

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "save":
            # nothing to save on the welcome (until a host is added) or the problems screen
            return self.site is not None and (self.dirty or self.site_marked())
        return True

    def action_save(self) -> None:
        if self.site is None:
            self.notify("There is no site to save yet.", severity="warning")
            return
        if self.save_site():
            self.notify(f"Saved the site to {self.site_dir}", title="Saved", markup=False)
            if isinstance(self.screen, Screen) and hasattr(self.screen, "refresh_view"):
                self.screen.refresh_view()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    async def action_quit(self) -> None:
        from tui.app.screens.dialogs import QuitScreen

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
        """The command palette: Textual's own (theme, quit, keys...), save, and every
        action of the screen it was opened on, worded for the current selection."""
        yield from super().get_system_commands(screen)
        if self.check_action("save", ()):
            yield SystemCommand("Save the site", "Write every change to the site folder "
                                "(ctrl+s)", self.action_save)
        yield SystemCommand("Toggle dark/light theme", "Switch between the dark and light "
                            "themes (f2)", self.action_toggle_theme)
        commands = getattr(screen, "palette_commands", None)
        if commands is not None:
            yield from commands()
            return
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
