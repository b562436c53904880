"""abri's own SSH key for the guests it creates: one ed25519 key per site, machine-local
(0600 in abri's 0700 config folder, beside the vault password), never in the site."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tui.core import paths


def key_path(site_id: str) -> Path:
    return paths.config_home() / "ssh" / f"{site_id}_ed25519"


def ensure(site_id: str) -> Path:
    """The site's key, made with ssh-keygen the first time."""
    key = key_path(site_id)
    if key.exists() and Path(f"{key}.pub").exists():
        return key
    key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key.parent, 0o700)
    tmp = key.with_name(f".{key.name}.{os.getpid()}")
    for stale in (tmp, Path(f"{tmp}.pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                    f"abri site {site_id[:12]}", "-f", str(tmp)],
                   check=True, capture_output=True, stdin=subprocess.DEVNULL)
    os.replace(f"{tmp}.pub", f"{key}.pub")
    os.replace(tmp, key)
    return key
