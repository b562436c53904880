"""Device accounts on a stack that keeps users (tui/core/accounts.py, `abri stack user ...`):
refused input (exit 2, the field named, nothing on disk changed), the password only in the
vault and never printed, kept across saves, removed only by remove; and a real broker (Debian's
/usr/sbin/mosquitto) loaded with the passwd and acl the resolved state renders: the device
publishes on its topics and not outside them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import fingerprint

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SECRET = "Tasmota-Plug-Secret-42"


@pytest.fixture
def mq_site(abri, site_dir, ssh_key):
    assert abri("host", "add", "pi", "--kind", "ssh", "--address", "192.168.1.20",
                "--key", ssh_key, "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "mosquitto", "--site", site_dir).code == 0
    assert abri("stack", "add", "pi", "homeassistant", "--site", site_dir).code == 0
    return site_dir


def _pwfile(tmp: Path, value: str = SECRET) -> Path:
    f = tmp / "device.pw"
    f.write_text(value + "\n")
    return f


def _load(site_dir):
    from tui.core.site import Site

    return Site.load(site_dir)


def test_add_list_remove(abri, mq_site, tmp_path):
    r = abri("stack", "user", "add", "pi", "mosquitto", "tasmota_kitchen", "--password-file",
             _pwfile(tmp_path), "--topics", "readwrite tasmota/#", "--topics",
             "read shellies/+/relay/0", "--site", mq_site)
    assert r.code == 0, r.err
    r2 = abri("stack", "user", "add", "pi", "mosquitto", "shelly1", "--site", mq_site)
    assert r2.code == 0, r2.err
    site = _load(mq_site)
    vault = site.secrets["pi"]["mosquitto"]
    assert vault["account.tasmota_kitchen"] == SECRET
    generated = vault["account.shelly1"]
    assert len(generated) >= 24
    for secret in (SECRET, generated):  # never printed, never in plaintext in the site
        assert secret not in r.out + r.err + r2.out + r2.err
        for f in mq_site.rglob("*"):
            if f.is_file() and ".abri" not in f.parts:
                assert secret.encode() not in f.read_bytes(), f
    host_vars = yaml.safe_load((mq_site / "host_vars/pi/abri.yml").read_text())
    assert host_vars["abri_accounts"] == {"mosquitto": {
        "shelly1": {"acl": ["readwrite shelly1/#"]},  # the default: topics under its name
        "tasmota_kitchen": {"acl": ["readwrite tasmota/#", "read shellies/+/relay/0"]}}}
    state = next(s for s in host_vars["abri_state"]["stacks"] if s["name"] == "mosquitto")
    assert state["accounts"]["users_ref"]["tasmota_kitchen"] == \
        "pi/mosquitto/account.tasmota_kitchen"
    acl = next(f["content"] for f in state["files"] if f["path"] == "config/acl")
    assert "user tasmota_kitchen\ntopic readwrite tasmota/#\ntopic read shellies/+/relay/0\n" \
        in acl
    # kept across a change elsewhere (a save rewrites everything)
    assert abri("stack", "set", "pi", "mosquitto", "--set", "port=1884",
                "--site", mq_site).code == 0
    assert _load(mq_site).secrets["pi"]["mosquitto"]["account.tasmota_kitchen"] == SECRET
    listed = abri("stack", "user", "list", "pi", "mosquitto", "--json", "--site", mq_site)
    assert listed.code == 0
    import json

    rows = {r["name"]: r for r in json.loads(listed.out)}
    assert set(rows) == {"admin", "homeassistant", "shelly1", "tasmota_kitchen"}
    assert rows["tasmota_kitchen"]["kind"] == "device"
    assert SECRET not in listed.out and generated not in listed.out
    text = abri("stack", "user", "list", "pi", "mosquitto", "--site", mq_site)
    assert "tasmota_kitchen" in text.out and "readwrite tasmota/#" in text.out
    # remove: the account and its password go
    assert abri("stack", "user", "remove", "pi", "mosquitto", "shelly1",
                "--site", mq_site).code == 0
    site = _load(mq_site)
    assert "account.shelly1" not in site.secrets["pi"]["mosquitto"]
    assert generated not in site.all_secret_values()
    assert list(site.hosts["pi"].accounts["mosquitto"]) == ["tasmota_kitchen"]


@pytest.mark.parametrize(("args", "field", "says"), [
    (["admin"], "name", "one of abri's own users of mosquitto (abri's admin)"),
    (["homeassistant"], "name", "client stack homeassistant on pi"),
    (["bad:name"], "name", "valid: 1 to 64 characters"),
    (["-lead"], "", ""),  # argparse: an option it does not know; exit 2 as well
    (["a" * 65], "name", "is not a valid account name"),
    (["dev", "--topics", "rw x/#"], "--topics", "ACCESS one of read, write, readwrite, deny"),
    (["dev", "--topics", "readwrite a/#/b"], "--topics", "'#' may only be the whole last"),
    (["dev", "--topics", "read a/b+"], "--topics", "'+' must be a whole level"),
])
def test_refused_names_and_topics(abri, mq_site, args, field, says):
    before = fingerprint(mq_site)
    r = abri("stack", "user", "add", "pi", "mosquitto", *args, "--site", mq_site)
    assert r.code == 2, r.out
    assert "Traceback" not in r.err
    if field:
        assert f": {field}: " in r.err and says in r.err, r.err
    assert fingerprint(mq_site) == before


def test_refused_places_and_passwords(abri, mq_site, tmp_path):
    assert abri("host", "add", "box", "--kind", "ssh", "--address", "192.168.1.21",
                "--site", mq_site).code == 0
    before = fingerprint(mq_site)
    cases = [
        (["pi", "homeassistant", "dev"], "homeassistant keeps no user accounts; stacks that "
         "do: mosquitto"),
        (["nope", "mosquitto", "dev"], "host 'nope': name: is not in this site"),
        (["box", "mosquitto", "dev"], "mosquitto is not on box; add it with 'abri stack add "
         "box mosquitto' first"),
        (["pi", "mosquitto", "dev", "--password-file", tmp_path / "missing"],
         "--password-file: "),
        (["pi", "mosquitto", "dev", "--password-file", _pwfile(tmp_path, "")],
         "is empty"),
    ]
    for args, says in cases:
        r = abri("stack", "user", "add", *args, "--site", mq_site)
        assert r.code == 2 and says in r.err, (args, r.err)
        assert "Traceback" not in r.err
    assert abri("stack", "user", "add", "pi", "mosquitto", "dev", "--site", mq_site).code == 0
    again = abri("stack", "user", "add", "pi", "mosquitto", "dev", "--site", mq_site)
    assert again.code == 2 and "already a device account" in again.err
    own = abri("stack", "user", "remove", "pi", "mosquitto", "admin", "--site", mq_site)
    assert own.code == 2 and "which abri keeps" in own.err
    assert fingerprint(mq_site) != before  # dev was added; nothing else changed it
    assert set(_load(mq_site).hosts["pi"].accounts["mosquitto"]) == {"dev"}


def test_a_client_stack_named_like_a_device_account_is_refused(abri, mq_site):
    assert abri("stack", "user", "add", "pi", "mosquitto", "nodered", "--site", mq_site).code == 0
    before = fingerprint(mq_site)
    r = abri("stack", "add", "pi", "nodered", "--site", mq_site)
    assert r.code == 2
    assert "the device account 'nodered' has the name of one of abri's own users" in r.err
    assert fingerprint(mq_site) == before


# ------------------------------------------------------------------ the real broker
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_broker(tmp: Path, passwd: str, acl: str):
    port = _free_port()
    files = {"passwd": passwd, "acl": acl}
    for name, text in files.items():
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o600)
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n"
                    f"password_file {tmp / 'passwd'}\nacl_file {tmp / 'acl'}\n"
                    "persistence false\n")
    if os.geteuid() == 0:  # the broker drops to the user mosquitto: let it read its files
        import pwd

        owner = pwd.getpwnam("mosquitto")
        for name in files:
            os.chown(tmp / name, owner.pw_uid, owner.pw_gid)
        for d in (tmp, *tmp.parents):
            if d == Path("/"):
                break
            d.chmod(d.stat().st_mode | 0o011)
    log = tmp / "broker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf), "-v"], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port, log
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    pytest.fail("broker did not start: " + log.read_text())


def _client(port, user, password):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    c.username_pw_set(user, password)
    got: dict = {"msgs": []}
    c.on_connect = lambda cl, u, f, rc, p: got.setdefault("rc", rc)
    c.on_message = lambda cl, u, m: got["msgs"].append((m.topic, m.payload.decode()))
    c.on_subscribe = lambda cl, u, mid, rcs, p: got.setdefault("sub", rcs)
    c.connect("127.0.0.1", port)
    c.loop_start()
    deadline = time.monotonic() + 5
    while "rc" not in got and time.monotonic() < deadline:
        time.sleep(0.02)
    return c, got


def test_device_publishes_on_its_topics_only(abri, mq_site, tmp_path):
    """The passwd and acl files as the resolved state renders them (the kit's own hashing),
    loaded by the real broker: the device account logs in, its messages on tasmota/# reach
    a subscriber, those outside its topics do not; a wrong password is refused."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    from tui.core import mosquitto_passwd as mp
    from tui.core import resolve

    assert abri("stack", "user", "add", "pi", "mosquitto", "plug", "--password-file",
                _pwfile(tmp_path), "--topics", "readwrite tasmota/#", "--site", mq_site).code == 0
    site = _load(mq_site)
    state = next(s for s in resolve.resolve_host(site, "pi")["stacks"]
                 if s["name"] == "mosquitto")

    def secret(ref):
        h, s, k = ref.split("/", 2)
        return site.secrets[h][s][k]

    users = {u: secret(ref) for u, ref in state["accounts"]["users_ref"].items()}
    acl = next(f["content"] for f in state["files"] if f["path"] == "config/acl")
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    proc, port, log = _start_broker(broker_dir, mp.render_passwd(users), acl)
    clients = []
    try:
        admin, seen = _client(port, "admin", users["admin"])
        clients.append(admin)
        assert not seen["rc"].is_failure
        admin.subscribe("#", qos=1)
        deadline = time.monotonic() + 5
        while "sub" not in seen and time.monotonic() < deadline:
            time.sleep(0.02)
        plug, mine = _client(port, "plug", SECRET)
        clients.append(plug)
        assert not mine["rc"].is_failure, mine
        for topic in ("elsewhere/x", "plug/y", "tasmota/kitchen/state"):  # the last: allowed
            plug.publish(topic, f"m-{topic}", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 5
        while ("tasmota/kitchen/state", "m-tasmota/kitchen/state") not in seen["msgs"] \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # messages are delivered in order: nothing denied is still to come
        assert seen["msgs"] == [("tasmota/kitchen/state", "m-tasmota/kitchen/state")]
        wrong, bad = _client(port, "plug", "not-the-password")
        clients.append(wrong)
        assert bad.get("rc") is not None and bad["rc"].is_failure
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert "Denied PUBLISH from" in text and "elsewhere/x" in text


def test_device_accounts_move_with_their_stack(abri, mq_site, tmp_path):
    """A migration moves the broker with its device accounts (names, rules, passwords)."""
    assert abri("stack", "user", "add", "pi", "mosquitto", "plug", "--password-file",
                _pwfile(tmp_path), "--site", mq_site).code == 0
    assert abri("host", "add", "new", "--kind", "ssh", "--address", "192.168.1.40",
                "--site", mq_site).code == 0
    site = _load(mq_site)
    site.move_stacks("pi", "new", ["mosquitto", "homeassistant"])
    site.save()
    site = _load(mq_site)
    assert site.hosts["new"].accounts == {"mosquitto": {"plug": {"acl": ["readwrite plug/#"]}}}
    assert site.secrets["new"]["mosquitto"]["account.plug"] == SECRET
    assert not site.hosts["pi"].accounts


def test_purged_secrets_take_the_device_accounts(abri, mq_site):
    assert abri("stack", "user", "add", "pi", "mosquitto", "plug", "--site", mq_site).code == 0
    assert abri("stack", "remove", "pi", "homeassistant", "--site", mq_site).code == 0
    assert abri("stack", "remove", "pi", "mosquitto", "--site", mq_site).code == 0
    assert _load(mq_site).hosts["pi"].accounts  # kept while the stack is off
    assert abri("secrets", "purge", "pi", "mosquitto", "--site", mq_site).code == 0
    assert not _load(mq_site).hosts["pi"].accounts
    assert abri("stack", "add", "pi", "mosquitto", "--site", mq_site).code == 0
