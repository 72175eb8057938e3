"""What queries and commands return: plain values, never aggregates. One type per read shape:
a reservation and an instance are pex.projections.shapes' (the list queries of the persisted
views return the same types), the rest are here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pex.domain.catalogue import check_template, size_named
from pex.domain.values import Reply, Resources, Size
from pex.projections.shapes import InstanceView, ReservationView

__all__ = ["CatalogueView", "InstanceView", "NodeView", "Outcome", "Proposed", "ReservationView"]


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
