"""The provider's side of the Alternate Offers protocol (paper §3.1): judge a proposal.

`evaluate` is a pure function: given the user's terms, the size they name, a CapacityView,
the decision time and the policy, it answers ACCEPT (with a placement), COUNTER (the best
alternative, with ranked others beside it) or REJECT (with the reason). The reservation
records the answer; the nodes hold what it places.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from pex.domain.errors import InvalidProposal
from pex.domain.placement import CapacityView, earlier_starts, ever_placeable, later_starts, most_placeable
from pex.domain.placement_policies import BestFit, PlacementPolicy
from pex.domain.pricing import PricingPolicy, quote_in
from pex.domain.quotas import QuotaExceeded
from pex.domain.values import Allocation, Offer, Reply, Resources, Size, Terms, time_text


@dataclass(frozen=True)
class NegotiationPolicy:
    """The provider's knobs, set by the operator (see pex.settings)."""

    offer_ttl: timedelta = timedelta(minutes=5)
    horizon: timedelta = timedelta(days=60)
    max_rounds: int = 5
    max_alternatives: int = 3
    max_duration: timedelta = timedelta(days=366)
    max_instances: int = 1000
    # Which nodes an offer's instances go to (PEX_PLACEMENT; pex.domain.placement_policies).
    placement: PlacementPolicy = field(default_factory=BestFit, compare=False)


@dataclass(frozen=True)
class Decision:
    reply: Reply
    offer: Offer | None = None
    alternatives: tuple[Offer, ...] = field(default=())
    reason: str = ""
    # Why the asked terms could not be had as they are (a COUNTER's "why:" notes, from the
    # capacity timeline); kept so that restating the changes keeps them too.
    why: tuple[str, ...] = field(default=())


class Negotiator(Protocol):
    """The provider's strategy: `evaluate` below is PEX's; pex.simulation has the baselines."""

    def __call__(
        self, terms: Terms, size: Size, view: CapacityView, at: datetime, pricing: PricingPolicy,
        policy: NegotiationPolicy, round: int = 1, reservation_id: UUID | None = None,
    ) -> Decision: ...


def check_terms(terms: Terms, at: datetime, policy: NegotiationPolicy) -> None:
    """Refuse malformed terms outright: they are the user's mistake, not a negotiation."""
    if terms.start.tzinfo is None or terms.end.tzinfo is None:
        raise InvalidProposal("startTime", "times must carry a time zone")
    if terms.instances_fixed < 0 or terms.instances_option < 0:
        raise InvalidProposal("numInstancesFixed", "instance counts cannot be negative")
    if terms.instances < 1:
        raise InvalidProposal("numInstancesFixed", "ask for at least one instance")
    if terms.instances > policy.max_instances:
        raise InvalidProposal("numInstancesFixed", f"at most {policy.max_instances} instances per reservation")
    if terms.end <= terms.start:
        raise InvalidProposal("duration", "the duration must be positive")
    if terms.duration > policy.max_duration:
        raise InvalidProposal("duration", f"at most {policy.max_duration.days} days")
    if terms.start < at:
        raise InvalidProposal("startTime", f"{time_text(terms.start)} is in the past")
    if terms.start > at + policy.horizon:
        raise QuotaExceeded(
            "horizon", policy.horizon.days, "startTime", f"reservations open at most {policy.horizon.days} days ahead"
        )
    if terms.price is not None and terms.price < 0:
        raise InvalidProposal("price", "the price cannot be negative")


def evaluate(
    terms: Terms,
    size: Size,
    view: CapacityView,
    at: datetime,
    pricing: PricingPolicy,
    policy: NegotiationPolicy,
    round: int = 1,
    reservation_id: UUID | None = None,
) -> Decision:
    """Answer a proposal. `reservation_id`'s own current holds do not count against it."""
    per_instance = size.resources
    least = max(terms.instances_fixed, 1)
    if round > policy.max_rounds:
        return Decision(Reply.REJECT, reason=f"the negotiation is over: at most {policy.max_rounds} proposals")
    if ever_placeable(view, per_instance) < least:
        return Decision(Reply.REJECT, reason=f"{least} {size.name} instances are more than the pool can ever hold")

    why: tuple[str, ...] = ()

    def offer_for(start: datetime, instances: int, placement: tuple[Allocation, ...]) -> Offer:
        end = start + terms.duration
        price = quote_in(pricing, view, size, instances, start, end, at, reservation_id)
        granted = instances - terms.instances_fixed
        offered = terms.but(start=start, end=end, instances_option=max(granted, 0), price=price)
        return Offer(offered, per_instance, placement, describe_changes(terms, offered) + why)

    def within_budget(offer: Offer) -> bool:
        return terms.price is None or offer.terms.price is None or offer.terms.price <= terms.price

    place = policy.placement.choose
    exact = place(view, per_instance, terms.instances, terms.start, terms.end, at, reservation_id)
    if exact is not None:
        offer = offer_for(terms.start, terms.instances, exact)
        if within_budget(offer):
            return Decision(Reply.ACCEPT, offer)

    if exact is None:
        why = explain_shortage(view, size, terms.instances, terms.start, terms.end, at, reservation_id)

    candidates: list[Offer] = []

    def consider(start: datetime, most: int) -> None:
        """Offer as many instances as fit at `start` (from `least` up), cheapest within budget."""
        for instances in range(min(most, terms.instances), least - 1, -1):
            placement = place(view, per_instance, instances, start, start + terms.duration, at, reservation_id)
            if placement is None:
                continue
            offer = offer_for(start, instances, placement)
            candidates.append(offer)
            if within_budget(offer):
                return

    consider(terms.start, most_placeable(view, per_instance, terms.start, terms.end, at, reservation_id))
    latest = at + policy.horizon
    for direction in (
        later_starts(view, terms.start, latest, at),
        earlier_starts(view, terms.start, terms.duration, at, at),
    ):
        best_count = least - 1
        for start in direction:
            if start > latest:
                break
            n = most_placeable(view, per_instance, start, start + terms.duration, at, reservation_id)
            if n > best_count:
                consider(start, n)
                best_count = n
            if n >= terms.instances:
                break

    ranked = rank(candidates, terms, within_budget)
    if not ranked:
        return Decision(
            Reply.REJECT,
            reason=f"no {least} {size.name} instances fit for {terms.duration} within {policy.horizon.days} days",
        )
    return Decision(Reply.COUNTER, ranked[0], tuple(ranked[1 : 1 + policy.max_alternatives]), why=why)


