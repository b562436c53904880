"""Images without a US registry, end to end (issue 14):

* strict mode refuses a site whose Mosquitto comes from Docker Hub, naming the image and
  'abri images mirror' as the fix; a mirror that does not hold the image is refused too;
* `abri images mirror --from SOURCE` fills the site's mirror (a fresh, empty registry), pinned
  by digest; a second run copies nothing; the same site then passes the strict gate;
* a prepared host with no registry reachable (the test registry blocked on the host, the
  site's mirror on the controller's loopback) deploys Mosquitto from `abri images bundle`
  through the machine-local image_bundle setting; verify passes, and a second apply has
  changed=0.

Source and mirror are real registries (Debian's docker-registry on 127.0.0.1, free ports);
the source is filled with the locally built Mosquitto image by `docker push`. One host,
Mosquitto only (CI time). Timings are printed (-s).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import time

import harness
import pytest

from tests import local_registry as lr
from tests.fleet.test_deploy import (
    NESTED_ENGINE_OPTIONS,
    _abri,
    _apply,
    _env,
    _own_config_home,
    _recap,
    _tool,
)

pytestmark = pytest.mark.fleet
__all__ = ["_own_config_home"]  # the test module's autouse fixture, shared

REPOSITORY = "library/eclipse-mosquitto"
TAG = "2.0.21"


def _refused(site, *args: str) -> str:
    run = subprocess.run([_tool("abri"), *args, "--site", str(site)], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    return run.stderr


def test_strict_mirror_then_a_host_without_registry_deploys_from_a_bundle(
        fleet, fleet_images, fleet_registry, tmp_path):
    timings: dict[str, float] = {}
    host = fleet(1, image="prepared")[0]
    with lr.started(tmp_path / "source") as source, lr.started(tmp_path / "mirror") as mirror:
        # the source: the locally built Mosquitto under its upstream path
        pushed = f"{source.address}/{REPOSITORY}:{TAG}"
        harness.docker("tag", fleet_images.mosquitto.ref, pushed)
        try:
            harness.docker("push", pushed, timeout=600)
        finally:
            harness.docker("rmi", pushed, check=False)
        digest = source.head_manifest(REPOSITORY, TAG)
        assert digest and mirror.catalog() == []

        site = tmp_path / "site"
        _abri("init", "--site", str(site))
        _abri("host", "add", "broker", "--kind", "ssh", "--address", host.address, "--user",
              host.ssh_user, "--key", str(host.key_path), "--site", str(site))
        _abri("stack", "add", "broker", "mosquitto", "--site", str(site))
        (site / "group_vars" / "all" / "local.yml").write_text(
            "---\ndocker_engine_daemon_options: " + json.dumps(NESTED_ENGINE_OPTIONS) + "\n")
        _abri("site", "set", "sovereignty=strict", "--site", str(site))

        # (a) Docker Hub refused in strict mode, naming the image and the fix
        err = _refused(site, "plan")
        assert f"docker.io/{REPOSITORY}:{TAG}" in err, err
        assert "fix: abri images mirror --to HOST:PORT" in err, err
        assert "'broker'" in err and "mosquitto" in err
        # a mirror that does not hold the image mitigates nothing
        _abri("site", "set", f"registry_mirror={mirror.address}", "registry_insecure=true",
              "--site", str(site))
        err = _refused(site, "plan")
        assert "does not hold" in err and f"docker.io/{REPOSITORY}:{TAG}" in err, err
        assert "fix: abri images mirror" in err

        start = time.monotonic()
        out = _abri("images", "mirror", "--from", source.address, "--from-insecure",
                    "--site", str(site))
        timings["images mirror"] = time.monotonic() - start
        assert "Copied 1 image(s)" in out, out
        assert mirror.head_manifest(REPOSITORY, TAG) == digest  # pinned by digest
        out = _abri("images", "mirror", "--from", source.address, "--from-insecure",
                    "--site", str(site))
        assert "Nothing to copy" in out, out

        # (b) the bundle, read from the site's mirror
        bundle = tmp_path / "images.tar"
        start = time.monotonic()
        _abri("images", "bundle", str(bundle), "--site", str(site))
        timings["images bundle"] = time.monotonic() - start
        with tarfile.open(bundle) as tar:
            index = json.loads(tar.extractfile("abri-bundle.json").read())
        ref = f"{mirror.address}/{REPOSITORY}:{TAG}"
        assert [(i["ref"], i["digest"]) for i in index["images"]] == [(ref, digest)]
        image_id = index["images"][0]["image_id"]
        _abri("site", "set", f"image_bundle={bundle}", "--site", str(site))

        # the host reaches no registry: the test registry is blocked on it, and the site's
        # mirror is on the controller's loopback (the host's own 127.0.0.1 has none)
        host.exec(f"iptables -I OUTPUT -d {fleet_registry.address.split(':')[0]} -p tcp "
                  f"--dport {fleet_registry.address.split(':')[1]} -j REJECT")
        probe = ("import urllib.request, sys\n"
                 "for url in sys.argv[1:]:\n"
                 "    try:\n"
                 "        urllib.request.urlopen(url, timeout=5); print('reached', url)\n"
                 "    except Exception as exc:\n"
                 "        print('unreachable', url)\n")
        seen = host.exec(f"python3 - http://{fleet_registry.address}/v2/ "
                         f"http://{mirror.address}/v2/", input=probe).stdout
        assert "reached" not in seen.replace("unreachable", ""), seen
        assert host.exec(f"docker image inspect {ref}", check=False).returncode != 0

        first, seconds = _apply(site)
        timings["first apply from the bundle (with verify)"] = seconds
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr
        print("\n" + first.stdout.split("Recap:")[-1].strip())
        # the bundle went to the host (the same bytes) and was loaded there
        sent = host.exec("sha256sum /var/lib/abri/image-bundle.tar").stdout.split()[0]
        assert sent == hashlib.sha256(bundle.read_bytes()).hexdigest()
        assert "broker: Load the missing images from the bundle" in first.stdout, \
            first.stdout[-4000:]
        running = host.exec("docker inspect -f '{{.Image}}' abri-mosquitto-mosquitto-1"
                            ).stdout.strip()
        assert running == image_id
        assert host.exec(f"docker image inspect -f '{{{{.Id}}}}' {ref}").stdout.strip() \
            == image_id

        again, seconds = _apply(site, "apply", "--no-verify")
        timings["second apply (no-op)"] = seconds
        assert again.returncode == 0, again.stdout[-6000:] + again.stderr
        assert _recap(again.stdout, "broker")["changed"] == 0, again.stdout[-4000:]
    print("\n[test_image_bundle] " + ", ".join(f"{k}: {v:.1f}s" for k, v in timings.items()))
