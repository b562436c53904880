"""The $7$ password lines against the real Debian broker (/usr/sbin/mosquitto)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tui.core import mosquitto_passwd as mp

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
REPO = Path(__file__).resolve().parents[2]


def test_hash_shape_and_verify():
    line = mp.hash_line("admin", "s3cret")
    user, _, hashed = line.partition(":")
    assert user == "admin"
    _, seven, iterations, salt, key = hashed.split("$")
    assert (seven, iterations) == ("7", "101")
    import base64

    assert len(base64.b64decode(salt)) == 12
    assert len(base64.b64decode(key)) == 64
    assert mp.verify_hash("s3cret", hashed)
    assert not mp.verify_hash("wrong", hashed)
    assert not mp.verify_hash("s3cret", "$7$101$garbage$")


def test_known_vector():
    # PBKDF2-HMAC-SHA512, 101 iterations, fixed salt: stable across runs
    a = mp.hash_password("pw", salt=b"\x00" * 12)
    assert a == mp.hash_password("pw", salt=b"\x00" * 12)
    assert a.startswith("$7$101$AAAAAAAAAAAAAAAA$")


def test_render_is_idempotent_and_rehashes_changed_passwords():
    first = mp.render_passwd({"b": "two", "a": "one"})
    assert [line.split(":")[0] for line in first.splitlines()] == ["a", "b"]
    assert mp.render_passwd({"b": "two", "a": "one"}, first) == first
    changed = mp.render_passwd({"b": "two", "a": "new"}, first)
    assert changed.splitlines()[1] == first.splitlines()[1]
    assert changed.splitlines()[0] != first.splitlines()[0]
    assert mp.verify_hash("new", changed.splitlines()[0].split(":", 1)[1])
    # removed users disappear
    assert mp.render_passwd({"a": "new"}, changed) == changed.splitlines()[0] + "\n"


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        mp.render_passwd({"a:b": "x"})
    with pytest.raises(ValueError):
        mp.render_passwd({"a": ""})


def test_one_implementation_in_the_kit():
    """The engine's hashing is the kit module's own file (module_utils), loaded by path."""
    path = REPO / "playbooks" / "module_utils" / "abri_passwd.py"
    spec = importlib.util.spec_from_file_location("abri_passwd_test", path)
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    text = kit.render_passwd({"u": "p"})
    assert mp.verify_hash("p", text.strip().split(":", 1)[1])
    assert mp.render_passwd.__code__.co_filename == str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    port = _free_port()
    passwd = tmp_path / "passwd"
    passwd.write_text(mp.render_passwd({"admin": "correct horse", "homeassistant": "battery"}))
    acl = tmp_path / "acl"
    acl.write_text(
        "user admin\ntopic readwrite #\n\nuser homeassistant\ntopic readwrite homeassistant/#\n"
    )
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}\npersistence false\n"
    )
    for f in (passwd, acl):
        f.chmod(0o600)
    if os.geteuid() == 0:
        # started as root, the broker drops to the user "mosquitto": let it own its files (as
        # the deploy gives them to uid 1883 in the container) and reach them
        import pwd

        owner = pwd.getpwnam("mosquitto")
        for f in (passwd, acl):
            os.chown(f, owner.pw_uid, owner.pw_gid)
        for d in (tmp_path, *tmp_path.parents):
            if d == Path("/"):
                break
            d.chmod(d.stat().st_mode | 0o011)
    log = tmp_path / "broker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf), "-v"], stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.terminate()
        pytest.fail("broker did not start: " + log.read_text())
    yield port, log
    proc.terminate()
    proc.wait(timeout=10)


def _connect(port, username=None, password=None):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)
    result = {}
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    return result.get("rc")


def test_real_broker_accepts_generated_lines(broker):
    port, log = broker
    rc = _connect(port, "admin", "correct horse")
    assert rc is not None and not rc.is_failure, rc
    rc = _connect(port, "homeassistant", "battery")
    assert rc is not None and not rc.is_failure, rc
    rc = _connect(port, "admin", "wrong")
    assert rc is not None and rc.is_failure
    rc = _connect(port)
    assert rc is not None and rc.is_failure
    # the mosquitto_pub CLI agrees
    ok = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", "admin", "-P", "correct horse",
         "-t", "t/1", "-m", "x"], capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    anon = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "t/1", "-m", "x"],
        capture_output=True, text=True, timeout=10)
    assert anon.returncode != 0
    assert "refused" in (anon.stderr + anon.stdout).lower()
    text = log.read_text()
    assert "Error" not in text, text
    assert "Warning" not in text, text
