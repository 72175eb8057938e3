"""The Node aggregate refuses anything that would put it over capacity at any instant."""

from datetime import timedelta
from uuid import uuid4

import pytest

from pex.domain import CapacityExceeded, Node, NodeUnavailable, Resources
from pex.domain.node import peak_demand
from tests.support import T0

H = timedelta(hours=1)
SMALL = Resources(1, 768, 10)


def new_node(cpus=4, memory_mb=4096, disk_gb=200) -> Node:
    return Node(name="n1", capacity=Resources(cpus, memory_mb, disk_gb), at=T0)


def test_books_up_to_capacity_and_refuses_one_more():
    node = new_node()
    for _ in range(4):
        node.book(uuid4(), T0 + H, T0 + 3 * H, 1, SMALL, at=T0)
    with pytest.raises(CapacityExceeded):
        node.book(uuid4(), T0 + 2 * H, T0 + 4 * H, 1, SMALL, at=T0)


def test_intervals_are_half_open_so_back_to_back_bookings_fit():
    node = new_node()
    node.book(uuid4(), T0 + H, T0 + 2 * H, 4, SMALL, at=T0)
    node.book(uuid4(), T0 + 2 * H, T0 + 3 * H, 4, SMALL, at=T0)
    with pytest.raises(CapacityExceeded):
        node.book(uuid4(), T0 + 2 * H - timedelta(seconds=1), T0 + 2 * H + timedelta(seconds=1), 1, SMALL, at=T0)


@pytest.mark.parametrize("demand", [Resources(1, 4097, 1), Resources(1, 1, 201), Resources(5, 1, 1)])
def test_every_resource_is_checked_not_only_cpus(demand):
    with pytest.raises(CapacityExceeded):
        new_node().book(uuid4(), T0 + H, T0 + 2 * H, 1, demand, at=T0)


def test_a_hold_counts_until_it_lapses():
    node = new_node()
    node.hold(uuid4(), T0 + H, T0 + 5 * H, 4, SMALL, hold_until=T0 + timedelta(minutes=5), at=T0)
    with pytest.raises(CapacityExceeded):
        node.book(uuid4(), T0 + H, T0 + 2 * H, 1, SMALL, at=T0 + timedelta(minutes=4))
    node.book(uuid4(), T0 + H, T0 + 2 * H, 1, SMALL, at=T0 + timedelta(minutes=5))


def test_a_hold_becomes_the_booking_of_the_same_reservation_without_double_counting():
    node, rid = new_node(), uuid4()
    node.hold(rid, T0 + H, T0 + 2 * H, 4, SMALL, hold_until=T0 + H, at=T0)
    node.book(rid, T0 + H, T0 + 2 * H, 4, SMALL, at=T0)
    assert not node.allocation_of(rid).is_hold
    assert node.peak_usage(T0, T0 + 3 * H, T0) == SMALL * 4


def test_release_gives_capacity_back_and_releasing_nothing_records_nothing():
    node, rid = new_node(), uuid4()
    node.book(rid, T0 + H, T0 + 2 * H, 4, SMALL, at=T0)
    node.release(rid, "test", at=T0)
    version = node.version
    node.release(rid, "again", at=T0)
    assert node.version == version
    node.book(uuid4(), T0 + H, T0 + 2 * H, 4, SMALL, at=T0)


def test_ended_bookings_are_forgotten_so_state_stays_small():
    node = new_node()
    for day in range(30):
        start = T0 + timedelta(days=day)
        node.book(uuid4(), start, start + H, 4, SMALL, at=start)
    assert len(node.allocations) == 1


def test_a_lost_node_takes_nothing_new():
    node = new_node()
    node.mark_lost(at=T0)
    with pytest.raises(NodeUnavailable):
        node.hold(uuid4(), T0 + H, T0 + 2 * H, 1, SMALL, hold_until=T0 + H, at=T0)
    node.mark_returned(at=T0)
    node.hold(uuid4(), T0 + H, T0 + 2 * H, 1, SMALL, hold_until=T0 + H, at=T0)


def test_replaying_the_events_gives_the_same_node():
    node = new_node()
    rid = uuid4()
    node.hold(rid, T0 + H, T0 + 2 * H, 2, SMALL, hold_until=T0 + H, at=T0)
    node.book(rid, T0 + H, T0 + 2 * H, 2, SMALL, at=T0 + timedelta(minutes=1))
    node.book(uuid4(), T0 + 3 * H, T0 + 4 * H, 1, SMALL, at=T0 + 2 * H)
    events = node.collect_events()
    replayed = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed.__dict__ == node.__dict__


def test_peak_demand_sums_only_overlapping_parts():
    from pex.domain.node import NodeAllocation

    a = NodeAllocation(uuid4(), T0, T0 + 2 * H, 1, SMALL)
    b = NodeAllocation(uuid4(), T0 + H, T0 + 3 * H, 2, SMALL)
    assert peak_demand([a, b], T0, T0 + H) == SMALL
    assert peak_demand([a, b], T0, T0 + 3 * H) == SMALL * 3
    assert peak_demand([a, b], T0 + 2 * H, T0 + 3 * H) == SMALL * 2


def test_a_copy_of_a_node_is_a_node_of_its_own():
    # The aggregate cache hands each command a copy: what one command does to its copy (and
    # what another process's events do to the cached node) must not reach the other.
    import copy

    node = new_node()
    kept = uuid4()
    node.book(kept, T0 + H, T0 + 2 * H, 1, SMALL, at=T0)
    copied = copy.deepcopy(node)
    assert copied.__dict__ == node.__dict__ and copied is not node
    copied.book(uuid4(), T0 + H, T0 + 2 * H, 3, SMALL, at=T0)
    copied.release(kept, "gone", at=T0)
    assert list(node.allocations) == [str(kept)] and len(node.collect_events()) == 2  # registered, booked
    node.book(uuid4(), T0 + 5 * H, T0 + 6 * H, 1, SMALL, at=T0)
    assert len(copied.allocations) == 1 and len(copied.collect_events()) == 4
