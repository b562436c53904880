"""Node-RED and ESPHome come from their catalog folders alone: their manifests load, the
resolver wires Node-RED to the broker with its own account (on its host or another one),
their rendered files parse, and the generic checks they declare (http, heartbeat) work
against real servers. No code outside stacks/ names them."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tui.core import mosquitto_passwd, paths, resolve, verify
from tui.core.catalog import Catalog
from tui.core.errors import AbriError
from tui.core.site import Site

CATALOG = Catalog.load()
NEW = ("nodered", "esphome")


def _state(site: Site, host: str, stack: str) -> dict:
    for s in resolve.resolve_host(site, host)["stacks"]:
        if s["name"] == stack:
            return s
    raise KeyError(stack)


def _files(state: dict) -> dict[str, dict]:
    return {f["path"]: f for f in state["files"]}


def _site(tmp_path: Path) -> Site:
    return Site.init(tmp_path / "site")


# ------------------------------------------------------------------------------ manifests


def test_catalog_loads_nodered_and_esphome():
    nodered, esphome = CATALOG["nodered"], CATALOG["esphome"]
    assert nodered.uses == ("mqtt",) and not nodered.provides
    assert nodered.wants == ("homeassistant",)
    assert not esphome.uses and not esphome.provides
    for stack in (nodered, esphome):
        assert stack.image["tag"] != "latest"
        assert any(v.user_data for v in stack.volumes)
        assert stack.healthcheck["kind"] == "http"
        assert "http" in stack.checks
    # the broker account comes from 'uses', the keys from the manifest's own secrets
    assert set(nodered.secret_keys) == {"admin_password", "credential_key", "mqtt_password"}
    assert esphome.secret_keys == ["password"]
    assert nodered.heartbeat == {"capability": "mqtt", "topic": "{user}/heartbeat",
                                 "within": 30}
    assert "heartbeat" in nodered.checks
    data = next(v for v in nodered.volumes if v.path == "/data")
    assert data.owner == 1000 and data.user_data
    # what Node-RED is given is written once and then the user's
    assert {f.dest: f.policy for f in nodered.files} == {
        "data/settings.js": "seed", "data/flows.json": "seed", "data/flows_cred.json": "seed"}
    assert CATALOG.ordered(["nodered", "mosquitto", "esphome"]) == [
        "esphome", "mosquitto", "nodered"]


def test_no_code_outside_the_stacks_names_them():
    """Service-specific behaviour is declared in the folders, never special-cased."""
    kit = paths.kit_dir()
    offenders = []
    for root in ("tui", "playbooks"):
        for path in (kit / root).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".j2", ".tcss"):
                text = path.read_text(errors="replace").lower()
                offenders += [f"{path.relative_to(kit)}: {name}" for name in NEW
                              if re.search(rf"\b{name}\b", text)]
    assert not offenders, offenders


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / "stacks" / name
    shutil.copytree(paths.stacks_dir() / name, target)
    return target / "stack.yml"


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d["heartbeat"].update(capability="homeassistant"), "heartbeat.capability",
         "not in uses"),
        (lambda d: d.pop("heartbeat"), "checks", "heartbeat block"),
        (lambda d: d["heartbeat"].update(topic="nodered/#"), "heartbeat.topic", "#"),
        (lambda d: d["heartbeat"].pop("within"), "heartbeat", "within"),
        (lambda d: d["healthcheck"].update(kind="tcp"), "checks", "healthcheck.kind http"),
        (lambda d: d.update(checks=["http", "ping"]), "checks[1]", "ping"),
    ],
)
def test_broken_heartbeat_or_check_names_file_and_field(tmp_path, mutate, field, fragment):
    manifest = _copy(tmp_path, "nodered")
    data = yaml.safe_load(manifest.read_text())
    mutate(data)
    manifest.write_text(yaml.safe_dump(data))
    with pytest.raises(AbriError) as info:
        Catalog.load(tmp_path / "stacks")
    text = str(info.value)
    assert "stack.yml" in text and field in text and fragment in text, text


# ------------------------------------------------------------------------------ the resolver


def _acl(broker_state: dict) -> str:
    return _files(broker_state)[CATALOG["mosquitto"].accounts["acl_file"]]["content"]


def test_nodered_gets_its_own_account_on_a_broker_of_the_same_host(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "nodered")
    broker = _state(site, "pi", "mosquitto")
    assert broker["accounts"]["users_ref"]["nodered"] == "pi/nodered/mqtt_password"
    acl = _acl(broker)
    assert "user nodered\ntopic readwrite nodered/#\ntopic read #" in acl, acl
    state = _state(site, "pi", "nodered")
    assert state["env"] == {
        "MQTT_HOST": {"value": "127.0.0.1"},
        "MQTT_PORT": {"value": "1883"},
        "MQTT_USER": {"value": "nodered"},
        "MQTT_PASSWORD": {"value_ref": "pi/nodered/mqtt_password"},
        "NODE_RED_ADMIN_PASSWORD": {"value_ref": "pi/nodered/admin_password"},
        "NODE_RED_CREDENTIAL_SECRET": {"value_ref": "pi/nodered/credential_key"},
        # Home Assistant is only wanted: without one in the site, both stay empty
        "HOMEASSISTANT_URL": {"value": ""},
        "HOMEASSISTANT_TOKEN": {"value": ""},
    }
    assert state["health"] == {"kind": "http", "port": 1880, "path": "/", "timeout": 180}
    assert [d["owner"] for d in state["dirs"]] == [1000]
    compose = yaml.safe_load(_files(state)["compose.yml"]["content"])
    service = compose["services"]["nodered"]
    # 127.0.0.1 is Node-RED itself inside its bridge network: it goes to the host instead
    assert service["environment"]["MQTT_HOST"] == "host.docker.internal"
    assert "host.docker.internal:host-gateway" in service["extra_hosts"]
    assert service["env_file"] == ".env"
    assert service["ports"] == ["0.0.0.0:1880:1880/tcp"]
    assert compose["name"] == "abri-nodered"
    # no secret is rendered into any file: they reach the container through .env only
    secrets = site.secrets["pi"]["nodered"]
    for f in state["files"]:
        for value in secrets.values():
            assert value not in f["content"], f["path"]


def test_nodered_gets_its_own_account_on_a_broker_of_another_host(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_host("nas", "ssh", "192.0.2.20")
    site.add_stack("pi", "mosquitto", {"port": "1884"})
    site.add_stack("nas", "nodered")
    broker = _state(site, "pi", "mosquitto")
    assert broker["accounts"]["users_ref"]["nodered"] == "nas/nodered/mqtt_password"
    assert "user nodered\ntopic readwrite nodered/#" in _acl(broker)
    state = _state(site, "nas", "nodered")
    assert state["env"]["MQTT_HOST"] == {"value": "192.0.2.10"}
    assert state["env"]["MQTT_PORT"] == {"value": "1884"}
    assert state["env"]["MQTT_PASSWORD"] == {"value_ref": "nas/nodered/mqtt_password"}
    service = yaml.safe_load(_files(state)["compose.yml"]["content"])["services"]["nodered"]
    # the broker's address from the wiring stays (no override for another host)
    assert "MQTT_HOST" not in service["environment"]
    # the password the broker gets for the account is the one Node-RED's .env is given
    assert resolve.secret_refs(broker) >= {"nas/nodered/mqtt_password"}
    assert site.secrets["nas"]["nodered"]["mqtt_password"]


def test_two_nodereds_on_one_broker_get_one_account_each(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_host("nas", "ssh", "192.0.2.20")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "nodered")
    site.add_stack("nas", "nodered")
    users = _state(site, "pi", "mosquitto")["accounts"]["users_ref"]
    assert users["nodered_pi"] == "pi/nodered/mqtt_password"
    assert users["nodered_nas"] == "nas/nodered/mqtt_password"
    assert _state(site, "nas", "nodered")["env"]["MQTT_USER"] == {"value": "nodered_nas"}


# ------------------------------------------------------------------------------ rendered files


def test_nodered_files_parse_and_hold_no_setting(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "nodered", {"admin_username": "someone"})
    files = _files(_state(site, "pi", "nodered"))
    flows = json.loads(files["data/flows.json"]["content"])
    creds = json.loads(files["data/flows_cred.json"]["content"])
    broker = next(n for n in flows if n["type"] == "mqtt-broker")
    assert (broker["broker"], broker["port"]) == ("${MQTT_HOST}", "${MQTT_PORT}")
    assert creds == {broker["id"]: {"user": "${MQTT_USER}", "password": "${MQTT_PASSWORD}"}}
    out = next(n for n in flows if n["type"] == "mqtt out")
    assert out["broker"] == broker["id"] and out["retain"] == "false"
    inject = next(n for n in flows if n["type"] == "inject")
    assert inject["wires"] == [[out["id"]]] and int(inject["repeat"]) <= 10
    # the topic is the account's heartbeat topic the manifest declares, from the same
    # environment variable as the account itself
    topic = next(p for p in inject["props"] if p["p"] == "topic")
    assert topic == {"p": "topic", "v": "$env('MQTT_USER') & '/heartbeat'", "vt": "jsonata"}
    assert CATALOG["nodered"].heartbeat["topic"] == "{user}/heartbeat"
    assert files["data/flows_cred.json"]["mode"] == "0600"
    assert all(f["owner"] == 1000 for p, f in files.items() if p.startswith("data/"))
    settings_js = files["data/settings.js"]["content"]
    assert "process.env.NODE_RED_CREDENTIAL_SECRET" in settings_js
    assert "someone" not in settings_js  # the user name reaches it through compose.yml
    service = yaml.safe_load(files["compose.yml"]["content"])["services"]["nodered"]
    assert service["environment"]["NODE_RED_ADMIN_USER"] == "someone"


def test_nodered_settings_js_is_valid_javascript(tmp_path):
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node on this machine to check settings.js with (apt-get install nodejs)")
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_stack("pi", "mosquitto")
    site.add_stack("pi", "nodered")
    script = tmp_path / "settings.js"
    script.write_text(_files(_state(site, "pi", "nodered"))["data/settings.js"]["content"])
    run = subprocess.run([node, "--check", str(script)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    # and it loads: the login takes the password from the environment, nothing else
    probe = tmp_path / "probe.js"
    probe.write_text(
        f"const s = require({json.dumps(str(script))});\n"
        "Promise.all([s.adminAuth.authenticate('admin', 'pw-from-env-123'),\n"
        "             s.adminAuth.authenticate('admin', 'wrong'),\n"
        "             s.adminAuth.authenticate('other', 'pw-from-env-123'),\n"
        "             s.adminAuth.users('admin')])\n"
        "  .then(r => console.log(JSON.stringify({auth: r, secret: s.credentialSecret,\n"
        "                                         telemetry: s.telemetry})));\n")
    env = {"PATH": os.environ.get("PATH", ""), "NODE_RED_ADMIN_PASSWORD": "pw-from-env-123",
           "NODE_RED_CREDENTIAL_SECRET": "key-from-env"}
    run = subprocess.run([node, str(probe)], capture_output=True, text=True, timeout=60,
                         env=env)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    admin = {"username": "admin", "permissions": "*"}
    assert out["auth"] == [admin, None, None, admin]
    assert out["secret"] == "key-from-env"
    assert out["telemetry"] == {"enabled": False, "updateNotification": False}
    # without a password in the environment nobody logs in
    run = subprocess.run([node, str(probe)], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", "")})
    assert json.loads(run.stdout)["auth"][:3] == [None, None, None], run.stdout


def test_esphome_compose_parses_with_its_ports(tmp_path):
    site = _site(tmp_path)
    site.add_host("pi", "ssh", "192.0.2.10")
    site.add_stack("pi", "esphome", {"port": "6060", "build_port": "6066"})
    state = _state(site, "pi", "esphome")
    compose = yaml.safe_load(_files(state)["compose.yml"]["content"])
    service = compose["services"]["esphome"]
    assert service["network_mode"] == "host"
    assert service["command"] == ["dashboard", "--port", "6060", "/config"]
    assert service["env_file"] == ".env"
    assert service["environment"]["ESPHOME_REMOTE_BUILD_HOST"] == "127.0.0.1"
    assert service["environment"]["ESPHOME_REMOTE_BUILD_PORT"] == "6066"
    assert "/config" in " ".join(service["volumes"])
    assert state["env"] == {"ESPHOME_PASSWORD": {"value_ref": "pi/esphome/password"}}
    assert state["health"] == {"kind": "http", "port": 6060, "path": "/version",
                               "timeout": 180}
    # the remote-build receiver is declared for the host only until the user opens it
    ports = {p.name: (p.exposure, p.loopback_setting) for p in CATALOG["esphome"].ports}
    assert ports["builds"] == ("lan", "build_bind")
    site.set_stack("pi", "esphome", {"build_bind": "lan"})
    service = yaml.safe_load(_files(_state(site, "pi", "esphome"))["compose.yml"]["content"]
                             )["services"]["esphome"]
    assert service["environment"]["ESPHOME_REMOTE_BUILD_HOST"] == "0.0.0.0"


# ------------------------------------------------------------------------------ generic checks


@pytest.fixture
def web():
    """A local HTTP server: / answers 200, /login redirects, everything else 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                self.send_response(200)
            elif self.path == "/login":
                self.send_response(302)
                self.send_header("Location", "/")
            else:
                self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_check(web):
    assert verify.http_check("x", "127.0.0.1", web, "/") == verify.Check("x", True, "HTTP 200")
    assert not verify.http_check("x", "127.0.0.1", web, "/missing").ok
    assert not verify.http_check("x", "127.0.0.1", web, "/login").ok  # a redirect is no answer
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    failed = verify.http_check("x", "127.0.0.1", closed, "/")
    assert not failed.ok and "cannot reach" in failed.detail


