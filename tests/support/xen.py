"""The XAPI simulator (a simulated pool of Xen hosts on loopback) and how tests log in to it."""

from __future__ import annotations

import pytest

from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.simulator import run_simulator

USERNAME, PASSWORD = "root", "xenroot"
TEMPLATE = "PEX Debian Etch 4.0 Template"


def simulator_fixture(guest_ip_delay: float, seed: int, hosts: int = 5):
    """A `simulator` fixture: a fresh simulated pool of `hosts` hosts for each test."""

    @pytest.fixture
    def simulator():
        with run_simulator(hosts=hosts, guest_ip_delay=guest_ip_delay, seed=seed) as sim:
            yield sim

    return simulator


def make_dispatcher(url: str, **options) -> XenDispatcher:
    """The real dispatcher, logged in as the simulator's root, with timeouts for tests."""
    options = {"timeout": 5.0, "task_timeout": 10.0, "poll_interval": 0.01, **options}
    return XenDispatcher(url, options.pop("username", USERNAME), options.pop("password", PASSWORD), **options)
