"""Placement (paper §3.2, done right): where the instances of a request can run, and when.

Pure functions over a CapacityView, a read-only picture of every node's free capacity over
time (pex.projections.capacity.CapacityTimeline is the one PEX uses). The Node aggregates
stay the authority: a placement found here is a candidate that the nodes then accept or
refuse.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from hashlib import blake2b
from typing import Protocol, TypeGuard, runtime_checkable
from uuid import UUID

from pex.domain.values import Allocation, Resources


class CapacityView(Protocol):
    def node_names(self) -> Iterable[str]:
        """The nodes that take new reservations."""

    def capacity(self, node: str) -> Resources: ...

    def free(self, node: str, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> Resources:
        """The least free capacity of `node` at any instant of [start, end), seen at time `at`
        (holds that lapsed by `at` are free), not counting the reservation `excluding`."""

    def change_points(self, after: datetime, until: datetime, at: datetime) -> Iterable[datetime]:
        """Sorted instants in (after, until] at which some node's free capacity changes."""


@runtime_checkable
class FastCapacityView(CapacityView, Protocol):
    """A view that answers `fitting_counts` for the whole pool at once (the capacity timeline
    does, without a call per node); it must answer exactly what `scan_fitting_counts` does."""

    def fitting_counts(
        self, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None
    ) -> list[tuple[str, int, float]]: ...

    def freeing_points(self, after: datetime, until: datetime, at: datetime) -> Iterable[datetime]:
        """Sorted instants in (after, until] at which some node's free capacity may grow (a
        booking or a live hold ends): of the change points, those and perhaps more."""

    def placeable_from(
        self, per_instance: Resources, starts: Iterable[datetime], duration: timedelta, at: datetime,
        excluding: UUID | None = None,
    ) -> Iterator[tuple[datetime, int]]:
        """Each of `starts` with `most_placeable` from it for `duration`, lazily."""


def fitting_counts(
    view: CapacityView, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None
) -> list[tuple[str, int, float]]:
    """For each node with room: (node, how many instances fit, how loaded it is over the interval)."""
    if answers_fitting_counts(view):
        return view.fitting_counts(per_instance, start, end, at, excluding)
    return scan_fitting_counts(view, per_instance, start, end, at, excluding)


def answers_fitting_counts(view: CapacityView) -> TypeGuard[FastCapacityView]:
    """Whether `view` is a FastCapacityView, asked once per type: a check of an object against
    a runtime-checkable Protocol costs some 10 µs, and placements ask it again and again."""
    return _fast_view_type(type(view))


@cache
def _fast_view_type(view_type: type) -> bool:
    return issubclass(view_type, FastCapacityView)


def scan_fitting_counts(
    view: CapacityView, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None
) -> list[tuple[str, int, float]]:
    """`fitting_counts` the straightforward way: ask every node for its free capacity."""
    fits = []
    for node in view.node_names():
        free = view.free(node, start, end, at, excluding)
        n = per_instance.how_many_fit_in(free)
        if n > 0:
            cap = view.capacity(node)
            used = (cap.cpus - free.cpus) / max(cap.cpus, 1) + (cap.memory_mb - free.memory_mb) / max(cap.memory_mb, 1)
            fits.append((node, n, used))
    return fits


def place(
    view: CapacityView,
    per_instance: Resources,
    instances: int,
    start: datetime,
    end: datetime,
    at: datetime,
    excluding: UUID | None = None,
    ties: int = 0,
) -> tuple[Allocation, ...] | None:
    """Place `instances` instances for [start, end), best fit: fill the most loaded node that
    fits first, so that free capacity stays in large pieces; between nodes as loaded and with
    as much room, in the tie order `ties` (`tie_order`). None if they do not all fit."""
    fits = fitting_counts(view, per_instance, start, end, at, excluding)
    if sum(n for _, n, _ in fits) < instances:
        return None
    # Each node taken takes at least one instance: the first `instances` in best-fit order will
    # do, found without sorting the pool (nsmallest is sorted(...)[:instances]).
    chosen = heapq.nsmallest(instances, fits, key=lambda f: (-f[2], f[1], tie_order(f[0], ties)))
    placement, remaining = [], instances
    for node, n, _ in chosen:
        take = min(n, remaining)
        placement.append(Allocation(node, take))
        remaining -= take
        if remaining == 0:
            break
    return tuple(placement)


