"""The provider's side of the Alternate Offers protocol (paper §3.1): judge a proposal.

`evaluate` is a pure function: given the user's terms, the size they name, a CapacityView,
the decision time and the policy, it answers ACCEPT (with a placement), COUNTER (the best
alternative, with ranked others beside it) or REJECT (with the reason). The reservation
records the answer; the nodes hold what it places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import takewhile
from typing import Protocol
from uuid import UUID

from pex.domain.errors import InvalidProposal
from pex.domain.placement import (
    CapacityView,
    earlier_starts,
    ever_placeable,
    later_starts,
    most_placeable,
    placeable_starts,
)
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


MIN_DURATION = timedelta(milliseconds=1)
MINUTE = timedelta(minutes=1)


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
    if terms.latest_start is not None:
        if terms.latest_start.tzinfo is None:
            raise InvalidProposal("latestStart", "times must carry a time zone")
        if terms.latest_start < terms.start:
            raise InvalidProposal("latestStart", f"{time_text(terms.latest_start)} is before the start {time_text(terms.start)}")
    if terms.min_duration is not None:
        if terms.min_duration < MIN_DURATION:
            raise InvalidProposal("minDuration", "the shortest duration must be at least 1 ms")
        if terms.min_duration > terms.duration:
            raise InvalidProposal(
                "minDuration", f"the shortest duration {format_span(terms.min_duration)} is longer than the duration "
                f"{format_span(terms.duration)}",
            )


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
    """Answer a proposal. `reservation_id`'s own current holds do not count against it.

    ACCEPT when every asked instance fits, within the asked price, at some terms inside the
    proposal's freedom (exactly the asked terms, for a proposal without any): the earliest
    start from `start` to `latest_start` at which the shortest allowed duration fits, and at
    that start the longest duration up to the asked one that fits and is within the price
    (docs/api.md, "Flexible proposals"). Otherwise COUNTER with the best alternative, others
    ranked beside it, among them the asked start for a shorter duration and the asked time at
    the policy's price; REJECT when nothing at all fits."""
    per_instance = size.resources
    least = max(terms.instances_fixed, 1)
    if round > policy.max_rounds:
        return Decision(Reply.REJECT, reason=f"the negotiation is over: at most {policy.max_rounds} proposals")
    if ever_placeable(view, per_instance) < least:
        return Decision(Reply.REJECT, reason=f"{least} {size.name} instances are more than the pool can ever hold")

    why: tuple[str, ...] = ()
    firm = terms.firm()
    shortest = terms.shortest
    latest = at + policy.horizon

    def quote(instances: int, start: datetime, end: datetime) -> Decimal:
        # The pricing policy's price, which a market policy sets by how full `view` is then.
        return quote_in(pricing, view, size, instances, start, end, at, reservation_id)

    def offer_for(start: datetime, instances: int, placement: tuple[Allocation, ...], end: datetime | None = None) -> Offer:
        end = start + terms.duration if end is None else end
        price = quote(instances, start, end)
        granted = instances - terms.instances_fixed
        offered = firm.but(start=start, end=end, instances_option=max(granted, 0), price=price)
        return Offer(offered, per_instance, placement, describe_changes(terms, offered) + why)

    def within_budget(offer: Offer) -> bool:
        return terms.price is None or offer.terms.price is None or offer.terms.price <= terms.price

    place = policy.placement.choose

    def fits(instances: int, start: datetime, end: datetime) -> tuple[Allocation, ...] | None:
        return place(view, per_instance, instances, start, end, at, reservation_id)

    def longest_fit(instances: int, start: datetime, lo: datetime, hi: datetime) -> datetime | None:
        """The latest end in [lo, hi] for which `instances` fit from `start` (None: not even
        `lo`). Fitting is monotone in the end, and the first instant that does not fit is a
        change point, so the ends to try are `hi`, the change points between and `lo`."""
        if fits(instances, start, hi) is not None:
            return hi
        if lo < hi:
            ends = [p for p in view.change_points(lo, hi, at) if lo < p < hi]
            found, bad = -1, len(ends)  # ends[found] fits (-1: lo, yet to see), ends[bad] does not
            while bad - found > 1:
                mid = (found + bad) // 2
                if fits(instances, start, ends[mid]) is not None:
                    found = mid
                else:
                    bad = mid
            if found >= 0:
                return ends[found]
        return lo if start < lo < hi and fits(instances, start, lo) is not None else None

    def affordable(instances: int, start: datetime, lo: datetime, hi: datetime) -> datetime | None:
        """The latest end in [lo, hi] that the asked price pays for, at a whole minute of
        duration (or `lo` itself); None if not even `lo`. Quotes grow with the duration."""
        if terms.price is None or quote(instances, start, hi) <= terms.price:
            return hi
        if quote(instances, start, lo) > terms.price:
            return None
        first = -(-(lo - start) // MINUTE)  # whole minutes of duration in [lo, hi]
        good, bad = first - 1, (hi - start) // MINUTE + 1  # good: -1 stands for lo
        while bad - good > 1:
            mid = (good + bad) // 2
            if quote(instances, start, start + mid * MINUTE) <= terms.price:
                good = mid
            else:
                bad = mid
        return start + good * MINUTE if good >= first else lo

    def chosen_within_freedom() -> Offer | None:
        """The ACCEPT rule above: the earliest start, then the longest duration."""
        starts = [terms.start, *(p for p in view.change_points(terms.start, min(terms.last_start, latest), at))]
        for start in starts:
            if start > terms.last_start:
                break
            end = longest_fit(terms.instances, start, start + shortest, start + terms.duration)
            if end is None:
                continue
            end = affordable(terms.instances, start, start + shortest, end)
            placement = fits(terms.instances, start, end) if end is not None else None
            if end is not None and placement is not None:
                return offer_for(start, terms.instances, placement, end)
        return None

    exact = fits(terms.instances, terms.start, terms.end)
    if exact is not None and within_budget(asked_time := offer_for(terms.start, terms.instances, exact)):
        return Decision(Reply.ACCEPT, asked_time)
    if terms.flexible:
        chosen = chosen_within_freedom()
        if chosen is not None:
            return Decision(Reply.ACCEPT, chosen)

    if exact is None:
        # Why nothing inside the freedom fits: the stretches short of room over every start allowed.
        last = min(terms.last_start, latest)  # a latest start beyond the horizon is tried only up to it
        why = explain_shortage(view, size, terms.instances, terms.start, max(last, terms.start) + shortest, at, reservation_id)
        if not why and terms.flexible:
            why = explain_shortage(view, size, terms.instances, terms.start, terms.end, at, reservation_id)

    candidates: list[Offer] = []
    shown: list[Offer] = []  # kinds of alternative a COUNTER always shows when there are any

    def consider(start: datetime, most: int) -> None:
        """Offer as many instances as fit at `start` (from `least` up), for the longest allowed
        duration that fits, cheapest within budget."""
        for instances in range(min(most, terms.instances), least - 1, -1):
            end = longest_fit(instances, start, start + shortest, start + terms.duration)
            if end is None:
                continue
            placement = fits(instances, start, end)
            assert placement is not None
            offer = offer_for(start, instances, placement, end)
            candidates.append(offer)
            if within_budget(offer):
                return
            cut = affordable(instances, start, start + shortest, end) if terms.flexible else None
            if cut is not None and (cut_placement := fits(instances, start, cut)) is not None:
                candidates.append(offer_for(start, instances, cut_placement, cut))
                return

    if exact is not None:
        # Only the price stood in the way: the asked time at the policy's price is an alternative.
        shown.append(offer_for(terms.start, terms.instances, exact))
    consider(terms.start, most_placeable(view, per_instance, terms.start, terms.start + shortest, at, reservation_id))
    for direction in (
        later_starts(view, terms.start, latest, at),
        earlier_starts(view, terms.start, shortest, at, at),
    ):
        best_count = least - 1
        within = takewhile(lambda start: start <= latest, direction)
        for start, n in placeable_starts(view, per_instance, within, shortest, at, reservation_id):
            if n > best_count:
                consider(start, n)
                best_count = n
            if n >= terms.instances:
                break

    # The asked start, every asked instance, for less time than allowed: the longest that fits.
    asked_end = terms.start + shortest
    shorter = longest_fit(terms.instances, terms.start, terms.start, asked_end)
    if shorter is not None and terms.start < shorter < asked_end:
        placement = fits(terms.instances, terms.start, shorter)
        assert placement is not None
        shown.append(offer_for(terms.start, terms.instances, placement, shorter))

    ranked = rank(candidates + shown, terms, within_budget)
    if not ranked:
        return Decision(
            Reply.REJECT,
            reason=f"no {least} {size.name} instances fit for {format_span(shortest)} within {policy.horizon.days} days",
        )
    answer = with_shown(ranked, shown, 1 + policy.max_alternatives)
    return Decision(Reply.COUNTER, answer[0], tuple(answer[1:]), why=why)


def with_shown(ranked: list[Offer], shown: list[Offer], room: int) -> list[Offer]:
    """The first `room` of `ranked`, the offers of `shown` among them (in place of the lowest
    ranked others), in ranked order."""
    def key(o: Offer):
        return (o.terms.start, o.terms.end, o.terms.instances)

    picked = ranked[:room]
    keys = {key(o) for o in picked}
    musts = {key(o) for o in shown}
    for must in shown:
        if key(must) in keys or room < 2:
            continue
        if len(picked) >= room:
            others = [i for i, o in enumerate(picked) if i > 0 and key(o) not in musts]
            if not others:
                continue
            keys.discard(key(picked.pop(others[-1])))
        picked.append(must)
        keys.add(key(must))
    order = {key(o): i for i, o in enumerate(ranked)}
    return sorted(picked, key=lambda o: order[key(o)])


def best_of_pools(decisions: Sequence[Decision], asked: Terms) -> Decision:
    """The answer of the pool that answers best, given each pool's own (in the order the
    pools were searched, at least one): the first ACCEPT; else the COUNTER whose offer ranks first as a
    pool's own COUNTERs rank (`rank`), its alternatives from that same pool, since the
    reservation stays there; else the first pool's REJECT."""
    if len(decisions) == 1:
        return decisions[0]
    accepted = [d for d in decisions if d.reply == Reply.ACCEPT]
    if accepted:
        return accepted[0]
    countered = [d for d in decisions if d.reply == Reply.COUNTER and d.offer is not None]
    if countered:
        def within_budget(o: Offer) -> bool:
            return asked.price is None or o.terms.price is None or o.terms.price <= asked.price

        # Reversed: of equal offers, `rank` keeps the last it is given, the first pool's here.
        firsts = rank([d.offer for d in reversed(countered) if d.offer is not None], asked, within_budget)
        return next(d for d in countered if d.offer is firsts[0])
    return decisions[0]


def answer_within_quotas(asked: Terms, limited: Terms, decision: Decision) -> Decision:
    """The answer to `asked` when the provider negotiated `limited` (the asked terms cut to
    the quotas, pex.domain.quotas): an ACCEPT of cut terms is a COUNTER, unless what it chose
    lies inside the freedom `asked` gave; every offer says what it changed from what the
    user asked."""
    if limited == asked or decision.offer is None:
        return decision

    def restated(offer: Offer) -> Offer:
        return replace(offer, changes=describe_changes(asked, offer.terms) + decision.why)

    offer = decision.offer
    if decision.reply == Reply.ACCEPT and asked.allows(offer.terms) and (
        asked.price is None or offer.terms.price is None or offer.terms.price <= asked.price
    ):
        return replace(decision, offer=restated(offer))
    return Decision(
        Reply.COUNTER, restated(decision.offer), tuple(restated(o) for o in decision.alternatives), decision.reason,
        decision.why,
    )


def rank(candidates: list[Offer], asked: Terms, within_budget) -> list[Offer]:
    """Best first: within budget; for at least the shortest duration allowed; nearest to the
    asked start (fewer optional instances at the asked time beat any move); more instances;
    longer; later rather than earlier on a tie."""
    unique = {(o.terms.start, o.terms.end, o.terms.instances): o for o in candidates}

    def key(o: Offer):
        shift = (o.terms.start - asked.start).total_seconds()
        return (
            not within_budget(o), o.terms.duration < asked.shortest, abs(shift), -o.terms.instances, -o.terms.duration,
            shift < 0,
        )

    return sorted(unique.values(), key=key)


def describe_changes(asked: Terms, offered: Terms) -> tuple[str, ...]:
    """What the provider replaced in the user's terms, in words a person reads."""
    changes = []
    if offered.duration != asked.duration:
        if asked.shortest <= offered.duration < asked.duration:
            changes.append(
                f"duration {format_span(offered.duration)} chosen, within the {format_span(asked.shortest)} "
                f"to {format_span(asked.duration)} you allowed"
            )
        else:
            changes.append(f"duration cut from {format_span(asked.duration)} to {format_span(offered.duration)}")
    if offered.start != asked.start:
        shift = offered.start - asked.start
        if asked.start < offered.start <= asked.last_start:
            changes.append(
                f"start {time_text(offered.start)} chosen, within the starts up to {time_text(asked.last_start)} you allowed"
            )
        else:
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

