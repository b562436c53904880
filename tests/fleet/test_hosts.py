"""The host kinds the fleet offers: Debian 13 with or without Docker, and Debian 12 (for the
kit's "unsupported system" refusal)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fleet


def test_plain_and_docker_hosts(fleet):
    fl = fleet(1, image="plain")
    fl.add_hosts(1, image="docker")
    plain, with_docker = fl.hosts
    assert plain.exec("command -v docker", check=False).returncode != 0
    assert with_docker.exec("docker compose version --short").stdout.strip()
    # both trust the local registry through daemon.json, whether docker is installed yet or not
    for host in fl:
        assert '"insecure-registries"' in host.exec("cat /etc/docker/daemon.json").stdout
        # host keys are made per host at first boot, never shared through the image
    keys = {h.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1] for h in fl}
    assert len(keys) == 2


def test_bookworm_host_boots(fleet):
    (host,) = fleet(1, image="bookworm")
    assert host.exec(". /etc/os-release; echo $VERSION_ID").stdout.strip() == "12"
    assert host.ssh("python3 -c 'print(1)'").stdout.strip() == "1"
