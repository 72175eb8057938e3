"""`pex availability` and `pex release`, on a SQLite store, at the real time of day."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner

from pex.bootstrap import build_application
from pex.cli import main
from pex.domain import Reply, State, Terms
from pex.settings import Settings
from pex.wire import parse_time

ETCH = "PEX Debian Etch 4.0 Template"


def run(url: str, *args: str):
    result = CliRunner().invoke(main, list(args), env={"PEX_DATABASE_URL": url}, catch_exceptions=False)
    return result.exit_code, result.output


def booked(url: str, start: datetime, hours: int, user="alice"):
    app = build_application(Settings(database_url=url))
    try:
        rid = app.initiate_reservation(user)
        assert app.submit_proposal(rid, Terms("XLARGE", ETCH, 4, 0, start, start + timedelta(hours=hours))).reply == Reply.ACCEPT
        assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
        return rid, app
    except BaseException:
        app.close()
        raise


def test_availability_prints_the_windows_and_release_frees_them(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    rid, app = booked(url, start, 3)
    app.close()
    code, out = run(url, "availability", "--type", "XLARGE", "--count", "2", "--duration", "1h", "--to", "now+5h", "--json")
    assert code == 0
    # Before the booking there is less than an hour; the pool is free again at its end.
    assert [(parse_time(w["startTime"]), w["available"]) for w in json.loads(out)] == [(start + timedelta(hours=3), 5)]
    code, table = run(url, "availability", "--type", "XLARGE", "--count", "2", "--duration", "1h", "--to", "now+5h")
    assert code == 0 and (start + timedelta(hours=3)).isoformat() in table and "0.40" in table

    code, refused = run(url, "release", str(rid), "--user", "mallory")
    assert code != 0 and "no such reservation" in refused
    code, released = run(url, "release", str(rid), "--user", "alice")
    assert code == 0 and "released (EXPIRED)" in released and "for 0.00" in released
    code, out = run(url, "availability", "--type", "XLARGE", "--count", "2", "--duration", "1h", "--json")
    assert code == 0 and json.loads(out)[0]["available"] == 5
    assert parse_time(json.loads(out)[0]["startTime"]) < start
    code, again = run(url, "release", str(rid))
    assert code != 0 and "release" in again
    app = build_application(Settings(database_url=url))
    try:
        assert app.get_reservation(rid).state == State.EXPIRED
    finally:
        app.close()


def test_availability_refuses_what_it_cannot_answer_with_the_option_named(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    code, out = run(url, "availability", "--type", "HUGE")
    assert code == 2 and "--type" in out and "unknown size" in out
    code, out = run(url, "availability", "--from", "now+2h", "--to", "now+1h")
    assert code == 2 and "--to" in out
