"""Placement policies (the paper's §5): which nodes a request's instances go to, pluggable.

A PlacementPolicy answers the one question the negotiation asks of placement: where do
`count` instances of `per_instance` go for [start, end), seen at `at` (None: they do not
all fit). It reads the same CapacityView as `pex.domain.placement.place` and, like it, only
proposes: the Node aggregates accept or refuse what it chose, and the chosen nodes are
recorded in the events (Node.Held, Reservation.Accepted), so replaying the log never asks a
policy again. The operator picks one with PEX_PLACEMENT (pex.settings):

best-fit          `place`: fill the most loaded node that fits first, so free capacity stays
                  in large pieces (PEX's default).
least-loaded      each instance in turn on the node that is least loaded with it, so load
                  spreads evenly (worst fit).
round-robin       one instance on each node in turn, in name order, skipping nodes without
                  room, starting after the last node the previous placement reached. The turn
                  moves when an offer is held (`placed`); each process keeps its own.
random            each instance on a node drawn uniformly among those with room, from a seeded
                  random source handed in (never the global one): one seed, one sequence.
size-partitioned  small instances (at most half the CPUs and half the memory of the pool's
                  largest node) on the first half of the nodes by name, the others on the
                  rest, best fit within each part: small requests never fragment the nodes
                  large ones need. A part of the pool never lends to the other.

Every policy is a pure function of the view and its own small state (the round-robin turn,
the random source); no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from pex.domain.placement import CapacityView, fitting_counts, place
from pex.domain.values import Allocation, Resources

Placement = tuple[Allocation, ...]


class PlacementPolicy(Protocol):
    name: str

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        """Where `count` instances go for [start, end), or None if they do not all fit.
        `excluding`'s own holds do not count (a reservation negotiating again)."""

    def placed(self, placement: Placement) -> None:
        """The provider held `placement` (the offer chosen): a policy with a turn moves it."""


class RandomSource(Protocol):
    """The port a random policy draws from: random.Random(seed) is one."""

    def random(self) -> float:
        """A number in [0, 1)."""


def grouped(targets: Sequence[str]) -> Placement:
    """One Allocation per node, in the order the nodes were first chosen."""
    counts: dict[str, int] = {}
    for name in targets:
        counts[name] = counts.get(name, 0) + 1
    return tuple(Allocation(name, n) for name, n in counts.items())


class BestFit:
    name = "best-fit"

    def __init__(self, ties: int = 0):
        self.ties = ties  # pex.domain.placement.tie_order

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        return place(view, per_instance, count, start, end, at, excluding, self.ties)

    def placed(self, placement: Placement) -> None:
        pass


class LeastLoaded:
    name = "least-loaded"

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        fits = fitting_counts(view, per_instance, start, end, at, excluding)
        if sum(n for _, n, _ in fits) < count:
            return None
        room = {name: n for name, n, _ in fits}
        load = {name: used for name, _, used in fits}
        step = {}
        for name in room:
            cap = view.capacity(name)
            step[name] = per_instance.cpus / max(cap.cpus, 1) + per_instance.memory_mb / max(cap.memory_mb, 1)
        targets = []
        for _ in range(count):
            target = min((name for name in room if room[name] > 0), key=lambda name: (load[name], name))
            room[target] -= 1
            load[target] += step[target]
            targets.append(target)
        return grouped(targets)

    def placed(self, placement: Placement) -> None:
        pass


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self.last: str | None = None  # the last node of the placement held last

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        fits = fitting_counts(view, per_instance, start, end, at, excluding)
        if sum(n for _, n, _ in fits) < count:
            return None
        room = {name: n for name, n, _ in fits}
        ring = sorted(view.node_names())
        # The turn starts at the node after the last one reached (name order, cyclic).
        position = next((i for i, name in enumerate(ring) if self.last is not None and name > self.last), 0)
        targets: list[str] = []
        while len(targets) < count:
            name = ring[position % len(ring)]
            position += 1
            if room.get(name, 0) > 0:
                room[name] -= 1
                targets.append(name)
        return grouped(targets)

    def placed(self, placement: Placement) -> None:
        if placement:
            self.last = placement[-1].node


class RandomPlacement:
    name = "random"

    def __init__(self, source: RandomSource):
        self.source = source

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        fits = fitting_counts(view, per_instance, start, end, at, excluding)
        if sum(n for _, n, _ in fits) < count:
            return None
        room = {name: n for name, n, _ in sorted(fits)}  # name order: one seed, one answer
        targets = []
        for _ in range(count):
            open_nodes = [name for name, n in room.items() if n > 0]
            target = open_nodes[min(int(self.source.random() * len(open_nodes)), len(open_nodes) - 1)]
            room[target] -= 1
            targets.append(target)
        return grouped(targets)

    def placed(self, placement: Placement) -> None:
        pass


class PartView:
    """A CapacityView of some of another view's nodes."""

    def __init__(self, view: CapacityView, names: frozenset[str]):
        self.view, self.names = view, names

    def node_names(self) -> list[str]:
        return [name for name in self.view.node_names() if name in self.names]

    def capacity(self, node: str) -> Resources:
        return self.view.capacity(node)

    def free(self, node: str, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> Resources:
        return self.view.free(node, start, end, at, excluding)

    def change_points(self, after: datetime, until: datetime, at: datetime) -> list[datetime]:
        return list(self.view.change_points(after, until, at))


class SizePartitioned:
    name = "size-partitioned"

    def part_for(self, view: CapacityView, per_instance: Resources) -> frozenset[str]:
        """The nodes `per_instance` may go on: the first half by name (rounded down, at least
        one) for a small instance, the others for a large one; all of them in a pool of one."""
        ring = sorted(view.node_names())
        if len(ring) < 2:
            return frozenset(ring)
        largest = max((view.capacity(name) for name in ring), key=lambda c: (c.cpus, c.memory_mb))
        small = per_instance.cpus * 2 <= largest.cpus and per_instance.memory_mb * 2 <= largest.memory_mb
        half = max(len(ring) // 2, 1)
        return frozenset(ring[:half] if small else ring[half:])

    def choose(
        self, view: CapacityView, per_instance: Resources, count: int, start: datetime, end: datetime, at: datetime,
        excluding: UUID | None = None,
    ) -> Placement | None:
        return place(PartView(view, self.part_for(view, per_instance)), per_instance, count, start, end, at, excluding)

    def placed(self, placement: Placement) -> None:
        pass


PLACEMENT_POLICIES = ("best-fit", "least-loaded", "round-robin", "random", "size-partitioned")


def placement_policy(name: str, source: RandomSource | None = None, ties: int = 0) -> PlacementPolicy:
    """The policy PEX_PLACEMENT names; `source` is what `random` draws from, `ties` the tie
    order best fit takes equally good nodes in (pex.domain.placement.tie_order)."""
    if name == "best-fit":
        return BestFit(ties)
    if name == "least-loaded":
        return LeastLoaded()
    if name == "round-robin":
        return RoundRobin()
    if name == "random":
        if source is None:
            raise ValueError("the random placement needs a seeded random source")
        return RandomPlacement(source)
    if name == "size-partitioned":
        return SizePartitioned()
    raise ValueError(f"{name!r} is not a placement policy: one of {', '.join(PLACEMENT_POLICIES)}")
