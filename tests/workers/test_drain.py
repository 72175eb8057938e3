"""Draining a host (issue 13, item 4): an operator puts a node into maintenance from a time;
PEX re-places its future bookings, live-migrates its running VMs to other hosts booked free for
the rest of their reservation (VM.pool_migrate), records every move, and says what could not
move. On the simulated pool through the unmodified XenAPI client, with injected migration
failures; the audit checks no node was ever overbooked, during the moves too."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.domain.instance import MIGRATION_ATTEMPTS
from pex.projections.audit import Auditor
from tests.support.world import HOUR

pytestmark = pytest.mark.xen

MINUTE = timedelta(minutes=1)


def running(world, size="SMALL", fixed=1, hours=3):
    """A reservation whose VMs run now, with their IPs; the clock a minute past their start."""
    rid = world.reserve(size=size, fixed=fixed, start_in=MINUTE, hours=hours)
    world.advance(2 * MINUTE)
    world.tick()
    world.wait_for_ips(rid)
    world.advance(MINUTE)
    return rid


def vm_of(world, instance_id):
    [vm] = [vm for vm in world.vms() if vm["pex_instance"] == str(instance_id)]
    return vm


def bookings_on(world, node):
    return {a.reservation_id: a.instances for a in world.app.node_allocations(node) if not a.is_hold}


def assert_audit_ok(world):
    report = Auditor(world.app).run()
    assert report.ok, report.render()


def test_a_drain_moves_running_vms_off_the_host_with_no_vm_lost_and_re_places_its_future_bookings(world):
    rid = running(world, fixed=2)  # best fit: both on one host
    [drained] = {v.node for v in world.instances(rid)}
    later = world.reserve(size="SMALL", start_in=HOUR, hours=2)  # best fit: the same, most loaded host
    assert world.instance(later).node == drained
    before = {v.id: (vm_of(world, v.id)["uuid"], v.ip_address) for v in world.instances(rid)}

    drain = world.app.drain_node(drained, world.clock() + 30 * MINUTE, "root")

    [moved] = drain.moved
    assert moved.reservation_id == later and moved.moved_to != drained
    assert world.instance(later).node == moved.moved_to and bookings_on(world, moved.moved_to)[later] == 1
    assert later not in bookings_on(world, drained)
    assert sorted(item.migrating_to is not None for item in drain.leaving) == [True, True] and not drain.stuck
    assert bookings_on(world, drained)[rid] == 2  # booked on both while they move

    world.tick()  # the worker live-migrates both
    world.settle()

    views = world.instances(rid)
    targets = {v.node for v in views}
    assert drained not in targets
    for v in views:
        vm = vm_of(world, v.id)
        assert (v.status, vm["host"], vm["power_state"]) == ("RUNNING", v.node, "Running")
        assert (vm["uuid"], v.ip_address) == before[v.id]  # the same VM, never stopped
        assert world.events(v.id)[-3:] == ["MigrationPlanned", "DispatchClaimed", "Migrated"]
    assert rid not in bookings_on(world, drained)
    assert sum(bookings_on(world, n).get(rid, 0) for n in targets) == 2
    assert sorted(a.node for a in world.app.get_reservation(rid).offer.placement) == sorted(targets)
    assert world.app.drain(drained).leaving == ()
    assert_audit_ok(world)


def test_a_migration_that_fails_is_tried_again_with_backoff_and_the_vm_keeps_running_meanwhile(world):
    rid = running(world)
    source = world.instance(rid).node
    world.control.fail_next_migration("*", "the destination stopped answering")
    [leaving] = world.app.drain_node(source, world.clock() + HOUR, "root").leaving

    assert world.tick().dispatched == ["migrate failed"]
    view = world.instance(rid)
    assert (view.status, view.node, vm_of(world, view.id)["host"]) == ("RUNNING", source, source)
    failed = list(world.app.events.get(view.id))[-1]
    assert type(failed).__name__ == "DispatchFailed" and "VM_MIGRATE_FAILED" in failed.error
    assert world.tick().dispatched == []  # backing off

    world.advance(timedelta(seconds=6))
    assert world.tick().dispatched == ["migrate"]
    world.settle()
    view = world.instance(rid)
    assert (view.status, view.node, vm_of(world, view.id)["host"]) == ("RUNNING", leaving.migrating_to, leaving.migrating_to)
    assert world.events(view.id)[-5:] == ["MigrationPlanned", "DispatchClaimed", "DispatchFailed", "DispatchClaimed", "Migrated"]
    assert_audit_ok(world)


def test_a_migration_that_keeps_failing_is_given_up_and_the_operator_told_with_the_vm_still_running(world):
    rid = running(world)
    source = world.instance(rid).node
    world.control.fail_next_migration("*", "the destination stopped answering", times=MIGRATION_ATTEMPTS)
    [leaving] = world.app.drain_node(source, world.clock() + HOUR, "root").leaving
    target = leaving.migrating_to
    assert bookings_on(world, target) == {rid: 1}

    for _ in range(MIGRATION_ATTEMPTS):
        assert world.tick().dispatched == ["migrate failed"]
        world.advance(timedelta(minutes=5))

    [stuck] = world.app.drain(source).stuck
    assert stuck.instance_id == world.instance(rid).id and stuck.migrating_to is None
    assert f"the live migration to {target} failed {MIGRATION_ATTEMPTS} times" in stuck.reason
    assert "VM_MIGRATE_FAILED" in stuck.reason
    assert bookings_on(world, target) == {}  # given back
    view = world.instance(rid)
    assert (view.status, view.node, vm_of(world, view.id)["power_state"]) == ("RUNNING", source, "Running")
    assert world.events(view.id)[-1] == "MigrationAbandoned"
    assert world.tick().dispatched == []  # it waits for the operator

    world.control.clear_faults()
    [retried] = world.app.drain_node(source, world.clock() + HOUR, "root").leaving  # the operator retries
    assert retried.migrating_to is not None and retried.reason is None
    world.tick()
    world.settle()
    assert world.instance(rid).node == retried.migrating_to
    assert_audit_ok(world)
