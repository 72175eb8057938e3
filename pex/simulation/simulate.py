"""Run a workload through the real application with a clock that jumps from one request to
the next, for one provider strategy, and measure what users and the provider got.

The simulated users are the same for every provider. Each user takes an ACCEPT. To a
COUNTER, the user takes the offer, or one of the alternatives beside it (by proposing it
back), if its start is within their flexibility of the start they asked for, it keeps their
fixed instances and it is within their budget. Otherwise they counter-propose terms of their
own, drawn from the provider's offers: the start of the offer nearest to theirs, moved back
within their flexibility, with the instances it granted (never fewer than their fixed ones);
then, once that was tried, their fixed instances alone at the start they asked for. They walk
away when every such proposal was made, or when the provider's rounds are spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pex.application import PexApplication
from pex.application.views import Outcome
from pex.clock import ManualClock
from pex.domain.catalogue import DEMO_NODES
from pex.domain.errors import DomainError
from pex.domain.negotiation import NegotiationPolicy, Negotiator, evaluate
from pex.domain.placement_policies import PLACEMENT_POLICIES, placement_policy
from pex.domain.pricing import FlatRatePricing, MarketPricing, PeakHourPricing, PricingPolicy
from pex.domain.values import Offer, Reply, Resources, Terms
from pex.simulation.fluid import fluid_reference
from pex.simulation.result import PROVIDERS, Result
from pex.simulation.strategies import STRATEGIES
from pex.simulation.workload import SIZES, Request

__all__ = ["EPOCH", "PROVIDERS", "Result", "acceptable", "simulate"]

EPOCH = datetime(2027, 1, 4, tzinfo=UTC)
POLICY = NegotiationPolicy(horizon=timedelta(days=30), max_duration=timedelta(days=30))


def acceptable(offer: Offer, r: Request, asked: Terms) -> bool:
    t = offer.terms
    return (
        abs(t.start - asked.start) <= r.flexibility
        and t.instances_fixed == r.fixed
        and (r.max_price is None or t.price is None or t.price <= r.max_price)
    )


def own_counter(offers: list[Offer], r: Request, asked: Terms, tried: set[tuple[datetime, int]], now: datetime) -> Terms | None:
    """The user's own proposal in answer to offers none of which they take (see the module)."""
    wanted: list[tuple[datetime, int]] = []
    for offer in sorted(offers, key=lambda o: abs(o.terms.start - asked.start)):
        shift = offer.terms.start - asked.start
        kept = max(-r.flexibility, min(r.flexibility, shift))
        wanted.append((max(asked.start + kept, now), max(offer.terms.instances, r.fixed)))
    wanted.append((asked.start, r.fixed))
    for start, instances in wanted:
        if (start, instances) not in tried:
            return asked.but(
                start=start, end=start + asked.duration, instances_option=instances - r.fixed, price=r.max_price
            )
    return None


def negotiate(app: PexApplication, r: Request, asked: Terms, now: datetime, rounds: int) -> tuple[Outcome | None, int]:
    """One user's negotiation, to a confirmation or walking away: (the confirmation, proposals made)."""
    rid = app.initiate_reservation(f"user{r.id}")
    outcome, made = app.submit_proposal(rid, asked), 1
    tried = {(asked.start, asked.instances)}
    while outcome.reply == Reply.COUNTER:
        view = outcome.reservation
        assert view.offer is not None  # a COUNTER carries the provider's offer
        if acceptable(view.offer, r, asked):
            outcome = app.accept_counter(rid)
            break
        choice = next((a for a in view.alternatives if acceptable(a, r, asked)), None)
        terms = choice.terms.but(price=r.max_price) if choice else own_counter(
            [view.offer, *view.alternatives], r, asked, tried, now
        )
        if terms is None or made >= rounds:
            app.decline(rid)
            return None, made
        tried.add((terms.start, terms.instances))
        outcome, made = app.counter(rid, terms), made + 1
    if outcome.reply not in (Reply.ACCEPT, Reply.CONFIRM_REQUEST):
        return None, made
    confirmed = app.confirm(rid)
    return (confirmed if confirmed.reply == Reply.REQUEST_SUCCESS else None), made


