"""Fixtures for the workers: a PEX on a manual clock with a timer attached to it
(tests.support.world.World), its dispatch carried out in memory (`memory_world`: most tests) or
on a simulated pool driven through the real XenAPI client, with the monitors (`world`: what
is about Xen)."""

from __future__ import annotations

import pytest

from tests.support.world import GUEST_IP_DELAY, World, build_memory_world, build_world, closing_worlds
from tests.support.xen import simulator_fixture

simulator = simulator_fixture(guest_ip_delay=GUEST_IP_DELAY, seed=11)


@pytest.fixture
def make_world(simulator):
    yield from closing_worlds(lambda **options: build_world(simulator, **options))


@pytest.fixture
def world(make_world) -> World:
    return make_world()


@pytest.fixture
def make_memory_world():
    yield from closing_worlds(build_memory_world)


@pytest.fixture
def memory_world(make_memory_world) -> World:
    return make_memory_world()
