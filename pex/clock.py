"""Clocks. The domain never reads one: the application asks its injected clock and passes
the time on, and every event keeps the time its decision used."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


def system_clock() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: for tests and for simulations that jump between
    change-points."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("a clock keeps timezone-aware UTC time")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when.astimezone(UTC)
