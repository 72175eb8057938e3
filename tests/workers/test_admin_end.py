"""An administrator ends an activated reservation early: the worker shuts its VMs down and
destroys them at the next tick (against the simulated pool through the real XenAPI client,
disks and all); ended before the start, nothing runs (in memory)."""

from __future__ import annotations

import pytest

from pex.domain.values import State
from tests.support.world import HOUR


@pytest.mark.xen
def test_an_administrators_end_stops_the_running_vms_at_the_next_tick(world):
    rid = world.reserve(size="XLARGE", fixed=2, hours=6)
    world.advance(HOUR)
    assert sorted(world.tick().dispatched) == ["start", "start"]
    world.wait_for_ips(rid)
    assert [vm["power_state"] for vm in world.vms()] == ["Running", "Running"]

    world.app.terminate(rid, by="root", reason="abuse")
    assert sorted(world.tick().dispatched) == ["end", "end"]

    assert world.vms() == [] and world.control.state()["vdis"] == 0
    assert [v.status for v in world.instances(rid)] == ["ENDED", "ENDED"]
    assert world.app.get_reservation(rid).state == State.CANCELLED
    assert world.tick().idle


def test_an_administrators_end_before_the_start_cancels_the_instances_and_nothing_runs(memory_world):
    rid = memory_world.reserve(hours=2)
    memory_world.app.terminate(rid, by="root", reason="abuse")
    memory_world.advance(HOUR)
    assert memory_world.tick().dispatched == []
    assert memory_world.vms() == []
    assert [v.status for v in memory_world.instances(rid)] == ["CANCELLED"]
