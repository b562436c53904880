"""Node-RED and ESPHome deployed from their catalog folders alone, next to the broker, on one
Debian 13 fleet host, through the abri CLI as a user runs it:

* the first apply converges and its verify passes every check, among them Node-RED's
  heartbeat (published by its seeded flow with its own broker account, seen by the broker's
  admin), Node-RED's account round trip and ACL, and both dashboards answering HTTP 200;
* `abri verify --json` agrees;
* the broker account's password reaches Node-RED only through the stack's 0600 .env;
* the editor and the ESPHome dashboard ask for a login; ESPHome's remote-build receiver
  listens on the host's loopback only;
* Node-RED talks to Home Assistant (on the same host) with a long-lived token of its own,
  minted by the apply from the two manifests alone: from inside the Node-RED container,
  with the URL and token its environment holds, GET /api/ answers 200, a wrong token 401;
  the token is in the vault and Node-RED's 0600 .env only, never in the site's plain files
  or any output; `abri verify` proves it too (the manifest's tokens check);
* a file Node-RED's user owns (settings.js, seeded) edited by hand stays, and a second apply
  changes nothing (changed=0) and mints nothing;
* a token abri replaces (the vault's no longer accepted) is revoked in Home Assistant;
* everything the host asks for outside, from before its first apply to the end of the test
  (at least test_egress.WATCH_SECONDS after that apply), is what `abri audit` lists for it:
  a Recorder answers its DNS and refuses its outbound connections (test_egress.py).

Timings are printed (run with -s); tests never assert on wall-clock time.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_deploy import (
    _CONFIG_HOME,
    _abri,
    _apply,
    _env,
    _recap,
    _tool,
)
from test_egress import (
    PROBE_CONTAINER,
    WATCH_SECONDS,
    assert_audited,
    daemon_options,
    watch_until,
)

pytestmark = pytest.mark.fleet


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path):
    _CONFIG_HOME["ABRI_CONFIG_HOME"] = str(tmp_path / "abri-config")
    yield
    _CONFIG_HOME.clear()


def _secrets(site: Path, host: str) -> dict:
    """The host's secrets as abri reads them (the vault password from the test's own config
    home)."""
    saved = os.environ.get("ABRI_CONFIG_HOME")
    os.environ["ABRI_CONFIG_HOME"] = _CONFIG_HOME["ABRI_CONFIG_HOME"]
    try:
        from tui.core.site import Site

        return Site.load(site).secrets[host]
    finally:
        if saved is None:
            os.environ.pop("ABRI_CONFIG_HOME")
        else:
            os.environ["ABRI_CONFIG_HOME"] = saved


def _status(url: str, timeout: float = 10) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _show(label: str, run: subprocess.CompletedProcess, seconds: float) -> None:
    print(f"\n[test_more_stacks] {label}: {seconds:.1f}s, rc={run.returncode}")


def _set_secret(site: Path, host: str, stack: str, key: str, value: str) -> None:
    """Change one secret in the site's vault, as abri itself writes it."""
    saved = os.environ.get("ABRI_CONFIG_HOME")
    os.environ["ABRI_CONFIG_HOME"] = _CONFIG_HOME["ABRI_CONFIG_HOME"]
    try:
        from tui.core.site import Site

        loaded = Site.load(site)
        loaded.secrets[host][stack][key] = value
        loaded.save()
    finally:
        if saved is None:
            os.environ.pop("ABRI_CONFIG_HOME")
        else:
            os.environ["ABRI_CONFIG_HOME"] = saved


#: run inside the Node-RED container: GET $HOMEASSISTANT_URL/api/ with the token Node-RED's
#: environment holds, then with a wrong one; prints both HTTP statuses
_FROM_NODERED = (
    "const u = process.env.HOMEASSISTANT_URL + '/api/';"
    "const get = t => fetch(u, {headers: {Authorization: 'Bearer ' + t}}).then(r => r.status);"
    "Promise.all([get(process.env.HOMEASSISTANT_TOKEN), get('wrong-token')])"
    ".then(s => console.log(JSON.stringify({url: process.env.HOMEASSISTANT_URL, s})))"
    ".catch(e => { console.log(String(e)); process.exit(1); });"
)


