"""The fluid reference: what the pool could take if it were one bin.

The pool's nodes are summed into one bin of their total CPUs and memory, so packing never
loses anything: an instance may take CPUs of one node and memory of another. Requests are
taken in arrival order, as the users send them, and a request is accepted iff its fixed
instances fit in the bin (summed demand of everything accepted before, at every instant of
its interval) at some start within the user's flexibility of the asked start (not before its
arrival, not beyond the provider's horizon), the nearest such start first, later before
earlier on a tie; as many of its optional instances are granted there as fit and its budget
allows at the flat rate. Nothing is ever moved in time once accepted.

It is no bound on what a scheduler could do (a different order, or moving earlier requests
in time, could accept more), but it is what any placement onto nodes loses nothing against:
the gap between it and a provider is what node boundaries and the negotiation cost.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta
from decimal import Decimal

from pex.domain.pricing import FlatRatePricing
from pex.domain.values import Resources
from pex.simulation.result import PROVIDERS, Result
from pex.simulation.workload import SIZES, Request


class Bin:
    """Summed demand over time as a step function: sorted instants, and the level from each on."""

    def __init__(self, capacity: Resources):
        self.capacity = capacity
        self.times: list[datetime] = []
        self.levels: list[Resources] = []

    def peak(self, start: datetime, end: datetime) -> Resources:
        i = bisect_right(self.times, start) - 1
        peak = self.levels[i] if i >= 0 else Resources()
        for j in range(max(i + 1, 0), bisect_left(self.times, end)):
            peak = Resources.peak(peak, self.levels[j])
        return peak

    def fits(self, demand: Resources, start: datetime, end: datetime) -> bool:
        return (self.peak(start, end) + demand).fits_in(self.capacity)

    def _key(self, t: datetime) -> int:
        i = bisect_left(self.times, t)
        if i == len(self.times) or self.times[i] != t:
            self.times.insert(i, t)
            self.levels.insert(i, self.levels[i - 1] if i > 0 else Resources())
        return i

    def add(self, demand: Resources, start: datetime, end: datetime) -> None:
        i, j = self._key(start), self._key(end)
        for k in range(i, j):
            self.levels[k] = self.levels[k] + demand

    def starts(self, earliest: datetime, latest: datetime, duration: timedelta) -> set[datetime]:
        """Where a feasible start may be: the window's ends, and where demand steps (an
        interval fits first just after a step down, or ends just at a step up)."""
        lo, hi = bisect_left(self.times, earliest - duration), bisect_right(self.times, latest + duration)
        points = {earliest, latest}
        for t in self.times[lo:hi]:
            points.update(s for s in (t, t - duration) if earliest <= s <= latest)
        return points


def fluid_reference(requests: list[Request], capacity: Resources, epoch: datetime, horizon: timedelta) -> Result:
    """Run the requests through the one bin; the same Result a provider's simulation gives."""
    started = time.perf_counter()
    pricing = FlatRatePricing()
    bin = Bin(capacity)
    ordered = sorted(requests, key=lambda r: r.arrival)
    window_end = epoch + (ordered[-1].arrival if ordered else timedelta(0))
    booked, delays, revenue, cpu_seconds = 0, [], Decimal(0), 0.0
    for r in ordered:
        size = SIZES[r.size]
        per = Resources(size.cpus, size.memory_mb)  # CPUs and memory: disk never binds on the testbed
        arrival, asked = epoch + r.arrival, epoch + r.start
        earliest, latest = max(arrival, asked - r.flexibility), min(asked + r.flexibility, arrival + horizon)
        if earliest > latest:
            continue
        candidates = sorted(bin.starts(earliest, latest, r.duration), key=lambda s: (abs(s - asked), s < asked))
        start = next((s for s in candidates if bin.fits(per * r.fixed, s, s + r.duration)), None)
        if start is None:
            continue
        end = start + r.duration
        instances = r.fixed
        while instances < r.fixed + r.optional and bin.fits(per * (instances + 1), start, end) and (
            r.max_price is None or pricing.quote(size, instances + 1, start, end) <= r.max_price
        ):
            instances += 1
        bin.add(per * instances, start, end)
        booked += 1
        delays.append(abs((start - asked).total_seconds()) / 3600)
        revenue += pricing.quote(size, instances, start, end)
        overlap = (min(end, window_end) - max(start, epoch)).total_seconds()
        cpu_seconds += max(overlap, 0) * size.cpus * instances
    return Result(
        provider=PROVIDERS["fluid"],
        requests=len(ordered),
        booked=booked,
        utilization=cpu_seconds / (capacity.cpus * max((window_end - epoch).total_seconds(), 1)),
        mean_start_delay_hours=sum(delays) / len(delays) if delays else 0.0,
        mean_rounds=1.0,
        revenue=revenue,
        seconds=time.perf_counter() - started,
    )
