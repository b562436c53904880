"""Fleet tests: real Debian 13 hosts in Docker. Fixtures and hooks live in fleet_plugin.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_plugin import *  # noqa: F403  (fixtures and hooks)
from fleet_plugin import (  # noqa: F401  (hooks by name, for pytest)
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
)
