"""The Node aggregate: one physical host's capacity, and the holds and bookings against it.

A Node is the authority on its own capacity. Every command that adds demand checks that, at
every instant of the new interval, held plus booked resources stay within capacity, and
refuses (raising before anything is recorded) otherwise. Because holds and bookings of one
node live in one event stream, two processes that race for the same capacity both try to
append the same version; the store lets exactly one win (see docs/architecture.md).

State stays small over the years: every event carries the time `at` of the decision that
caused it, and applying an event forgets allocations that ended before that time and holds
that lapsed. A replay prunes at the same points, so replayed state equals live state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import CapacityExceeded, CatalogueError, NodeDraining, NodeUnavailable
from pex.domain.pool import DEFAULT_POOL
from pex.domain.values import CopiedByContainers, Resources, time_text


@dataclass(frozen=True)
class NodeAllocation:
    """Demand of one reservation on one node. A hold lapses at `hold_until`; a booking does not."""

    reservation_id: UUID
    start: datetime
    end: datetime
    instances: int
    per_instance: Resources
    hold_until: datetime | None = None

    @property
    def demand(self) -> Resources:
        return self.per_instance * self.instances

    @property
    def is_hold(self) -> bool:
        return self.hold_until is not None

    @property
    def occupied_until(self) -> datetime:
        """When it stops occupying capacity: its end, or the moment a hold lapses if that is sooner."""
        return self.end if self.hold_until is None else min(self.hold_until, self.end)

    def counts_at(self, at: datetime) -> bool:
        """Whether this allocation still occupies capacity, seen at decision time `at`."""
        if self.end <= at:
            return False
        return self.hold_until is None or self.hold_until > at


def peak_demand(allocations: list[NodeAllocation], start: datetime, end: datetime) -> Resources:
    """The resource-wise peak of summed demand over [start, end), by a sweep over interval ends."""
    points: list[tuple[datetime, int, Resources]] = []
    for a in allocations:
        s, e = max(a.start, start), min(a.end, end)
        if s < e:
            # Ends sort before starts at the same instant: intervals are half-open.
            points.append((s, 1, a.demand))
            points.append((e, 0, a.demand))
    points.sort(key=lambda p: (p[0], p[1]))
    level = peak = Resources()
    for _, is_start, demand in points:
        level = level + demand if is_start else level - demand
        peak = Resources.peak(peak, level)
    return peak


class Node(CopiedByContainers, Aggregate):
    """A physical host of the pool, as the placement sees it."""

    # Read by nodes recorded before drains existed (their snapshots lack them).
    drain_from: datetime | None = None
    drain_by: str | None = None

    class Event(Aggregate.Event):
        at: datetime

        def apply(self, node: Node) -> None:
            node.forget_before(self.at)

    class Registered(Aggregate.Created):
        name: str
        capacity: Resources
        at: datetime
        pool: str = DEFAULT_POOL  # the Xen pool of its host; recorded since PEX_POOLS (before: the one pool)

    class Resized(Event):
        capacity: Resources

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.capacity = self.capacity

    class CapacityHeld(Event):
        reservation_id: UUID
        start: datetime
        end: datetime
        instances: int
        per_instance: Resources
        hold_until: datetime

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.allocations[str(self.reservation_id)] = NodeAllocation(
                self.reservation_id, self.start, self.end, self.instances, self.per_instance, self.hold_until
            )

    class HoldReleased(Event):
        reservation_id: UUID
        reason: str

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.allocations.pop(str(self.reservation_id), None)

    class CapacityBooked(Event):
        reservation_id: UUID
        start: datetime
        end: datetime
        instances: int
        per_instance: Resources

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.allocations[str(self.reservation_id)] = NodeAllocation(
                self.reservation_id, self.start, self.end, self.instances, self.per_instance
            )

    class BookingReleased(Event):
        reservation_id: UUID
        reason: str

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.allocations.pop(str(self.reservation_id), None)

    class Lost(Event):
        """The node stopped answering; it takes nothing new until it returns."""

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.available = False

    class Returned(Event):
        def apply(self, node: Node) -> None:
            super().apply(node)
            node.available = True

    class DrainScheduled(Event):
        """An operator (`by`) puts the node into maintenance from `drain_from`: from now on it
        takes no hold or booking that would still be there at that time (a booking may only
        shrink), and PEX moves what it holds then to other nodes (pex.application.drain)."""

        drain_from: datetime
        by: str

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.drain_from, node.drain_by = self.drain_from, self.by

    class DrainCancelled(Event):
        """The operator (`by`) took the node out of maintenance: it takes bookings again."""

        by: str

        def apply(self, node: Node) -> None:
            super().apply(node)
            node.drain_from, node.drain_by = None, None

    # A class default, so that snapshots taken before pools were named read as the one pool.
    pool: str = DEFAULT_POOL

    def __init__(self, name: str, capacity: Resources, at: datetime, pool: str = DEFAULT_POOL):
        self.name = name
        self.pool = pool
        self.capacity = capacity
        self.available = True
        self.allocations: dict[str, NodeAllocation] = {}
        self.forgotten_before = at
        self.drain_from: datetime | None = None
        self.drain_by: str | None = None

    @staticmethod
    def create_id(name: str, **_: object) -> UUID:
        return node_id(name)

    # --- queries -----------------------------------------------------------------------

    def live_allocations(self, at: datetime, excluding: UUID | None = None) -> list[NodeAllocation]:
        return [a for a in self.allocations.values() if a.counts_at(at) and a.reservation_id != excluding]

    def allocation_of(self, reservation_id: UUID) -> NodeAllocation | None:
        return self.allocations.get(str(reservation_id))

    def peak_usage(self, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> Resources:
        """The peak of what is held or booked over [start, end), seen at `at`, leaving out
        `excluding`'s own. Only what overlaps is swept: a busy node holds many bookings."""
        overlapping = [a for a in self.allocations.values() if a.start < end and a.end > start
                       and a.reservation_id != excluding and a.counts_at(at)]
        return peak_demand(overlapping, start, end)

    # --- commands ----------------------------------------------------------------------

    def hold(
        self,
        reservation_id: UUID,
        start: datetime,
        end: datetime,
        instances: int,
        per_instance: Resources,
        hold_until: datetime,
        at: datetime,
    ) -> None:
        """Set capacity aside for an offer until `hold_until` (replacing this reservation's own)."""
        self.check_can_take(reservation_id, start, end, per_instance * instances, at)
        self.trigger_event(
            self.CapacityHeld,
            reservation_id=reservation_id,
            start=start,
            end=end,
            instances=instances,
            per_instance=per_instance,
            hold_until=hold_until,
            at=at,
        )

    def book(
        self, reservation_id: UUID, start: datetime, end: datetime, instances: int, per_instance: Resources, at: datetime
    ) -> None:
        """Book capacity for a confirmed reservation, turning its hold (if any) into a booking.

        The check runs even when a hold exists: holds are judged by each decision's own clock,
        so a hold another process already saw as lapsed may have been given away.
        """
        self.check_can_take(reservation_id, start, end, per_instance * instances, at)
        self.trigger_event(
            self.CapacityBooked,
            reservation_id=reservation_id,
            start=start,
            end=end,
            instances=instances,
            per_instance=per_instance,
            at=at,
        )

    def release(self, reservation_id: UUID, reason: str, at: datetime) -> None:
        """Give back what a reservation holds or booked here. Releasing nothing records nothing."""
        allocation = self.allocation_of(reservation_id)
        if allocation is None:
            return
        event = self.HoldReleased if allocation.is_hold else self.BookingReleased
        self.trigger_event(event, reservation_id=reservation_id, reason=reason, at=at)

    def resize(self, capacity: Resources, at: datetime) -> None:
        peak = peak_demand(self.live_allocations(at), at, datetime.max.replace(tzinfo=at.tzinfo))
        if not peak.fits_in(capacity):
            raise CatalogueError(f"node {self.name} has {peak} held or booked; it cannot shrink to {capacity}")
        self.trigger_event(self.Resized, capacity=capacity, at=at)

    def mark_lost(self, at: datetime) -> None:
        if self.available:
            self.trigger_event(self.Lost, at=at)

    def mark_returned(self, at: datetime) -> None:
        if not self.available:
            self.trigger_event(self.Returned, at=at)

    def schedule_drain(self, drain_from: datetime, by: str, at: datetime) -> None:
        """Drain the node from `drain_from` (now, if earlier). Draining it again from the same
        time records nothing."""
        drain_from = max(drain_from, at)
        if self.drain_from is not None and self.drain_from <= drain_from:
            return  # drained from then or earlier already
        self.trigger_event(self.DrainScheduled, drain_from=drain_from, by=by, at=at)

    def cancel_drain(self, by: str, at: datetime) -> None:
        if self.drain_from is not None:
            self.trigger_event(self.DrainCancelled, by=by, at=at)

    def drains_during(self, end: datetime) -> bool:
        """Whether something that lasts until `end` would still be here when the drain begins."""
        return self.drain_from is not None and end > self.drain_from

    # --- invariant ---------------------------------------------------------------------

    def check_can_take(
        self, reservation_id: UUID, start: datetime, end: datetime, demand: Resources, at: datetime
    ) -> None:
        if not self.available:
            raise NodeUnavailable(f"node {self.name} is lost and takes no new reservations")
        if self.drains_during(end) and not self._shrinks(reservation_id, start, end, demand):
            assert self.drain_from is not None
            raise NodeDraining(f"node {self.name} is drained from {time_text(self.drain_from)} and takes nothing "
                               "that lasts until then")
        peak = self.peak_usage(start, end, at, excluding=reservation_id)
        if not (peak + demand).fits_in(self.capacity):
            raise CapacityExceeded(self.name, f"needs {demand}, {self.capacity - peak} free at worst")

    def _shrinks(self, reservation_id: UUID, start: datetime, end: datetime, demand: Resources) -> bool:
        """Whether the booking asked for is within the reservation's booking here (a draining
        node lets a booking shrink, as when one of its VMs migrates away)."""
        own = self.allocation_of(reservation_id)
        return own is not None and not own.is_hold and own.start <= start and end <= own.end and demand.fits_in(own.demand)

    def forget_before(self, at: datetime) -> None:
        """Drop allocations that can no longer matter to any decision taken at or after `at`."""
        if at <= self.forgotten_before:
            return
        self.forgotten_before = at
        for key in [k for k, a in self.allocations.items() if not a.counts_at(at)]:
            del self.allocations[key]


def node_id(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"/pex/nodes/{name}")
