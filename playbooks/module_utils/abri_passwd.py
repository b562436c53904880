"""Mosquitto password-file lines in the ``$7$`` format (PBKDF2-HMAC-SHA512).

A line reads ``user:$7$101$<salt>$<hash>``: a 12-byte random salt, 101 iterations, a 64-byte
key, both in standard base64 with padding. This is what ``mosquitto_passwd`` writes since
Mosquitto 2.0 and what the broker accepts.

It imports nothing but the standard library: the kit's stack module (playbooks/library/
abri_stack.py) uses it on the hosts, where a broker's password file is written, and the engine
(tui/core/mosquitto_passwd.py) loads this very file by its path.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64

__all__ = [
    "ITERATIONS",
    "hash_line",
    "hash_password",
    "parse_passwd",
    "render_passwd",
    "verify_hash",
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Return ``$7$<iterations>$<salt>$<hash>`` for ``password`` (random salt unless given)."""
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, KEY_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(key)}"


def hash_line(username: str, password: str, *, salt: bytes | None = None) -> str:
    """One password-file line (without newline) for ``username``."""
    _check_username(username)
    return f"{username}:{hash_password(password, salt=salt)}"


def verify_hash(password: str, hashed: str) -> bool:
    """True when ``hashed`` (a ``$7$`` or ``$6$`` field) was made from ``password``."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            salt = base64.b64decode(parts[3], validate=True)
            expected = base64.b64decode(parts[4], validate=True)
            key = hashlib.pbkdf2_hmac(
                "sha512", password.encode("utf-8"), salt, iterations, len(expected)
            )
            return hmac.compare_digest(key, expected)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            # the older SHA512 format: sha512(password + salt)
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
            key = hashlib.sha512(password.encode("utf-8") + salt).digest()
            return hmac.compare_digest(key, expected)
    except (ValueError, binascii.Error):
        return False
    return False


def parse_passwd(text: str) -> dict[str, str]:
    """Map user -> hash field of a password file's text; blank and ``#`` lines are skipped."""
    users: dict[str, str] = {}
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        users[user] = hashed
    return users


def render_passwd(users: dict[str, str], existing: str = "") -> str:
    """Text of a password file for ``users`` (user -> clear password), sorted by user.

    A user's line from ``existing`` is kept as it is when its hash still verifies the
    password, so rendering again with the same passwords gives the same text (idempotent
    deploys); a new user or a changed password gets a fresh salt.
    """
    old = parse_passwd(existing)
    lines = []
    for user in sorted(users):
        _check_username(user)
        password = users[user]
        if not isinstance(password, str) or not password:
            raise ValueError(f"mosquitto user {user!r} has an empty password")
        hashed = old.get(user)
        if hashed is not None and verify_hash(password, hashed):
            lines.append(f"{user}:{hashed}")
        else:
            lines.append(hash_line(user, password))
    return "".join(line + "\n" for line in lines)


def _check_username(username: str) -> None:
    if not username or ":" in username or any(c in username for c in "\r\n"):
        raise ValueError(f"invalid mosquitto user name {username!r}")
