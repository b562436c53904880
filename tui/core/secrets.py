"""Generated credentials, kept with ansible-vault at rest.

Each host's secrets live in host_vars/<host>/vault.yml, encrypted with Ansible's own VaultLib
(AES256), as `abri_secrets: {<stack>: {<key>: value}}`. The vault password is a random file,
mode 0600, in abri's config folder outside the site (ABRI_CONFIG_HOME or
~/.config/abri/vault/<site id>.pass), or comes from ABRI_VAULT_PASSWORD / a file given with
--vault-password-file (cron, CI). abri hands it to Ansible for its runs; the site's ansible.cfg
does not name it, so a read-only `ansible-inventory` in the site decrypts nothing unless asked
(`--vault-password-file`). No secret is ever written in plaintext inside the site.
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
    """The site's vault password file: ABRI_VAULT_PASSWORD_FILE (or --vault-password-file)
    when given, else abri's own file for the site."""
    given = os.environ.get("ABRI_VAULT_PASSWORD_FILE")
    if given:
        return Path(given).expanduser().resolve()
    return paths.config_home() / "vault" / f"{site_id}.pass"


def vault_password(site_id: str) -> bytes:
    """The vault password: ABRI_VAULT_PASSWORD (cron, CI), else the password file."""
    given = os.environ.get("ABRI_VAULT_PASSWORD")
    if given:
        return given.encode().strip()
    file = vault_password_file(site_id)
    try:
        return file.read_bytes().strip()
    except OSError:
        raise SiteError(Problem(str(file), "", "the vault password file is missing; it was "
                                "created by 'abri init' on the machine that made this site. "
                                "Copy it here (mode 0600), or give the password with "
                                "ABRI_VAULT_PASSWORD or --vault-password-file")) from None


def password_file_warning(site_id: str) -> str | None:
    """A sentence when the password file can be read by other users, with the fix."""
    if os.environ.get("ABRI_VAULT_PASSWORD"):
        return None
    file = vault_password_file(site_id)
    try:
        mode = file.stat().st_mode & 0o777
    except OSError:
        return None
    if mode & 0o077:
        return (f"the vault password file {file} can be read by other users (mode "
                f"{mode:04o}); fix it with: chmod 600 {file}")
    return None


def ensure_vault_password(site_id: str) -> Path:
    """Create the site's vault password file (0600 in a 0700 folder) if it does not exist
    (nothing to create when the password comes from the environment)."""
    file = vault_password_file(site_id)
    if os.environ.get("ABRI_VAULT_PASSWORD") or os.environ.get("ABRI_VAULT_PASSWORD_FILE"):
        return file
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(file.parent, 0o700)
        write_atomic(file, _random.token_urlsafe(48) + "\n", mode=0o600)
    return file


def _vault(site_id: str):
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([("default", VaultSecret(vault_password(site_id)))])


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
    data = yaml.load(plain, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
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
