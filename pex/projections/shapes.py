"""The read shapes: one type for each thing a query shows, whichever read model answers it.

A reservation is a `ReservationView` and an instance an `InstanceView`, whether the service
layer built it from the aggregate (`get_reservation`, the commands' replies; pex.application)
or a list read it from the persisted views (pex.projections.readmodels); pex.wire renders the
one type. They live here, below both, since the read side may not import the service layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pex.domain.reservation import Extension, Step
from pex.domain.values import Allocation, Offer, State, Terms


@dataclass(frozen=True)
class ReservationView:
    """A reservation as a query returns it: plain values, never the aggregate. A list's history
    steps carry no terms (the persisted view keeps who answered what, and when)."""

    id: UUID
    user_id: str
    state: State
    round: int
    proposal: Terms | None
    offer: Offer | None  # the provider's standing offer (kept after a walk-away or a lapse)
    alternatives: tuple[Offer, ...]
    valid_until: datetime | None
    instance_ids: tuple[UUID, ...]
    history: tuple[Step, ...]
    version: int
    created_on: datetime
    modified_on: datetime
    # An extension the provider offered and the user has not confirmed, declined or let lapse
    # (only from the aggregate; a list shows none).
    extension: Extension | None = None

    @property
    def terms(self) -> Terms | None:
        """The terms that stand: the offer once the provider answered, else the proposal."""
        return self.offer.terms if self.offer else self.proposal

    @property
    def placement(self) -> tuple[Allocation, ...]:
        """Where the standing offer places the instances (none without an offer)."""
        return self.offer.placement if self.offer else ()

    @property
    def size(self) -> str | None:
        terms = self.terms
        return terms.size if terms else None

    @property
    def instances(self) -> int | None:
        """How many instances the standing terms ask for, fixed and optional."""
        terms = self.terms
        return terms.instances if terms else None


@dataclass(frozen=True)
class InstanceView:
    """An instance as a query returns it."""

    id: UUID
    reservation_id: UUID
    user_id: str
    index: int  # within its reservation
    name: str
    size: str
    template: str
    node: str
    start: datetime
    end: datetime
    status: str
    ip_address: str | None
    version: int
    # Why it last ended, moved or failed, as the event said; the aggregate keeps only the end's.
    note: str | None = None
    # Why its VM never ran, and since when, for an instance whose start kept failing (FAILED).
    error: str | None = None
    failed_at: datetime | None = None
