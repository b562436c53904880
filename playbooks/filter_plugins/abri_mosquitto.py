"""Ansible filters for the Mosquitto password file.

``{{ users | abri_mosquitto_passwd(existing_text) }}`` renders a password file in the ``$7$``
format (PBKDF2-HMAC-SHA512) for ``users`` (a dict user -> clear password), keeping each line of
``existing_text`` whose hash still verifies the password, so a second run writes the same file.

The hashing lives in tui/core/mosquitto_passwd.py (standard library only). Ansible loads this
plugin by path, so it loads that module by path too (no import of the ``tui`` package needed on
the controller); the installed package is the fallback when the kit is laid out differently.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_MODULE_NAME = "abri_mosquitto_passwd_impl"


def _load_impl():
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = []
    parent = here
    for _ in range(4):
        parent = os.path.dirname(parent)
        candidates.append(os.path.join(parent, "tui", "core", "mosquitto_passwd.py"))
        candidates.append(os.path.join(parent, "core", "mosquitto_passwd.py"))
    for path in candidates:
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location(_MODULE_NAME, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[_MODULE_NAME] = module
            spec.loader.exec_module(module)
            return module
    from tui.core import mosquitto_passwd  # installed abri package

    return mosquitto_passwd


def abri_mosquitto_passwd(users, existing=""):
    """Password-file text for ``users`` (user -> password).

    Lines of ``existing`` whose hash still verifies are reused."""
    return _load_impl().render_passwd(dict(users), existing or "")


class FilterModule:
    """abri's Mosquitto filters."""

    def filters(self):
        return {"abri_mosquitto_passwd": abri_mosquitto_passwd}
