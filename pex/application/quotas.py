"""Quotas: what is in force (everyone's, and a user's own), setting them, and checking terms
against them before a reservation is made."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar
from uuid import UUID

from pex.application.core import Core
from pex.domain.negotiation import NegotiationPolicy
from pex.domain.pricing import MarketPricing, pricing_name
from pex.domain.quotas import Quotas, Usage

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Policies:
    placement: str
    pricing: str
    credit: bool
    currency: str
    market_floor: Decimal | None = None  # the market price's factor on an idle pool
    market_ceiling: Decimal | None = None  # and on a full one

class QuotaCommands(Core):
    """Quotas: what is in force (everyone's, and a user's own), setting them, and checking terms"""

    def quotas(self, user_id: str | None = None) -> Quotas:
        """The quotas in force (the defaults until an administrator sets them); with
        `user_id`, that user's (their own, if an administrator gave them some)."""
        catalogue = self._catalogue()
        return catalogue.quotas if user_id is None else catalogue.quotas_for(user_id)

    def has_own_quotas(self, user_id: str) -> bool:
        return user_id in self._catalogue().user_quotas

    def set_quotas(self, quotas: Quotas, by: str) -> Quotas:
        """Put `quotas` in force from now, for every proposal from now on; what was agreed or
        offered before stands. `by` is the administrator, recorded with the change."""
        self._change_catalogue(lambda c, at: c.set_quotas(quotas, by, at))
        return quotas

    def set_user_quotas(self, user_id: str, quotas: Quotas | None, by: str) -> Quotas:
        """Give one user quotas of their own, or (None) put them back under everyone's."""
        self._change_catalogue(lambda c, at: c.set_user_quotas(user_id, quotas, by, at))
        return self.quotas(user_id)

    def policy_in_force(self, user_id: str | None = None) -> NegotiationPolicy:
        """The negotiation policy with the quotas' horizon (`user_id`'s, if given): what
        proposals are checked against."""
        return self._policy_under(self.quotas(user_id))

    def policies(self) -> Policies:
        """The provider's policies in force (PEX_PLACEMENT, PEX_PRICING, PEX_CREDIT)."""
        market = self.pricing if isinstance(self.pricing, MarketPricing) else None
        return Policies(
            placement=self.policy.placement.name, pricing=pricing_name(self.pricing), credit=self.credit_enforced,
            currency=self.currency, market_floor=market.floor if market else None, market_ceiling=market.ceiling if market else None,
        )

    def pool_cpus(self) -> int:
        """The CPUs of the nodes that take reservations now: the default CPU-hour quota's base."""
        self.follow()
        with self._follow_lock:
            return self._pool_cpus()

    def usage(self, user_id: str, excluding: UUID | None = None) -> Usage:
        """What `user_id` holds or booked from now on, as the quotas count it."""
        self.follow()
        with self._follow_lock:
            return self.index.usage(user_id, self.clock(), excluding)
