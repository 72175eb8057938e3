"""The simulator's sense of time: the wall clock, or a manual one that tests move by hand.

Only simulated behaviour reads it (when a booted guest reports its IP, record timestamps).
Network behaviour (latency, event.from's timeout) always uses real time, because the client
on the other end of the socket lives in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

# 2009-01-01T00:00:00Z, the year of the OpenPEX paper: a fixed start makes runs reproducible.
PAPER_EPOCH = 1230768000.0


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever time jumps (never, for a clock that just runs)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def subscribe(self, listener: Callable[[], None]) -> None:
        pass


class ManualClock:
    """Stands still until `advance` is called, so delays happen exactly when a test says."""

    def __init__(self, start: float = PAPER_EPOCH):
        self._now = start
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def subscribe(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(listener)
