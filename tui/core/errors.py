"""Errors the engine raises for bad input. The CLI turns them into exit status 2 and one
readable line each; the TUI shows them next to the field that caused them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where it is, what is wrong, what would be valid."""

    where: str  # e.g. "host 'pi'", "stacks/mosquitto/stack.yml", "host 'pi', stack 'mosquitto'"
    field: str  # e.g. "port", "settings.bind"
    message: str  # what was wrong and what would be valid

    def __str__(self) -> str:
        prefix = f"{self.where}: " if self.where else ""
        return f"{prefix}{self.field}: {self.message}" if self.field else f"{prefix}{self.message}"


class AbriError(Exception):
    """Invalid input or state. Carries one or more Problems, never a traceback for users."""

    def __init__(self, problems: Problem | list[Problem] | str):
        if isinstance(problems, str):
            problems = [Problem("", "", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class SiteError(AbriError):
    """The site directory is missing, broken, or cannot be written."""
