"""Property-based: malformed inventories, vars files and settings never raise anything but
AbriError (which the CLI prints as one line with exit status 2)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tui.core.catalog import Catalog
from tui.core.errors import AbriError
from tui.core.secrets import vault_password_file
from tui.core.site import Site

CATALOG = Catalog.load()
EXAMPLES = int(os.environ.get("ABRI_HYPOTHESIS_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

ini_line = st.one_of(
    st.sampled_from(["[abri_ssh]", "[abri_local]", "[abri_guest]", "[abri_targets:children]",
                     "[abri_ssh:vars]", "[x:children]", "abri_ssh", "pi", "pi ansible_port=x",
                     "pi ansible_host=1.2.3.4 ansible_port=22", "home ansible_connection=local",
                     "g abri_parent=nowhere", "[", "]", "=", "a=b=c", "pi ansible_port=99999",
                     "# BEGIN abri managed hosts (abri rewrites this block; edit outside it)",
                     "# END abri managed hosts", "pi:22", "[abri_proxmox]", "p[1:3]"]),
    st.text(max_size=40),
)
yaml_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from([
        "abri_stacks: []", "abri_stacks: {mosquitto: 3}", "abri_stacks: {mosquitto: {port: x}}",
        "abri_stacks: {homeassistant: {}}", "abri_stacks: {mosquitto: {bind: wan}}",
        "abri_stacks: {mosquitto: {admin_password: visible}}", "- a\n- b", "abri_stacks: null",
        "abri_stacks: {mosquitto: {port: 70000}, homeassistant: {port: 1883}}", "!!python/none",
        "abri_site_id: ../../x", "abri_registry_mirror: 'bad mirror'", "abri_stacks_root: rel",
        "{a: [}", "\t", "abri_stacks: {mosquitto: {tls: maybe}}"]),
)


@pytest.fixture(scope="module")
def template_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("template")
    site = Site.init(root / "site")
    site.add_host("pi", "ssh", "10.0.0.2")
    site.add_stack("pi", "mosquitto")
    site.save()
    return root / "site", vault_password_file(site.site_id).read_bytes(), site.site_id


def _fresh(template_site, tmp_path) -> Path:
    """A copy of the template site, its vault password in this test's config home."""
    src, password, site_id = template_site
    file = vault_password_file(site_id)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(password)
    target = tmp_path / "site"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(src, target, symlinks=True)  # .abri/kit stays a link, not a kit copy
    return target


def _load_is_clean(site_dir: Path) -> None:
    try:
        Site.load(site_dir, CATALOG)
    except AbriError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)


@SETTINGS
@given(lines=st.lists(ini_line, max_size=12))
def test_malformed_inventory_never_tracebacks(template_site, tmp_path, lines):
    site_dir = _fresh(template_site, tmp_path)
    (site_dir / "inventory.ini").write_text("\n".join(lines) + "\n")
    _load_is_clean(site_dir)


@SETTINGS
@given(text=yaml_text, which=st.sampled_from(["host_vars/pi/abri.yml", "group_vars/all/abri.yml"]))
def test_malformed_vars_never_traceback(template_site, tmp_path, text, which):
    site_dir = _fresh(template_site, tmp_path)
    (site_dir / which).write_text(text)
    _load_is_clean(site_dir)


values = st.one_of(st.text(max_size=30), st.integers().map(str), st.sampled_from(
    ["", "0", "65536", "true", "lan", "loopback", "Europe/Berlin", "x" * 2000, "a\nb"]))


@SETTINGS
@given(sets=st.dictionaries(st.sampled_from(
    ["port", "bind", "tls", "tls_port", "admin_password", "name", "time_zone", "country",
     "owner_password", "colour", ""]), values, max_size=5),
    stack=st.sampled_from(["mosquitto", "homeassistant", "nope"]))
def test_arbitrary_settings_never_traceback(template_site, tmp_path, sets, stack):
    site = Site.load(_fresh(template_site, tmp_path), CATALOG)
    try:
        site.add_stack("pi", stack, sets)
        site.check()
    except AbriError as exc:
        assert exc.problems


@SETTINGS
@given(name=st.text(max_size=20), kind=st.sampled_from(["local", "ssh", "vps", "guest", "x"]),
       address=st.one_of(st.none(), st.text(max_size=30)),
       port=st.one_of(st.none(), st.text(max_size=8)),
       user=st.one_of(st.none(), st.text(max_size=12)),
       key=st.one_of(st.none(), st.text(max_size=12)))
def test_arbitrary_hosts_never_traceback(template_site, tmp_path, name, kind, address, port,
                                         user, key):
    site = Site.load(_fresh(template_site, tmp_path), CATALOG)
    try:
        site.add_host(name, kind, address, port, user, key)
        site.save()
        Site.load(site.path, CATALOG)  # what was accepted must load back
    except AbriError as exc:
        assert exc.problems
