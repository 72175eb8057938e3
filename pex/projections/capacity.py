"""The node-capacity timeline: every node's free CPUs, memory and disk over time.

Representation
    Per node, booked demand is a step function kept as a SortedDict `levels`
    {instant: usage from that instant until the next key}; each key is reference-counted by
    the booking boundaries that put it there, and disappears with the last of them. Holds
    (offers waiting for a confirm) are few and short-lived, so they sit in a plain dict and
    are laid over the step function at query time; a hold stops counting when it lapses.
    One global SortedDict counts the boundaries of all bookings, for the change points that
    the search for alternative start times walks. Two heaps, of booking ends and of hold
    lapses, say what to forget next.

Cost, with B bookings on a node still ending in the future, k of them overlapping the
queried interval, and h live holds on the node (a handful)
    free(node, start, end)     O(log B + k + h log h)   one bisect, then a walk over the keys
    a query over N nodes       O(N (log B + k))         k is what overlaps, not the history
    book / release             O(log B + k)             plus O(B) memmove inside the sorted keys
    change_points(a, b)        O(log P + m + H)         P = all boundaries, m = those in (a, b],
                                                        H = live holds of the whole pool
    forget_before(t)           O(r log B)               r = what ended or lapsed since the last
                                                        call; O(1) when nothing did

The past costs nothing: applying a Node event forgets, as the Node aggregate does, every
booking that ended and every hold that lapsed by the event's time `at`, and the application
forgets up to its clock before each search. So B counts bookings that have not ended yet,
however long the history is, and a rebuild from the whole log never holds the past at once.

The timeline follows the event log (Node events only). A process does not rebuild it from
the start of the log: it loads a checkpoint (`from_state`, pex.projections.checkpoints) and
folds the tail after its position. A state holds only what decisions still weigh: per node,
its capacity, whether it is available, the bookings that end after `forgotten_before` and
the holds that still count then; the step functions and heaps are made again from them, in
O(B log B) per node. Because the levels are a function of the set of bookings, a timeline
loaded from a checkpoint and brought up with the tail answers every query at or after the
checkpoint's `forgotten_before` exactly as one folded from the start
(tests/projections/test_checkpoints.py). The Node aggregates stay the authority that
accepts or refuses a hold or booking, whatever a timeline says.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sortedcontainers import SortedDict

from pex.domain.node import Node, NodeAllocation
from pex.domain.pool import DEFAULT_POOL
from pex.domain.values import Resources

ZERO = Resources()
STATE_SCHEMA = 1  # of to_state/from_state; change it with the shape, and old checkpoints are ignored


@dataclass(slots=True)  # one of them per node, each visited by a pool-wide scan: compact
class NodeTimeline:
    name: str
    capacity: Resources
    available: bool = True
    # Drained from then (Node.DrainScheduled): it takes nothing that lasts until then.
    drain_from: datetime | None = None
    pool: str = DEFAULT_POOL  # the Xen pool of its host: a reservation is placed in one pool
    levels: SortedDict = field(default_factory=SortedDict)
    refs: dict[datetime, int] = field(default_factory=dict)
    bookings: dict[UUID, NodeAllocation] = field(default_factory=dict)
    holds: dict[UUID, NodeAllocation] = field(default_factory=dict)
    # `levels` again as two plain lists (keys; (cpus, memory, disk) from each key on), made
    # again on the first query after a change: the pool-wide scan bisects them in C.
    _flat: tuple[list[datetime], list[tuple[int, int, int]]] | None = field(default=None, repr=False, compare=False)

    def flat(self) -> tuple[list[datetime], list[tuple[int, int, int]]]:
        if self._flat is None:
            self._flat = (list(self.levels.keys()), [(r.cpus, r.memory_mb, r.disk_gb) for r in self.levels.values()])
        return self._flat

    def level_at(self, t: datetime) -> Resources:
        i = self.levels.bisect_right(t) - 1
        return self.levels.peekitem(i)[1] if i >= 0 else ZERO

    def _add_key(self, t: datetime) -> None:
        self._flat = None
        if t not in self.levels:
            self.levels[t] = self.level_at(t)
        self.refs[t] = self.refs.get(t, 0) + 1

    def _drop_key(self, t: datetime) -> None:
        # With no booking starting or ending at t any more, the level at t equals the level
        # just before it, so the key carries no information.
        self._flat = None
        self.refs[t] -= 1
        if self.refs[t] == 0:
            del self.refs[t]
            del self.levels[t]

    def _shift(self, start: datetime, end: datetime, delta: Resources, sign: int) -> None:
        self._flat = None
        for t in list(self.levels.irange(start, end, inclusive=(True, False))):
            self.levels[t] = self.levels[t] + delta if sign > 0 else self.levels[t] - delta

    def add_booking(self, a: NodeAllocation) -> None:
        self._add_key(a.start)
        self._add_key(a.end)
        self._shift(a.start, a.end, a.demand, +1)
        self.bookings[a.reservation_id] = a

    def remove(self, reservation_id: UUID) -> NodeAllocation | None:
        self.holds.pop(reservation_id, None)
        a = self.bookings.pop(reservation_id, None)
        if a is not None:
            self._shift(a.start, a.end, a.demand, -1)
            self._drop_key(a.start)
            self._drop_key(a.end)
        return a

    def free(self, start: datetime, end: datetime, at: datetime, excluding: UUID | None) -> Resources:
        """Capacity minus the peak of booked demand plus live holds over [start, end)."""
        # The step function's own keys inside the interval: only what overlaps is visited.
        # `levels` is a dict as well as sorted, so reading a value is O(1).
        level = self.level_at(start)
        peak = level
        keys = self.levels.irange(start, end, inclusive=(False, False))
        overlays = self._overlays(start, end, at, excluding)
        if not overlays:
            for t in keys:
                peak = Resources.peak(peak, self.levels[t])
            return self.capacity - peak
        # Holds and the excluded reservation's own booking are laid over the steps: sweep
        # the merged instants, applying every change at an instant before reading the usage.
        changes: list[tuple[datetime, int, Resources]] = [(t, 0, self.levels[t]) for t in keys]
        for s, e, demand in overlays:
            changes.append((s, 1, demand))
            if e < end:
                changes.append((e, 1, ZERO - demand))
        changes.sort(key=lambda c: c[0])
        extra, peak, i = ZERO, ZERO, 0
        while i < len(changes) and changes[i][0] <= start:
            extra = extra + changes[i][2]  # overlays starting at `start` (keys are after it)
            i += 1
        peak = level + extra
        while i < len(changes):
            t = changes[i][0]
            while i < len(changes) and changes[i][0] == t:
                _, kind, value = changes[i]
                if kind == 0:
                    level = value
                else:
                    extra = extra + value
                i += 1
            peak = Resources.peak(peak, level + extra)
        return self.capacity - peak

    def _overlays(
        self, start: datetime, end: datetime, at: datetime, excluding: UUID | None
    ) -> list[tuple[datetime, datetime, Resources]]:
        """Live holds add their demand; the excluded reservation's own booking takes its away."""
        overlays = [
            (max(h.start, start), min(h.end, end), h.demand)
            for rid, h in self.holds.items()
            if rid != excluding and h.counts_at(at) and h.start < end and h.end > start
        ]
        own = self.bookings.get(excluding) if excluding is not None else None
        if own is not None and own.start < end and own.end > start:
            overlays.append((max(own.start, start), min(own.end, end), ZERO - own.demand))
        return overlays


