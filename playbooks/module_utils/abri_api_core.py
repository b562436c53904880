"""The API step of abri's convergence (abri_api, and abri_host's quick check): a service
configured through its own API from the host itself (kind homeassistant: onboarding, the
owner's password, the config entries abri declares).

`module` is an AnsibleModule or a stand-in with the same few members (check_mode).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.parse
import urllib.request

MARKER = ".abri/api-done"
STATE = ".abri/api.json"
#: what the owner's last good login was checked against: Home Assistant's own password
#: store (its hash) and a salted scrypt of the vault's password (never the password)
OWNER_CHECKED = ".abri/owner-checked.json"
AUTH_STORE = "config/.storage/auth_provider.homeassistant"


class ApiError(Exception):
    pass


class Http:
    def __init__(self, port, timeout=15):
        self.base = f"http://127.0.0.1:{port}"
        self.timeout = timeout
        self.token = None

    def call(self, method, path, body=None, form=None, ok=(200, 201)):
        data, headers = None, {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        if status == 404 and 404 in ok:
            return None
        if status not in ok:
            text = raw.decode("utf-8", "replace")[:300]
            raise ApiError(f"{method} {path} answered HTTP {status}: {text}")
        return json.loads(raw) if raw else None


class WebSocket:
    """The few frames of RFC 6455 Home Assistant's websocket API needs (text, client-masked)."""

    def __init__(self, port, timeout=15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /api/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ApiError("the websocket handshake was cut")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ApiError("the websocket handshake was refused")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.next_id = 1

    def _recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ApiError("the websocket was closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send(self, obj):
        payload = json.dumps(obj).encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self):
        message = b""
        while True:
            b1, b2 = self._recv_exact(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._recv_exact(8))[0]
            data = self._recv_exact(n)
            opcode = b1 & 0x0F
            if opcode == 0x8:
                raise ApiError("the websocket was closed")
            if opcode in (0x9, 0xA):
                continue
            message += data
            if b1 & 0x80:
                return json.loads(message)

    def command(self, obj):
        obj = dict(obj, id=self.next_id)
        self.next_id += 1
        self.send(obj)
        while True:
            answer = self.recv()
            if answer.get("id") == obj["id"]:
                return answer

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


def _epoch(iso):
    """Seconds since the epoch of an ISO 8601 time with its offset (Home Assistant's)."""
    return datetime.datetime.fromisoformat(iso).timestamp()


def _fingerprint(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


class HomeAssistant:
    def __init__(self, module, api, directory, secrets, remember=None):
        self.m = module
        # a login that worked is remembered (known_owner) when changes are made, or when
        # the caller asks for it (abri_host's look at a host, outside check mode)
        self.remember = (not module.check_mode) if remember is None else remember
        self.api = api
        self.dir = directory
        self.secrets = secrets
        self.check = module.check_mode
        self.http = Http(int(api["port"]))
        self.client_id = self.http.base + "/"
        self.redirect = self.client_id + "?auth_callback=1"
        self.changes = []
        self.refresh = None

    def secret(self, ref):
        value = self.secrets.get(ref)
        if not value:
            raise ApiError(f"the secret {ref} is missing from the site's vault")
        return value

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                # once onboarding is finished and Home Assistant restarted, it no longer
                # serves /api/onboarding at all (404): every step is done
                return self.http.call("GET", "/api/onboarding", ok=(200, 404)) or []
            except (ApiError, OSError) as exc:
                last = str(exc)
                time.sleep(2)
        raise ApiError(f"Home Assistant did not answer on {self.http.base} within {timeout}s "
                       f"({last})")

    def _owner_marks(self, password, salt):
        try:
            with open(os.path.join(self.dir, AUTH_STORE), "rb") as fh:
                store = hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            return None
        derived = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1).hex()
        return {"store": store, "owner": derived}

    def known_owner(self, password):
        """True when the owner's login need not be tried again: Home Assistant's password
        store is unchanged since the vault's password (the same one) last logged in, and the
        check token (api.token_ref, minted by abri after the first apply) is accepted, so the
        calls that follow use it. Saves the login (a bcrypt on the host) on every no-op."""
        ref = self.api.get("token_ref")
        if not ref or self.api.get("owner_previous_ref") or not self.secrets.get(ref):
            return False
        try:
            with open(os.path.join(self.dir, OWNER_CHECKED), encoding="utf-8") as fh:
                last = json.load(fh)
            marks = self._owner_marks(password, bytes.fromhex(last["salt"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if marks is None or marks != {k: last.get(k) for k in marks}:
            return False
        self.http.token = self.secrets[ref]
        try:
            self.entries()
        except (ApiError, OSError):
            self.http.token = None
            return False
        return True

    def owner_checked(self, password):
        """Remember that the vault's owner password logs in, against the store as it is."""
        salt = os.urandom(16)
        marks = self._owner_marks(password, salt)
        if marks is None:
            return
        path = os.path.join(self.dir, OWNER_CHECKED)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"salt": salt.hex(), **marks}, fh)
        os.replace(tmp, path)

    def exchange(self, code):
        tokens = self.http.call("POST", "/auth/token", form={
            "grant_type": "authorization_code", "code": code, "client_id": self.client_id})
        self.http.token = tokens["access_token"]
        self.refresh = tokens.get("refresh_token")

    def login(self, username, password):
        flow = self.http.call("POST", "/auth/login_flow", body={
            "client_id": self.client_id, "handler": ["homeassistant", None],
            "redirect_uri": self.redirect})
        step = self.http.call("POST", f"/auth/login_flow/{flow['flow_id']}", body={
            "client_id": self.client_id, "username": username, "password": password})
        if step.get("type") != "create_entry":
            return False
        self.exchange(step["result"])
        return True

    def run(self, timeout):
        api = self.api
        steps = self.wait(timeout)
        open_steps = [s["step"] for s in steps if not s.get("done")]
        username = api["owner_username"]
        password = self.secret(api["owner_password_ref"])
        onboarded_now = False
        known = False
        if "user" in open_steps:
            self.changes.append(f"onboard: create the owner account {username}")
            if self.check:
                return
            answer = self.http.call("POST", "/api/onboarding/users", body={
                "client_id": self.client_id, "name": api.get("owner_name", "Owner"),
                "username": username, "password": password, "language": api["language"]})
            self.exchange(answer["auth_code"])
            onboarded_now = True
        elif self.known_owner(password):
            known = True  # the owner's login is known to work, the check token is accepted
        elif not self.login(username, password):
            previous = api.get("owner_previous_ref")
            old = self.secrets.get(previous) if previous else None
            if not old or not self.login(username, old):
                raise ApiError(
                    f"Home Assistant refused the owner login for {username}: the owner "
                    "password in the site's vault no longer matches (changed in Home "
                    "Assistant's interface?). Set it in abri to the one Home Assistant has "
                    "('abri stack set HOST homeassistant --set owner_password=...'), and abri "
                    "will move Home Assistant to a new one from there.")
            self.changes.append(f"change the owner password of {username} to the site's")
            if not self.check:
                self.change_password(old, password)
        if self.remember and not known:
            self.owner_checked(password)
        for step, path, body in (
                ("core_config", "/api/onboarding/core_config", {}),
                ("analytics", "/api/onboarding/analytics", {}),
                ("integration", "/api/onboarding/integration",
                 {"client_id": self.client_id, "redirect_uri": self.redirect})):
            if step in open_steps:
                self.changes.append(f"onboard: finish the {step} step")
                if not self.check:
                    self.http.call("POST", path, body=body)
                    if step == "core_config":
                        onboarded_now = True
        if onboarded_now and not self.check:
            self.remove_outside_entries()
        self.integrations()
        self.http_config(timeout)
        if self.refresh:  # abri's own login session ends with the call, in check mode too
            with contextlib.suppress(ApiError, OSError):
                self.http.call("POST", "/auth/revoke", form={"token": self.refresh})

    def entries(self):
        return self.http.call("GET", "/api/config/config_entries/entry") or []

    def remove_outside_entries(self):
        wanted = set(self.api.get("wait_for_entries") or [])
        deadline = time.monotonic() + 60
        entries = self.entries()
        while wanted - {e["domain"] for e in entries} and time.monotonic() < deadline:
            time.sleep(2)
            entries = self.entries()
        remove = set(self.api.get("remove_after_onboarding") or [])
        for entry in entries:
            if entry["domain"] in remove:
                self.changes.append(f"remove the {entry['domain']} entry the onboarding made "
                                    "(it calls a service outside the home)")
                self.http.call("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")

    def integrations(self):
        state_file = os.path.join(self.dir, STATE)
        try:
            with open(state_file, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
        new_state = dict(state)
        entries = self.entries()
        for item in self.api.get("integrations") or []:
            domain = item["domain"]
            data = {"broker": item["host"], "port": int(item["port"]),
                    "username": item["username"], "password": self.secret(item["password_ref"])}
            mark = _fingerprint(data)
            have = [e for e in entries if e["domain"] == domain]
            if have and state.get(domain) in (None, mark):
                # an entry made before abri kept fingerprints is taken as it is, once
                new_state[domain] = mark
                continue
            if have:
                self.changes.append(f"re-create the {domain} entry (broker {data['broker']}:"
                                    f"{data['port']} or its account changed)")
                if self.check:
                    continue
                for entry in have:
                    self.http.call("DELETE", f"/api/config/config_entries/entry/"
                                             f"{entry['entry_id']}")
            else:
                self.changes.append(f"create the {domain} entry (broker {data['broker']}:"
                                    f"{data['port']}, user {data['username']})")
                if self.check:
                    continue
            self.flow(domain, data)
            new_state[domain] = mark
        if new_state != state and not self.check:
            os.makedirs(os.path.dirname(state_file), mode=0o700, exist_ok=True)
            tmp = state_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(new_state, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, state_file)

    def flow(self, domain, data):
        step = self.http.call("POST", "/api/config/config_entries/flow",
                              body={"handler": domain, "show_advanced_options": False})
        fields = {f.get("name") for f in step.get("data_schema") or []}
        body = dict(data)
        if "other_settings" in fields:  # Home Assistant 2026: a required section
            body["other_settings"] = {"set_client_cert": False, "set_ca_cert": "off"}
        result = self.http.call("POST", f"/api/config/config_entries/flow/{step['flow_id']}",
                                body=body)
        if result.get("type") != "create_entry" or \
                (result.get("result") or {}).get("state") not in ("loaded", None):
            errors = json.dumps(result.get("errors") or {})
            raise ApiError(f"the {domain} entry was not set up: flow {result.get('type')}, "
                           f"errors {errors}, state {(result.get('result') or {}).get('state')}"
                           f" (broker {data['broker']}:{data['port']}, user {data['username']})")

    def websocket(self):
        """A websocket on Home Assistant's API, authenticated with the owner's token."""
        ws = WebSocket(int(self.api["port"]))
        try:
            if ws.recv().get("type") != "auth_required":
                raise ApiError("unexpected websocket greeting")
            ws.send({"type": "auth", "access_token": self.http.token})
            if ws.recv().get("type") != "auth_ok":
                raise ApiError("the websocket refused the token")
        except BaseException:
            ws.close()
            raise
        return ws

    def http_state(self):
        """Home Assistant's stored HTTP server configuration (http/config), or None when
        this Home Assistant has no such store (before 2026: its http: YAML governs)."""
        ws = self.websocket()
        try:
            answer = ws.command({"type": "http/config"})
        finally:
            ws.close()
        if answer.get("success"):
            return answer.get("result") or {}
        if (answer.get("error") or {}).get("code") == "unknown_command":
            return None
        raise ApiError("http/config answered " + json.dumps(answer.get("error")))

    def http_config(self, timeout):
        """Home Assistant's web server on every address of the host, on the site's port.

        From 2026 Home Assistant keeps its web server's settings in a store of its own
        (.storage/http): its first start copies the http: YAML there as a "pending" config
        on trial (reverted, with a restart, unless promoted within five minutes) and every
        later start ignores the YAML. The loopback-only address of abri's bootstrap would
        therefore outlive the API setup (and a changed port would never apply). So, with the
        owner's token: when the config Home Assistant runs with is not the wanted one, hand
        it the wanted one (http/config/configure: Home Assistant restarts itself with it),
        wait for the restarted instance, and promote it (http/config/promote); a wanted
        config still on trial (an earlier run was interrupted) is promoted."""
        state = self.http_state()
        if state is None:
            return
        port = int(self.api["port"])
        meta = ("created_at", "error", "error_message")
        pending = state.get("pending")
        if pending and pending.get("error"):
            pending = None
        running = pending or state.get("stable") or {}

        def wanted_config(conf):
            return not conf.get("server_host") and int(conf.get("server_port") or 0) == port

        if pending and wanted_config(pending):
            self.changes.append("promote Home Assistant's HTTP config on trial (every "
                                f"address, port {port})")
            if not self.check:
                self.http_promote()
            return
        if not pending and wanted_config(running):
            return
        wanted = {k: v for k, v in running.items() if k not in meta and k != "server_host"}
        wanted["server_port"] = port
        self.changes.append(f"move Home Assistant's web server to every address, port {port} "
                            "(its own HTTP config; it restarts)")
        if self.check:
            return
        deadline = time.monotonic() + timeout
        while True:
            sent = time.time()
            ws = self.websocket()
            try:
                answer = ws.command({"type": "http/config/configure", "config": wanted})
            finally:
                ws.close()
            if answer.get("success"):
                break
            # only a started Home Assistant takes a new config: it may still be starting
            if (answer.get("error") or {}).get("code") != "not_running" \
                    or time.monotonic() > deadline:
                raise ApiError("http/config/configure answered "
                               + json.dumps(answer.get("error")))
            time.sleep(2)
        if not (answer.get("result") or {}).get("restart"):
            state = self.http_state() or {}
        else:
            state = self.http_restarted(sent, deadline, (running is pending))
        if state.get("pending") and wanted_config(state["pending"]):
            self.http_promote()

    def http_restarted(self, sent, deadline, was_pending):
        """http/config of the Home Assistant that restarted after a configure sent at sent
        (epoch seconds). The instance that took the call answers until it stops; the new one
        runs either the new pending config, whose five-minute trial then ends after
        sent + 300 s, or (when the wanted config is the stable one) the stable config where
        the old one ran a pending one."""
        last = ""
        while time.monotonic() < deadline:
            try:
                state = self.http_state() or {}
                active = state.get("active_config_type")
                revert_at = state.get("revert_at")
                if active == "pending" and revert_at and _epoch(revert_at) >= sent + 300:
                    return state
                if active == "stable" and was_pending and not state.get("pending"):
                    return state
                last = f"still the instance from before (active config {active})"
            except (ApiError, OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(2)
        raise ApiError(f"Home Assistant did not come back with its new HTTP config ({last})")

    def http_promote(self):
        ws = self.websocket()
        try:
            answer = ws.command({"type": "http/config/promote"})
        finally:
            ws.close()
        if not answer.get("success"):
            raise ApiError("http/config/promote answered " + json.dumps(answer.get("error")))

    def change_password(self, old, new):
        ws = self.websocket()
        try:
            answer = ws.command({"type": "config/auth_provider/homeassistant/change_password",
                                 "current_password": old, "new_password": new})
            if not answer.get("success"):
                raise ApiError("Home Assistant did not change the owner password: "
                               + str((answer.get("error") or {}).get("message", "")))
        finally:
            ws.close()
