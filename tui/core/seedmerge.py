"""Put abri's own part back into data an import brings (a stack's manifest: ha_addon.merge).

An add-on's data replaces a stack's user data, seed files included: what abri seeded there
for its checks (a flow that publishes the heartbeat 'abri verify' watches, and its broker
node's credentials) would be gone. Each merge names the file, the seed it comes from and
its format; the formats are file formats, not services:

- ``json-by-id``: a JSON list of objects with ``id``; the seed's objects whose id the file
  lacks are appended (the user's own objects are never changed);
- ``node-red-credentials``: a flows' credentials file, ``{"$": IV + ciphertext}`` as Node-RED
  writes it (AES-256-CTR, the key the SHA-256 of the credential secret, the IV as 32 hex
  digits, the ciphertext in base64) or plain JSON when it was not encrypted: decrypted
  with the key it was written with (the secret the add-on was given, else the one Node-RED
  generated and kept in ``.config.runtime.json`` as ``_credentialSecret``), the seed's
  entries added for ids it lacks, and encrypted again with the stack's own secret, which
  then is the only one (the generated one is dropped, or Node-RED would try it first).

Secrets are never printed; a file that cannot be read is left as it is, and said so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

RUNTIME = ".config.runtime.json"
GENERATED = "_credentialSecret"


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def encrypt_credentials(creds: dict[str, Any], secret: str) -> dict[str, str]:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(_key(secret)), modes.CTR(iv)).encryptor()
    data = enc.update(json.dumps(creds).encode()) + enc.finalize()
    return {"$": iv.hex() + base64.b64encode(data).decode()}


def decrypt_credentials(stored: dict[str, Any], secret: str) -> dict[str, Any] | None:
    """The credentials, or None when secret does not open them (CTR has no check of its
    own: a wrong key gives bytes that are not JSON)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    blob = stored.get("$")
    if not isinstance(blob, str) or len(blob) < 32:
        return None
    try:
        iv = bytes.fromhex(blob[:32])
        raw = base64.b64decode(blob[32:], validate=True)
        dec = Cipher(algorithms.AES(_key(secret)), modes.CTR(iv)).decryptor()
        value = json.loads((dec.update(raw) + dec.finalize()).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def merge_by_id(current: Any, seed: list[Any]) -> tuple[list[Any], list[str]]:
    """current with the seed's objects whose id it lacks appended; and those ids."""
    items = list(current) if isinstance(current, list) else []
    have = {x.get("id") for x in items if isinstance(x, dict)}
    added = [x for x in seed if isinstance(x, dict) and x.get("id") not in have]
    return items + added, [str(x.get("id")) for x in added]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def merge(folder: Path, rule: dict[str, Any], seed_file: Path,
          old_secrets: list[str], new_secret: str | None) -> str:
    """Apply one merge rule to the data unpacked in folder; returns what was done."""
    target = folder / rule["file"]
    seed = _read_json(seed_file)
    name = rule["file"]
    if rule["format"] == "json-by-id":
        current = _read_json(target) if target.exists() else []
        if current is None or not isinstance(seed, list):
            return f"{name}: not JSON; abri's part not added"
        merged, added = merge_by_id(current, seed)
        target.write_text(json.dumps(merged, indent=4), encoding="utf-8")
        return f"{name}: abri's {len(added)} item(s) added" if added else \
            f"{name}: abri's items already there"
    # node-red-credentials
    if not isinstance(seed, dict) or not new_secret:
        return f"{name}: abri's credentials not added (no key to write them with)"
    stored = _read_json(target) if target.exists() else {}
    if stored is None or not isinstance(stored, dict):
        return f"{name}: not JSON; left as it is, abri's credentials not added"
    runtime = folder / RUNTIME
    settings = _read_json(runtime) if runtime.exists() else None
    generated = settings.get(GENERATED) if isinstance(settings, dict) else None
    if "$" in stored:
        candidates = [s for s in (*old_secrets, generated) if isinstance(s, str) and s]
        creds = next((c for c in (decrypt_credentials(stored, s) for s in candidates)
                      if c is not None), None)
        if creds is None:
            return (f"{name}: cannot be read with the add-on's key; left as it is, abri's "
                    "credentials not added")
    else:
        creds = dict(stored)
    for node, values in seed.items():
        creds.setdefault(node, values)
    target.write_text(json.dumps(encrypt_credentials(creds, new_secret)), encoding="utf-8")
    if isinstance(settings, dict) and GENERATED in settings:
        del settings[GENERATED]
        runtime.write_text(json.dumps(settings, indent=4), encoding="utf-8")
    return f"{name}: abri's credentials added, encrypted with the stack's key"
