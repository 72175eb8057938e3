"""Placement (paper §3.2, done right): where the instances of a request can run, and when.

Pure functions over a CapacityView, a read-only picture of every node's free capacity over
time (pex.projections.capacity.CapacityTimeline is the one PEX uses). The Node aggregates
stay the authority: a placement found here is a candidate that the nodes then accept or
refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable
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


def fitting_counts(
    view: CapacityView, per_instance: Resources, start: datetime, end: datetime, at: datetime, excluding: UUID | None
) -> list[tuple[str, int, float]]:
    """For each node with room: (node, how many instances fit, how loaded it is over the interval)."""
    if isinstance(view, FastCapacityView):
        return view.fitting_counts(per_instance, start, end, at, excluding)
    return scan_fitting_counts(view, per_instance, start, end, at, excluding)


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
) -> tuple[Allocation, ...] | None:
    """Place `instances` instances for [start, end), best fit: fill the most loaded node that
    fits first, so that free capacity stays in large pieces. None if they do not all fit."""
    fits = fitting_counts(view, per_instance, start, end, at, excluding)
    if sum(n for _, n, _ in fits) < instances:
        return None
    fits.sort(key=lambda f: (-f[2], f[1], f[0]))
    placement, remaining = [], instances
    for node, n, _ in fits:
        take = min(n, remaining)
        placement.append(Allocation(node, take))
        remaining -= take
        if remaining == 0:
            break
    return tuple(placement)


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


def ever_placeable(view: CapacityView, per_instance: Resources) -> int:
    """How many instances the pool could hold if it were empty."""
    return sum(per_instance.how_many_fit_in(view.capacity(node)) for node in view.node_names())


def later_starts(view: CapacityView, start: datetime, latest: datetime, at: datetime) -> Iterator[datetime]:
    """Candidate starts after `start`, nearest first. The earliest feasible later start is always
    an instant where capacity frees up, so only change points need trying."""
    yield from view.change_points(start, latest, at)


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
