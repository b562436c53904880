"""The inventory's parse is cached by content: the same file gives the same hosts without
Ansible's parser, a changed file is parsed again, and a file Ansible refuses is refused every
time (never cached)."""

from __future__ import annotations

import json

import pytest

from tui.core import inventory, paths
from tui.core.errors import SiteError

INI = """[abri_local]
here ansible_connection=local

[abri_ssh]
pi ansible_host=192.0.2.10 ansible_user=admin ansible_port=2222 \
ansible_ssh_private_key_file="/keys/a key"

[abri_targets:children]
abri_local
abri_ssh
"""


def _cache_files():
    folder = paths.config_home() / "cache"
    return sorted(folder.glob("inventory-*.json")) if folder.exists() else []


def test_same_file_same_hosts_from_the_cache(tmp_path):
    path = tmp_path / "inventory.ini"
    path.write_text(INI)
    first = inventory.parse(path)
    assert first["pi"].port == 2222 and first["pi"].key == "/keys/a key"
    assert first["here"].kind == "local" and first["here"].address is None
    [cache] = _cache_files()
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    kept = json.loads(cache.read_text())
    # what the cache answers is what the next parse returns: mark it, and see the mark
    kept["hosts"][1]["user"] = "from-the-cache"
    cache.write_text(json.dumps(kept))
    assert inventory.parse(path)["pi"].user == "from-the-cache"


def test_a_changed_file_is_parsed_again(tmp_path):
    path = tmp_path / "inventory.ini"
    path.write_text(INI)
    inventory.parse(path)
    path.write_text(INI.replace("admin", "deploy"))
    assert inventory.parse(path)["pi"].user == "deploy"
    assert len(_cache_files()) == 1  # one entry per inventory file, replaced


def test_a_refused_file_is_never_cached(tmp_path):
    path = tmp_path / "inventory.ini"
    path.write_text("[abri_ssh]\npi ansible_host=192.0.2.10 ansible_port=notaport\n")
    for _ in range(2):
        with pytest.raises(SiteError, match="ansible_port"):
            inventory.parse(path)
    assert _cache_files() == []
