"""Mosquitto password-file lines in the ``$7$`` format (PBKDF2-HMAC-SHA512), for the engine and
the tests. The one implementation lives in the kit, playbooks/module_utils/abri_passwd.py,
because the kit's stack module runs it on the hosts; this module loads that file by path."""

from __future__ import annotations

import importlib.util
import sys

from tui.core import paths

_NAME = "abri_kit_passwd"


def _load():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    file = paths.playbooks_dir() / "module_utils" / "abri_passwd.py"
    spec = importlib.util.spec_from_file_location(_NAME, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


_impl = _load()
ITERATIONS = _impl.ITERATIONS
hash_line = _impl.hash_line
hash_password = _impl.hash_password
parse_passwd = _impl.parse_passwd
render_passwd = _impl.render_passwd
verify_hash = _impl.verify_hash

__all__ = ["ITERATIONS", "hash_line", "hash_password", "parse_passwd", "render_passwd",
           "verify_hash"]
