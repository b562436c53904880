"""Where the kit's Ansible content and stack catalog live, and where abri keeps private files."""

from __future__ import annotations

import os
from pathlib import Path


def kit_dir() -> Path:
    """The directory holding playbooks/ and stacks/.

    In a source checkout (or an editable install) that is the repository root; in an installed
    wheel the two folders ship inside the package as tui/_kit/. ABRI_KIT_DIR overrides both.
    """
    override = os.environ.get("ABRI_KIT_DIR")
    if override:
        return Path(override).resolve()
    package = Path(__file__).resolve().parent.parent
    shipped = package / "_kit"
    if (shipped / "stacks").is_dir():
        return shipped
    return package.parent


def stacks_dir() -> Path:
    return kit_dir() / "stacks"


def playbooks_dir() -> Path:
    return kit_dir() / "playbooks"


def config_home() -> Path:
    """abri's private state outside any site: vault password files live here (0700)."""
    override = os.environ.get("ABRI_CONFIG_HOME")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "abri"
