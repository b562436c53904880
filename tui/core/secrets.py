"""Generated credentials, kept with ansible-vault at rest.

Each host's secrets live in host_vars/<host>/vault.yml, encrypted with Ansible's own VaultLib
(AES256), as `abri_secrets: {<stack>: {<key>: value}}`. The vault password is a random file,
mode 0600, in abri's config folder outside the site (ABRI_CONFIG_HOME or
~/.config/abri/vault/<site id>.pass); the site's ansible.cfg points at it, so plain
ansible-playbook runs decrypt too. No secret is ever written in plaintext inside the site.
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path
from typing import Any

import yaml

from tui.core import paths
from tui.core.atomic import write_atomic
from tui.core.errors import Problem, SiteError

VAULT_FILE = "vault.yml"


def generate() -> str:
    """A strong password: 32 URL-safe characters (192 bits), safe in YAML, URLs and MQTT."""
    return _random.token_urlsafe(24)


def vault_password_file(site_id: str) -> Path:
    return paths.config_home() / "vault" / f"{site_id}.pass"


def ensure_vault_password(site_id: str) -> Path:
    """Create the site's vault password file (0600 in a 0700 folder) if it does not exist."""
    file = vault_password_file(site_id)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(file.parent, 0o700)
        write_atomic(file, _random.token_urlsafe(48) + "\n", mode=0o600)
    return file


def _vault(site_id: str):
    from ansible.parsing.vault import VaultLib, VaultSecret

    file = vault_password_file(site_id)
    try:
        password = file.read_bytes().strip()
    except OSError:
        raise SiteError(Problem(str(file), "", "the vault password file is missing; it was "
                                "created by 'abri init' on the machine that made this site. "
                                "Copy it here (mode 0600) to use the site's secrets")) from None
    return VaultLib([("default", VaultSecret(password))])


def read_host_secrets(site_id: str, host_dir: Path) -> dict[str, dict[str, str]]:
    """Decrypt host_vars/<host>/vault.yml; an absent file means no secrets yet."""
    file = host_dir / VAULT_FILE
    if not file.exists():
        return {}
    from ansible.errors import AnsibleError

    try:
        plain = _vault(site_id).decrypt(file.read_bytes())
    except AnsibleError:
        raise SiteError(Problem(str(file), "", "cannot be decrypted with this site's vault "
                                "password (wrong or replaced password file)")) from None
    data = yaml.safe_load(plain) or {}
    secrets = data.get("abri_secrets", {}) if isinstance(data, dict) else {}
    if not isinstance(secrets, dict):
        raise SiteError(Problem(str(file), "abri_secrets", "must be a mapping of stacks"))
    return {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in secrets.items()}


def write_host_secrets(site_id: str, host_dir: Path, secrets: dict[str, dict[str, str]]) -> None:
    file = host_dir / VAULT_FILE
    if not secrets:
        if file.exists():
            file.unlink()
        return
    if read_host_secrets(site_id, host_dir) == secrets:
        return  # unchanged: keep the file byte for byte (vault output is salted)
    body: dict[str, Any] = {"abri_secrets": secrets}
    plain = yaml.safe_dump(body, sort_keys=True, default_flow_style=False).encode()
    write_atomic(file, _vault(site_id).encrypt(plain), mode=0o600)
