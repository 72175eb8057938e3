"""Run a workload through the real application with a clock that jumps from one request to
the next, for one provider strategy, and measure what users and the provider got.

The simulated users are simple and the same for every strategy: take an ACCEPT; take a
COUNTER (or one of the alternatives beside it, by proposing it back) if its start is within
their flexibility, it keeps their fixed instances and it is within their budget; otherwise
walk away.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pex.application import PexApplication
from pex.clock import ManualClock
from pex.domain.errors import DomainError
from pex.domain.negotiation import NegotiationPolicy, Negotiator, evaluate
from pex.domain.placement_policies import PLACEMENT_POLICIES, placement_policy
from pex.domain.pricing import FlatRatePricing, MarketPricing, PeakHourPricing, PricingPolicy
from pex.domain.values import Offer, Reply, Terms
from pex.simulation.strategies import STRATEGIES
from pex.simulation.workload import SIZES, Request

EPOCH = datetime(2027, 1, 4, tzinfo=UTC)
PROVIDERS = {"exact": "reject-only exact (Haizea, Blazar, Slurm)", "openpex": "original OpenPEX", "pex": "PEX"}


@dataclass(frozen=True)
class Result:
    provider: str
    requests: int
    booked: int
    utilization: float
    mean_start_delay_hours: float
    mean_rounds: float
    revenue: Decimal
    seconds: float

    @property
    def acceptance_rate(self) -> float:
        return self.booked / self.requests if self.requests else 0.0


def acceptable(offer: Offer, r: Request, asked: Terms) -> bool:
    t = offer.terms
    return (
        abs(t.start - asked.start) <= r.flexibility
        and t.instances_fixed == r.fixed
        and (r.max_price is None or t.price is None or t.price <= r.max_price)
    )


# What a simulation builds its application with (pex.bootstrap.build_simulated_application).
Build = Callable[[ManualClock, Negotiator, NegotiationPolicy, PricingPolicy | None], PexApplication]
PRICINGS = {"flat": FlatRatePricing, "peak": PeakHourPricing, "market": MarketPricing}


def simulate(
    requests: list[Request], provider: str, build: Build, placement: str = "best-fit", pricing: str = "flat",
    seed: int = 0, label: str | None = None,
) -> Result:
    """One provider's strategy on the trace, with the placement policy `placement` (seeded
    with `seed` if random) and the pricing policy `pricing` (PEX_PLACEMENT, PEX_PRICING)."""
    negotiator = evaluate if provider == "pex" else STRATEGIES[provider]
    clock = ManualClock(EPOCH)
    chosen = placement_policy(placement, random.Random(seed))
    policy = NegotiationPolicy(horizon=timedelta(days=30), max_duration=timedelta(days=30), placement=chosen)
    app = build(clock, negotiator, policy, PRICINGS[pricing]())
    app.install_demo_pool()
    started = time.perf_counter()
    booked, rounds, delays, revenue, cpu_seconds = 0, 0, [], Decimal(0), 0.0
    ordered = sorted(requests, key=lambda r: r.arrival)
    window_end = EPOCH + (ordered[-1].arrival if ordered else timedelta(0))
    for r in ordered:
        clock.set(EPOCH + r.arrival)
        asked = Terms(r.size, r.template, r.fixed, r.optional, EPOCH + r.start, EPOCH + r.start + r.duration, r.max_price)
        rid = app.initiate_reservation(f"user{r.id}")
        try:
            outcome = app.submit_proposal(rid, asked)
            rounds += 1
            if outcome.reply == Reply.COUNTER:
                view = outcome.reservation
                assert view.offer is not None  # a COUNTER carries the provider's offer
                if acceptable(view.offer, r, asked):
                    outcome = app.accept_counter(rid)
                else:
                    choice = next((a for a in view.alternatives if acceptable(a, r, asked)), None)
                    if choice is None:
                        app.decline(rid)
                        continue
                    outcome = app.counter(rid, choice.terms.but(price=r.max_price))
                    rounds += 1
                    if outcome.reply != Reply.ACCEPT:
                        app.decline(rid) if outcome.reply == Reply.COUNTER else None
                        continue
            if outcome.reply in (Reply.ACCEPT, Reply.CONFIRM_REQUEST):
                confirmed = app.confirm(rid)
                if confirmed.reply == Reply.REQUEST_SUCCESS:
                    offer = confirmed.reservation.offer
                    assert offer is not None  # a confirmed reservation keeps the offer it confirmed
                    t = offer.terms
                    booked += 1
                    delays.append(abs((t.start - asked.start).total_seconds()) / 3600)
                    revenue += t.price or Decimal(0)
                    overlap = (min(t.end, window_end) - max(t.start, EPOCH)).total_seconds()
                    cpu_seconds += max(overlap, 0) * SIZES[t.size].cpus * t.instances
        except DomainError:
            continue
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
    )


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
