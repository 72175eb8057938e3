"""Pricing policies: what an offer costs. Pure functions of the terms; pluggable by settings."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

from pex.domain.values import Size

CENT = Decimal("0.01")
# What prices are in unless PEX_CURRENCY says otherwise: the demo sizes' prices are the 2009
# EC2 rates they were modelled on. Prices are amounts; the currency is the operator's setting.
DEFAULT_CURRENCY = "USD"


class PricingPolicy(Protocol):
    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal: ...


class FlatRatePricing:
    """The default: each size's hourly price × instances × hours, rounded to the cent."""

    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal:
        hours = Decimal((end - start).total_seconds()) / Decimal(3600)
        return (size.hourly_price * instances * hours).quantize(CENT, rounding=ROUND_HALF_UP)


class PeakHourPricing(FlatRatePricing):
    """Flat rate, with hours that start on a weekday between 08:00 and 18:00 UTC costing more.

    An example of a policy that makes a price counter-offer meaningful: moving the start out
    of peak hours lowers the price.
    """

    def __init__(self, peak_factor: Decimal = Decimal("1.5")):
        self.peak_factor = peak_factor

    def quote(self, size: Size, instances: int, start: datetime, end: datetime) -> Decimal:
        base = super().quote(size, instances, start, end)
        if start.weekday() < 5 and 8 <= start.hour < 18:
            return (base * self.peak_factor).quantize(CENT, rounding=ROUND_HALF_UP)
        return base
