"""Running at the start, not after it (issue 13, item 3): a reservation's VMs are made
(cloned, sized, disks provisioned) on their booked hosts ahead of the start
(PEX_PREPARE_LEAD_SECONDS, default 10 minutes) and only booted at the start. Against the
simulator, through the unmodified XenAPI client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.domain.values import State
from tests.support.world import HOUR

pytestmark = pytest.mark.xen

LEAD = timedelta(minutes=10)


def test_vms_are_made_halted_on_their_hosts_ahead_of_the_start_and_booted_at_it(world):
    rid = world.reserve(size="SMALL", fixed=2, start_in=HOUR, hours=1)
    booked = sorted(a.node for a in world.app.get_reservation(rid).offer.placement for _ in range(a.instances))
    world.advance(HOUR - LEAD - timedelta(seconds=1))
    assert world.tick().dispatched == []  # not yet within the lead
    world.advance(timedelta(seconds=2))
    assert world.tick().dispatched == ["prepare", "prepare"]
    assert sorted(vm["power_state"] for vm in world.vms()) == ["Halted", "Halted"]
    assert [v.status for v in world.instances(rid)] == ["SCHEDULED", "SCHEDULED"]
    assert world.tick().dispatched == []  # made once
    for view in world.instances(rid):
        assert world.events(view.id)[-2:] == ["DispatchClaimed", "Prepared"]

    world.control.set_latency("VM.clone", 5.0)  # a slow clone no longer delays the start
    world.control.set_latency("VM.provision", 5.0)
    world.advance(LEAD)
    assert world.tick().dispatched == ["start", "start"]
    views = world.wait_for_ips(rid)
    assert [v.status for v in views] == ["RUNNING", "RUNNING"] and sorted(v.node for v in views) == booked
    assert len(world.vms()) == 2  # the VMs made ahead, not new ones
    for view in views:
        assert "Provisioned" not in world.events(view.id)


def test_a_reservation_cancelled_after_its_vms_were_made_removes_them(world):
    rid = world.reserve(size="SMALL", fixed=1, start_in=LEAD / 2, hours=1, activate=False, auto_start=True)
    assert world.tick().dispatched == ["prepare"]
    assert len(world.vms()) == 1
    world.app.cancel(rid)
    world.tick()
    assert world.vms() == [] and world.control.state()["vdis"] == 0
    assert world.app.get_reservation(rid).state == State.CANCELLED


def test_a_failed_preparation_does_not_delay_the_start(world):
    rid = world.reserve(size="SMALL", fixed=1, start_in=timedelta(seconds=30), hours=1)
    world.control.fail_next("VM.clone", ["INTERNAL_ERROR", "clone failed"], times=1)
    assert world.tick().dispatched == ["prepare failed"]
    world.advance(timedelta(seconds=30))
    assert world.tick().dispatched == ["start"]
    [view] = world.wait_for_ips(rid)
    assert view.status == "RUNNING"