class CapacityTimeline:
    """Free capacity of every node over time; a CapacityView for pex.domain.placement."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeTimeline] = {}
        # The same nodes, by pool (a node never changes pool): a pool's view costs its own nodes.
        self.by_pool: dict[str, dict[str, NodeTimeline]] = {}
        self.node_by_id: dict[UUID, str] = {}
        self.boundaries: SortedDict = SortedDict()  # instant -> how many booking boundaries
        self.booking_ends: SortedDict = SortedDict()  # instant -> how many bookings end then
        self.steps: SortedDict = SortedDict()  # instant -> {node name: how many of its bookings' bounds}
        self.ends: list[tuple[datetime, str, UUID]] = []  # heap of booking ends, for forgetting
        self.lapses: list[tuple[datetime, str, UUID]] = []  # heap of when holds stop counting
        self.forgotten_before: datetime | None = None
        self.position = 0  # the last notification id applied

    # --- CapacityView ------------------------------------------------------------------

    def node_names(self) -> list[str]:
        return [name for name, n in self.nodes.items() if n.available]

    def capacity(self, node: str) -> Resources:
        return self.nodes[node].capacity

    def free(self, node: str, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> Resources:
        """As the placement asks: nothing is free on a node drained before `end`. (The free
        capacity as such is `self.nodes[node].free`.)"""
        n = self.nodes[node]
        if n.drain_from is not None and end > n.drain_from:
            return ZERO
        return n.free(start, end, at, excluding)

    def fitting_counts(
        self, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None,
        pool: str | None = None,
    ) -> list[tuple[str, int, float]]:
        """What pex.domain.placement.scan_fitting_counts answers (the same list, in the same
        order, with the same floats), in one pass over the nodes without a call per node.

        A node with live holds, or holding the excluded reservation, is asked as usual
        (`free`); any other node's peak over [start, end) is read off its flat lists: one
        bisect for the level at `start`, then the levels of the keys inside the interval."""
        need = (per_instance.cpus, per_instance.memory_mb, per_instance.disk_gb)
        if not any(v > 0 for v in need):
            return []  # a zero size fits nowhere, as how_many_fit_in says
        fits: list[tuple[str, int, float]] = []
        for name, node in (self.nodes if pool is None else self.by_pool.get(pool, {})).items():
            if not node.available or (node.drain_from is not None and end > node.drain_from):
                continue
            cap = node.capacity
            if node.holds or (excluding is not None and excluding in node.bookings):
                free = node.free(start, end, at, excluding)
                fc, fm, fd = free.cpus, free.memory_mb, free.disk_gb
            else:  # _free_of_steps, written out: this loop runs for every node of the pool
                keys, values = node._flat or node.flat()
                i = bisect_right(keys, start)
                pc, pm, pd = values[i - 1] if i else (0, 0, 0)
                j = bisect_left(keys, end, i)
                while i < j:  # usually none or one or two keys inside the interval
                    c, m, d = values[i]
                    if c > pc:
                        pc = c
                    if m > pm:
                        pm = m
                    if d > pd:
                        pd = d
                    i += 1
                fc, fm, fd = cap.cpus - pc, cap.memory_mb - pm, cap.disk_gb - pd
            n = _how_many(fc, fm, fd, need)
            if n > 0:
                used = (cap.cpus - fc) / max(cap.cpus, 1) + (cap.memory_mb - fm) / max(cap.memory_mb, 1)
                fits.append((name, n, used))
        return fits

    def placeable_from(
        self, per_instance: Resources, starts: Iterable[datetime], duration: timedelta, at: datetime,
        excluding: UUID | None = None, pool: str | None = None,
    ) -> Iterator[tuple[datetime, int]]:
        """Each of `starts` with how many instances fit from it for `duration` (what
        `fitting_counts` sums to for [start, start + duration)), lazily, in their order.

        A search of alternatives asks this of hundreds of starts on a busy pool (the nearest
        start where five whole nodes are free, say), and from one start to the next few nodes
        change: a node is asked again only if one of its own instants lies between the two
        starts or between the two ends. Its instants are its bookings' bounds (`steps`), and
        the bounds of its holds that count at `at` and its drain's start (few nodes have any)."""
        need = (per_instance.cpus, per_instance.memory_mb, per_instance.disk_gb)
        if not any(v > 0 for v in need):
            yield from ((start, 0) for start in starts)  # a zero size fits nowhere, as how_many_fit_in says
            return
        nodes = {name: n for name, n in (self.nodes if pool is None else self.by_pool.get(pool, {})).items() if n.available}
        # What changes a node's count beyond its steps, for the nodes that have any.
        extra: dict[str, list[datetime]] = {}
        for name, n in nodes.items():
            instants = [t for h in n.holds.values() if h.reservation_id != excluding and h.counts_at(at) for t in (h.start, h.end)]
            if n.drain_from is not None:
                instants.append(n.drain_from)
            if instants:
                extra[name] = instants
        overlaid = {name for name, n in nodes.items() if n.holds or (excluding is not None and excluding in n.bookings)}

        def count(name: str, start: datetime, end: datetime) -> int:
            node = nodes[name]
            if node.drain_from is not None and end > node.drain_from:
                return 0
            if name in overlaid:
                free = node.free(start, end, at, excluding)
                return _how_many(free.cpus, free.memory_mb, free.disk_gb, need)
            return _how_many(*_free_of_steps(node, start, end), need)

        counts: dict[str, int] = {}
        total, previous = 0, None
        for start in starts:
            if previous is None:
                changed: Iterable[str] = nodes
            else:
                lo, hi = min(previous, start), max(previous, start)
                found: set[str] = set()
                for a, b in ((lo, hi), (lo + duration, hi + duration)):
                    for t in self.steps.irange(a, b):
                        found.update(self.steps[t])
                    found.update(name for name, instants in extra.items() if any(a <= t <= b for t in instants))
                changed = found & nodes.keys()
            for name in changed:
                fitting = count(name, start, start + duration)
                total += fitting - counts.get(name, 0)
                counts[name] = fitting
            yield start, total
            previous = start

    def change_points(self, after: datetime, until: datetime, at: datetime, pool: str | None = None) -> list[datetime]:
        """Where free capacity may change: every booking's bounds (all pools': a bound that
        changes nothing in `pool` is a candidate that finds what its neighbours find), and
        the bounds of the holds that count at `at` (of `pool`'s nodes only, with a pool)."""
        points = set(self.boundaries.irange(after, until, inclusive=(False, True)))
        for n in (self.nodes if pool is None else self.by_pool.get(pool, {})).values():
            for h in n.holds.values():
                if h.counts_at(at):
                    points.update(t for t in (h.start, h.end, h.hold_until) if t is not None and after < t <= until)
        return sorted(points)

    def freeing_points(self, after: datetime, until: datetime, at: datetime, pool: str | None = None) -> list[datetime]:
        """Where free capacity may grow: the ends of every booking (all pools', as
        `change_points`) and of the holds that count at `at` (of `pool`'s nodes only, with a
        pool), with when those lapse. At any other change point capacity is only taken."""
        points = set(self.booking_ends.irange(after, until, inclusive=(False, True)))
        for n in (self.nodes if pool is None else self.by_pool.get(pool, {})).values():
            for h in n.holds.values():
                if h.counts_at(at):
                    points.update(t for t in (h.end, h.hold_until) if t is not None and after < t <= until)
        return sorted(points)

    # --- following the log -------------------------------------------------------------

    def apply(self, event: object) -> None:
        """Fold one Node event into the timeline (other events are ignored).

        Like Node.Event.apply, it first forgets what ended or lapsed by the event's `at`."""
        if isinstance(event, Node.Registered):
            self._add_node(NodeTimeline(event.name, event.capacity, pool=event.pool))
            self.node_by_id[event.originator_id] = event.name
            return
        originator: UUID | None = getattr(event, "originator_id", None)
        name = self.node_by_id.get(originator) if originator is not None else None
        if name is None:
            return
        at = getattr(event, "at", None)
        if at is not None:
            self.forget_before(at)
        node = self.nodes[name]
        if isinstance(event, Node.Resized):
            node.capacity = event.capacity
        elif isinstance(event, Node.Lost):
            node.available = False
        elif isinstance(event, Node.Returned):
            node.available = True
        elif isinstance(event, Node.DrainScheduled):
            node.drain_from = event.drain_from
        elif isinstance(event, Node.DrainCancelled):
            node.drain_from = None
        elif isinstance(event, Node.CapacityHeld):
            self._remove(node, event.reservation_id)
            hold = NodeAllocation(
                event.reservation_id, event.start, event.end, event.instances, event.per_instance, event.hold_until
            )
            node.holds[event.reservation_id] = hold
            heapq.heappush(self.lapses, (hold.occupied_until, name, hold.reservation_id))
        elif isinstance(event, Node.CapacityBooked):
            self._remove(node, event.reservation_id)
            a = NodeAllocation(event.reservation_id, event.start, event.end, event.instances, event.per_instance)
            node.add_booking(a)
            self._count_bounds(name, a, +1)
            heapq.heappush(self.ends, (a.end, name, a.reservation_id))
        elif isinstance(event, (Node.HoldReleased, Node.BookingReleased)):
            self._remove(node, event.reservation_id)

    def _remove(self, node: NodeTimeline, reservation_id: UUID) -> None:
        a = node.remove(reservation_id)
        if a is not None:
            self._count_bounds(node.name, a, -1)

    def _count_bounds(self, name: str, a: NodeAllocation, sign: int) -> None:
        """Count a booking of the node `name` in (sign +1) or out (-1): its bounds in
        `boundaries` and `steps`, its end in `booking_ends`; an instant no booking bounds any
        more is dropped."""
        for counts, instants in ((self.boundaries, (a.start, a.end)), (self.booking_ends, (a.end,))):
            for t in instants:
                counts[t] = counts.get(t, 0) + sign
                if counts[t] == 0:
                    del counts[t]
        for t in (a.start, a.end):
            at_t = self.steps.setdefault(t, {})
            at_t[name] = at_t.get(name, 0) + sign
            if at_t[name] == 0:
                del at_t[name]
                if not at_t:
                    del self.steps[t]

    def forget_before(self, t: datetime) -> None:
        """Drop bookings that ended by `t` and holds that lapsed: the past costs nothing.

        Heap entries of allocations released or replaced since are skipped when they surface."""
        if self.forgotten_before is not None and t <= self.forgotten_before:
            return
        self.forgotten_before = t
        while self.ends and self.ends[0][0] <= t:
            end, name, rid = heapq.heappop(self.ends)
            node = self.nodes.get(name)
            if node is not None and (b := node.bookings.get(rid)) is not None and b.end == end:
                self._remove(node, rid)
        while self.lapses and self.lapses[0][0] <= t:
            _, name, rid = heapq.heappop(self.lapses)
            node = self.nodes.get(name)
            if node is not None and (h := node.holds.get(rid)) is not None and not h.counts_at(t):
                del node.holds[rid]

    # --- checkpoints -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """What the timeline holds, as plain JSON values (without `position`)."""
        return {
            "forgotten_before": self.forgotten_before.isoformat() if self.forgotten_before else None,
            "nodes": [
                {
                    "id": str(node_id), "name": name, "pool": n.pool, "capacity": _resources(n.capacity),
                    "available": n.available,
                    "drain_from": n.drain_from.isoformat() if n.drain_from else None,
                    "bookings": [_allocation(a) for a in n.bookings.values()],
                    "holds": [_allocation(h) for h in n.holds.values()],
                }
                for node_id, name in self.node_by_id.items()
                if (n := self.nodes.get(name)) is not None
            ],
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any], position: int) -> CapacityTimeline:
        timeline = cls()
        timeline.position = position
        forgotten = state["forgotten_before"]
        timeline.forgotten_before = datetime.fromisoformat(forgotten) if forgotten else None
        for n in state["nodes"]:
            node = NodeTimeline(n["name"], Resources(*n["capacity"]), n["available"], pool=n.get("pool", DEFAULT_POOL))
            if n.get("drain_from"):  # a checkpoint from before drains has none
                node.drain_from = datetime.fromisoformat(n["drain_from"])
            timeline._add_node(node)
            timeline.node_by_id[UUID(n["id"])] = node.name
            for a in map(_from_allocation, n["bookings"]):
                node.add_booking(a)
                timeline._count_bounds(node.name, a, +1)
                timeline.ends.append((a.end, node.name, a.reservation_id))
            for h in map(_from_allocation, n["holds"]):
                node.holds[h.reservation_id] = h
                timeline.lapses.append((h.occupied_until, node.name, h.reservation_id))
        heapq.heapify(timeline.ends)
        heapq.heapify(timeline.lapses)
        return timeline

    def bookings_overlapping(
        self, start: datetime, end: datetime, pool: str | None = None
    ) -> list[tuple[str, NodeAllocation]]:
        """The bookings (not holds) on available nodes (of `pool`, with one) that overlap
        [start, end), with their node."""
        return [
            (name, a)
            for name, n in (self.nodes if pool is None else self.by_pool.get(pool, {})).items()
            if n.available
            for a in n.bookings.values()
            if a.start < end and a.end > start
        ]

    # --- pools ---------------------------------------------------------------------------

    def _add_node(self, node: NodeTimeline) -> None:
        self.nodes[node.name] = node
        self.by_pool.setdefault(node.pool, {})[node.name] = node

    def pools(self) -> list[str]:
        """The pools with a node, in order of their names."""
        return sorted(self.by_pool)

    def room_by_pool(
        self, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None
    ) -> dict[str, int]:
        """How many instances of `per_instance` each pool could take over [start, end), in one
        pass over the nodes (a pool with no room is left out)."""
        room: dict[str, int] = {}
        for name, n, _ in self.fitting_counts(per_instance, start, end, at, excluding):
            pool = self.nodes[name].pool
            room[pool] = room.get(pool, 0) + n
        return room

    def pool_of(self, node: str) -> str | None:
        n = self.nodes.get(node)
        return None if n is None else n.pool

    def of_pool(self, pool: str) -> CapacityTimeline | PoolTimeline:
        """The timeline of one pool's nodes, a CapacityView in which to place a reservation;
        this timeline itself when every node is in that pool (the one pool of most PEXes)."""
        if len(self.by_pool) <= 1 and pool in self.by_pool:
            return self
        return PoolTimeline(self, pool)

    # --- queries for people ------------------------------------------------------------

    def allocations(self, node: str, at: datetime) -> list[NodeAllocation]:
        n = self.nodes[node]
        return sorted(
            [*n.bookings.values(), *(h for h in n.holds.values() if h.counts_at(at))], key=lambda a: (a.start, str(a.reservation_id))
        )


