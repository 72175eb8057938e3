"""Faults: lost hosts (re-placed or stranded), crashed and silent guests, failing calls, VMs
removed behind PEX's back. The monitors record them; the timer and the Scheduler react."""

from __future__ import annotations

from datetime import timedelta

import pytest
import XenAPI

from pex.domain.instance import Instance
from pex.domain.values import State
from tests.support.waiting import eventually
from tests.support.world import HOUR
from tests.support.xen import PASSWORD, TEMPLATE, USERNAME, make_dispatcher

pytestmark = pytest.mark.xen


def running_world(world, **reserve):
    rid = world.reserve(**reserve)
    world.advance(HOUR)
    world.tick()
    world.settle()
    return rid


def node_of(world, name):
    return next(n for n in world.app.nodes() if n.name == name)


def vms_of(world, instance_id):
    return [vm for vm in world.vms() if vm["pex_instance"] == str(instance_id)]


class TestLostHost:
    def test_its_node_is_lost_and_its_running_instances_restart_on_another_node(self, world):
        rid = running_world(world, size="MEDIUM", fixed=1)
        view = world.instance(rid)
        old = view.node
        world.control.fail_host(old)
        world.settle()

        assert node_of(world, old).available is False
        assert world.instance(rid).status == "LOST"

        report = world.tick()
        assert (report.moved, report.stranded, report.dispatched) == (1, 0, ["start"])
        moved = world.instance(rid)
        assert moved.status == "RUNNING" and moved.node != old
        (vm,) = vms_of(world, view.id)
        assert (vm["host"], vm["power_state"]) == (moved.node, "Running")
        # The booking moved with it, in one save with the instance and the reservation.
        assert world.app.node_allocations(old) == []
        assert [a.reservation_id for a in world.app.node_allocations(moved.node)] == [rid]
        assert [(a.node, a.instances) for a in world.app.get_reservation(rid).offer.placement] == [(moved.node, 1)]
        assert world.events(view.id)[-4:] == ["Lost", "Moved", "DispatchClaimed", "Started"]
        world.wait_for_ips(rid)

    def test_what_finds_no_room_is_stranded_and_comes_back_with_its_node(self, world):
        rid = running_world(world, size="XLARGE", fixed=5)  # the whole pool
        lost = world.instances(rid)[2]
        world.control.fail_host(lost.node)
        world.settle()
        report = world.tick()
        assert (report.moved, report.stranded) == (0, 1)
        assert world.app.get_instance(lost.id).status == "STRANDED"
        assert sum(a.instances for a in world.app.get_reservation(rid).offer.placement) == 4
        assert world.tick().idle  # still nowhere to go

        world.control.recover_host(lost.node)  # rebooted: its domains are gone
        world.settle()
        assert node_of(world, lost.node).available
        report = world.tick()
        assert (report.moved, report.dispatched) == (1, ["start"])
        back = world.app.get_instance(lost.id)
        assert (back.status, back.node) == ("RUNNING", lost.node)
        assert [vm["power_state"] for vm in vms_of(world, lost.id)] == ["Running"]
        assert sum(a.instances for a in world.app.get_reservation(rid).offer.placement) == 5
        assert "Stranded" in world.events(lost.id)

    def test_future_bookings_on_it_are_re_placed_before_they_start(self, world):
        rid = world.reserve(size="LARGE", fixed=1, start_in=3 * HOUR)
        old = world.instance(rid).node
        world.settle()
        world.control.fail_host(old)
        world.settle()
        assert world.tick().moved == 1
        new = world.instance(rid).node
        assert new != old and world.instance(rid).status == "SCHEDULED"
        world.advance(3 * HOUR)
        assert world.tick().dispatched == ["start"]
        assert [vm["host"] for vm in vms_of(world, world.instance(rid).id)] == [new]

    def test_a_host_back_within_the_grace_period_keeps_its_vms(self, make_world):
        world = make_world(node_grace=timedelta(minutes=5))
        rid = running_world(world, fixed=1)
        node = world.instance(rid).node
        world.control.fail_host(node)
        world.settle()
        assert world.instance(rid).status == "LOST"
        assert world.tick().moved == 0  # within the grace period
        world.control.recover_host(node, vms_survive=True)  # it was only unreachable
        world.settle()
        assert node_of(world, node).available
        assert (world.instance(rid).status, world.instance(rid).node) == ("RUNNING", node)
        world.advance(10 * timedelta(minutes=1))
        assert world.tick().idle

    def test_a_host_that_rebooted_within_the_grace_period_restarts_its_vms_there(self, make_world):
        world = make_world(node_grace=timedelta(minutes=5))
        rid = running_world(world, fixed=1)
        node = world.instance(rid).node
        world.control.fail_host(node)
        world.settle()
        world.control.recover_host(node)  # rebooted: the domain is gone
        world.settle()
        assert world.instance(rid).status == "HALTED"
        assert world.tick().dispatched == ["start"]
        assert (world.instance(rid).status, world.instance(rid).node) == ("RUNNING", node)

    def test_a_disabled_host_takes_no_new_bookings_but_keeps_running_its_vms(self, world, simulator):
        rid = running_world(world, fixed=1)
        node = world.instance(rid).node
        later = world.reserve(fixed=1, start_in=5 * HOUR)
        assert world.instance(later).node == node  # the most loaded node first
        session = XenAPI.Session(simulator.url)
        session.xenapi.login_with_password(USERNAME, PASSWORD, "1.2", "tests")
        try:
            session.xenapi.host.disable(session.xenapi.host.get_by_name_label(node)[0])
        finally:
            session.xenapi.session.logout()
        world.settle()
        assert node_of(world, node).available is False
        report = world.tick()
        assert (report.moved, report.dispatched) == (1, [])  # the future one moves; the running one stays
        assert (world.instance(rid).status, world.instance(rid).node) == ("RUNNING", node)
        assert world.instance(later).node != node
        assert [vm["host"] for vm in vms_of(world, world.instance(rid).id)] == [node]


