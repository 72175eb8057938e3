"""The calendar's window: columns in the viewer's wall time, across a change of daylight saving."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from pex.http.portal.calendar import window

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_day_has_hour_columns_and_a_week_starts_on_monday():
    start, end, columns = window("day", date(2026, 3, 2), BERLIN)
    assert len(columns) == 24 and columns[0].label == "00" and (end - start).total_seconds() == 86400
    start, _, columns = window("week", date(2026, 3, 5), BERLIN)  # a Thursday
    assert start.date() == date(2026, 3, 2) and len(columns) == 28
    assert [c.label for c in columns[:5]] == ["Mon 2", "", "", "", "Tue 3"]


def test_the_day_clocks_go_forward_has_23_hours_and_a_month_keeps_calendar_days():
    start, end, columns = window("day", date(2026, 3, 29), BERLIN)
    utc = ZoneInfo("UTC")
    assert len(columns) == 23 and (end.astimezone(utc) - start.astimezone(utc)).total_seconds() == 23 * 3600
    _, _, columns = window("month", date(2026, 3, 15), BERLIN)
    assert len(columns) == 30 and all(c.start.hour == 0 for c in columns)
    assert [c.label for c in columns if c.first_of_group][:2] == ["16", "23"]  # Mondays
