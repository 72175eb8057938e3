"""`pex quotas show|set` and `pex reservations end`, on a SQLite store."""

from __future__ import annotations

from datetime import timedelta

from click.testing import CliRunner

from pex.bootstrap import build_application
from pex.cli import main
from pex.domain import Reply, State, Terms
from pex.settings import Settings


def run(url: str, *args: str):
    result = CliRunner().invoke(main, list(args), env={"PEX_DATABASE_URL": url}, catch_exceptions=False)
    return result.exit_code, result.output


def test_an_operator_shows_sets_and_restores_the_quotas(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    code, shown = run(url, "quotas", "show")
    assert code == 0
    assert "longest reservation  336 hours" in shown and "CPU-hours per user   3600 (default" in shown
    code, changed = run(url, "quotas", "set", "--max-duration", "2d", "--max-live-offers", "2", "--max-cpu-hours", "99")
    assert code == 0 and "48 hours" in changed and "live offers per user 2" in changed
    assert "CPU-hours per user   99\n" in changed
    code, restored = run(url, "quotas", "set", "--default", "max-cpu-hours")
    assert code == 0 and "3600 (default" in restored and "live offers per user 2" in restored
    code, refused = run(url, "quotas", "set")
    assert code != 0 and "name a quota" in refused


def test_an_operator_gives_one_user_quotas_of_their_own_and_takes_them_back(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    code, own = run(url, "quotas", "set", "--user", "bob", "--max-live-offers", "1")
    assert code == 0 and "bob: quotas of their own" in own and "live offers per user 1" in own
    code, everyone = run(url, "quotas", "show")
    assert code == 0 and "live offers per user 5" in everyone
    code, back = run(url, "quotas", "set", "--user", "bob", "--clear")
    assert code == 0 and "bob: the quotas everyone has" in back and "live offers per user 5" in back


def test_an_operator_ends_an_activated_reservation_with_a_reason(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(Settings(database_url=url))
    start = app.clock() + timedelta(minutes=1)
    rid = app.initiate_reservation("mallory")
    assert app.submit_proposal(rid, Terms("SMALL", "PEX Debian Etch 4.0 Template", 1, 0, start, start + timedelta(hours=1))).reply == Reply.ACCEPT
    app.confirm(rid)
    app.activate(rid)
    app.close()
    code, output = run(url, "reservations", "end", str(rid), "--reason", "abuse", "--by", "root")
    assert code == 0 and "ended (CANCELLED) by root: abuse" in output
    code, listed = run(url, "reservations", "--user", "mallory")
    assert code == 0 and "CANCELLED" in listed
    again = build_application(Settings(database_url=url))
    try:
        assert again.get_reservation(rid).state == State.CANCELLED
        assert again.get_reservation(rid).history[-1].note == "ended by root: abuse"
    finally:
        again.close()
    code, output = run(url, "reservations", "end", str(rid), "--reason", "again")
    assert code != 0 and "terminate is not allowed" in output