@pytest.fixture
def broker(tmp_path):
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(mosquitto):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd.write_text(mosquitto_passwd.render_passwd({"admin": "admin-pw-123",
                                                      "bot": "bot-pw-12345"}))
    acl.write_text("user admin\ntopic readwrite #\n\nuser bot\ntopic readwrite bot/#\n")
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
                    f"acl_file {acl}\npersistence false\n")
    for f in (passwd, acl):
        f.chmod(0o600)
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("mosquitto")
        for f in (passwd, acl):
            os.chown(f, owner.pw_uid, owner.pw_gid)
        for d in (tmp_path, *tmp_path.parents):
            if d == Path("/"):
                break
            d.chmod(d.stat().st_mode | 0o011)
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _publisher(port: int, topic: str, *, retain: bool, every: float, stop: threading.Event):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bot-test")
    client.username_pw_set("bot", "bot-pw-12345")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        while not stop.is_set():
            client.publish(topic, str(time.time()), qos=0, retain=retain).wait_for_publish(5)
            if retain:
                return
            stop.wait(every)
    finally:
        client.disconnect()
        client.loop_stop()


def test_heartbeat_check_sees_live_messages_only(broker):
    stop = threading.Event()
    # a retained message left from earlier is no heartbeat
    _publisher(broker, "bot/heartbeat", retain=True, every=0, stop=stop)
    stale = verify.heartbeat_check("bot heartbeat", "127.0.0.1", broker, "admin",
                                   "admin-pw-123", "bot/heartbeat", 1.5, owner="bot")
    assert not stale.ok and "no message on bot/heartbeat within 2s" in stale.detail, stale
    thread = threading.Thread(target=_publisher, args=(broker, "bot/heartbeat"),
                              kwargs={"retain": False, "every": 0.3, "stop": stop}, daemon=True)
    thread.start()
    try:
        live = verify.heartbeat_check("bot heartbeat", "127.0.0.1", broker, "admin",
                                      "admin-pw-123", "bot/heartbeat", 10, owner="bot")
    finally:
        stop.set()
        thread.join(10)
    assert live.ok and "a topic of bot's account" in live.detail, live
    refused = verify.heartbeat_check("bot heartbeat", "127.0.0.1", broker, "admin", "wrong-pw",
                                     "bot/heartbeat", 1, owner="bot")
    assert not refused.ok and "could not connect" in refused.detail
