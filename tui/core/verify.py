"""Post-deploy checks against the real services of a host (headless, never imports textual).

``verify_host(host, secrets)`` talks to what the deploy put on one host, from this machine:

* the MQTT broker (paho-mqtt): a publish/subscribe round trip as the admin user and as each
  client user (one per stack that uses mqtt), anonymous clients and a wrong password refused,
  and an ACL violation not delivered;
* Home Assistant (its REST API, a token from the login flow with the owner's credentials): the
  API answers, the MQTT integration is loaded, and an MQTT discovery config plus a state for a
  test sensor show up as ``sensor.<slug>`` with that state (the sensor is removed afterwards);
* what a manifest declares for any service: its health check path answering 200
  (``http_check``), a message it publishes by itself reaching the broker (``heartbeat_check``),
  the access token a provider's API minted it accepted there, a wrong one refused
  (``token_check``).

Every check becomes a ``Check(name, ok, detail)``; no secret ever goes into a detail.
"""

from __future__ import annotations

import contextlib
import json
import secrets as _secrets
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Check", "broker_checks", "ensure_access_token", "format_report", "token_check"]

ADMIN_USER = "admin"
VERIFY_SENSOR_ID = "abri_verify"
VERIFY_SENSOR_NAME = "abri verify"
#: config entries of integrations that call services outside the home
OUTSIDE_ENTRIES = frozenset({"google_translate", "radio_browser", "met"})
#: integrations that call outside as soon as they are loaded (the US cloud, the alerts feed);
#: a deleted entry's integration stays loaded (idle) until the next restart, so those above are
#: judged by their entries
OUTSIDE_COMPONENTS = frozenset({"cloud", "homeassistant_alerts"})


@dataclass(frozen=True)
class Check:
    """The outcome of one check: a short name, whether it passed, and what was seen."""

    name: str
    ok: bool
    detail: str = ""


# --------------------------------------------------------------------------------------------
# MQTT


