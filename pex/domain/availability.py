"""Availability without a hold: from which starts `count` instances of a size fit, and how many.

A pure search over a CapacityView (pex.domain.placement), the same picture of free capacity
that placement decides on, so a window found here is one a proposal for it would be offered
(unless someone takes the capacity first: nothing is held).

Which starts are tried. The free capacity of a node over [s, s + d), as the start s moves
later, changes only when s or s + d crosses a change point of the view (an instant where
some node's free capacity changes). Between two change points, s + d crossing one can only
add demand to the window (the peak never falls when the window takes in more), and s
crossing none removes none: a start that does not fit stays unfit until s itself reaches
the next change point. So the earliest fitting start at or after any instant t is t itself
or a change point after t, and trying `earliest` and every change point up to `latest`
misses no start at which fitting begins, at any granularity. The candidates that fit are the
windows, earliest first; each says how many instances would fit from it (best fit over the
nodes, each node judged for the whole interval, as `place` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pex.domain.placement import CapacityView, most_placeable
from pex.domain.values import Resources


@dataclass(frozen=True)
class Window:
    """`available` (≥ the count asked) instances fit on the pool for all of [start, end)."""

    start: datetime
    end: datetime
    available: int


def free_windows(
    view: CapacityView,
    per_instance: Resources,
    count: int,
    duration: timedelta,
    earliest: datetime,
    latest: datetime,
    at: datetime,
    limit: int,
) -> list[Window]:
    """At most `limit` windows of `duration` starting in [earliest, latest] in which `count`
    instances of `per_instance` fit, earliest first, seen at decision time `at` (holds that
    lapsed by then are free). Costs one placement query per change point tried."""
    if count < 1 or limit < 1 or duration <= timedelta(0) or latest < earliest:
        return []
    windows: list[Window] = []
    for start in (earliest, *view.change_points(earliest, latest, at)):
        end = start + duration
        available = most_placeable(view, per_instance, start, end, at)
        if available >= count:
            windows.append(Window(start, end, available))
            if len(windows) == limit:
                break
    return windows