@cache
def tie_order(node: str, ties: int) -> tuple[int, str]:
    """Where `node` goes among nodes that nothing else tells apart, in the tie order numbered
    `ties`: order 0 is by name; any other, a fixed shuffle of the names (a BLAKE2 digest of
    the order's number and the name; a CRC, being linear, shuffled orders 1 and 2 alike).
    Processes that decide side by side on one store, each in an order of its own (pex serve
    numbers its HTTP workers), send proposals for an interval nobody has booked yet to
    different nodes: in one order they all took the first node, and all but one lost their
    save on it and decided again (in the HTTP bench, some 490 such losses in 5,700
    requests). Each decision is still best fit, and the nodes' versions still keep every
    promise (tests/test_races.py races processes in one order and in an order each)."""
    if ties == 0:
        return (0, node)
    return (int.from_bytes(blake2b(f"{ties}\0{node}".encode(), digest_size=8).digest(), "big"), node)


def re_place(
    view: CapacityView, per_instance: Resources, instances: int, start: datetime, end: datetime, at: datetime
) -> list[str | None]:
    """Where each of `instances` instances that must leave their node goes for [start, end),
    in their order: best fit, as `place` (the most loaded node with room first); None for one
    that fits nowhere (it is stranded, and the next one may still find room)."""
    fits = fitting_counts(view, per_instance, start, end, at, None)
    fits.sort(key=lambda f: (-f[2], f[1], f[0]))
    room = {name: n for name, n, _ in fits}
    targets: list[str | None] = []
    for _ in range(instances):
        target = next((name for name, _, _ in fits if room[name] > 0), None)
        if target is not None:
            room[target] -= 1
        targets.append(target)
    return targets


def most_placeable(
    view: CapacityView, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None
) -> int:
    return sum(n for _, n, _ in fitting_counts(view, per_instance, start, end, at, excluding))


def placeable_starts(
    view: CapacityView, per_instance: Resources, starts: Iterable[datetime], duration: timedelta, at: datetime,
    excluding: UUID | None = None,
) -> Iterator[tuple[datetime, int]]:
    """Each of `starts` with how many instances fit from it for `duration` (`most_placeable`),
    lazily: a search that stops at the first start that will do asks no further."""
    if answers_fitting_counts(view):
        return view.placeable_from(per_instance, starts, duration, at, excluding)
    return ((start, most_placeable(view, per_instance, start, start + duration, at, excluding)) for start in starts)


def ever_placeable(view: CapacityView, per_instance: Resources) -> int:
    """How many instances the pool could hold if it were empty."""
    return sum(per_instance.how_many_fit_in(view.capacity(node)) for node in view.node_names())


def later_starts(view: CapacityView, start: datetime, latest: datetime, at: datetime) -> Iterator[datetime]:
    """Candidate starts after `start`, nearest first, for the search of the nearest start at
    which more instances fit than at any nearer one (each for the same duration): the first
    change point, then only the change points where capacity frees up. Between change points
    nothing changes; and from a change point where capacity is only taken, every node's window
    begins at a level at least that of the window from the point before, and the rest of that
    window lies inside its own, so no more instances fit there than from the point before.
    (A view without `freeing_points` has every change point tried.)"""
    points = view.change_points(start, latest, at)
    if not answers_fitting_counts(view):
        yield from points
        return
    freeing = set(view.freeing_points(start, latest, at))
    for i, point in enumerate(points):
        if i == 0 or point in freeing:
            yield point


def earlier_starts(
    view: CapacityView, start: datetime, duration: timedelta, earliest: datetime, at: datetime
) -> Iterator[datetime]:
    """Candidate starts before `start` and not before `earliest`, nearest first.

    The latest feasible earlier start either is `earliest` itself, or ends exactly where some
    capacity is taken (a change point minus the duration), or begins at a change point."""
    if earliest >= start:
        return
    points = set(view.change_points(earliest, start + duration, at))
    candidates = {p - duration for p in points} | {p for p in points if p < start} | {earliest}
    yield from sorted((c for c in candidates if earliest <= c < start), reverse=True)


# --- re-packing: moving bookings that have not started, to make room --------------------


@dataclass(frozen=True)
class Movable:
    """A booking that may move to another node: `instances` instances of reservation
    `reservation_id` on `node` over [start, end), each taking `per_instance`."""

    reservation_id: UUID
    node: str
    start: datetime
    end: datetime
    instances: int
    per_instance: Resources


