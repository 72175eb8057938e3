"""PostgreSQL goes away for some seconds under load, and comes back: clients get a prompt 503
problem+json with Retry-After (never a 500, never a hang), and PEX recovers by itself: the
same gunicorn workers and the same timer worker serve and dispatch again, nothing restarted.

The test runs a PostgreSQL of its own (the session's is shared with every other test), stops
it with `pg_ctl stop -m fast` (sessions cut, as in a restart or a failover) and starts it
again after OUTAGE_SECONDS, longer than a request's bounded wait for the store, so the 503s
do happen."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from pex.domain.values import State
from tests.pg import start_postgres
from tests.support.clients import (
    Tally,
    check_acknowledged,
    proposal,
)
from tests.support.reliability import (
    Load,
    api_server,
    audit_figures,
    check_it_carries_on,
    children,
    run_audit,
    store,
    write_figures,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.gunicorn, pytest.mark.xen, pytest.mark.timeout(180)]

CLIENTS = 6
BEFORE, OUTAGE_SECONDS, AFTER = 3.0, 10.0, 6.0  # seconds of load before, without and after the database
LONGEST_WAIT = 15.0  # no request may take longer, whatever the store does
RECOVERY_BOUND = 5.0  # after the database is back, requests succeed again within this
SEED = 5


@pytest.fixture
def own_postgres():
    server = start_postgres(own=True)  # stopped and started below: never someone else's server
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:  # already stopped: a failure mid-outage
            shutil.rmtree(os.path.dirname(server.datadir), ignore_errors=True)


def test_a_postgres_outage_gives_prompt_503s_and_pex_recovers_by_itself(
        own_postgres, simulator, make_timer_worker, tmp_path):
    database_url = own_postgres.create_database()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    tally = Tally()

    def negotiate_tomorrow(client, rng) -> None:
        client.negotiate(proposal("SMALL", 1, tomorrow + timedelta(hours=rng.randrange(48)), 3600))
        client.send("GET", "/OpenPEX/reservations?state=CONFIRMED", "GET list")

    with api_server(database_url, tmp_path, workers=3) as server:
        worker = make_timer_worker(database_url, simulator.url).start()
        users = [server.register(f"client{n}") for n in range(CLIENTS)]
        workers_before = children(server.process.pid)
        # Retries every 0.5 s (not the 5 s Retry-After asks) so that recovery is seen promptly.
        with Load(server, users, tally, negotiate_tomorrow, SEED, attempts=100, pause=0.5, timeout=30) as load:
            load.at(BEFORE)
            went = time.monotonic()
            own_postgres.stop_serving()
            time.sleep(OUTAGE_SECONDS)
            own_postgres.start_serving()
            back = time.monotonic()
            time.sleep(AFTER)
        outcomes = load.outcomes

        restarted = check_it_carries_on(server, worker, workers_before, users[0], tally, "the outage")
        failed_ticks = worker.logs().count("timer tick failed")

    answers = tally.snapshot()
    during = [a for a in answers if a.started + a.seconds >= went and a.started <= back]
    unavailable = [a for a in answers if a.status == 503]
    after = [a for a in answers if a.started >= back]
    first_success = min((a.started + a.seconds for a in answers
                         if a.status and a.status < 300 and a.started + a.seconds > back), default=None)
    late_failures = [a for a in answers
                     if a.started >= back + RECOVERY_BOUND and (a.status is None or a.status >= 500)]
    status, report = run_audit(database_url, tmp_path)
    with store(database_url) as app:
        acknowledged, unacknowledged = check_acknowledged(app, answers)
        lost = [r for r in tally.confirmed()
                if app.get_reservation(UUID(r)).state not in (State.CONFIRMED, State.EXPIRED)]

    write_figures("postgres_outage", {
        "clients": CLIENTS, "gunicorn_workers": 3, "outage_seconds": OUTAGE_SECONDS,
        "outage_measured_seconds": round(back - went, 2),
        "requests": len(answers), "statuses": dict(tally.statuses()), "problems": dict(tally.problems()),
        "answered_during_outage": len(during),
        "503_store_unavailable": sum(a.problem.endswith("/store-unavailable") for a in unavailable),
        "503_contention": sum(a.problem.endswith("/contention") for a in unavailable),
        "500s": sum(a.status == 500 for a in answers),
        "longest_request_seconds": round(max(a.seconds for a in answers), 2),
        "longest_503_seconds": round(max((a.seconds for a in unavailable), default=0), 2),
        "shortest_503_seconds": round(min((a.seconds for a in unavailable), default=0), 2),
        "503s_by_request": {what: {"count": len(times), "fastest_seconds": round(min(times), 2),
                                   "slowest_seconds": round(max(times), 2)}
                            for what in sorted({a.what for a in unavailable})
                            for times in [[a.seconds for a in unavailable if a.what == what]]},
        "recovery_seconds": round(first_success - back, 2) if first_success else None,
        "requests_after_the_database_returned": len(after),
        f"failures_from_{RECOVERY_BOUND:g}s_after_it_returned": len(late_failures),
        "outcomes": dict(outcomes), "confirmed": len(tally.confirmed()),
        "acknowledgements_checked": acknowledged, "acknowledgements_not_in_store": len(unacknowledged),
        "lost_confirmations": len(lost),
        "pex_processes_restarted": restarted, "timer_ticks_failed_and_retried": failed_ticks,
        "audit_exit_status": status, "audit": audit_figures(report),
    })
    assert unacknowledged == [], unacknowledged[:5]
    assert tally.server_errors(allowed=(503,)) == [], tally.server_errors(allowed=(503,))[:5]
    assert unavailable, "the outage was longer than a request's wait: some request must have got a 503"
    for answer in unavailable:
        assert answer.content_type.startswith("application/problem+json") and answer.retry_after, answer
        # The store's outage, a lost race, or (as in test_racing_clients) a worker's bound on
        # password checks met by several first sign-ins at once: each a designed, retried 503.
        assert answer.problem.endswith(("/store-unavailable", "/contention", "/password-checks-busy")), answer
    assert any(a.problem.endswith("/store-unavailable") for a in unavailable), unavailable
    assert all(a.status is not None for a in answers), [a for a in answers if a.status is None][:5]
    assert max(a.seconds for a in answers) <= LONGEST_WAIT
    assert first_success is not None and first_success - back <= RECOVERY_BOUND
    assert late_failures == []
    assert lost == []
    assert status == 0 and report["ok"], report.get("violations")
