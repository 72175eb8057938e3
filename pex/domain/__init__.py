"""PEX's domain: the aggregates, value types, errors and the pure placement, negotiation
and pricing functions. No I/O, no clock reads, no framework."""

from pex.domain.catalogue import Catalogue
from pex.domain.errors import (
    CapacityExceeded,
    CatalogueError,
    DomainError,
    IllegalMove,
    InvalidProposal,
    NodeUnavailable,
    OfferExpired,
)
from pex.domain.instance import Instance
from pex.domain.negotiation import Decision, NegotiationPolicy
from pex.domain.node import Node
from pex.domain.quotas import QuotaAccount, QuotaExceeded, Quotas
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, Offer, Reply, Resources, Size, State, Terms

__all__ = [
    "Allocation", "CapacityExceeded", "Catalogue", "CatalogueError", "Decision", "DomainError", "IllegalMove",
    "Instance", "InvalidProposal", "NegotiationPolicy", "Node", "NodeUnavailable", "Offer", "OfferExpired",
    "QuotaAccount", "QuotaExceeded", "Quotas", "Reply", "Reservation", "Resources", "Size", "State", "Terms",
]
