"""A local host's LAN address, from the kernel's tables as `ip` prints them (outputs taken
from real machines: a fleet host whose nested Docker bridges come before its LAN interface,
and this controller). The address becomes Home Assistant's internal URL and the broker
certificate's name: a container bridge or loopback there sends LAN clients nowhere."""

from __future__ import annotations

import subprocess

import pytest

from tui.core.resolve import lan_address, pick_lan_address

FLEET_HOST_ROUTES = "default via 192.168.16.1 dev eth0 \n"
FLEET_HOST_ADDRS = """\
2: docker0    inet 10.213.0.1/24 brd 10.213.0.255 scope global docker0\\       valid_lft forever preferred_lft forever
3: br-428dad905f88    inet 10.214.0.1/24 brd 10.214.0.255 scope global br-428dad905f88\\       valid_lft forever preferred_lft forever
840: eth0    inet 192.168.16.2/20 brd 192.168.31.255 scope global eth0\\       valid_lft forever preferred_lft forever
"""  # noqa: E501


def test_the_default_route_interface_wins_over_earlier_bridges():
    assert pick_lan_address(FLEET_HOST_ROUTES, FLEET_HOST_ADDRS) == "192.168.16.2"


def test_without_a_default_route_bridges_are_passed_over():
    assert pick_lan_address("", FLEET_HOST_ADDRS) == "192.168.16.2"


def test_an_interface_name_with_a_link_suffix():
    addrs = "7: eth0@if8    inet 10.1.2.3/24 brd 10.1.2.255 scope global eth0\\\n"
    assert pick_lan_address("default via 10.1.2.1 dev eth0 proto dhcp\n", addrs) == "10.1.2.3"


def test_only_bridges_or_nothing_is_loopback():
    only_bridge = FLEET_HOST_ADDRS.splitlines()[0] + "\n"
    assert pick_lan_address("", only_bridge) == "127.0.0.1"
    assert pick_lan_address("", "") == "127.0.0.1"


def test_this_machine_gives_the_address_of_its_default_route():
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "default"],
                            capture_output=True, text=True).stdout.split()
    if "dev" not in routes:
        pytest.skip("this machine has no default route")
    dev = routes[routes.index("dev") + 1]
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev, "scope", "global"],
                           capture_output=True, text=True).stdout.split()
    assert lan_address() == addrs[addrs.index("inet") + 1].split("/")[0]