# What a simulation builds its application with (pex.bootstrap.build_simulated_application).
Build = Callable[[ManualClock, Negotiator, NegotiationPolicy, PricingPolicy | None], PexApplication]
PRICINGS = {"flat": FlatRatePricing, "peak": PeakHourPricing, "market": MarketPricing}


def pool_capacity() -> Resources:
    total = Resources()
    for _, capacity in DEMO_NODES:
        total = total + capacity
    return total


def simulate(
    requests: list[Request], provider: str, build: Build, placement: str = "best-fit", pricing: str = "flat",
    seed: int = 0, label: str | None = None,
) -> Result:
    """One provider's strategy on the trace, with the placement policy `placement` (seeded
    with `seed` if random) and the pricing policy `pricing` (PEX_PLACEMENT, PEX_PRICING).
    "fluid" is no provider but the reference of a pool with no node boundaries."""
    if provider == "fluid":
        return fluid_reference(requests, Resources(pool_capacity().cpus, pool_capacity().memory_mb), EPOCH, POLICY.horizon)
    negotiator = evaluate if provider in ("pex", "pex-no-repack") else STRATEGIES[provider]
    clock = ManualClock(EPOCH)
    policy = replace(POLICY, placement=placement_policy(placement, random.Random(seed)))
    app = build(clock, negotiator, policy, PRICINGS[pricing]())
    app.repack = provider == "pex"
    app.install_demo_pool()
    started = time.perf_counter()
    booked, rounds, delays, revenue, cpu_seconds = 0, 0, [], Decimal(0), 0.0
    ordered = sorted(requests, key=lambda r: r.arrival)
    window_end = EPOCH + (ordered[-1].arrival if ordered else timedelta(0))
    for r in ordered:
        now = EPOCH + r.arrival
        clock.set(now)
        asked = Terms(r.size, r.template, r.fixed, r.optional, EPOCH + r.start, EPOCH + r.start + r.duration, r.max_price)
        made = 1
        try:
            confirmed, made = negotiate(app, r, asked, now, POLICY.max_rounds)
        except DomainError:
            confirmed = None
        rounds += made
        if confirmed is None:
            continue
        offer = confirmed.reservation.offer
        assert offer is not None  # a confirmed reservation keeps the offer it confirmed
        t = offer.terms
        booked += 1
        delays.append(abs((t.start - asked.start).total_seconds()) / 3600)
        revenue += t.price or Decimal(0)
        overlap = (min(t.end, window_end) - max(t.start, EPOCH)).total_seconds()
        cpu_seconds += max(overlap, 0) * SIZES[t.size].cpus * t.instances
    capacity_seconds = sum(n.capacity.cpus for n in app.nodes()) * max((window_end - EPOCH).total_seconds(), 1)
    return Result(
        provider=label or PROVIDERS[provider],
        requests=len(ordered),
        booked=booked,
        utilization=cpu_seconds / capacity_seconds,
        mean_start_delay_hours=sum(delays) / len(delays) if delays else 0.0,
        mean_rounds=rounds / len(ordered) if ordered else 0.0,
        revenue=revenue,
        seconds=time.perf_counter() - started,
        moves=repacked_instances(app),
    )


def repacked_instances(app: PexApplication) -> int:
    """How many instances re-packing moved to another node, from the log."""
    topic = "pex.domain.instance:Instance.Repacked"
    count, position = 0, 1
    while True:
        batch = app.recorder.select_notifications(position, 1000, topics=[topic])
        if not batch:
            return count
        count += len(batch)
        position = batch[-1].id + 1


def compare_policies(
    requests: list[Request], build: Build, placements: tuple[str, ...] = PLACEMENT_POLICIES,
    pricings: tuple[str, ...] = ("flat", "market"), seed: int = 0,
) -> list[Result]:
    """PEX's negotiation on the same trace under every placement × pricing policy."""
    return [
        simulate(requests, "pex", build, placement, pricing, seed, label=f"PEX, {placement}, {pricing}")
        for placement in placements
        for pricing in pricings
    ]
