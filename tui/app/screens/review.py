"""Review: the files as they will be written (from the working copy), and a plan run."""

from __future__ import annotations

import threading

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.widgets import ProgressBar, Static, TabbedContent, TabPane

from tui.app.messages import RunFinished, RunProgress
from tui.app.screens.base import WorkerScreen
from tui.app.widgets import KeyBar, TitleBar
from tui.core import inventory, render
from tui.core.site import Site


def file_texts(site: Site) -> dict[str, tuple[str, str]]:
    """Tab title -> (text, lexer) for what save would write."""
    inv = site.path / "inventory.ini"
    existing = inv.read_text(encoding="utf-8") if inv.is_file() else None
    files = render.site_files(site)
    host_vars = "\n".join(text for rel, text in files.items() if rel.startswith("host_vars/"))
    return {
        "inventory.ini": (inventory.merge(existing, [h.entry() for h in site.hosts.values()]),
                          "ini"),
        "site.yml": (files["site.yml"], "yaml"),
        "host_vars": (host_vars or "# no hosts yet\n", "yaml"),
    }


def changes_text(progress, mode: str = "plan") -> Text:
    """The plan's changes, grouped per host."""
    by_host: dict[str, list[str]] = {}
    for host, task in progress.changes:
        by_host.setdefault(host, []).append(task)
    text = Text()
    for row in progress.hosts:
        tasks = by_host.get(row.name, [])
        style = "yellow" if tasks else "green"
        verb = "would change" if mode == "plan" else "changed"
        text.append(f"{row.name}: ", style="bold")
        text.append(f"{len(tasks)} task(s) {verb}\n" if tasks else "nothing to change\n",
                    style=style)
        for task in tasks:
            text.append(f"  ~ {task}\n")
    for f in progress.failures:
        text.append(f"✘ {f.host}: {f.task}: ", style="bold red")
        text.append(f"{f.message}\n")
    return text


class ReviewScreen(WorkerScreen):
    BINDINGS = [Binding("escape", "back", "Back"),
                Binding("p", "plan", "Run plan"),
                Binding("1", "tab('tab-inventory')", "inventory", show=False),
                Binding("2", "tab('tab-site')", "site.yml", show=False),
                Binding("3", "tab('tab-hostvars')", "host vars", show=False),
                Binding("4", "tab('tab-plan')", "plan", show=False)]

    def __init__(self) -> None:
        super().__init__()
        self.cancel: threading.Event | None = None
        self.running = False
        self.texts: dict[str, tuple[str, str]] = {}

    def compose(self) -> ComposeResult:
        yield TitleBar()
        texts = self.texts = file_texts(self.app.site)
        with TabbedContent(id="review"):
            for ident, title in (("tab-inventory", "inventory.ini"), ("tab-site", "site.yml"),
                                 ("tab-hostvars", "host_vars")):
                with TabPane(title, id=ident), VerticalScroll(classes="file-view"):
                    yield Static(self.syntax(*texts[title]), id=f"{ident}-text",
                                 classes="file-text")
            with TabPane("Plan", id="tab-plan"), Vertical(id="plan"):
                yield Static("Press p to run a plan: Ansible's check mode shows what apply "
                             "would change, without changing anything. It saves the site "
                             "first.", id="plan-status", markup=False)
                yield ProgressBar(total=100, show_eta=False, id="plan-bar")
                with VerticalScroll(id="plan-scroll"):
                    yield Static(id="plan-changes")
        yield KeyBar()

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.rerender())

    def syntax(self, text: str, lexer: str) -> Syntax:
        dark = self.app.current_theme.dark
        return Syntax(text, lexer, theme="monokai" if dark else "friendly", word_wrap=True,
                      line_numbers=True, background_color="default")

    def rerender(self) -> None:
        texts = self.texts = file_texts(self.app.site)
        for ident, title in (("tab-inventory", "inventory.ini"), ("tab-site", "site.yml"),
                             ("tab-hostvars", "host_vars")):
            self.query_one(f"#{ident}-text", Static).update(self.syntax(*texts[title]))

    def on_unmount(self) -> None:
        if self.cancel:
            self.cancel.set()

    def action_tab(self, ident: str) -> None:
        self.query_one(TabbedContent).active = ident

    def action_back(self) -> None:
        if self.running and self.cancel:
            self.cancel.set()
            self.query_one("#plan-status", Static).update("Canceling the plan…")
            return
        self.dismiss()

    # ------------------------------------------------------------------ plan
    def action_plan(self) -> None:
        if self.running:
            return
        self.query_one(TabbedContent).active = "tab-plan"
        if not self.app.save_site():
            return
        self.rerender()
        self.running = True
        self.cancel = threading.Event()
        self.set_class(True, "-running")
        self.set_class(False, "-failed")
        self.query_one("#plan-status", Static).update("Planning… (esc cancels)")
        self.query_one("#plan-bar", ProgressBar).update(progress=0)
        self.query_one("#plan-changes", Static).update("")
        self.plan(self.app.site.copy(), self.cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def plan(self, site: Site, cancel: threading.Event) -> None:
        result = self.app.runner(site, "plan", on_progress=lambda p: self.post_message(
            RunProgress(p)), cancel=cancel)
        self.post_message(RunFinished(result))

    def on_run_progress(self, message: RunProgress) -> None:
        p = message.progress
        self.query_one("#plan-bar", ProgressBar).update(progress=p.percent)
        if p.task:
            self.query_one("#plan-status", Static).update(f"Planning… {p.task}")
        self.query_one("#plan-changes", Static).update(changes_text(p))

    def on_run_finished(self, message: RunFinished) -> None:
        result = message.result
        p = result.progress
        self.running = False
        self.set_class(False, "-running")
        self.set_class(not result.ok, "-failed")
        self.query_one("#plan-bar", ProgressBar).update(progress=p.percent)
        self.query_one("#plan-changes", Static).update(changes_text(p))
        if result.status == "canceled":
            status = "The plan was canceled."
        elif result.ok:
            count = len(p.changes)
            status = f"Plan done: apply would change {count} task(s)." if count else \
                "Plan done: everything is as it should be."
        else:
            status = "The plan failed; see below."
        self.query_one("#plan-status", Static).update(status)
        for row in p.hosts:
            changes = sum(1 for h, _ in p.changes if h == row.name)
            if row.status in ("failed", "unreachable"):
                self.app.last_run[row.name] = (row.status, f"plan {row.status}")
            else:
                self.app.last_run[row.name] = ("ok", f"plan: {changes} to change")

    def worker_changed(self, event) -> None:
        if event.worker.group == "plan" and event.state.name in ("ERROR", "CANCELLED"):
            self.running = False
            self.set_class(False, "-running")
            self.set_class(True, "-failed")
            self.query_one("#plan-status", Static).update("The plan could not run.")
