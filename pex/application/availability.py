"""Availability without a hold: when `count` instances of a size are free, and at what price.

A query, not a command: it reads the capacity timeline (brought up to the log's head, as a
proposal's evaluation does) and records nothing, so asking costs the pool nothing and a
window found may be taken by someone else before it is proposed for."""

from __future__ import annotations

from datetime import datetime, timedelta

from pex.application.core import Core
from pex.application.errors import InvalidQuery
from pex.application.views import WindowView
from pex.domain.availability import free_windows
from pex.domain.errors import InvalidProposal
from pex.domain.pricing import quote_in

# The most windows one query answers, and the default; its range defaults to a week ahead.
MAX_WINDOWS = 50
DEFAULT_WINDOWS = 5
DEFAULT_RANGE = timedelta(days=7)


class Availability(Core):
    """Free windows for what a user is about to propose."""

    def availability(
        self,
        user_id: str,
        size: str,
        count: int,
        duration: timedelta,
        earliest: datetime | None = None,
        latest: datetime | None = None,
        limit: int = DEFAULT_WINDOWS,
    ) -> list[WindowView]:
        """Up to `limit` windows, earliest first, of starts in [earliest, latest] (a start in
        the past means now, rounded up to the second; `latest` defaults to a week after
        `earliest`) from which `count` instances of `size` fit for `duration`. Starts
        open as far ahead as the user's horizon (pex.domain.quotas), as for a proposal."""
        now = self.clock()
        catalogue = self._catalogue()
        try:
            chosen = catalogue.size(size)
        except InvalidProposal as unknown:
            raise InvalidQuery("type", unknown.detail) from None
        policy = self._policy_under(catalogue.quotas_for(user_id))
        if not 1 <= count <= policy.max_instances:
            raise InvalidQuery("count", f"from 1 to {policy.max_instances} instances")
        if not timedelta(0) < duration <= policy.max_duration:
            raise InvalidQuery("duration", f"from 1 ms to {policy.max_duration.days} days")
        if not 1 <= limit <= MAX_WINDOWS:
            raise InvalidQuery("limit", f"from 1 to {MAX_WINDOWS} windows")
        soonest = now.replace(microsecond=0) + (timedelta(seconds=1) if now.microsecond else timedelta(0))
        start = soonest if earliest is None or earliest < soonest else earliest
        horizon = now + policy.horizon
        if start > horizon:
            raise InvalidQuery("from", f"starts open at most {policy.horizon.days} days ahead")
        end = min(start + DEFAULT_RANGE, horizon) if latest is None else latest
        if end < start:
            raise InvalidQuery("to", "is before from")
        if end > horizon:
            raise InvalidQuery("to", f"starts open at most {policy.horizon.days} days ahead")
        self.follow()
        with self._follow_lock:
            # Each pool's windows: a reservation's instances all live in one pool. Of one
            # window found in several, the pool with the most room says what is available.
            found: dict[tuple[datetime, datetime], WindowView] = {}
            pools = self.timeline.pools()
            for pool in pools if len(pools) > 1 else [None]:
                view = self._view_in(pool)
                for w in free_windows(view, chosen.resources, count, duration, start, end, now, limit):
                    known = found.get((w.start, w.end))
                    if known is None or known.available < w.available:
                        price = quote_in(self.pricing, view, chosen, count, w.start, w.end, now)
                        found[(w.start, w.end)] = WindowView(w.start, w.end, w.available, price)
            return sorted(found.values(), key=lambda w: (w.start, w.end))[:limit]