@dataclass(frozen=True)
class Move:
    """`instances` instances of a booking leave `from_node` for `to_node`, over the same
    interval with the same resources."""

    reservation_id: UUID
    from_node: str
    to_node: str
    instances: int
    start: datetime
    end: datetime
    per_instance: Resources

    @property
    def demand(self) -> Resources:
        return self.per_instance * self.instances


@dataclass(frozen=True)
class Repack:
    """The moves that make room, and where the new request's instances then go."""

    moves: tuple[Move, ...]
    placement: tuple[Allocation, ...]


Change = tuple[datetime, datetime, Resources, int]  # over [start, end), demand added (+1) or taken away (-1)


class Rearranged:
    """A CapacityView: `view` with demand moved between nodes, or added, and not yet recorded.

    Exact: `free` cuts the interval where the view's capacity changes and where a change
    begins or ends; inside each piece both are constant."""

    def __init__(self, view: CapacityView, changes: dict[str, list[Change]] | None = None):
        self.view = view
        self.changes: dict[str, list[Change]] = {k: list(v) for k, v in (changes or {}).items()}

    def copy(self) -> Rearranged:
        return Rearranged(self.view, self.changes)

    def add(self, node: str, start: datetime, end: datetime, demand: Resources, sign: int = 1) -> None:
        self.changes.setdefault(node, []).append((start, end, demand, sign))

    def move(self, move: Move) -> None:
        self.add(move.from_node, move.start, move.end, move.demand, -1)
        self.add(move.to_node, move.start, move.end, move.demand, +1)

    def node_names(self) -> Iterable[str]:
        return self.view.node_names()

    def capacity(self, node: str) -> Resources:
        return self.view.capacity(node)

    def free(
        self, node: str, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None,
        extra: tuple[Change, ...] = (),
    ) -> Resources:
        changes = [c for c in (*self.changes.get(node, ()), *extra) if c[0] < end and c[1] > start]
        if not changes:
            return self.view.free(node, start, end, at, excluding)
        cuts = {start, end, *(p for p in self.view.change_points(start, end, at) if p < end)}
        cuts.update(t for c in changes for t in c[:2] if start < t < end)
        points = sorted(cuts)
        least: Resources | None = None
        for a, b in zip(points, points[1:], strict=False):
            free = self.view.free(node, a, b, at, excluding)
            for s, e, demand, sign in changes:
                if s < b and e > a:
                    free = free - demand if sign > 0 else free + demand
            least = free if least is None else Resources(
                min(least.cpus, free.cpus), min(least.memory_mb, free.memory_mb), min(least.disk_gb, free.disk_gb)
            )
        assert least is not None  # start < end: at least one piece
        return least

    def change_points(self, after: datetime, until: datetime, at: datetime) -> Iterable[datetime]:
        points = set(self.view.change_points(after, until, at))
        points.update(t for changes in self.changes.values() for c in changes for t in c[:2] if after < t <= until)
        return sorted(points)


def _shortfall(per_instance: Resources, free: Resources) -> float:
    """How far `free` is from holding one more instance, resource by resource (0: it fits)."""
    short = 0.0
    for need, have in ((per_instance.cpus, free.cpus), (per_instance.memory_mb, free.memory_mb), (per_instance.disk_gb, free.disk_gb)):
        if need > 0 and have < need:
            short += (need - have) / need
    return short