class PoolTimeline:
    """The capacity timeline restricted to one pool's nodes (`CapacityTimeline.of_pool`): what
    placement sees of it, so that a reservation's instances all land in that pool. Read under
    the same lock as the timeline, and, like it, current only as long as that lock is held."""

    def __init__(self, timeline: CapacityTimeline, pool: str):
        self.timeline, self.pool = timeline, pool

    def node_names(self) -> list[str]:
        return [name for name, n in self.timeline.by_pool.get(self.pool, {}).items() if n.available]

    def capacity(self, node: str) -> Resources:
        return self.timeline.capacity(node)

    def free(self, node: str, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> Resources:
        return self.timeline.free(node, start, end, at, excluding)

    def fitting_counts(
        self, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None
    ) -> list[tuple[str, int, float]]:
        return self.timeline.fitting_counts(per_instance, start, end, at, excluding, pool=self.pool)

    def change_points(self, after: datetime, until: datetime, at: datetime) -> list[datetime]:
        return self.timeline.change_points(after, until, at, pool=self.pool)

    def freeing_points(self, after: datetime, until: datetime, at: datetime) -> list[datetime]:
        return self.timeline.freeing_points(after, until, at, pool=self.pool)

    def placeable_from(
        self, per_instance: Resources, starts: Iterable[datetime], duration: timedelta, at: datetime,
        excluding: UUID | None = None,
    ) -> Iterator[tuple[datetime, int]]:
        return self.timeline.placeable_from(per_instance, starts, duration, at, excluding, pool=self.pool)

    def bookings_overlapping(self, start: datetime, end: datetime) -> list[tuple[str, NodeAllocation]]:
        return self.timeline.bookings_overlapping(start, end, pool=self.pool)


def _free_of_steps(node: NodeTimeline, start: datetime, end: datetime) -> tuple[int, int, int]:
    """The free (cpus, memory, disk) of a node without holds over [start, end), off its flat
    lists: one bisect for the level at `start`, then the levels of the keys inside."""
    cap = node.capacity
    keys, values = node._flat or node.flat()
    i = bisect_right(keys, start)
    pc, pm, pd = values[i - 1] if i else (0, 0, 0)
    j = bisect_left(keys, end, i)
    while i < j:  # usually none or one or two keys inside the interval
        c, m, d = values[i]
        if c > pc:
            pc = c
        if m > pm:
            pm = m
        if d > pd:
            pd = d
        i += 1
    return cap.cpus - pc, cap.memory_mb - pm, cap.disk_gb - pd


def _how_many(cpus: int, memory_mb: int, disk_gb: int, need: tuple[int, int, int]) -> int:
    """Resources.how_many_fit_in on plain numbers (`need` has at least one positive part)."""
    nc, nm, nd = need
    n = cpus // nc if nc > 0 else None
    if nm > 0:
        m = memory_mb // nm
        n = m if n is None or m < n else n
    if nd > 0:
        d = disk_gb // nd
        n = d if n is None or d < n else n
    return n if n is not None and n > 0 else 0


def _resources(r: Resources) -> list[int]:
    return [r.cpus, r.memory_mb, r.disk_gb]


def _allocation(a: NodeAllocation) -> list[Any]:
    return [
        str(a.reservation_id), a.start.isoformat(), a.end.isoformat(), a.instances, _resources(a.per_instance),
        a.hold_until.isoformat() if a.hold_until else None,
    ]  # fmt: skip


def _from_allocation(v: list[Any]) -> NodeAllocation:
    rid, start, end, instances, per_instance, hold_until = v
    return NodeAllocation(
        UUID(rid), datetime.fromisoformat(start), datetime.fromisoformat(end), instances, Resources(*per_instance),
        datetime.fromisoformat(hold_until) if hold_until else None,
    )  # fmt: skip
