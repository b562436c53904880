"""Property-based: malformed inventories, vars files and settings never raise anything but
AbriError (which the CLI prints as one line with exit status 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
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


#: files a key path can name (made by the key_files fixture): real private keys in folders
#: whose names an inventory line must quote, and files that are not a private key
KEY_FILES = ["id_ed25519", "with space/id_ed25519", "it's #1/id ed25519", "clé=\"x\"/id_rsa",
             "id_ed25519.pub", "empty", "a-folder"]


@pytest.fixture(scope="module")
def key_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    files = {}
    for name in KEY_FILES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        files[name] = path
    real = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(real)],
                   check=True)
    for name in KEY_FILES:
        if name.endswith(("id_ed25519", "id ed25519", "id_rsa")) and name != "id_ed25519":
            shutil.copy(real, files[name])
    (root / "empty").write_bytes(b"")
    (root / "a-folder").mkdir()
    return files


#: a key: none, any text, or one of the key_files (a Path, made absolute in the test)
_key = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(KEY_FILES).map(Path))
_arbitrary_host = st.fixed_dictionaries({
    "name": st.text(max_size=20), "kind": st.sampled_from(["local", "ssh", "vps", "guest", "x"]),
    "address": st.one_of(st.none(), st.text(max_size=30)),
    "port": st.one_of(st.none(), st.text(max_size=8)),
    "user": st.one_of(st.none(), st.text(max_size=12)), "key": _key})
#: hosts abri mostly accepts (pi is in the template already; port 0 is refused), most with
#: one of the key_files, so that an accepted existing key is a common case, not a rare one
_plausible_host = st.fixed_dictionaries({
    "name": st.sampled_from(["nas-2", "h1", "pi"]), "kind": st.sampled_from(["ssh", "vps"]),
    "address": st.sampled_from(["10.0.0.9", "pi.lan", "fe80::1"]),
    "port": st.sampled_from([None, "22", "2222", "0"]),
    "user": st.sampled_from([None, "pi", "root"]),
    "key": st.sampled_from([*map(Path, KEY_FILES), None])})


def _host_round_trip(template_site, key_files, tmp_path, fields) -> None:
    """add_host refuses with AbriError, or what it accepted saves and loads back as it was."""
    name, kind, address, port, user, key = (
        fields[f] for f in ("name", "kind", "address", "port", "user", "key"))
    if isinstance(key, Path):  # one of the files that exist: its absolute path
        key = str(key_files[str(key)])
    site = Site.load(_fresh(template_site, tmp_path), CATALOG)
    try:
        host = site.add_host(name, kind, address, port, user, key)
    except AbriError as exc:
        assert exc.problems
        event("refused")
        return
    event("accepted, with a key file" if key else "accepted")
    site.save()  # a refusal is too late from here on
    again = Site.load(site.path, CATALOG).hosts[host.name]
    assert (again.kind, again.address, again.port, again.user, again.key) == (
        host.kind, host.address, host.port, host.user, host.key)
    if key:  # an empty key is no key
        assert host.key == str(Path(key).resolve())
        assert b"PRIVATE KEY" in Path(host.key).read_bytes()


@SETTINGS
@given(fields=_arbitrary_host)
def test_arbitrary_hosts_never_traceback(template_site, key_files, tmp_path, fields):
    _host_round_trip(template_site, key_files, tmp_path, fields)


@SETTINGS
@given(fields=_plausible_host)
def test_accepted_hosts_and_their_key_files_load_back(template_site, key_files, tmp_path,
                                                      fields):
    _host_round_trip(template_site, key_files, tmp_path, fields)


def test_existing_key_files_are_accepted_and_load_back(template_site, key_files, tmp_path):
    """Every key file the strategies draw, as a worked example: the private keys are
    accepted and load back (spaces, quotes, '#' and '=' in their paths), the others not."""
    site = Site.load(_fresh(template_site, tmp_path), CATALOG)
    for i, name in enumerate(n for n in KEY_FILES if "id" in n and not n.endswith(".pub")):
        host = site.add_host(f"h{i}", "ssh", "10.0.0.9", key=str(key_files[name]))
        assert host.key == str(key_files[name])
    for name in ("id_ed25519.pub", "empty", "a-folder"):
        with pytest.raises(AbriError):
            site.add_host("bad", "ssh", "10.0.0.9", key=str(key_files[name]))
    site.save()
    loaded = Site.load(site.path, CATALOG).hosts
    assert {h: loaded[h].key for h in loaded if h.startswith("h")} == {
        f"h{i}": str(key_files[n]) for i, n in enumerate(
            n for n in KEY_FILES if "id" in n and not n.endswith(".pub"))}


@pytest.mark.parametrize("folder", ["{{ lookup('pipe', 'id') }}", "{% if 1 %}x{% endif %}",
                                    "{# note #}"])
def test_a_key_path_ansible_would_template_is_refused(template_site, tmp_path, folder):
    """A real key in a folder whose name Ansible would evaluate as a template: refused with
    a message naming the field, before anything is written."""
    key = tmp_path / folder / "id_ed25519"
    key.parent.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)],
                   check=True)
    site = Site.load(_fresh(template_site, tmp_path / "site"), CATALOG)
    before = site.path.joinpath("inventory.ini").read_bytes() if (
        site.path / "inventory.ini").exists() else None
    with pytest.raises(AbriError) as caught:
        site.add_host("pi", "ssh", "10.0.0.5", None, "root", str(key))
    text = str(caught.value)
    assert "key" in text and "template" in text and "symlink" in text
    after = site.path.joinpath("inventory.ini").read_bytes() if (
        site.path / "inventory.ini").exists() else None
    assert after == before


def test_a_key_path_with_a_control_character_is_refused(template_site, tmp_path):
    site = Site.load(_fresh(template_site, tmp_path / "site"), CATALOG)
    with pytest.raises(AbriError) as caught:
        site.add_host("pi", "ssh", "10.0.0.5", None, "root", "/root/.ssh/id\nx")
    assert "control character" in str(caught.value)
