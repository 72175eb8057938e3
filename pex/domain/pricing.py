"""Pricing policies: what an offer costs. Pure functions of the terms; pluggable by settings."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from typing import Protocol, TypeGuard, runtime_checkable
from uuid import UUID

from pex.domain.placement import CapacityView
from pex.domain.values import Size

CENT = Decimal("0.01")
# What prices are in unless PEX_CURRENCY says otherwise: the demo sizes' prices are the 2009
# EC2 rates they were modelled on. Prices are amounts; the currency is the operator's setting.
DEFAULT_CURRENCY = "USD"


class PricingPolicy(Protocol):
    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal: ...


class FlatRatePricing:
    """The default: each size's hourly price × instances × hours, rounded to the cent."""

    name = "flat"

    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal:
        hours = Decimal((end - start).total_seconds()) / Decimal(3600)
        return (size.hourly_price * instances * hours).quantize(CENT, rounding=ROUND_HALF_UP)


class PeakHourPricing(FlatRatePricing):
    """Flat rate, with hours that start on a weekday between 08:00 and 18:00 UTC costing more.

    An example of a policy that makes a price counter-offer meaningful: moving the start out
    of peak hours lowers the price.
    """

    name = "peak"

    def __init__(self, peak_factor: Decimal = Decimal("1.5")):
        self.peak_factor = peak_factor

    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal:
        base = super().quote(size, instances, start, end)
        if start.weekday() < 5 and 8 <= start.hour < 18:
            return (base * self.peak_factor).quantize(CENT, rounding=ROUND_HALF_UP)
        return base


@runtime_checkable
class UtilizationPricing(PricingPolicy, Protocol):
    """A policy whose price depends on how much of the pool is taken over the interval: it is
    quoted through `quote_in`, which reads that from the capacity view."""

    def quote_at(self, size: Size, instances: int, start: datetime, end: datetime, utilization: float) -> Decimal: ...


class MarketPricing(FlatRatePricing):
    """A utilization-driven (market) price: the flat price × a factor that grows linearly with
    the pool's utilization over the asked interval,

        price = flat × (floor + (ceiling − floor) × u),   u in [0, 1],

    where u is the larger of the CPU and the memory share of the pool taken at each node's
    busiest instant of [start, end), before this request (pool_utilization). With the
    defaults an idle pool sells at half the flat rate and a full one at twice it; a user
    offered a busy interval is countered with cheaper, quieter ones when they exist."""

    name = "market"

    def __init__(self, floor: Decimal = Decimal("0.5"), ceiling: Decimal = Decimal("2.0")):
        self.floor, self.ceiling = floor, ceiling

    def quote_at(self, size: Size, instances: int, start: datetime, end: datetime, utilization: float) -> Decimal:
        u = Decimal(str(round(min(max(utilization, 0.0), 1.0), 4)))
        factor = self.floor + (self.ceiling - self.floor) * u
        return (super().quote(size, instances, start, end) * factor).quantize(CENT, rounding=ROUND_HALF_UP)

    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal:
        """Without a view of the pool: the price of a full one (never below a market price)."""
        return self.quote_at(size, instances, start, end, 1.0)


def pool_utilization(view: CapacityView, start: datetime, end: datetime, at: datetime, excluding: UUID | None = None) -> float:
    """The share of the pool taken over [start, end): for CPUs and memory apart, what each node
    has taken at its busiest instant of the interval, summed over the nodes that take
    reservations and divided by their capacity; the larger of the two. 0 for an empty pool."""
    cpus = memory = taken_cpus = taken_memory = 0
    for node in view.node_names():
        cap, free = view.capacity(node), view.free(node, start, end, at, excluding)
        cpus, memory = cpus + cap.cpus, memory + cap.memory_mb
        taken_cpus += max(cap.cpus - free.cpus, 0)
        taken_memory += max(cap.memory_mb - free.memory_mb, 0)
    return max(taken_cpus / cpus if cpus else 0.0, taken_memory / memory if memory else 0.0)


def quotes_by_utilization(pricing: PricingPolicy) -> TypeGuard[UtilizationPricing]:
    """Whether `pricing` is a UtilizationPricing, asked once per type (see
    pex.domain.placement.answers_fitting_counts)."""
    return _utilization_type(type(pricing))


@cache
def _utilization_type(pricing_type: type) -> bool:
    return issubclass(pricing_type, UtilizationPricing)


def quote_in(
    pricing: PricingPolicy, view: CapacityView, size: Size, instances: int, start: datetime, end: datetime,
    at: datetime, excluding: UUID | None = None,
) -> Decimal:
    """What `pricing` asks for the terms with the pool as `view` shows it at `at`."""
    if quotes_by_utilization(pricing):
        return pricing.quote_at(size, instances, start, end, pool_utilization(view, start, end, at, excluding))
    return pricing.quote(size, instances, start, end)


def pricing_name(pricing: PricingPolicy) -> str:
    """What PEX_PRICING calls the policy: its `name`, or module:Class for one of the operator's."""
    name = getattr(pricing, "name", None)
    return name if isinstance(name, str) else f"{type(pricing).__module__}:{type(pricing).__qualname__}"


def used_part(price: Decimal, start: datetime, end: datetime, released_at: datetime) -> Decimal:
    """What a reservation agreed at `price` for [start, end) costs when its user releases it
    at `released_at`: the used part pro rata (price × used time / agreed time, rounded half up
    to the cent), the unused part nothing. Released before it starts, it costs nothing; at or
    after its end, the whole price. Whatever policy quoted the price, the refund is of the
    same share of it, so a peak-hour or flat price is returned alike."""
    if released_at <= start:
        return Decimal("0.00")
    if released_at >= end:
        return price
    used = released_at - start
    return (price * Decimal(used.total_seconds()) / Decimal((end - start).total_seconds())).quantize(CENT, rounding=ROUND_HALF_UP)
