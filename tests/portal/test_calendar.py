"""The calendar's window: columns in the viewer's wall time, across a change of daylight saving;
and the page at any hour of any day: late in the evening, just after midnight, at the end of a
month or a year, the night the clocks change, in zones either side of UTC (an injected clock,
so the hour the tests run at does not matter)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pex.clock import ManualClock
from pex.http.portal.calendar import LAST_DAY, window
from tests.support.portal import make_portal

BERLIN = ZoneInfo("Europe/Berlin")
UTC = UTC
H = timedelta(hours=1)


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


def test_today_is_the_next_24_hours_from_the_current_hour():
    now = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    start, end, columns = window("day", date(2026, 12, 2), BERLIN, now)
    assert start == datetime(2026, 12, 2, 23, 0, tzinfo=BERLIN) and end == start + 24 * H
    assert [c.label for c in columns[:3]] == ["23", "00", "01"] and columns[1].first_of_group
    # Any other day is still that calendar day.
    start, end, _ = window("day", date(2026, 12, 3), BERLIN, now)
    assert (start, end) == (datetime(2026, 12, 3, tzinfo=BERLIN), datetime(2026, 12, 4, tzinfo=BERLIN))


def test_the_week_of_today_is_the_seven_days_from_today():
    sunday_night = datetime(2027, 2, 28, 23, 45, tzinfo=UTC)
    start, end, columns = window("week", date(2027, 2, 28), ZoneInfo("UTC"), sunday_night)
    assert start.date() == date(2027, 2, 28) and end.date() == date(2027, 3, 7) and len(columns) == 28
    assert columns[4].label == "Mon 1"  # Monday is on the page
    start, _, _ = window("week", date(2027, 3, 3), ZoneInfo("UTC"), sunday_night)  # another date: its Monday
    assert start.date() == date(2027, 3, 1)


def test_earlier_and_later_from_today_leave_no_day_out():
    portal, v = portal_at(datetime(2026, 12, 2, 9, 0, tzinfo=UTC), "UTC")  # a Wednesday
    try:
        page = v.get("/calendar?view=week").text
        assert 'date=2026-12-01" rel="prev"' in page  # its Monday week: Mon 30 Nov - Sun 6 Dec
        assert 'date=2026-12-09" rel="next"' in page  # Mon 7 - Sun 13: today's week ended on Tue 8
        page = v.get("/calendar?view=day").text
        assert 'date=2026-12-01" rel="prev"' in page and 'date=2026-12-03" rel="next"' in page
    finally:
        portal.close()


def test_the_next_24_hours_are_24_columns_across_a_change_of_daylight_saving():
    for now, zone, hours in [
        (datetime(2027, 3, 28, 0, 30, tzinfo=UTC), "Europe/Berlin", ["01", "03", "04"]),  # 01:30 CET, then summer
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "America/New_York", ["01", "01", "02"]),  # 01:30 EDT: 01 twice
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "America/New_York", ["01", "02", "03"]),  # the second 01:30
    ]:
        tz = ZoneInfo(zone)
        start, end, columns = window("day", now.astimezone(tz).date(), tz, now)
        assert len(columns) == 24 and (end.astimezone(UTC) - start.astimezone(UTC)) == 24 * H
        assert start.astimezone(UTC) <= now < start.astimezone(UTC) + H
        assert [c.label for c in columns[:3]] == hours


# --- the page, at awkward instants ----------------------------------------------------------

INSTANTS = [
    # (now, the viewer's zone): the story of each is in its id
    pytest.param(datetime(2026, 12, 2, 23, 30, tzinfo=UTC), "UTC", id="23:30-UTC"),
    pytest.param(datetime(2026, 12, 2, 22, 30, tzinfo=UTC), "Europe/Berlin", id="23:30-Berlin"),
    pytest.param(datetime(2026, 12, 3, 0, 5, tzinfo=UTC), "UTC", id="00:05-UTC"),
    pytest.param(datetime(2026, 12, 3, 4, 5, tzinfo=UTC), "America/New_York", id="23:05-New-York"),
    pytest.param(datetime(2027, 2, 28, 23, 45, tzinfo=UTC), "UTC", id="month-end"),
    pytest.param(datetime(2026, 12, 31, 22, 59, tzinfo=UTC), "Europe/Berlin", id="year-end-Berlin"),
    pytest.param(datetime(2026, 12, 6, 23, 30, tzinfo=UTC), "UTC", id="sunday-night"),
    pytest.param(datetime(2027, 3, 27, 23, 30, tzinfo=UTC), "Europe/Berlin", id="spring-forward-Berlin"),
    pytest.param(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "Europe/Berlin", id="fall-back-first-02:30-Berlin"),
    pytest.param(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "Europe/Berlin", id="fall-back-second-02:30-Berlin"),
    pytest.param(datetime(2026, 11, 1, 3, 30, tzinfo=UTC), "America/New_York", id="fall-back-eve-New-York"),
    pytest.param(datetime(2026, 12, 2, 11, 50, tzinfo=UTC), "Pacific/Kiritimati", id="01:50-UTC+14"),
]


def portal_at(now: datetime, zone: str):
    portal = make_portal(clock=ManualClock(now))
    v = portal.user("alice")
    assert v.post("/preferences", {"tz": zone}).status_code == 303
    return portal, v


@pytest.mark.parametrize("now, zone", INSTANTS)
def test_the_day_view_shows_the_next_hours_with_a_free_slot_at_any_hour(now, zone):
    portal, v = portal_at(now, zone)
    try:
        soon = (now + 9 * H).replace(minute=0, second=0, microsecond=0)  # tomorrow morning, late at night
        portal.book("alice", "XLARGE", 1, soon)
        page = v.get("/calendar?view=day").text
        assert "yours: 1 × XLARGE" in page
        assert re.search(r'class="slot free"', page), "no free slot left to pick"
        assert 'class="now"' in page and page.count('class="slot past"') == 0  # the gone hours are not shown
        # The same page through its own "Day" link, which follows now rather than naming today's date.
        assert 'href="/calendar?view=day" aria-current="page"' in page
        assert "yours: 1 × XLARGE" in v.get("/calendar?view=day").text
    finally:
        portal.close()


def test_a_page_of_today_opened_before_midnight_and_clicked_after_it_shows_the_new_day():
    # The browser story at 23:59:30 in Berlin on New Year's Eve read the week before midnight and
    # clicked "Day" after it: a link naming the date opened 31 December, every hour of it gone.
    portal, v = portal_at(datetime(2026, 12, 31, 22, 59, 30, tzinfo=UTC), "Europe/Berlin")
    try:
        week = v.get("/calendar?view=week").text
        day_link = re.search(r'href="(/calendar\?view=day[^"]*)"', week).group(1).replace("&amp;", "&")
        portal.clock.advance(timedelta(minutes=1))  # 00:00:30 on 1 January
        day = v.get(day_link).text
        assert re.search(r'class="slot free"', day) and page_count_past(day) == 0
        # A date asked for by name is still that date, after midnight too: its links keep it.
        named = v.get("/calendar?view=week&date=2027-01-08").text
        assert 'href="/calendar?view=day&amp;date=2027-01-08"' in named
    finally:
        portal.close()


def page_count_past(page: str) -> int:  # the hours already gone, drawn greyed
    return page.count('class="slot past"')


@pytest.mark.parametrize("now, zone", INSTANTS)
def test_the_week_and_month_views_hold_now_at_any_hour(now, zone):
    portal, v = portal_at(now, zone)
    try:
        portal.book("alice", "SMALL", 1, now + timedelta(minutes=20), hours=0.5)
        for view in ("week", "month"):
            page = v.get(f"/calendar?view={view}").text
            assert "yours: 1 × SMALL" in page and 'class="now"' in page, view
            assert re.search(r'class="slot free"', page), view
    finally:
        portal.close()


# --- dates at the ends of the calendar -------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "3000-01-01", "1969-12-31"])
@pytest.mark.parametrize("view", ["day", "week", "month"])
def test_a_date_the_calendar_does_not_show_is_a_400_not_a_500(portal, view, day, zone):
    v = portal.user("alice")
    v.post("/preferences", {"tz": zone})
    portal.book("alice", "SMALL", 1, datetime(2026, 3, 2, 10, tzinfo=UTC))
    before = portal.application.list_reservations("alice")
    r = v.get(f"/calendar?view={view}&date={day}")
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "1970-01-01 to 2999-12-31" in r.text
    assert portal.application.list_reservations("alice") == before  # a read, and it changed nothing
    assert "yours: 1 × SMALL" in v.get("/calendar?view=day").text


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
@pytest.mark.parametrize("view", ["day", "week", "month"])
def test_the_first_and_last_days_show_and_link_no_further(portal, view, zone):
    v = portal.user("alice")
    v.post("/preferences", {"tz": zone})
    last = v.get(f"/calendar?view={view}&date={LAST_DAY.isoformat()}")
    assert last.status_code == 200 and 'rel="next"' not in last.text and 'rel="prev"' in last.text
    first = v.get(f"/calendar?view={view}&date=1970-01-01")
    assert first.status_code == 200 and 'rel="prev"' not in first.text and 'rel="next"' in first.text


# --- a time typed in the hour the clocks go back ----------------------------------------------


@pytest.mark.parametrize("now, typed, meant", [
    # Berlin, 25 October 2026: 02:00-03:00 comes twice, in summer time (+02) then in winter time (+01).
    pytest.param(datetime(2026, 10, 25, 0, 29, 50, tzinfo=UTC), "2026-10-25T02:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
                 id="first-02:30"),
    pytest.param(datetime(2026, 10, 25, 1, 29, 50, tzinfo=UTC), "2026-10-25T02:30", datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
                 id="second-02:30-the-first-is-gone"),
])
def test_a_start_in_the_repeated_hour_is_its_first_reading_not_yet_gone(now, typed, meant):
    portal, v = portal_at(now, "Europe/Berlin")
    try:
        r = v.post("/reservations/new", {"size": "SMALL", "template": "PEX Debian Etch 4.0 Template", "start": typed,
                                         "end": "2026-10-25T03:30", "instances_fixed": "1", "instances_option": "0"})
        assert r.status_code == 303, re.findall(r'class="field-error">(.*?)</small>', r.text)
        (reservation,) = portal.application.list_reservations("alice")
        assert reservation.terms.start == meant and reservation.terms.end == datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
    finally:
        portal.close()
