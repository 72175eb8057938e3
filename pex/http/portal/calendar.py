"""The capacity calendar: nodes over time (a day, a week or a month), as a Gantt chart.

The window is in the viewer's wall time. The day view of today is the next 24 hours from the
start of the current hour (at 23:30 tomorrow morning is on the page, and a free slot is left
to pick); the day view of any other date is that calendar day, 00:00 to 00:00 (23 or 25 hours
on a day the clocks change). The week of today is the seven days from today (on a Sunday night
Monday is on the page); of any other date, Monday to Monday. A month is 30 days from the date.
Dates are limited to FIRST_DAY..LAST_DAY (`check_date`), far wider than anything bookable and
narrow enough that no date or time-zone arithmetic overflows.

Rows are nodes, and a last row the pool's totals; bars are the bookings and held offers on them, from the calendar read model
(`ReadModels.calendar`, pex.projections.readmodels). The window is cut into columns (hours for a day, quarter
days for a week, days for a month); each column of each node says how many CPUs and how much memory stay
free over all of it (capacity minus the peak of demand, `peak_demand`) and, when any are,
links to the new-reservation form with that column's start and end filled in (with
JavaScript, two clicks select a range of free columns of one node). A bar is labelled with
the reservation it belongs to, as its pages name it, when the viewer may know it.

Privacy: a user sees their own bookings by name; an administrator sees everyone's with the
owner; anyone else's booking is shown to other users only as "busy". Only what occupies
capacity now or later is drawn (`counts_at(now)`), so the past of the window shows nothing.

Cost: one pass over each node's allocations per column, O(N × C × k) for N nodes, C columns
and k allocations overlapping the window: a few thousand steps for the paper's testbed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pex.domain.node import peak_demand
from pex.domain.values import Resources
from pex.http.portal.pages import memory_text

UTC = UTC
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(2999, 12, 31)
VIEWS = {
    # name: (days shown, column width, label format of a column)
    "day": (1, timedelta(hours=1), "%H"),
    "week": (7, timedelta(hours=6), "%a %-d"),
    "month": (30, timedelta(days=1), "%-d"),
}


@dataclass(frozen=True)
class Column:
    start: datetime
    end: datetime
    label: str
    first_of_group: bool  # a new day (week view) or a new week (month view): a stronger line


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    free: Resources
    capacity: Resources
    past: bool

    @property
    def free_share(self) -> float:
        return self.free.cpus / self.capacity.cpus if self.capacity.cpus else 0.0


@dataclass(frozen=True)
class Bar:
    reservation_id: str | None  # None when the viewer may not know whose it is
    label: str
    title: str
    kind: str  # "mine", "other" (admin), "busy", and "held" for an offer still open
    start: datetime
    end: datetime
    left: float  # percent of the window
    width: float
    lane: int


@dataclass(frozen=True)
class Row:
    node: str
    capacity: Resources
    available: bool
    slots: tuple[Slot, ...]
    bars: tuple[Bar, ...]
    lanes: int


@dataclass(frozen=True)
class Calendar:
    view: str
    start: datetime
    end: datetime
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    totals: tuple[Slot, ...]  # the pool's: each column's free CPUs and memory, summed over the nodes
    previous: date | None  # None at the ends of FIRST_DAY..LAST_DAY
    next: date | None
    anchor: date  # the day the viewer asked for (the window holds it)
    of_today: bool  # the anchor is the viewer's today: the views it links to follow now, not the date
    now_left: float | None  # where "now" falls, in percent, if inside the window

    @property
    def last(self) -> datetime:
        """The last instant shown (the window is half-open)."""
        return self.end - timedelta(seconds=1)


class DateOutOfRange(ValueError):
    """A date the calendar does not show (outside FIRST_DAY..LAST_DAY)."""


def check_date(day: date) -> date:
    if not FIRST_DAY <= day <= LAST_DAY:
        raise DateOutOfRange(f"the calendar shows dates from {FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()}")
    return day


def window(view: str, anchor: date, tz: ZoneInfo, now: datetime | None = None) -> tuple[datetime, datetime, list[Column]]:
    """The window's bounds (local, aware) and columns. Given `now`, the day and week views of
    its own date begin at the current hour and today."""
    days, step, label = VIEWS[view]
    check_date(anchor)
    today = now is not None and now.astimezone(tz).date() == anchor
    if view == "week" and not today:
        anchor = anchor - timedelta(days=anchor.weekday())
    start_local = datetime.combine(anchor, time(0), tz)
    end_local = datetime.combine(anchor + timedelta(days=days), time(0), tz)
    if view == "day" and today and now is not None:
        # The hours already gone show nothing (the past is not drawn); the next morning does.
        # Floored in local time: a zone's offset may be a half or quarter hour.
        start_local = now.astimezone(tz).replace(minute=0, second=0, microsecond=0)
        end_local = (start_local.astimezone(UTC) + timedelta(hours=24)).astimezone(tz)
    columns, t = [], start_local
    while t < end_local:
        # Step in local wall time, so a day column stays a calendar day across a DST change.
        following = (datetime.combine(t.date() + step, time(0), tz) if step >= timedelta(days=1)
                     else (t.astimezone(UTC) + step).astimezone(tz))
        first = ((view == "week" and t.hour == 0) or (view == "month" and t.weekday() == 0)
                 or (view == "day" and t.hour == 0 and t != start_local))
        # A week names each day once, over its four quarter-day columns.
        text = t.strftime(label) if view != "week" or first else ""
        columns.append(Column(t, min(following, end_local), text, first))
        t = following
    return start_local, end_local, columns


def build(
    view: str,
    anchor: date,
    tz: ZoneInfo,
    now: datetime,
    nodes: list,
    allocations_of,
    owner_of,
    viewer: str,
) -> Calendar:
    """`nodes` have a name, capacity and availability (NodeRow), `allocations_of(name)` gives a
    node's allocations (CalendarEntry or NodeAllocation: start, end, instances, per_instance,
    is_hold, counts_at), `owner_of(id)` gives
    (owner, size name) of a booking the viewer may name (their own, or any for admins), else None."""
    start, end, columns = window(view, anchor, tz, now)
    # In UTC: Python subtracts two times of one zone by their wall clocks, which a day of a
    # daylight-saving change would get wrong by an hour.
    first, last = start.astimezone(UTC), end.astimezone(UTC)
    total = (last - first).total_seconds()

    def percent(t: datetime) -> float:
        return max(0.0, min(100.0, (t - first).total_seconds() / total * 100))

    rows = []
    for node in nodes:
        allocations = [a for a in allocations_of(node.name) if a.start < end and a.end > start and a.counts_at(now)]
        slots = []
        for c in columns:
            past = c.end <= now
            from_ = max(c.start, now) if not past else c.start
            used = peak_demand(allocations, from_, c.end) if not past else Resources()
            free = node.capacity - used if node.available else Resources()
            slots.append(Slot(c.start, c.end, free, node.capacity, past))
        bars = []
        lane_ends: list[datetime] = []
        for a in sorted(allocations, key=lambda a: (a.start, a.end)):
            lane = next((i for i, e in enumerate(lane_ends) if e <= a.start), len(lane_ends))
            if lane == len(lane_ends):
                lane_ends.append(a.end)
            else:
                lane_ends[lane] = a.end
            owner, size = owner_of(a.reservation_id) or (None, None)
            what = f"{a.instances} × {size or f'{a.per_instance.cpus} CPU'}"
            demand = a.demand
            uses = f"{demand.cpus} CPU, {memory_text(demand.memory_mb)}"
            # The reservation is named as its pages name it (the first 8 hex digits of its id).
            name = short_id(a.reservation_id)
            if owner is None:
                kind, label, rid, title = "busy", "busy", None, f"busy ({uses})"
            elif owner == viewer:
                kind, label, rid = "mine", f"yours: {what} · {name}", str(a.reservation_id)
                title = f"Reservation {name}, yours: {what} ({uses})"
            else:
                kind, label, rid = "other", f"{owner}: {what} · {name}", str(a.reservation_id)
                title = f"Reservation {name}, {owner}'s: {what} ({uses})"
            if a.is_hold:
                kind, label, title = f"{kind} held", f"{label} (offer)", f"{title}, an offer held"
            span = f"{a.start.astimezone(tz):%a %-d %b %H:%M} – {a.end.astimezone(tz):%a %-d %b %H:%M %Z}"
            bars.append(Bar(rid, label, f"{title}, {span}", kind, a.start, a.end, percent(a.start),
                            max(percent(a.end) - percent(a.start), 0.4), lane))
        rows.append(Row(node.name, node.capacity, node.available, tuple(slots), tuple(bars), max(1, len(lane_ends))))
    totals = tuple(
        Slot(c.start, c.end, sum((r.slots[k].free for r in rows), Resources()),
             sum((r.capacity for r in rows if r.available), Resources()), c.end <= now)
        for k, c in enumerate(columns)
    )
    days = VIEWS[view][0]
    first_day = start.date()
    # From today's day or week, "Earlier" is the calendar day or the Monday week before now:
    # a step of a whole window back would skip the days between its Monday and today.
    back = timedelta(days=1) if view != "month" and now.astimezone(tz).date() == anchor else timedelta(days=days)
    return Calendar(
        view=view,
        start=start,
        end=end,
        columns=tuple(columns),
        rows=tuple(rows),
        totals=totals,
        previous=_within(first_day - back),
        next=_within(first_day + timedelta(days=days)),
        anchor=anchor,  # the day asked for: switching views keeps it in sight
        # A page of today clicked after midnight would otherwise open yesterday, all past.
        of_today=now.astimezone(tz).date() == anchor,
        now_left=percent(now) if start <= now < end else None,
    )


def short_id(reservation_id) -> str:
    return str(reservation_id)[:8].upper()


def _within(day: date) -> date | None:
    return day if FIRST_DAY <= day <= LAST_DAY else None
