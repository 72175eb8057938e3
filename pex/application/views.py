"""What queries and commands return: plain values, never aggregates. One type per read shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from pex.domain.catalogue import check_template, size_named
from pex.domain.reservation import Step
from pex.domain.values import Offer, Reply, Resources, Size, State, Terms


@dataclass(frozen=True)
class ReservationView:
    """A reservation as a query returns it: plain values, never the aggregate."""

    id: UUID
    user_id: str
    state: State
    round: int
    proposal: Terms | None
    offer: Offer | None
    alternatives: tuple[Offer, ...]
    valid_until: datetime | None
    instance_ids: tuple[UUID, ...]
    history: tuple[Step, ...]
    version: int
    created_on: datetime
    modified_on: datetime

    @property
    def terms(self) -> Terms | None:
        """The terms that stand: the offer once the provider answered, else the proposal."""
        return self.offer.terms if self.offer else self.proposal


@dataclass(frozen=True)
class Outcome:
    """The provider's answer to one negotiation step."""

    reply: Reply
    reservation: ReservationView
    reason: str = ""


@dataclass(frozen=True)
class InstanceView:
    id: UUID
    reservation_id: UUID
    user_id: str
    name: str
    size: str
    template: str
    node: str
    start: datetime
    end: datetime
    status: str
    ip_address: str | None
    version: int
    # Why its VM never ran, and since when, for an instance whose start kept failing (FAILED).
    error: str | None = None
    failed_at: datetime | None = None


@dataclass(frozen=True)
class NodeView:
    name: str
    capacity: Resources
    available: bool
    version: int


@dataclass(frozen=True)
class CatalogueView:
    """What the provider offers now: the sizes (Table 1) and templates by name."""

    sizes: Mapping[str, Size]
    templates: Mapping[str, str]  # name → description
    version: int

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
