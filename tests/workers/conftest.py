"""Fixtures for the workers: a simulated pool driven through the real XenAPI client, and a PEX
on a manual clock with a timer and monitors attached to it (tests.support.world.World)."""

from __future__ import annotations

import pytest

from tests.support.world import GUEST_IP_DELAY, World, build_world
from tests.support.xen import simulator_fixture

simulator = simulator_fixture(guest_ip_delay=GUEST_IP_DELAY, seed=11)


@pytest.fixture
def make_world(simulator):
    made: list[World] = []

    def make(**options) -> World:
        world = build_world(simulator, **options)
        made.append(world)
        return world

    yield make
    for world in made:
        for close in world.closers:
            close()


@pytest.fixture
def world(make_world) -> World:
    return make_world()
