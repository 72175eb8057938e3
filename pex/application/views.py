"""What queries and commands return: plain values, never aggregates. One type per read shape:
a reservation and an instance are pex.projections.shapes' (the list queries of the persisted
views return the same types), the rest are here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pex.domain.catalogue import check_template, size_named
from pex.domain.pool import DEFAULT_POOL
from pex.domain.values import Reply, Resources, Size
from pex.projections.shapes import InstanceView, ReservationView

__all__ = ["CatalogueView", "DrainView", "InstanceView", "Leaving", "NodeView", "Outcome", "Proposed", "ReservationView"]


@dataclass(frozen=True)
class Outcome:
    """The provider's answer to one negotiation step."""

    reply: Reply
    reservation: ReservationView
    reason: str = ""


@dataclass(frozen=True)
class NodeView:
    name: str
    capacity: Resources
    available: bool
    version: int
    drain_from: datetime | None = None  # drained from then (maintenance), by `drain_by`
    drain_by: str | None = None
    pool: str = DEFAULT_POOL  # the Xen pool of its host (pex.domain.pool)


@dataclass(frozen=True)
class Leaving:
    """An instance that has to leave a drained node (it would still be there at the drain),
    and where it stands: `moved_to` it was re-placed on now (its booking moved with it), or
    it is live-migrating to `migrating_to` (booked there too until it arrives), or it cannot
    move: `reason`. None of the three: it waits for its turn (a dispatch in flight)."""

    instance_id: UUID
    reservation_id: UUID
    name: str
    status: str
    end: datetime
    moved_to: str | None = None
    migrating_to: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class DrainView:
    """A node's drain: from when, by whom, and what still has to leave it (`leaving`); the
    reply to a drain also lists what the drain moved at once (`moved`: bookings re-placed)."""

    node: str
    drain_from: datetime
    by: str
    leaving: tuple[Leaving, ...]
    moved: tuple[Leaving, ...] = ()

    @property
    def stuck(self) -> tuple[Leaving, ...]:
        """What could not move: the operator decides (room elsewhere, the drain later, or not)."""
        return tuple(item for item in self.leaving if item.reason is not None)


@dataclass(frozen=True)
class CatalogueView:
    """What the provider offers now: the sizes (Table 1) and templates by name."""

    sizes: Mapping[str, Size]
    templates: Mapping[str, str]  # name → description
    version: int
    unreachable_pools: tuple[str, ...] = ()  # whose master the workers cannot reach (first offers avoid them)

    def size(self, name: str) -> Size:
        return size_named(self.sizes, name)

    def check_template(self, name: str) -> None:
        check_template(self.templates, name)


@dataclass(frozen=True)
class Proposed:
    """The answer to a first proposal (`propose`), and whether it is the answer given before
    to the same request (the same idempotency key or form), replayed."""

    outcome: Outcome
    replayed: bool = False


@dataclass(frozen=True)
class WindowView:
    """A start from which the instances asked for fit for the whole duration (nothing held):
    how many would fit, and what the ones asked for would cost over [start, end)."""

    start: datetime
    end: datetime
    available: int
    price: Decimal
