"""What abri does after a converged apply, on real sites: a host the run changed nothing on,
whose token was checked within a day, keeps it without a round trip (a no-op apply from cron
opens no tunnel and rewrites no file); a host the run changed, or checked over a day ago,
or without a token, is checked again."""

from __future__ import annotations

import json

from tui.core import checks, runner
from tui.core.site import Site


def _site_with_token(abri, site_dir):
    # a host nothing listens for: 127.0.0.1 port 1 refuses at once (no traffic leaves here)
    assert abri("host", "add", "ha", "--kind", "ssh", "--address", "127.0.0.1", "--port", "1",
                "--user", "root", "--site", site_dir).code == 0
    for stack in ("mosquitto", "homeassistant"):
        assert abri("stack", "add", "ha", stack, "--site", site_dir).code == 0
    site = Site.load(site_dir)
    site.secrets.setdefault("ha", {}).setdefault("homeassistant", {})["token"] = "kept-token"
    site.save()
    return Site.load(site_dir)


def _files(site_dir):
    return {p: p.stat().st_mtime_ns for p in site_dir.rglob("*")
            if p.is_file() and ".abri" not in p.relative_to(site_dir).parts}


def test_unchanged_host_with_a_token_is_left_alone(abri, site_dir):
    site = _site_with_token(abri, site_dir)
    checks._mark_checked(site, ["ha"])
    before = _files(site_dir)
    assert runner.after_apply(site, ["ha"], changed=set()) == []
    assert _files(site_dir) == before
    assert Site.load(site_dir).secrets["ha"]["homeassistant"]["token"] == "kept-token"


def test_changed_host_is_checked_again(abri, site_dir):
    site = _site_with_token(abri, site_dir)
    failures = runner.after_apply(site, ["ha"], changed={"ha"})
    # the check tried to reach the host (and could not): said as a check failure, the token
    # is kept for a later verify
    assert len(failures) == 1 and failures[0].host == "ha"
    assert "the deploy converged" in failures[0].message
    assert Site.load(site_dir).secrets["ha"]["homeassistant"]["token"] == "kept-token"


def test_host_without_a_token_gets_one_even_when_unchanged(abri, site_dir):
    site = _site_with_token(abri, site_dir)
    del site.secrets["ha"]["homeassistant"]["token"]
    failures = runner.after_apply(site, ["ha"], changed=set())
    assert len(failures) == 1 and failures[0].host == "ha"


def test_a_token_checked_over_a_day_ago_is_checked_again(abri, site_dir):
    site = _site_with_token(abri, site_dir)
    checks._mark_checked(site, ["ha"])
    marks = site_dir / ".abri" / "tokens-checked.json"
    data = json.loads(marks.read_text())
    data["ha"] -= checks.TOKENS_RECHECK + 60
    marks.write_text(json.dumps(data))
    failures = runner.after_apply(site, ["ha"], changed=set())
    assert len(failures) == 1 and failures[0].host == "ha"
    # a check that could not run is not a check: the host stays due
    assert checks.due_for_tokens(site, ["ha"], set()) == ["ha"]
