"""Provider strategies to compare with PEX's own (`pex.domain.negotiation.evaluate`).

Each is a Negotiator: the same inputs and the same Decision, so all of them run through the
real application, the real Node aggregates and the same accounting.
"""

from __future__ import annotations

import random
from datetime import datetime
from uuid import UUID

from pex.domain.negotiation import Decision, NegotiationPolicy, describe_changes
from pex.domain.placement import CapacityView, later_starts
from pex.domain.pricing import PricingPolicy, quote_in
from pex.domain.values import Allocation, Offer, Reply, Size, Terms


def exact_only(
    terms: Terms, size: Size, view: CapacityView, at: datetime, pricing: PricingPolicy,
    policy: NegotiationPolicy, round: int = 1, reservation_id: UUID | None = None,
) -> Decision:
    """What Haizea, Blazar and Slurm do with an advance reservation: grant it exactly as asked
    (every instance, at the asked start, within the budget), or refuse it."""
    placement = policy.placement.choose(view, size.resources, terms.instances, terms.start, terms.end, at, reservation_id)
    if placement is None:
        return Decision(Reply.REJECT, reason="not available as asked")
    price = quote_in(pricing, view, size, terms.instances, terms.start, terms.end, at, reservation_id)
    if terms.price is not None and price > terms.price:
        return Decision(Reply.REJECT, reason=f"costs {price}, above {terms.price}")
    return Decision(Reply.ACCEPT, Offer(terms.but(price=price), size.resources, placement))


def original_openpex(
    terms: Terms, size: Size, view: CapacityView, at: datetime, pricing: PricingPolicy,
    policy: NegotiationPolicy, round: int = 1, reservation_id: UUID | None = None,
) -> Decision:
    """The 2009 implementation as its code behaves: one round only; all instances on one host,
    chosen at random among those free; if none is free, one COUNTER with the earliest later
    start at which some single host holds them all; no price negotiation."""
    if round > 1:
        return Decision(Reply.REJECT, reason="one round only")
    rng = random.Random(str(reservation_id))
    per, n = size.resources, terms.instances

    def one_host(start: datetime) -> str | None:
        end = start + terms.duration
        hosts = [h for h in view.node_names() if per.how_many_fit_in(view.free(h, start, end, at, reservation_id)) >= n]
        return rng.choice(sorted(hosts)) if hosts else None

    def offer(start: datetime, host: str) -> Offer:
        end = start + terms.duration
        offered = terms.but(start=start, end=end, price=quote_in(pricing, view, size, n, start, end, at, reservation_id))
        return Offer(offered, per, (Allocation(host, n),), describe_changes(terms, offered))

    host = one_host(terms.start)
    if host is not None:
        return Decision(Reply.ACCEPT, offer(terms.start, host))
    for start in later_starts(view, terms.start, at + policy.horizon, at):
        host = one_host(start)
        if host is not None:
            return Decision(Reply.COUNTER, offer(start, host))
    return Decision(Reply.REJECT, reason="no single host is free")


STRATEGIES = {"exact": exact_only, "openpex": original_openpex}
