"""The capacity timeline placement searches agrees with the Node aggregates, and forgets the past."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st

from pex.domain import CapacityExceeded, CatalogueError, Node, NodeUnavailable, Resources
from pex.domain.negotiation import NegotiationPolicy, evaluate
from pex.domain.node import peak_demand
from pex.domain.placement import fitting_counts, most_placeable, place, re_place, scan_fitting_counts
from pex.domain.pricing import FlatRatePricing
from pex.domain.values import Size, Terms
from pex.projections.capacity import CapacityTimeline
from pex.simulation.strategies import original_openpex
from tests.support import T0

H = timedelta(hours=1)
SMALL, MEDIUM = Resources(1, 768, 10), Resources(2, 1536, 20)
RIDS = [UUID(int=i) for i in range(1, 9)]

# One step of a node's life: (minutes that pass, command, node index, reservation index,
# start hour from now, hours, instances, size index, minutes a hold lasts).
steps = st.lists(
    st.tuples(
        st.integers(0, 90),
        st.sampled_from(["hold", "hold", "book", "book", "release", "resize"]),
        st.integers(0, 1),
        st.integers(0, len(RIDS) - 1),
        st.integers(0, 12),
        st.integers(1, 8),
        st.integers(1, 3),
        st.integers(0, 1),
        st.integers(1, 240),
    ),
    min_size=5,
    max_size=40,
)
# A query: (minutes from now to its start, its length in minutes, whose reservation to leave out).
probes = st.lists(st.tuples(st.integers(0, 14 * 60), st.integers(1, 10 * 60), st.integers(0, len(RIDS))), min_size=1, max_size=3)


def apply_all(timeline: CapacityTimeline, node: Node) -> None:
    for event in node.collect_events():
        timeline.apply(event)


def expected_free(node: Node, start, end, at, excluding=None) -> Resources:
    """What the aggregate itself would judge: capacity minus the peak of its live allocations."""
    return node.capacity - peak_demand(node.live_allocations(at, excluding=excluding), start, end)


@given(steps, st.data())
def test_free_capacity_equals_what_the_nodes_say_at_random_instants(history, data):
    timeline = CapacityTimeline()
    nodes = [Node(name=f"n{i}", capacity=Resources(4, 4096, 200), at=T0) for i in range(2)]
    for node in nodes:
        apply_all(timeline, node)
    at = T0
    for minutes, command, n, r, start_h, hours, instances, size, hold_minutes in history:
        at += timedelta(minutes=minutes)
        node, rid = nodes[n], RIDS[r]
        start = at + start_h * H
        per_instance = (SMALL, MEDIUM)[size]
        try:
            if command == "hold":
                node.hold(rid, start, start + hours * H, instances, per_instance, at + timedelta(minutes=hold_minutes), at)
            elif command == "book":
                node.book(rid, start, start + hours * H, instances, per_instance, at)
            elif command == "release":
                node.release(rid, "test", at)
            else:
                node.resize(Resources(4 + instances, 4096 + 512 * size, 200), at)
        except CapacityExceeded:
            pass
        except CatalogueError as refused:
            assert "cannot shrink" in str(refused)
        apply_all(timeline, node)
        # Queries come later than the last event (the clock moves on) and start no earlier than
        # the decision time, as placement's always do.
        now = at + timedelta(minutes=data.draw(st.integers(0, 30)))
        for offset, length, excluded in data.draw(probes):
            start = now + timedelta(minutes=offset)
            end = start + timedelta(minutes=length)
            excluding = RIDS[excluded] if excluded < len(RIDS) else None
            for node in nodes:
                assert timeline.free(node.name, start, end, now, excluding) == expected_free(node, start, end, now, excluding)
    for node in nodes:  # the timeline's own list of what is allocated agrees with the node's
        live = {(a.reservation_id, a.start, a.end, a.instances, a.is_hold) for a in node.live_allocations(at)}
        shown = {(a.reservation_id, a.start, a.end, a.instances, a.is_hold) for a in timeline.allocations(node.name, at)}
        assert live == {s for s in shown if s[2] > at}


def test_forgetting_the_past_drops_ended_bookings_and_lapsed_holds():
    timeline = CapacityTimeline()
    node = Node(name="n1", capacity=Resources(4, 4096, 200), at=T0)
    ended, running, future, hold = uuid4(), uuid4(), uuid4(), uuid4()
    node.book(ended, T0 + H, T0 + 2 * H, 1, SMALL, T0)
    node.book(running, T0 + H, T0 + 5 * H, 1, SMALL, T0)
    node.book(future, T0 + 4 * H, T0 + 6 * H, 2, SMALL, T0)
    node.hold(hold, T0 + 4 * H, T0 + 6 * H, 1, SMALL, hold_until=T0 + 10 * 60 * timedelta(seconds=1), at=T0)
    apply_all(timeline, node)
    n1 = timeline.nodes["n1"]
    assert set(n1.bookings) == {ended, running, future} and set(n1.holds) == {hold}

    timeline.forget_before(T0 + 3 * H)

    assert set(n1.bookings) == {running, future}
    assert not n1.holds
    remaining = {running: (T0 + H, T0 + 5 * H), future: (T0 + 4 * H, T0 + 6 * H)}
    assert set(n1.levels) == {t for span in remaining.values() for t in span}
    assert set(timeline.boundaries) == set(n1.levels)
    assert n1.level_at(T0 + 4 * H + timedelta(minutes=1)) == SMALL * 3
    assert timeline.free("n1", T0 + 3 * H, T0 + 6 * H, T0 + 3 * H) == Resources(1, 4096 - 3 * 768, 170)


def test_applying_a_node_event_forgets_what_ended_before_it_as_the_node_does():
    timeline = CapacityTimeline()
    node = Node(name="n1", capacity=Resources(4, 4096, 200), at=T0)
    first = uuid4()
    node.book(first, T0, T0 + H, 4, SMALL, T0)
    node.book(uuid4(), T0 + 2 * H, T0 + 3 * H, 4, SMALL, T0 + 90 * timedelta(minutes=1))
    apply_all(timeline, node)
    assert first not in timeline.nodes["n1"].bookings
    assert set(node.allocations) == {str(r) for r in timeline.nodes["n1"].bookings}


def test_a_long_history_leaves_only_the_future_in_the_timeline():
    """Placement must not slow down as the log grows: what ended is gone from every structure."""
    timeline = CapacityTimeline()
    node = Node(name="n1", capacity=Resources(4, 4096, 200), at=T0)
    apply_all(timeline, node)
    at = T0
    for _ in range(3000):  # three thousand hours of back-to-back bookings, each made as it starts
        node.book(uuid4(), at, at + H, 4, SMALL, at)
        apply_all(timeline, node)
        at += H
    for i in range(5):  # and a few bookings still ahead
        node.book(uuid4(), at + i * H, at + (i + 1) * H, 2, SMALL, at)
    apply_all(timeline, node)
    timeline.forget_before(at)

    n1 = timeline.nodes["n1"]
    assert len(n1.bookings) == 5
    assert len(n1.levels) <= 6 and len(timeline.boundaries) <= 6
    assert len(timeline.ends) <= 6
    assert timeline.free("n1", at, at + 10 * H, at) == Resources(2, 4096 - 2 * 768, 180)


class ScanOnly:
    """The timeline seen through the plain CapacityView: every query asks node by node."""

    def __init__(self, timeline: CapacityTimeline):
        self.timeline = timeline

    def node_names(self):
        return self.timeline.node_names()

    def capacity(self, node):
        return self.timeline.capacity(node)

    def free(self, node, start, end, at, excluding=None):
        return self.timeline.free(node, start, end, at, excluding)

    def change_points(self, after, until, at):
        return self.timeline.change_points(after, until, at)


def test_a_drained_node_takes_nothing_from_a_start_whose_window_ends_after_its_drain():
    # The drained node has no step of its own between the two windows: its drain is one.
    timeline = CapacityTimeline()
    drained, busy = (Node(name=name, capacity=Resources(4, 4096, 200), at=T0) for name in ("drained", "busy"))
    drained.schedule_drain(T0 + 5 * H, "test", T0)
    busy.book(uuid4(), T0 + 3 * H, T0 + 4 * H, 1, SMALL, T0)
    for node in (drained, busy):
        apply_all(timeline, node)
    starts = [T0 + H, T0 + 3 * H, T0 + 4 * H]
    assert list(timeline.placeable_from(SMALL, starts, 2 * H, T0)) == [
        (T0 + H, 8), (T0 + 3 * H, 7), (T0 + 4 * H, 4)
    ] == [(s, most_placeable(ScanOnly(timeline), SMALL, s, s + 2 * H, T0)) for s in starts]


# A pool: per node (CPUs, memory in MB), 1 to 4 nodes.
pools = st.lists(st.tuples(st.integers(1, 6), st.sampled_from([1024, 3072, 4096, 6144])), min_size=1, max_size=4)
# A history on it: (minutes that pass, command, node, reservation, start hour from now, hours,
# instances, size, minutes a hold lasts).
pool_steps = st.lists(
    st.tuples(
        st.integers(0, 90), st.sampled_from(["hold", "book", "book", "book", "release", "lose", "return", "drain", "undrain"]),
        st.integers(0, 3), st.integers(0, len(RIDS) - 1), st.integers(0, 12), st.integers(1, 8),
        st.integers(1, 4), st.integers(0, 1), st.integers(1, 240),
    ),
    max_size=40,
)  # fmt: skip


@given(pools, pool_steps, st.data())
def test_the_pool_wide_scan_chooses_exactly_what_asking_node_by_node_chooses(pool, history, data):
    timeline = CapacityTimeline()
    nodes = [Node(name=f"n{i}", capacity=Resources(cpus, memory, 100), at=T0) for i, (cpus, memory) in enumerate(pool)]
    for node in nodes:
        apply_all(timeline, node)
    at = T0
    for minutes, command, n, r, start_h, hours, instances, size, hold_minutes in history:
        at += timedelta(minutes=minutes)
        node, rid = nodes[n % len(nodes)], RIDS[r]
        start = at + start_h * H
        try:
            if command == "hold":
                node.hold(rid, start, start + hours * H, instances, (SMALL, MEDIUM)[size], at + timedelta(minutes=hold_minutes), at)
            elif command == "book":
                node.book(rid, start, start + hours * H, instances, (SMALL, MEDIUM)[size], at)
            elif command == "release":
                node.release(rid, "test", at)
            elif command == "lose":
                node.mark_lost(at)
            elif command == "drain":
                node.schedule_drain(start, "test", at)
            elif command == "undrain":
                node.cancel_drain("test", at)
            else:
                node.mark_returned(at)
        except (CapacityExceeded, CatalogueError, NodeUnavailable):
            pass
        apply_all(timeline, node)
    scan = ScanOnly(timeline)
    now = at + timedelta(minutes=data.draw(st.integers(0, 30)))
    pricing, policy = FlatRatePricing(), NegotiationPolicy(horizon=timedelta(days=2))
    for _ in range(data.draw(st.integers(1, 3))):
        start = now + timedelta(minutes=data.draw(st.integers(0, 14 * 60)))
        end = start + timedelta(minutes=data.draw(st.integers(1, 10 * 60)))
        excluded = data.draw(st.integers(0, len(RIDS)))
        excluding = RIDS[excluded] if excluded < len(RIDS) else None
        per_instance = data.draw(st.sampled_from([SMALL, MEDIUM, Resources(0, 512, 0), Resources()]))
        fits = fitting_counts(timeline, per_instance, start, end, now, excluding)
        assert fits == scan_fitting_counts(timeline, per_instance, start, end, now, excluding)
        instances = data.draw(st.integers(1, 12))
        placed = place(timeline, per_instance, instances, start, end, now, excluding)
        assert placed == place(scan, per_instance, instances, start, end, now, excluding)
        # Another tie order changes only which of the nodes nothing tells apart it takes.
        ties = data.draw(st.integers(1, 5))
        room_and_load = {node: (n, used) for node, n, used in fits}
        shuffled = place(timeline, per_instance, instances, start, end, now, excluding, ties)
        assert (shuffled is None) == (placed is None)
        if placed is not None and shuffled is not None:
            assert [(room_and_load[a.node], a.instances) for a in shuffled] == [
                (room_and_load[a.node], a.instances) for a in placed
            ]
        assert re_place(timeline, per_instance, instances, start, end, now) == re_place(
            scan, per_instance, instances, start, end, now
        )
        # From start to start, asking again only the nodes with a step between: as asking each.
        points = timeline.change_points(now, now + timedelta(days=1), now)
        starts = sorted(data.draw(st.lists(st.sampled_from([start, *points]), max_size=12)),
                        reverse=data.draw(st.booleans()))
        assert list(timeline.placeable_from(per_instance, starts, end - start, now, excluding)) == [
            (s, most_placeable(scan, per_instance, s, s + (end - start), now, excluding)) for s in starts
        ]
        size = Size("S", per_instance.cpus, per_instance.memory_mb, per_instance.disk_gb)
        terms = Terms("S", "t", data.draw(st.integers(0, 4)), data.draw(st.integers(0, 8)), start, end)
        if terms.instances >= 1:
            # The timeline's search of later starts tries only where capacity frees up.
            assert evaluate(terms, size, timeline, now, pricing, policy, reservation_id=excluding) == evaluate(
                terms, size, scan, now, pricing, policy, reservation_id=excluding
            )
            assert original_openpex(terms, size, timeline, now, pricing, policy, reservation_id=excluding) == (
                original_openpex(terms, size, scan, now, pricing, policy, reservation_id=excluding)
            )