def repack(
    view: CapacityView,
    per_instance: Resources,
    instances: int,
    start: datetime,
    end: datetime,
    at: datetime,
    movable: Iterable[Movable],
    excluding: UUID | None = None,
    max_moves: int = 8,
) -> Repack | None:
    """Make room for `instances` instances over [start, end) by moving `movable` bookings
    (those that have not started: the caller's choice) to other nodes, over the same interval
    with the same resources, never putting a node over capacity. None if no such moves make
    room (at most `max_moves` of them).

    Greedy and cheap: first place what fits as it is (best fit, as `place`); then, node by
    node (the one that would hold most if its movable bookings left first), move the booking
    whose leaving brings the node nearest to holding one more instance, to the most loaded
    other node where it fits, and place there as many instances as then fit. The new
    instances already placed count where bookings may go, so a move never takes the room
    made for them; moves that made no room on a node are undone. A booking moves at most
    once (what moved is not moved again)."""
    available = set(view.node_names())
    scratch = Rearranged(view)
    left: dict[tuple[UUID, str], Movable] = {}
    for m in movable:
        if m.node in available and m.reservation_id != excluding and m.start < end and m.end > start and m.instances > 0:
            left[(m.reservation_id, m.node)] = m
    placed: dict[str, int] = {}
    remaining = instances

    def take(node: str) -> int:
        nonlocal remaining
        n = min(remaining, per_instance.how_many_fit_in(scratch.free(node, start, end, at, excluding)))
        if n > 0:
            scratch.add(node, start, end, per_instance * n)
            placed[node] = placed.get(node, 0) + n
            remaining -= n
        return n

    fits = fitting_counts(view, per_instance, start, end, at, excluding)
    fits.sort(key=lambda f: (-f[2], f[1], f[0]))
    for node, _, _ in fits:
        if remaining == 0:
            break
        take(node)
    if remaining == 0:
        return Repack((), tuple(Allocation(n, c) for n, c in placed.items()))
    # A move shifts a booking between nodes over the same interval: the room free at any
    # instant, summed over the pool, stays what it is. If at the start it cannot hold what is
    # left to place, no moves can make it so (the common case of a pool full then, and the
    # cheap one: the search below costs a free() per node, booking and count).
    instant = start + timedelta(microseconds=1)
    total = Resources()
    for node in available:
        total = total + scratch.free(node, start, instant, at, excluding)
    if not (per_instance * remaining).fits_in(total):
        return None

    def potential(node: str) -> int:
        freed = Resources()
        for (_, where), m in left.items():
            if where == node:
                freed = freed + m.per_instance * m.instances
        return per_instance.how_many_fit_in(scratch.free(node, start, end, at, excluding) + freed)

    potentials = {node: potential(node) for node in available}
    if sum(potentials.values()) < remaining:
        return None  # even if every movable booking left, the room is not there
    moves: list[Move] = []
    for node in sorted(available, key=lambda n: (-potentials[n], n)):
        if remaining == 0:
            break
        if potentials[node] == 0:
            continue
        kept = (scratch.copy(), list(moves), dict(placed), remaining, dict(left))
        while remaining > 0 and len(moves) < max_moves:
            if take(node) > 0:
                kept = (scratch.copy(), list(moves), dict(placed), remaining, dict(left))
                continue
            move = _best_eviction(scratch, node, left, per_instance, start, end, at, excluding)
            if move is None:
                break
            scratch.move(move)
            moves.append(move)
            m = left.pop((move.reservation_id, node))
            if m.instances > move.instances:
                left[(move.reservation_id, node)] = Movable(
                    m.reservation_id, node, m.start, m.end, m.instances - move.instances, m.per_instance
                )
        if remaining > 0:
            take(node)
        if remaining > 0:  # undo the moves that made no room here
            scratch, moves, placed, remaining, left = kept[0], kept[1], kept[2], kept[3], kept[4]
    if remaining > 0:
        return None
    return Repack(tuple(moves), tuple(Allocation(n, c) for n, c in placed.items() if c > 0))


def _best_eviction(
    scratch: Rearranged, node: str, left: dict[tuple[UUID, str], Movable], per_instance: Resources,
    start: datetime, end: datetime, at: datetime, excluding: UUID | None,
) -> Move | None:
    """The move off `node` that brings it nearest to one more instance over [start, end),
    to a node where it fits (the most loaded first); None if no move brings it nearer."""
    short = _shortfall(per_instance, scratch.free(node, start, end, at, excluding))
    options: list[tuple[float, int, str, Movable]] = []
    for (rid, where), m in left.items():
        if where != node:
            continue
        for k in range(1, m.instances + 1):
            after = scratch.free(node, start, end, at, excluding, extra=((m.start, m.end, m.per_instance * k, -1),))
            gain = short - _shortfall(per_instance, after)
            if gain > 1e-9:
                options.append((gain, k, str(rid), m))
    options.sort(key=lambda o: (-o[0], o[1], o[2]))
    for _, k, _, m in options:
        demand = m.per_instance * k
        targets = []
        for other in scratch.node_names():
            if other == node:
                continue
            free = scratch.free(other, m.start, m.end, at)
            if demand.fits_in(free):
                cap = scratch.capacity(other)
                used = (cap.cpus - free.cpus) / max(cap.cpus, 1) + (cap.memory_mb - free.memory_mb) / max(cap.memory_mb, 1)
                targets.append((-used, other))
        if targets:
            return Move(m.reservation_id, node, min(targets)[1], k, m.start, m.end, m.per_instance)
    return None