class TestGuests:
    @pytest.mark.parametrize("happening", ["crash_vm", "shutdown_vm_from_inside"])
    def test_a_vm_that_halts_by_itself_is_recorded_halted_and_left_so(self, world, happening):
        rid = running_world(world)
        view = world.instance(rid)
        getattr(world.control, happening)(str(view.id))
        world.settle()

        halted = world.app.get_instance(view.id)
        assert (halted.status, halted.ip_address) == ("HALTED", None)
        observed = [e for e in world.app.events.get(view.id) if isinstance(e, Instance.PowerStateObserved)]
        assert [(e.power_state, e.cause) for e in observed] == [("Halted", "guest")]
        assert world.tick().idle  # PEX does not insist
        assert world.app.start_instance(view.id).status == "RUNNING"

    def test_a_guest_that_never_reports_its_address_is_recorded_unresponsive(self, world):
        world.control.silence_guest("*")
        rid = running_world(world)
        view = world.instance(rid)
        assert view.status == "RUNNING" and view.ip_address is None
        world.advance(timedelta(minutes=6))
        world.monitors.resync()
        assert world.events(view.id)[-1] == "Unresponsive"
        world.monitors.resync()
        assert world.events(view.id).count("Unresponsive") == 1
        world.control.unsilence_guest("*")
        assert eventually(lambda: world.settle() or world.app.get_instance(view.id).ip_address)

    def test_a_vm_removed_behind_pexs_back_is_recorded_vanished(self, world, simulator):
        rid = running_world(world)
        view = world.instance(rid)
        other = make_dispatcher(simulator.url)  # an operator's tool
        try:
            other.destroy(view.id)
        finally:
            other.close()
        world.settle()
        assert world.app.get_instance(view.id).status == "HALTED"
        assert world.events(view.id)[-2:] == ["PowerStateObserved", "Vanished"] or world.events(view.id)[-1] == "Vanished"
        # The user may start it again: a new VM is made.
        assert world.app.start_instance(view.id).status == "RUNNING"
        assert len(vms_of(world, view.id)) == 1


class TestFailingCalls:
    def test_a_failed_start_is_recorded_and_tried_again_later(self, world):
        rid = world.reserve()
        world.advance(HOUR)
        world.control.fail_next("VM.start_on", ["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"])
        assert world.tick().dispatched == ["start failed"]
        view = world.instance(rid)
        assert view.status == "SCHEDULED" and world.events(view.id)[-1] == "DispatchFailed"
        assert world.tick().idle  # backing off
        world.advance(timedelta(seconds=10))
        assert world.tick().dispatched == ["start"]
        assert world.instance(rid).status == "RUNNING"
        assert len(vms_of(world, view.id)) == 1  # the retry reused the VM

    def test_an_unreachable_pool_is_a_failure_tried_again(self, world):
        rid = world.reserve()
        world.advance(HOUR)
        world.control.drop_connection("VM.clone", times=2)
        assert world.tick().dispatched == ["start failed"]
        world.advance(timedelta(seconds=10))
        assert world.tick().dispatched == ["start"]
        assert len(vms_of(world, world.instance(rid).id)) == 1

    def test_the_end_is_retried_until_the_vm_is_gone(self, world):
        rid = running_world(world)
        world.advance(2 * HOUR)
        world.control.fail_next("VM.destroy", ["INTERNAL_ERROR", "disk busy"])
        report = world.tick()
        assert report.dispatched == ["end failed"] and report.expired == 0
        assert world.app.get_reservation(rid).state == State.ACTIVATED  # not before its VMs are gone
        world.advance(timedelta(seconds=10))
        report = world.tick()
        assert report.dispatched == ["end"] and report.expired == 1
        assert world.vms() == []


def test_a_clone_left_untagged_by_a_killed_start_is_adopted_not_duplicated(world, simulator):
    rid = world.reserve()
    view = world.instance(rid)
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password(USERNAME, PASSWORD, "1.2", "tests")
    try:  # what create_vm does before it tags the clone
        session.xenapi.VM.clone(session.xenapi.VM.get_by_name_label(TEMPLATE)[0], view.name)
    finally:
        session.xenapi.session.logout()
    world.advance(HOUR)
    assert world.tick().dispatched == ["start"]
    assert [vm["name"] for vm in world.vms()] == [view.name]
