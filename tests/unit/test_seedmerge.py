"""abri's own part merged back into an add-on's imported data (tui/core/seedmerge.py): the
flows' credentials in the format Node-RED itself reads and writes, checked against Node.js's
crypto (the runtime Node-RED runs on), and the JSON list merged by id."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tui.core import paths, seedmerge

NODE = shutil.which("node") or shutil.which("nodejs")
# Node-RED's own algorithm (runtime/lib/nodes/credentials.js): AES-256-CTR, the key the
# SHA-256 of the secret, the IV as 32 hex digits, the ciphertext in base64
NODE_JS = r"""
const crypto = require("crypto");
const [mode, secret, text] = process.argv.slice(1);
const key = crypto.createHash("sha256").update(secret).digest();
if (mode === "decrypt") {
  const blob = JSON.parse(text).$;
  const d = crypto.createDecipheriv("aes-256-ctr", key, Buffer.from(blob.substring(0, 32), "hex"));
  process.stdout.write(d.update(blob.substring(32), "base64", "utf8") + d.final("utf8"));
} else {
  const iv = crypto.randomBytes(16);
  const c = crypto.createCipheriv("aes-256-ctr", key, iv);
  process.stdout.write(JSON.stringify({$: iv.toString("hex") + c.update(text, "utf8", "base64")
                                          + c.final("base64")}));
}
"""
CREDS = {"f1.broker": {"user": "porch", "password": "pässword with ümlauts"}}
SEED_DIR = paths.stacks_dir() / "nodered" / "templates"
FLOWS_RULE = {"file": "flows.json", "from": "templates/flows.json", "format": "json-by-id"}
CRED_RULE = {"file": "flows_cred.json", "from": "templates/flows_cred.json",
             "format": "node-red-credentials", "key_secret": "credential_key"}


def node(*args: str) -> str:
    if NODE is None:
        pytest.skip("no Node.js here")
    return subprocess.run([NODE, "-e", NODE_JS, *args], check=True, capture_output=True,
                          text=True).stdout


def test_credentials_interoperate_with_node_js_crypto():
    mine = seedmerge.encrypt_credentials(CREDS, "k1")
    assert json.loads(node("decrypt", "k1", json.dumps(mine))) == CREDS
    theirs = json.loads(node("encrypt", "k2", json.dumps(CREDS)))
    assert seedmerge.decrypt_credentials(theirs, "k2") == CREDS
    assert seedmerge.decrypt_credentials(theirs, "not-k2") is None


def test_flows_get_abris_items_by_id_and_keep_the_users():
    user = [{"id": "f1", "type": "tab", "label": "Porch"},
            {"id": "abri.heartbeat.every", "type": "inject", "name": "changed by the user"}]
    seed = json.loads((SEED_DIR / "flows.json").read_text())
    merged, added = seedmerge.merge_by_id(user, seed)
    assert merged[:2] == user  # the user's objects first and unchanged, their id wins
    assert "abri.heartbeat.every" not in added
    assert set(added) == {x["id"] for x in seed} - {"abri.heartbeat.every"}
    assert seedmerge.merge_by_id(merged, seed)[1] == []  # a second merge adds nothing


def _addon_folder(tmp: Path, creds: dict, key: str, runtime: dict | None) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    (folder / "flows.json").write_text('[{"id": "f1", "type": "tab"}]')
    (folder / "flows_cred.json").write_text(node("encrypt", key, json.dumps(creds)))
    if runtime is not None:
        (folder / ".config.runtime.json").write_text(json.dumps(runtime))
    return folder


def test_credentials_with_the_addons_key_get_abris_and_the_stacks_key(tmp_path):
    """The add-on was given credential_secret (it becomes the stack's key): the file opens
    with it, gets the broker node of abri's heartbeat, and Node-RED (Node.js) reads the
    result with the stack's key."""
    folder = _addon_folder(tmp_path, CREDS, "addon-key", None)
    said = seedmerge.merge(folder, CRED_RULE, SEED_DIR / "flows_cred.json", ["addon-key"],
                           "addon-key")
    assert said == "flows_cred.json: abri's credentials added, encrypted with the stack's key"
    got = json.loads(node("decrypt", "addon-key", (folder / "flows_cred.json").read_text()))
    assert got == {**CREDS, "abri.mqtt.broker": {"user": "${MQTT_USER}",
                                                 "password": "${MQTT_PASSWORD}"}}
    said = seedmerge.merge(folder, FLOWS_RULE, SEED_DIR / "flows.json", [], None)
    assert said == "flows.json: abri's 4 item(s) added"
    ids = [x["id"] for x in json.loads((folder / "flows.json").read_text())]
    assert ids[0] == "f1" and "abri.heartbeat.publish" in ids


def test_credentials_with_the_key_node_red_generated(tmp_path):
    """No credential_secret in the add-on: Node-RED generated a key and kept it in
    .config.runtime.json. The file opens with that key, is written with the stack's, and
    the generated key is dropped (else Node-RED tries it first); the rest stays."""
    runtime = {"instanceId": "abc", "_credentialSecret": "generated-key"}
    folder = _addon_folder(tmp_path, CREDS, "generated-key", runtime)
    seedmerge.merge(folder, CRED_RULE, SEED_DIR / "flows_cred.json", [], "stack-key")
    got = json.loads(node("decrypt", "stack-key", (folder / "flows_cred.json").read_text()))
    assert got["f1.broker"] == CREDS["f1.broker"] and "abri.mqtt.broker" in got
    assert json.loads((folder / ".config.runtime.json").read_text()) == {"instanceId": "abc"}


def test_credentials_that_no_key_opens_are_left_alone(tmp_path):
    folder = _addon_folder(tmp_path, CREDS, "lost-key", {"instanceId": "abc"})
    before = (folder / "flows_cred.json").read_text()
    said = seedmerge.merge(folder, CRED_RULE, SEED_DIR / "flows_cred.json", ["other"],
                           "stack-key")
    assert said.startswith("flows_cred.json: cannot be read with the add-on's key")
    assert (folder / "flows_cred.json").read_text() == before
    assert "lost-key" not in said and "stack-key" not in said