class _Mqtt:
    """A small synchronous wrapper around a paho-mqtt client running its own network loop."""

    def __init__(self, host: str, port: int, username: str | None, password: str | None,
                 timeout: float, *, tls: bool = False):
        import paho.mqtt.client as mqtt

        self.timeout = timeout
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"abri-verify-{_secrets.token_hex(4)}")
        if tls:
            # the broker's certificate may be self-signed: the check is about the listener,
            # encryption and authentication, not about the chain of trust
            self.client.tls_set(cert_reqs=ssl.CERT_NONE)
            self.client.tls_insecure_set(True)
        if username is not None:
            self.client.username_pw_set(username, password)
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.reason: object = None
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.reason = reason
        self._connected.set()

    def _on_message(self, client, userdata, msg):
        with self._arrived:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._arrived.notify_all()

    def connect(self) -> tuple[bool, str]:
        """(accepted, reason text)."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            return False, f"cannot reach {self.host}:{self.port}: {exc.strerror or exc}"
        self.client.loop_start()
        if not self._connected.wait(self.timeout):
            return False, "no answer to CONNECT"
        failed = getattr(self.reason, "is_failure", False)
        return (not failed), str(self.reason)

    def subscribe(self, topic: str) -> bool:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        return self._subscribed.wait(self.timeout)

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout)
        except (ValueError, RuntimeError):
            return False
        return info.is_published()

    def wait_for(self, topic: str, payload: bytes, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._arrived:
            while (topic, payload) not in self.messages:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(left)
        return True

    def seen(self, topic: str) -> bool:
        with self._lock:
            return any(t == topic for t, _ in self.messages)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def _check_refused(name: str, host: str, port: int, username: str | None,
                   password: str | None, timeout: float) -> Check:
    client = _Mqtt(host, port, username, password, timeout)
    try:
        accepted, reason = client.connect()
    finally:
        client.close()
    if accepted:
        return Check(name, False, "the broker accepted the connection")
    if reason.startswith("cannot reach") or reason == "no answer to CONNECT":
        return Check(name, False, reason)
    return Check(name, True, f"refused: {reason}")


def _round_trip(user: str, password: str, host: str, port: int, topic: str,
                timeout: float, *, tls: bool = False) -> Check:
    name = f"mqtt{'s (TLS)' if tls else ''} round trip as {user}"
    client = _Mqtt(host, port, user, password, timeout, tls=tls)
    try:
        accepted, reason = client.connect()
        if not accepted:
            return Check(name, False, f"connection refused: {reason}")
        if not client.subscribe(topic):
            return Check(name, False, f"no SUBACK for {topic}")
        payload = _secrets.token_hex(8).encode()
        if not client.publish(topic, payload):
            return Check(name, False, f"publish to {topic} not acknowledged")
        if not client.wait_for(topic, payload):
            return Check(name, False, f"own message on {topic} did not come back")
        return Check(name, True, f"published and received on {topic}")
    finally:
        client.close()


def _acl_violation(client_user: str, client_password: str, admin_password: str, host: str,
                   port: int, timeout: float) -> Check:
    """``client_user`` publishes where it may not; the admin, subscribed there, must not see it.

    After the forbidden publish is acknowledged, the admin publishes a marker on the same topic:
    once the marker arrives, the broker has long routed the forbidden message, if it ever would.
    """
    name = f"mqtt acl: {client_user} cannot write outside its topics"
    nonce = _secrets.token_hex(6)
    topic = f"abri/verify/acl-{nonce}"
    admin = _Mqtt(host, port, ADMIN_USER, admin_password, timeout)
    client = _Mqtt(host, port, client_user, client_password, timeout)
    try:
        ok, reason = admin.connect()
        if not ok or not admin.subscribe(topic):
            return Check(name, False, f"admin could not subscribe to {topic}: {reason}")
        ok, reason = client.connect()
        if not ok:
            return Check(name, False, f"{client_user} could not connect: {reason}")
        client.publish(topic, b"forbidden")
        marker = f"marker-{nonce}".encode()
        if not admin.publish(topic, marker) or not admin.wait_for(topic, marker):
            return Check(name, False, f"admin's marker on {topic} did not come back")
        with admin._lock:
            leaked = (topic, b"forbidden") in admin.messages
        if leaked:
            return Check(name, False, f"{client_user}'s message on {topic} was delivered")
        return Check(name, True, f"{client_user}'s message on {topic} was dropped")
    finally:
        client.close()
        admin.close()


# --------------------------------------------------------------------------------------------
# Home Assistant


class _Http:
    def __init__(self, base: str, timeout: float):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token: str | None = None

    def request(self, method: str, path: str, *, json_body=None, form=None):
        data = None
        headers = {"Accept": "application/json"}
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            body = resp.read()
            return resp.status, (json.loads(body) if body else None)

    def login(self, username: str, password: str) -> str:
        """Log in through the login flow; keeps and returns the refresh token."""
        client_id = self.base + "/"
        redirect = client_id + "?auth_callback=1"
        _, flow = self.request("POST", "/auth/login_flow", json_body={
            "client_id": client_id, "handler": ["homeassistant", None],
            "redirect_uri": redirect})
        _, step = self.request("POST", f"/auth/login_flow/{flow['flow_id']}", json_body={
            "client_id": client_id, "username": username, "password": password})
        if step.get("type") != "create_entry":
            raise PermissionError(f"login flow answered {step.get('type')}: "
                                  f"{', '.join((step.get('errors') or {}).values()) or 'no code'}")
        _, tokens = self.request("POST", "/auth/token", form={
            "grant_type": "authorization_code", "code": step["result"], "client_id": client_id})
        self.token = tokens["access_token"]
        return tokens.get("refresh_token", "")

    def long_lived_token(self, client_name: str, lifespan_days: int = 3650) -> str:
        """Mint a long-lived access token for the logged-in user, named client_name. A token
        of the same name that the user already has is the one this replaces: it is revoked
        first (Home Assistant wants each long-lived token's name unique). Home Assistant
        offers both only over its websocket API (auth/refresh_tokens,
        auth/delete_refresh_token, auth/long_lived_access_token)."""
        import websocket  # websocket-client

        url = "ws" + self.base[len("http"):] + "/api/websocket"
        ws = websocket.create_connection(url, timeout=self.timeout)
        ids = iter(range(1, 1000))

        def command(body: dict) -> dict:
            ident = next(ids)
            ws.send(json.dumps({"id": ident, **body}))
            while True:
                answer = json.loads(ws.recv())
                if answer.get("id") == ident:
                    return answer

        try:
            if json.loads(ws.recv()).get("type") != "auth_required":
                raise ValueError("unexpected websocket greeting")
            ws.send(json.dumps({"type": "auth", "access_token": self.token}))
            if json.loads(ws.recv()).get("type") != "auth_ok":
                raise PermissionError("the websocket API refused the access token")
            listed = command({"type": "auth/refresh_tokens"})
            for old in listed.get("result") or []:
                if old.get("type") == "long_lived_access_token" and \
                        old.get("client_name") == client_name:
                    command({"type": "auth/delete_refresh_token",
                             "refresh_token_id": old["id"]})
            answer = command({"type": "auth/long_lived_access_token",
                              "client_name": client_name, "lifespan": lifespan_days})
        finally:
            ws.close()
        if not answer.get("success") or not isinstance(answer.get("result"), str):
            error = (answer.get("error") or {}).get("message", "no token")
            raise PermissionError(f"Home Assistant did not mint a token: {error}")
        return answer["result"]

    def revoke(self, refresh_token: str) -> None:
        if refresh_token:
            with contextlib.suppress(urllib.error.URLError, OSError):
                self.request("POST", "/auth/revoke", form={"token": refresh_token})


#: config entry states on the way to loaded (Home Assistant starting, or the broker not yet up)
SETTLING_ENTRY_STATES = ("not_loaded", "setup_in_progress", "setup_retry")


def _http_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def _slug(name: str) -> str:
    out, last_us = [], False
    for ch in name.lower():
        if ch.isalnum():
            out.append(ch)
            last_us = False
        elif not last_us:
            out.append("_")
            last_us = True
    return "".join(out).strip("_")


def _homeassistant_checks(http_address: str, port: int, settings: dict, ha_secrets: dict,
                          admin_password: str | None, mqtt_address: str | None,
                          mqtt_port: int | None, timeout: float,
                          state_timeout: float) -> list[Check]:
    http = _Http(f"http://{http_address}:{port}", timeout)
    username = settings.get("owner_username", "owner")
    checks: list[Check] = []
    try:
        try:
            _, body = http.request("GET", "/api/onboarding")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            # Home Assistant stops serving the onboarding API once it is finished (after a
            # restart): the API itself must answer then
            http.request("GET", "/manifest.json")
            body = []
        open_steps = [s["step"] for s in body if not s.get("done")]
        checks.append(Check("homeassistant onboarded", not open_steps,
                            "all steps done" if not open_steps
                            else f"open steps: {', '.join(open_steps)}"))
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        return [Check("homeassistant answers", False, f"{http.base}: {_http_error(exc)}")]

    password = ha_secrets.get("owner_password")
    if not password:
        return [*checks, Check("homeassistant login", False, "no owner password in the secrets")]
    refresh = ""
    try:
        if ha_secrets.get("token"):
            http.token = ha_secrets["token"]
            try:
                http.request("GET", "/api/")
                checks.append(Check("homeassistant token", True,
                                    "the long-lived token from the vault is accepted"))
            except urllib.error.HTTPError as exc:
                checks.append(Check("homeassistant token", False,
                                    f"the vault's long-lived token is refused (HTTP {exc.code});"
                                    " the next apply mints a new one"))
                http.token = None
        if not http.token:
            refresh = http.login(username, password)
            checks.append(Check("homeassistant login", True,
                                f"token for {username} from the login flow"))
        _, api = http.request("GET", "/api/")
        checks.append(Check("homeassistant api", True, (api or {}).get("message", "answers")))
        _, entries = http.request("GET", "/api/config/config_entries/entry")
        domains = {e["domain"]: e.get("state") for e in entries}
        _, config = http.request("GET", "/api/config")
        loaded = set((config or {}).get("components") or [])
        outside = sorted((set(domains) & OUTSIDE_ENTRIES) | (loaded & OUTSIDE_COMPONENTS))
        checks.append(Check("homeassistant without outside integrations", not outside,
                            "none configured" if not outside else f"found: {', '.join(outside)}"))
        if mqtt_port is None:
            return checks
        mqtt_state = domains.get("mqtt")
        # Home Assistant answers (its web server starts early) before it has set up its
        # config entries: right after a restart the entry is not_loaded or setting up
        deadline = time.monotonic() + state_timeout
        while mqtt_state in SETTLING_ENTRY_STATES and time.monotonic() < deadline:
            time.sleep(1)
            _, entries = http.request("GET", "/api/config/config_entries/entry")
            mqtt_state = {e["domain"]: e.get("state") for e in entries}.get("mqtt")
        checks.append(Check("homeassistant mqtt integration", mqtt_state == "loaded",
                            f"config entry state: {mqtt_state or 'missing'}"))
        if admin_password and mqtt_address:
            checks.append(_discovery_check(http, mqtt_address, mqtt_port, admin_password,
                                           timeout, state_timeout))
    except PermissionError as exc:
        checks.append(Check("homeassistant login", False, str(exc)))
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        checks.append(Check("homeassistant api", False, _http_error(exc)))
    finally:
        http.revoke(refresh)
    return checks


def _discovery_check(http: _Http, address: str, mqtt_port: int, admin_password: str,
                     timeout: float, state_timeout: float) -> Check:
    """Discovery config + state over MQTT, then the entity's state over the REST API."""
    name = "homeassistant sees an mqtt sensor"
    entity = f"sensor.{_slug(VERIFY_SENSOR_NAME)}"
    config_topic = f"homeassistant/sensor/{VERIFY_SENSOR_ID}/config"
    state_topic = f"abri/verify/{VERIFY_SENSOR_ID}/state"
    value = str(_secrets.randbelow(10**6))
    mqtt = _Mqtt(address, mqtt_port, ADMIN_USER, admin_password, timeout)
    try:
        ok, reason = mqtt.connect()
        if not ok:
            return Check(name, False, f"admin could not connect: {reason}")
        config = {"name": VERIFY_SENSOR_NAME, "state_topic": state_topic,
                  "unique_id": f"{VERIFY_SENSOR_ID}_sensor"}
        mqtt.publish(config_topic, json.dumps(config), retain=True)
        deadline = time.monotonic() + state_timeout
        last = "not found"
        while time.monotonic() < deadline:
            # the state is published again until it shows: the entity may appear after the
            # first state was sent
            mqtt.publish(state_topic, value, retain=True)
            try:
                _, state = http.request("GET", f"/api/states/{entity}")
                last = f"state {state.get('state')!r}"
                if state.get("state") == value:
                    return Check(name, True, f"{entity} = {value} within "
                                 f"{state_timeout - (deadline - time.monotonic()):.1f}s")
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            time.sleep(1)
        return Check(name, False, f"{entity}: {last} after {state_timeout:.0f}s, wanted {value}")
    finally:
        try:
            # remove the test sensor again (an empty retained config deletes the entity)
            mqtt.publish(config_topic, b"", retain=True)
            mqtt.publish(state_topic, b"", retain=True)
        finally:
            mqtt.close()


# --------------------------------------------------------------------------------------------
# Generic checks a manifest declares (checks: http, heartbeat)


def http_check(name: str, address: str, port: int, path: str, timeout: float = 10.0
               ) -> Check:
    """GET path answers 200 (redirects are not followed: a login redirect is no answer)."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    url = f"http://{address}:{port}{path}"
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as resp:
            status = resp.status
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Check(name, False, _http_error(exc))
    return Check(name, status == 200, f"HTTP {status}")


def heartbeat_check(name: str, address: str, port: int, admin_user: str, admin_password: str,
                    topic: str, within: float, *, owner: str, timeout: float = 10.0) -> Check:
    """The broker's admin, subscribed to topic, receives a message published there (not a
    retained one from earlier) within ``within`` seconds."""
    client = _Mqtt(address, port, admin_user, admin_password, timeout)
    live = threading.Event()

    def on_message(_client, _userdata, msg):
        if msg.topic == topic and not msg.retain:
            live.set()

    client.client.on_message = on_message
    try:
        ok, reason = client.connect()
        if not ok:
            return Check(name, False, f"{admin_user} could not connect: {reason}")
        start = time.monotonic()
        if not client.subscribe(topic):
            return Check(name, False, f"no SUBACK for {topic}")
        if not live.wait(within):
            return Check(name, False, f"no message on {topic} within {within:.0f}s (the "
                         "service does not publish it: stopped, its publisher removed, or "
                         f"{owner} cannot reach or log in to the broker)")
        return Check(name, True, f"{admin_user} received a message on {topic}, a topic of "
                     f"{owner}'s account, after {time.monotonic() - start:.1f}s")
    finally:
        client.close()


# --------------------------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    return address in ("localhost", "::1") or address.startswith("127.")


def _tcp_open(address: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def broker_checks(address: str, port: int, admin_password: str | None,
                  clients: list[tuple[str, str]], *, tls: tuple[str, int] | None = None,
                  timeout: float = 10.0) -> list[Check]:
    """A broker that serves as declared: round trips as admin and as every client account,
    anonymous clients and a wrong password refused, a client kept inside its topics.
    address:port is where this machine reaches the broker (directly or through a tunnel)."""
    if not admin_password:
        return [Check("mqtt admin password", False, "missing from the secrets")]
    checks: list[Check] = []
    nonce = _secrets.token_hex(6)
    checks.append(_round_trip(ADMIN_USER, admin_password, address, port,
                              f"abri/verify/{nonce}", timeout))
    if tls:
        checks.append(_round_trip(ADMIN_USER, admin_password, tls[0], tls[1],
                                  f"abri/verify/tls-{nonce}", timeout, tls=True))
    checks.append(_check_refused("mqtt anonymous refused", address, port, None, None, timeout))
    checks.append(_check_refused("mqtt wrong password refused", address, port, ADMIN_USER,
                                 "wrong-" + _secrets.token_hex(8), timeout))
    for user, password in sorted(clients):
        checks.append(_round_trip(user, password, address, port, f"{user}/abri_verify/{nonce}",
                                  timeout))
        checks.append(_acl_violation(user, password, admin_password, address, port, timeout))
    return checks


def format_report(results: Iterable[tuple[str, list[Check]]]) -> str:
    """Plain-text report of ``[(host name, checks), ...]``: one line per check, then a total."""
    lines: list[str] = []
    passed = failed = 0
    for host, checks in results:
        lines.append(f"{host}:")
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            lines.append(f"  {mark} {check.name}" + (f": {check.detail}" if check.detail else ""))
            passed += check.ok
            failed += not check.ok
    lines.append(f"verify: {passed} passed, {failed} failed")
    return "\n".join(lines)


def ensure_access_token(address: str, port: int, username: str, password: str | None,
                        current: str | None, client_name: str, *, timeout: float = 10.0
                        ) -> tuple[str, bool]:
    """(token, minted): ``current`` when Home Assistant still accepts it, otherwise a new
    long-lived token named ``client_name``, minted as the owner (``username``, ``password``);
    a token of that name Home Assistant still holds is revoked first. The owner's login is
    revoked again afterwards. Raises PermissionError or OSError with a message that holds no
    secret.
    """
    http = _Http(f"http://{address}:{int(port)}", timeout)
    if current:
        http.token = current
        try:
            http.request("GET", "/api/")
            return current, False
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 403):
                raise OSError(f"Home Assistant answered {_http_error(exc)}") from None
        except urllib.error.URLError as exc:
            raise OSError(_http_error(exc)) from None
        http.token = None
    if not password:
        raise PermissionError("no owner password in the vault")
    try:
        refresh = http.login(username, password)
        try:
            return http.long_lived_token(client_name), True
        finally:
            http.revoke(refresh)
    except urllib.error.URLError as exc:
        raise OSError(_http_error(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:  # a JSON or websocket surprise
        raise OSError(f"unexpected answer: {type(exc).__name__}: {exc}") from None


def token_check(name: str, address: str, port: int, token: str | None, *,
                timeout: float = 10.0) -> list[Check]:
    """A client's access token is accepted by Home Assistant's REST API (GET /api/ answers
    200 with it) and a wrong one is refused (401): the API checks tokens at all."""
    if not token:
        return [Check(name, False, "no token in the vault yet (the apply mints it once Home "
                      "Assistant is set up; run 'abri apply')")]

    def status(bearer: str) -> int | str:
        http = _Http(f"http://{address}:{int(port)}", timeout)
        http.token = bearer
        try:
            http.request("GET", "/api/")
            return 200
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return _http_error(exc)

    def said(answer: int | str) -> str:
        return f"HTTP {answer}" if isinstance(answer, int) else answer

    good = status(token)
    wrong = status("wrong-" + _secrets.token_hex(16))
    return [Check(name, good == 200, f"GET /api/ with the token: {said(good)}"),
            Check(f"{name}: a wrong token is refused", wrong == 401,
                  f"GET /api/ with a wrong token: {said(wrong)}")]


# --------------------------------------------------------------------------------------------
# Before and after an upgrade: what must still hold


def homeassistant_facts(address: str, port: int, username: str, password: str | None,
                        timeout: float = 10.0) -> dict:
    """Home Assistant's version and its config entries (entry id -> [domain, state]), read
    as the owner through the login flow. Raises OSError or PermissionError when it does not
    answer or refuses the owner."""
    if not password:
        raise PermissionError("no owner password in the secrets")
    http = _Http(f"http://{address}:{port}", timeout)
    refresh = ""
    try:
        try:
            refresh = http.login(username, password)
            _, config = http.request("GET", "/api/config")
            _, entries = http.request("GET", "/api/config/config_entries/entry")
        except (urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
            raise OSError(f"{http.base}: {_http_error(exc)}") from None
        return {"version": str((config or {}).get("version", "")),
                "entries": {e["entry_id"]: [e["domain"], e.get("state")] for e in entries}}
    finally:
        http.revoke(refresh)


def homeassistant_gate(address: str, port: int, username: str, password: str | None,
                       before: dict, version: str, *, timeout: float = 10.0,
                       settle: float = 120.0) -> list[Check]:
    """After an upgrade to version: Home Assistant reports that version, and no config
    entry that was loaded before is worse off (missing, failed, or still setting up when
    the settle time ends)."""
    deadline = time.monotonic() + settle
    while True:
        try:
            now = homeassistant_facts(address, port, username, password, timeout)
        except (OSError, PermissionError) as exc:
            if time.monotonic() > deadline:
                return [Check("homeassistant answers after the upgrade", False, str(exc))]
            time.sleep(2)
            continue
        worse = []
        for entry, (domain, state) in sorted((before.get("entries") or {}).items()):
            if state != "loaded":
                continue
            after = (now["entries"].get(entry) or [domain, "missing"])[1]
            if after != "loaded":
                worse.append(f"{domain}: {after}")
        settling = [w for w in worse if w.split(": ")[1] in SETTLING_ENTRY_STATES]
        if (not settling and now["version"]) or time.monotonic() > deadline:
            break
        time.sleep(2)
    return [Check("homeassistant version", now["version"] == version,
                  f"reports {now['version'] or 'no version'}, expected {version}"),
            Check("homeassistant config entries no worse", not worse,
                  f"{len(before.get('entries') or {})} before, {len(now['entries'])} after; "
                  + ("every entry that was loaded still is" if not worse
                     else "not loaded now: " + ", ".join(worse)))]


def retain_message(address: str, port: int, user: str, password: str, topic: str,
                   payload: bytes, timeout: float = 10.0) -> Check:
    """Leave a retained message on the broker (before an upgrade)."""
    client = _Mqtt(address, port, user, password, timeout)
    try:
        accepted, reason = client.connect()
        if not accepted:
            return Check("mqtt retained message left", False, f"connection refused: {reason}")
        ok = client.publish(topic, payload, retain=True)
        return Check("mqtt retained message left", ok,
                     f"on {topic}" if ok else f"publish to {topic} not acknowledged")
    finally:
        client.close()


def retained_check(address: str, port: int, user: str, password: str, topic: str,
                   payload: bytes, timeout: float = 10.0) -> Check:
    """The retained message left before is delivered to a new subscriber (the broker's
    persistence came through), then cleared."""
    name = "mqtt retained message still delivered"
    client = _Mqtt(address, port, user, password, timeout)
    try:
        accepted, reason = client.connect()
        if not accepted:
            return Check(name, False, f"connection refused (no CONNACK success): {reason}")
        if not client.subscribe(topic):
            return Check(name, False, f"no SUBACK for {topic}")
        got = client.wait_for(topic, payload)
        if got:
            client.publish(topic, b"", retain=True)  # clear it
        return Check(name, got, f"on {topic}" if got else f"nothing retained on {topic}")
    finally:
        client.close()
