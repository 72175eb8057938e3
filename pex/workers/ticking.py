"""The loop every ticking worker runs (the timer, the notifier): tick, wait, again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def tick_until_stopped(tick: Callable[[], object], stop: threading.Event, interval: float, what: str) -> None:
    """Call `tick` every `interval` seconds until `stop` is set. A failing tick is logged and
    the next one tries again (the store or the pool may be briefly unreachable); one failing
    because the worker is closing ends the loop quietly."""
    while not stop.is_set():
        try:
            tick()
        except Exception:
            if stop.is_set():
                return
            log.exception("%s tick failed", what)
        stop.wait(interval)
