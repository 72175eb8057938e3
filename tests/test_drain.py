"""Draining a node at the domain and service layers (the in-memory enactment): what a drained
node refuses, where negotiations place, what cannot move and how the operator is told, and a
property: whatever is booked and running, a drain loses no VM, overbooks no node (the audit),
and leaves on the node only what it reports it could not move."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pex.domain.errors import NodeDraining
from pex.domain.node import Node
from pex.domain.values import Reply, Resources, Terms
from pex.projections.audit import Auditor
from tests.support import T0
from tests.support.world import HOUR, build_memory_world, closing_worlds
from tests.support.xen import TEMPLATE

SMALL = Resources(1, 768, 10)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def make_world():
    yield from closing_worlds(build_memory_world)


def test_a_drained_node_takes_nothing_that_lasts_until_its_drain_but_lets_a_booking_shrink():
    node = Node(name="n", capacity=Resources(4, 4096, 100), at=T0)
    node.book(rid := uuid4(), T0, T0 + 3 * HOUR, 2, SMALL, T0)
    node.schedule_drain(T0 + 2 * HOUR, "root", T0)

    with pytest.raises(NodeDraining, match="drained from"):
        node.book(uuid4(), T0 + HOUR, T0 + 3 * HOUR, 1, SMALL, T0)
    with pytest.raises(NodeDraining):
        node.book(rid, T0, T0 + 3 * HOUR, 3, SMALL, T0)  # growing
    node.book(uuid4(), T0, T0 + 2 * HOUR, 1, SMALL, T0)  # ends at the drain: fine
    node.book(rid, T0, T0 + 3 * HOUR, 1, SMALL, T0)  # shrinking: fine
    node.cancel_drain("root", T0)
    node.book(uuid4(), T0 + HOUR, T0 + 3 * HOUR, 1, SMALL, T0)


def test_negotiations_place_what_lasts_until_a_drain_elsewhere_and_only_there_after_the_undrain(make_world):
    world = make_world()
    world.app.drain_node("node1", world.clock() + 2 * HOUR, "root")
    for _ in range(4):  # 4 XLARGE fill the four other nodes
        world.reserve(size="XLARGE", start_in=HOUR, hours=3)
    rid = world.app.initiate_reservation("alice")
    start = world.clock() + HOUR
    refused = world.app.submit_proposal(rid, Terms("XLARGE", TEMPLATE, 1, 0, start, start + 3 * HOUR))
    assert refused.reply != Reply.ACCEPT  # node1 is free, but drained before it would end
    early = world.reserve(size="XLARGE", start_in=HOUR, hours=0.5)  # over before the drain: node1 takes it
    assert world.instance(early).node == "node1"

    world.app.undrain_node("node1", "root")
    assert world.app.drain("node1") is None
    late = world.reserve(size="LARGE", start_in=2 * HOUR, hours=3)
    assert world.instance(late).node == "node1"


def test_what_fits_nowhere_stays_booked_where_it_is_and_is_reported_until_room_appears(make_world):
    world = make_world()
    for _ in range(5):  # every node full
        world.reserve(size="XLARGE", start_in=MINUTE, hours=3)
    world.advance(2 * MINUTE)
    world.tick()
    world.advance(MINUTE)
    [on_node1] = [v for v in world.instances() if v.node == "node1"]

    drain = world.app.drain_node("node1", world.clock() + HOUR, "root")

    [stuck] = drain.stuck
    assert stuck.instance_id == on_node1.id and "no other node has room" in stuck.reason
    assert world.events(on_node1.id)[-1] == "NotMoved"
    assert world.instance(on_node1.reservation_id).status == "RUNNING"
    assert world.tick().dispatched == []  # the worker leaves it to the operator
    assert world.events(on_node1.id)[-1] == "NotMoved"  # and records it once

    other = next(v for v in world.instances() if v.node == "node2")
    world.app.release(other.reservation_id, "alice")  # room appears on node2
    world.tick()  # its VM ends
    world.advance(MINUTE)
    [leaving] = world.app.drain_node("node1", world.clock() + HOUR, "root").leaving  # the operator retries
    assert leaving.migrating_to == "node2"
    world.tick()
    assert world.instance(on_node1.reservation_id).node == "node2"
    assert world.enactment.vms[on_node1.id].node == "node2"
    report = Auditor(world.app).run()
    assert report.ok, report.render()


def test_a_vm_that_halted_before_its_migration_moves_with_its_booking_and_starts_on_the_other_node(make_world):
    world = make_world()
    rid = world.reserve(size="SMALL", start_in=MINUTE, hours=3)
    world.advance(2 * MINUTE)
    world.tick()
    world.advance(MINUTE)
    instance = world.instance(rid)
    [leaving] = world.app.drain_node(instance.node, world.clock() + HOUR, "root").leaving
    vm = world.enactment.vms[instance.id]
    world.enactment.vms[instance.id] = replace(vm, power_state="Halted")  # the guest shut down before it migrated
    world.app.observe_power_state(instance.id, "Halted")  # as the monitor reports it
    assert world.instance(rid).status == "HALTED"

    world.tick()  # the Scheduler moves it, booking and all
    assert world.instance(rid).node == leaving.migrating_to
    assert world.events(instance.id)[-1] == "Moved"
    world.app.start_instance(instance.id)
    assert (world.instance(rid).status, world.enactment.vms[instance.id].node) == ("RUNNING", leaving.migrating_to)
    report = Auditor(world.app).run()
    assert report.ok, report.render()


SIZES = st.sampled_from(["SMALL", "MEDIUM", "LARGE"])
RESERVATION = st.tuples(SIZES, st.integers(1, 3), st.integers(1, 180), st.integers(1, 5))  # size, n, start in min, hours


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    reservations=st.lists(RESERVATION, min_size=1, max_size=8),
    running_after=st.integers(0, 200),
    node=st.sampled_from([f"node{i}" for i in range(1, 6)]),
    drain_in=st.integers(0, 240),
    failures=st.integers(0, 2),
)
def test_a_drain_loses_no_vm_overbooks_no_node_and_leaves_only_what_it_reports(
    make_world, reservations, running_after, node, drain_in, failures
):
    world = make_world()
    starts = []
    for size, n, start_in, hours in reservations:
        rid = world.app.initiate_reservation("alice")
        start = world.clock() + timedelta(minutes=start_in)
        outcome = world.app.submit_proposal(rid, Terms(size, TEMPLATE, n, 0, start, start + timedelta(hours=hours)))
        if outcome.reply == Reply.ACCEPT:
            world.app.confirm(rid)
            starts.append(start)
    until = world.clock() + timedelta(minutes=running_after)
    for start in sorted(s for s in starts if s <= until):  # the worker ticks at every start
        if start > world.clock():
            world.advance(start - world.clock())
        world.tick()
    world.advance(until - world.clock() + MINUTE)
    world.tick()
    running = {v.id: v.node for v in world.instances() if v.status == "RUNNING"}
    world.enactment.fail("migrate", times=failures)

    drain_from = world.clock() + timedelta(minutes=drain_in)
    world.app.drain_node(node, drain_from, "root")
    for _ in range(4):
        world.advance(timedelta(seconds=30))
        world.tick()

    views = {v.id: v for v in world.instances()}
    for iid in running:
        if views[iid].end > world.clock():
            assert views[iid].status == "RUNNING" and world.enactment.vms[iid].power_state == "Running"
            assert world.enactment.vms[iid].node == views[iid].node
    drain = world.app.drain(node)
    assert drain is not None
    reported = {item.instance_id for item in drain.stuck}
    for v in views.values():
        if v.node == node and v.end > drain_from and v.status not in ("ENDED", "DELETED", "CANCELLED"):
            assert v.id in reported, (v, drain)
    assert {item.instance_id for item in drain.leaving} == reported  # nothing else still to move
    report = Auditor(world.app).run()
    assert report.ok, report.render()