def _status_on(host, token: str) -> int:
    """GET /api/ of the host's Home Assistant with the token, from the host itself."""
    probe = ("import sys, urllib.request, urllib.error\n"
             "r = urllib.request.Request('http://127.0.0.1:8123/api/',"
             " headers={'Authorization': 'Bearer ' + sys.stdin.read().strip()})\n"
             "try:\n    print(urllib.request.urlopen(r, timeout=10).status)\n"
             "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    run = host.exec(f"python3 -c {shlex.quote(probe)}", input=token, check=False)
    return int(run.stdout.strip() or 0)


def _from_nodered(host) -> dict:
    run = host.exec(f"docker exec abri-nodered-nodered-1 node -e {shlex.quote(_FROM_NODERED)}",
                    check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_nodered_and_esphome_from_their_folders(fleet, fleet_registry, tmp_path):
    fl = fleet(1, image="prepared")  # the engine as abri's own engine step installed it
    host = fl.hosts[0]
    # from here on, every DNS question and outbound connection of the host is recorded, and
    # nothing but the test registry is let out (checked at the end)
    recorder = fl.add_recorder()
    recorder.watch(host, allow=[fleet_registry.address])
    probes = [recorder.probe(host)]
    recorder.probe_connection(host)
    site = tmp_path / "site"
    _abri("init", "--site", str(site))
    _abri("host", "add", "--site", str(site), "--kind", "ssh", "--address", host.address,
          "--user", host.ssh_user, "--key", str(host.key_path), "h1")
    for stack in ("mosquitto", "homeassistant", "nodered", "esphome"):
        _abri("stack", "add", "--site", str(site), "h1", stack)
    _abri("site", "set", "--site", str(site), f"registry_mirror={fleet_registry.address}",
          "registry_insecure=true")
    (site / "group_vars" / "all" / "local.yml").write_text(
        "---\n# this machine's LAN overlaps Docker's default ranges; the containers ask the\n"
        "# recorder for names\n"
        f"docker_engine_daemon_options: {json.dumps(daemon_options(recorder))}\n"
    )

    first, first_s = _apply(site)
    applied = time.monotonic()
    _show("first apply (mosquitto, homeassistant, nodered, esphome)", first, first_s)
    assert first.returncode == 0, first.stdout[-8000:] + first.stderr[-3000:]
    assert _recap(first.stdout, "h1")["failed"] == 0
    report = first.stdout.split("Recap:")[-1]
    print(report)
    assert "FAIL" not in report and "CHECK NOT RUN" not in report, report
    wanted = ("nodered publishes on nodered/heartbeat as its own user",
              "nodered answers http GET / on port 1880",
              "esphome answers http GET /version on port 6052",
              "mqtt round trip as nodered",
              "mqtt acl: nodered cannot write outside its topics",
              "exposure 1880/tcp (nodered http)",
              "exposure 6052/tcp (esphome http)",
              "exposure 6055/tcp (esphome builds)",
              "homeassistant onboarded",
              "nodered's token for homeassistant on h1 is accepted",
              "nodered's token for homeassistant on h1 is accepted: a wrong token is refused")
    for name in wanted:
        assert f"ok   {name}" in report, (name, report)

    start = time.monotonic()
    run = subprocess.run([_tool("abri"), "verify", "--json", "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=600)
    print(f"[test_more_stacks] abri verify: {time.monotonic() - start:.1f}s")
    assert run.returncode == 0, run.stdout + run.stderr
    checks = json.loads(run.stdout)[0]["checks"]
    assert checks and all(c["ok"] for c in checks), run.stdout
    assert set(wanted) <= {c["name"] for c in checks}, run.stdout

    # Compose's own container names, all running
    running = host.exec("docker ps --format '{{.Names}}'").stdout.split()
    for name in ("abri-mosquitto-mosquitto-1", "abri-homeassistant-homeassistant-1",
                 "abri-nodered-nodered-1", "abri-esphome-esphome-1"):
        assert name in running, running
    # Node-RED's keys and broker account reach it through the stack's .env only (0600)
    secrets = _secrets(site, "h1")
    assert host.exec("stat -c '%u %a' /opt/abri/nodered/.env /opt/abri/esphome/.env"
                     ).stdout.split("\n")[:2] == ["0 600", "0 600"]
    env = host.exec("cat /opt/abri/nodered/.env").stdout
    assert f'MQTT_PASSWORD="{secrets["nodered"]["mqtt_password"]}"' in env
    assert 'MQTT_USER="nodered"' in env
    # Node-RED's own Home Assistant token: minted by the first apply, in the vault and the
    # .env, and the container was converged again with it
    token = secrets["nodered"]["homeassistant_token"]
    assert len(token) > 100 and token != secrets["homeassistant"].get("token")
    assert f'HOMEASSISTANT_TOKEN="{token}"' in env
    seen = _from_nodered(host)
    assert seen == {"url": "http://host.docker.internal:8123", "s": [200, 401]}, seen
    for plain in (site / "host_vars" / "h1").glob("*.yml"):
        assert token not in plain.read_text(), plain
    assert host.exec("stat -c '%u' /opt/abri/nodered/data /opt/abri/nodered/data/flows.json"
                     ).stdout.split() == ["1000", "1000"]
    log = host.exec("docker logs abri-nodered-nodered-1 2>&1").stdout
    assert "Connected to broker: mqtt://host.docker.internal:1883" in log, log[-3000:]
    broker_log = host.exec("docker logs abri-mosquitto-mosquitto-1 2>&1").stdout
    assert "u'nodered'" in broker_log, broker_log[-3000:]

    # both dashboards answer on the host's address, and want a login for anything real
    base = f"http://{host.address}"
    assert _status(f"{base}:1880/") == 200
    assert _status(f"{base}:1880/flows") == 401
    with urllib.request.urlopen(f"{base}:6052/version", timeout=10) as resp:
        assert json.loads(resp.read())["version"] == "2026.10.0"
    assert _status(f"{base}:6052/devices") == 401
    listening = host.exec("ss -Hltn 'sport = :6055'").stdout
    assert "127.0.0.1:6055" in listening and "0.0.0.0:6055" not in listening, listening

    # settings.js is the user's (seeded): a change made by hand stays; nothing else moves
    host.exec("echo '// my own line' >> /opt/abri/nodered/data/settings.js")
    second, second_s = _apply(site)
    _show("no-op apply", second, second_s)
    assert second.returncode == 0, second.stdout[-8000:] + second.stderr[-3000:]
    recap = _recap(second.stdout, "h1")
    changed = [line for line in second.stdout.splitlines() if "changed" in line or "~" in line]
    assert recap["changed"] == 0, (recap, changed)
    assert _secrets(site, "h1")["nodered"]["homeassistant_token"] == token, "minted again"
    assert "// my own line" in host.exec("cat /opt/abri/nodered/data/settings.js").stdout
    assert "FAIL" not in second.stdout.split("Recap:")[-1]

    # a token abri replaces is revoked: the vault's one no longer accepted (lost, say), the
    # next apply mints Node-RED a new one under the same name, and the old one is refused
    _set_secret(site, "h1", "nodered", "homeassistant_token", "no-longer-accepted-" + "x" * 20)
    third, third_s = _apply(site, "apply", "--no-verify")
    _show("apply after the token was lost", third, third_s)
    assert third.returncode == 0, third.stdout[-8000:] + third.stderr[-3000:]
    renewed = _secrets(site, "h1")["nodered"]["homeassistant_token"]
    assert renewed not in (token, "no-longer-accepted-" + "x" * 20) and len(renewed) > 100
    assert _from_nodered(host)["s"] == [200, 401]
    assert _status_on(host, token) == 401, "the replaced token is still accepted"

    # no generated secret in the output of any run
    values = [v for stack in ("nodered", "esphome") for v in secrets[stack].values()]
    assert len(values) == 5
    output = "".join(r.stdout + r.stderr for r in (first, second, third))
    for value in [*values, renewed]:
        assert value not in output

    # what the host tried to reach outside, through all of the above, is what the audit lists
    probes.append(recorder.probe(host, container=PROBE_CONTAINER))
    watch_until(applied + WATCH_SECONDS)
    assert_audited(recorder, host, site, "h1", probes,
                   label="mosquitto, homeassistant, nodered, esphome")
