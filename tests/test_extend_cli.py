"""`pex extend ID --end TIME` and `pex respond ID CONFIRM`, on a SQLite store, at the real
time of day: the provider's answer is printed, and the confirm moves the end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from pex.bootstrap import build_application
from pex.settings import Settings
from pex.wire import parse_time, rfc1123
from tests.test_availability_cli import booked, run


def test_extend_prints_the_offer_and_respond_confirm_books_it(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    rid, app = booked(url, start, 2)
    app.close()
    asked = start + timedelta(hours=3)
    code, out = run(url, "extend", str(rid), "--end", rfc1123(asked), "--user", "alice")
    assert code == 0, out
    assert "ACCEPT (CONFIRMED" in out and "extension: ACCEPT" in out and f"pex respond {str(rid).upper()} CONFIRM" in out
    code, out = run(url, "respond", str(rid), "CONFIRM")
    assert code == 0 and "REQUEST_SUCCESS" in out, out
    app = build_application(Settings(database_url=url))
    try:
        terms = app.get_reservation(rid).offer.terms
        assert terms.end == asked
    finally:
        app.close()
    code, out = run(url, "extend", str(rid), "--end", rfc1123(asked + timedelta(hours=1)), "--json")
    assert code == 0 and parse_time(json.loads(out)["extension"]["endTime"]) == asked + timedelta(hours=1)


def test_extend_refuses_with_the_reason(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    rid, app = booked(url, start, 2)
    app.close()
    code, out = run(url, "extend", str(rid), "--end", rfc1123(start + timedelta(hours=1)))
    assert code != 0 and "endTime" in out
    code, out = run(url, "extend", str(rid), "--end", rfc1123(start + timedelta(hours=3)), "--user", "mallory")
    assert code != 0 and "no such reservation" in out
