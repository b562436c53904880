"""A stack's health check, run on the host: the service answers on the host's loopback.

Shared by the kit modules that start a stack (abri_stack after a deploy, abri_backup after
the brief stop of a backup or a restore): HTTP 200 on a path, an MQTT CONNACK 0 as the
broker's admin user, or a TCP accept. A check with an ``address`` probes that address
instead of the loopback (a trial restore's scratch container, on its own network).
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import time
import urllib.error
import urllib.request


def _mqtt_string(text):
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def mqtt_connack(port, user, password, timeout=5, address="127.0.0.1"):
    """MQTT 3.1.1 CONNECT with user and password; (accepted, what the broker said)."""
    client = "abri-health-" + base64.b16encode(os.urandom(4)).decode().lower()
    payload = _mqtt_string(client) + _mqtt_string(user) + _mqtt_string(password)
    variable = _mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 30)
    body = variable + payload
    length = b""
    n = len(body)
    while True:
        byte = n % 128
        n //= 128
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(bytes([0x10]) + length + body)
        answer = b""
        while len(answer) < 4:
            chunk = sock.recv(4 - len(answer))
            if not chunk:
                return False, "the broker closed the connection"
            answer += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    if answer[0] != 0x20:
        return False, f"not a CONNACK (0x{answer[0]:02x})"
    return answer[3] == 0, f"CONNACK return code {answer[3]}"


def probe(hc, secret):
    """One try of the health check hc (kind, port, path, user, password_ref); secret(ref)
    gives a secret's value. Returns (ok, what was seen)."""
    kind = hc.get("kind")
    port = int(hc["port"])
    address = hc.get("address") or "127.0.0.1"
    try:
        if kind == "http":
            url = f"http://{address}:{port}{hc.get('path', '/')}"
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status == 200, f"HTTP {resp.status}"
        if kind == "mqtt":
            return mqtt_connack(port, hc["user"], secret(hc["password_ref"]),
                                address=address)
        socket.create_connection((address, port), timeout=5).close()
        return True, "accepts"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, str(exc)


def wait_healthy(hc, secret, timeout=None):
    """Probe until the check passes or its timeout (seconds) ends; (ok, last answer)."""
    if not hc or not hc.get("kind"):
        return True, "no health check"
    deadline = time.monotonic() + int(timeout if timeout is not None else hc.get("timeout", 60))
    while True:
        ok, last = probe(hc, secret)
        if ok or time.monotonic() > deadline:
            return ok, last
        time.sleep(1)
