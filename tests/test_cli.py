"""The CLI as people use it (issue 16): tables with a header row, `--json` on every listing,
nodes in words, and no reservation for an account that does not exist. On a SQLite store."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pex.bootstrap import build_application
from pex.cli import main
from tests.support.api import PASSWORD, cheap_settings


def run(url: str, *args: str, env: dict | None = None):
    result = CliRunner().invoke(main, list(args), env={"PEX_DATABASE_URL": url, **(env or {})}, catch_exceptions=False)
    return result.exit_code, result.output


def store_with_alice(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(cheap_settings(url))
    try:
        app.register_user("alice", PASSWORD)
    finally:
        app.close()
    return url


def test_negotiate_refuses_a_user_that_does_not_exist_and_books_nothing(tmp_path):
    url = store_with_alice(tmp_path)
    code, output = run(url, "negotiate", "--user", "nobody", "--confirm")
    assert code == 2 and "no user 'nobody'" in output
    code, listed = run(url, "reservations", "--json")
    assert code == 0 and json.loads(listed) == {"reservations": []}
    code, output = run(url, "negotiate", "--instances", "1")
    assert code == 2 and "--user" in output  # whose it is must be said


def test_a_reservation_from_the_terminal_starts_by_itself_and_is_listed_under_a_header(tmp_path):
    url = store_with_alice(tmp_path)
    code, output = run(url, "negotiate", "--user", "alice", "--type", "SMALL", "--instances", "2", "--confirm",
                       env={"PEX_CURRENCY": "EUR"})
    assert code == 0, output
    assert "REQUEST_SUCCESS (CONFIRMED: Booked: starts by itself)" in output
    assert " EUR" in output and "+00:00" not in output and " UTC" in output
    code, table = run(url, "reservations", env={"PEX_CURRENCY": "EUR"})
    header, row = table.splitlines()
    assert header.split() == ["RESERVATION", "USER", "STATE", "WHERE", "IT", "STANDS", "MACHINES", "START", "END", "PRICE"]
    assert "alice" in row and "CONFIRMED" in row and "Booked: starts by itself" in row and "2 × SMALL" in row
    assert row.endswith(" EUR")
    code, listed = run(url, "reservations", "--json")
    [item] = json.loads(listed)["reservations"]
    assert (item["phase"], item["proposal"]["autoStart"], item["proposal"]["currency"]) == ("booked", True, "USD")

    code, output = run(url, "negotiate", "--user", "alice", "--manual-start", "--confirm", "--start", "now+3h")
    assert code == 0 and "Booked: activate it, or nothing starts" in output


def test_nodes_are_a_table_in_words_and_their_bookings_another(tmp_path):
    url = store_with_alice(tmp_path)
    run(url, "negotiate", "--user", "alice", "--type", "SMALL", "--instances", "2", "--confirm")
    code, output = run(url, "nodes")
    assert code == 0 and "Resources(" not in output and "×" in output
    lines = output.splitlines()
    assert lines[0].split() == ["NODE", "STATE", "CAPACITY"]
    assert lines[1].split()[:3] == ["node1", "up", "4"] and "4 CPUs · 4096 MB · " in lines[1]
    bookings = lines[lines.index("") + 1:]
    assert bookings[0].split() == ["NODE", "RESERVATION", "INSTANCES", "FROM", "TO", "KIND"]
    assert any("2 × 1 CPU · 768 MB · 10 GB" in line and line.endswith("booked") for line in bookings[1:])
    code, listed = run(url, "nodes", "--json")
    nodes = json.loads(listed)["nodes"]
    assert [n["name"] for n in nodes] == ["node1", "node2", "node3", "node4", "node5"]
    assert sum(a["instances"] for n in nodes for a in n["allocations"]) == 2


def test_negotiate_takes_a_flexible_proposal_and_prints_the_chosen_terms(tmp_path):
    from datetime import UTC, datetime, timedelta

    url = store_with_alice(tmp_path)
    app = build_application(cheap_settings(url))
    try:
        app.register_user("bob", PASSWORD)
    finally:
        app.close()
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    at = lambda hours: (base + timedelta(hours=hours)).isoformat()  # noqa: E731
    code, output = run(url, "negotiate", "--user", "bob", "--type", "XLARGE", "--instances", "5", "--start", at(1),
                       "--duration", "2h", "--confirm")  # the whole pool, an hour after base for two
    assert code == 0 and "REQUEST_SUCCESS" in output, output
    code, output = run(url, "negotiate", "--user", "alice", "--instances", "5", "--start", at(1), "--duration", "1h",
                       "--latest-start", at(5), "--min-duration", "30m", "--confirm")
    assert code == 0, output
    chosen = (base + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M UTC")
    assert "reservation " in output and ": ACCEPT (ACCEPTED" in output
    assert f"asked: a start from {(base + timedelta(hours=1)).strftime('%Y-%m-%d %H:%M UTC')}" in output
    assert f"changed: start {chosen} chosen, within the starts up to" in output
    assert f"from {chosen} to " in output and "REQUEST_SUCCESS" in output
    code, output = run(url, "negotiate", "--user", "alice", "--instances", "5", "--start", at(0), "--duration", "3h",
                       "--min-duration", "30m")
    assert code == 0 and "duration 1 hour chosen, within the 30 minutes to 3 hours you allowed" in output, output
    code, output = run(url, "negotiate", "--user", "alice", "--start", at(0), "--duration", "1h", "--min-duration", "2h")
    assert code == 1 and "the shortest duration 2 hours is longer than the duration 1 hour" in output
    code, output = run(url, "negotiate", "--user", "alice", "--min-duration", "soon")
    assert code == 2 and "not a duration" in output


def test_an_operator_drains_a_node_from_the_terminal_and_is_told_what_moved(tmp_path):
    url = store_with_alice(tmp_path)
    code, output = run(url, "negotiate", "--user", "alice", "--type", "SMALL", "--instances", "1", "--confirm",
                       "--start", "now+3h")
    assert code == 0, output
    app = build_application(cheap_settings(url))
    try:
        [booked] = [n.name for n in app.nodes() if app.node_allocations(n.name)]
    finally:
        app.close()

    code, output = run(url, "admin", "node", booked, "--drain-from", "now+210m", "--by", "carol")
    assert code == 0, output
    assert "drained from " in output and "by carol" in output
    [moved] = [line for line in output.splitlines() if line.strip().startswith("moved ")]
    assert "(its booking with it)" in moved and f"to {booked} " not in moved
    code, shown = run(url, "admin", "node", booked)
    assert code == 0 and "by carol" in shown and "nothing left on it that lasts until then" in shown
    code, output = run(url, "admin", "node", booked, "--undrain")
    assert code == 0 and "takes bookings again" in output
    code, shown = run(url, "admin", "node", booked)
    assert "not drained" in shown

    assert run(url, "admin", "node", booked, "--drain-from", "soon")[0] == 2
    assert run(url, "admin", "node", booked, "--drain-from", "now+1h", "--undrain")[0] == 2
    assert run(url, "admin", "node", "node9", "--drain-from", "now+1h")[0] == 1
