"""The Docker engine's own API over its unix socket, for the few reads abri's modules make.

`docker ps` and `docker compose ls` each start a Go program and dial the same socket; a
no-op apply asks once per stack and once per host, so the reads go straight to the socket
(one HTTP request each, no process). Writes stay with the docker CLI and Compose.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse

SOCKET = "/var/run/docker.sock"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class DockerError(Exception):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status  # the engine's HTTP status, when it answered


def get(path, query=None, sock=SOCKET, timeout=30):
    """GET an API path (without version prefix); the decoded JSON answer."""
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    conn = _UnixConnection(sock, timeout)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
        body = resp.read()
    except OSError as exc:
        raise DockerError(f"the Docker engine does not answer on {sock}: {exc}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise DockerError(f"the Docker engine answered {resp.status} to GET {path}: "
                          f"{body.decode('utf-8', 'replace')[:300]}", resp.status)
    return json.loads(body)


def containers(labels=(), sock=SOCKET):
    """Every container (running or not) carrying all of `labels` ("key" or "key=value"),
    as the engine lists them: Id, Names (with a leading /), State, Labels..."""
    query = {"all": "1"}
    if labels:
        query["filters"] = json.dumps({"label": list(labels)})
    return get("/containers/json", query, sock)


def compose_projects(sock=SOCKET):
    """{project name: [container states]} of every Compose project with a container."""
    found = {}
    for c in containers(["com.docker.compose.project"], sock):
        name = (c.get("Labels") or {}).get("com.docker.compose.project", "")
        found.setdefault(name, []).append(c.get("State", ""))
    return found