def answer_within_quotas(asked: Terms, limited: Terms, decision: Decision) -> Decision:
    """The answer to `asked` when the provider negotiated `limited` (the asked terms cut to
    the quotas, pex.domain.quotas): an ACCEPT of cut terms is a COUNTER, and every offer says
    what it changed from what the user asked."""
    if limited == asked or decision.offer is None:
        return decision

    def restated(offer: Offer) -> Offer:
        return replace(offer, changes=describe_changes(asked, offer.terms) + decision.why)

    return Decision(
        Reply.COUNTER, restated(decision.offer), tuple(restated(o) for o in decision.alternatives), decision.reason,
        decision.why,
    )


def rank(candidates: list[Offer], asked: Terms, within_budget) -> list[Offer]:
    """Best first: within budget; nearest to the asked start (fewer optional instances at the
    asked time beat any move); more instances; later rather than earlier on a tie."""
    unique = {(o.terms.start, o.terms.instances): o for o in candidates}

    def key(o: Offer):
        shift = (o.terms.start - asked.start).total_seconds()
        return (not within_budget(o), abs(shift), -o.terms.instances, shift < 0)

    return sorted(unique.values(), key=key)


def describe_changes(asked: Terms, offered: Terms) -> tuple[str, ...]:
    """What the provider replaced in the user's terms, in words a person reads."""
    changes = []
    if offered.duration != asked.duration:
        changes.append(f"duration cut from {format_span(asked.duration)} to {format_span(offered.duration)}")
    if offered.start != asked.start:
        shift = offered.start - asked.start
        direction = "later" if shift > timedelta(0) else "earlier"
        changes.append(f"start moved {format_span(abs(shift))} {direction}, to {time_text(offered.start)}")
    if offered.instances_option != asked.instances_option:
        changes.append(f"{offered.instances_option} of {asked.instances_option} optional instances granted")
    if asked.price is not None and offered.price is not None and offered.price > asked.price:
        changes.append(f"price {offered.price} is above the {asked.price} you offered")
    return tuple(changes)


WHY = "why: "  # how a change note that gives the reason starts (the portal shows it apart)
MAX_SPANS_TOLD = 3


def short_spans(
    view: CapacityView, per_instance: Resources, instances: int, start: datetime, end: datetime, at: datetime,
    excluding: UUID | None = None,
) -> list[tuple[datetime, datetime, int]]:
    """The stretches of [start, end) in which fewer than `instances` fit in the pool, with how
    many do fit there: the capacity timeline cut at its change points, adjacent stretches
    with the same room merged. Empty if they all fit at every instant."""
    cuts = [start, *(p for p in view.change_points(start, end, at) if p < end), end]
    spans: list[tuple[datetime, datetime, int]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if a >= b:
            continue
        room = most_placeable(view, per_instance, a, b, at, excluding)
        if room >= instances:
            continue
        if spans and spans[-1][1] == a and spans[-1][2] == room:
            spans[-1] = (spans[-1][0], b, room)
        else:
            spans.append((a, b, room))
    return spans


def explain_shortage(
    view: CapacityView, size: Size, instances: int, start: datetime, end: datetime, at: datetime,
    excluding: UUID | None = None,
) -> tuple[str, ...]:
    """Why `instances` × `size` cannot have [start, end) as asked, in words: when the pool is
    full, or has room for fewer ("why: the pool is full from 2026-08-17 23:00 UTC to
    2026-08-18 01:00 UTC"). Empty when they would fit (then the price was the obstacle)."""
    spans = short_spans(view, size.resources, instances, start, end, at, excluding)
    if not spans:
        return ()
    told = []
    for a, b, room in spans[:MAX_SPANS_TOLD]:
        what = "the pool is full" if room == 0 else f"the pool has room for only {room} {size.name}"
        told.append(f"{what} from {time_text(a)} to {time_text(b)}")
    more = len(spans) - MAX_SPANS_TOLD
    tail = f", and {more} more time{'s' * (more != 1)}" if more > 0 else ""
    return (WHY + "; ".join(told) + tail,)


def format_span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} day{'s' * (days != 1)}"] if days else []
    if hours:
        parts.append(f"{hours} hour{'s' * (hours != 1)}")
    if minutes and not days:
        parts.append(f"{minutes} minute{'s' * (minutes != 1)}")
    return " ".join(parts) or f"{seconds} seconds"

