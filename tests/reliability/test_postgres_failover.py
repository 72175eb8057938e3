"""A primary lost is not a store lost (issue 15, item 4): PEX is given a primary and its
streaming-replication standby in libpq's multi-host form,
postgresql://pex@127.0.0.1:P1,127.0.0.1:P2/db (pex.bootstrap: target_session_attrs=read-write).
Under load, the primary dies (`pg_ctl stop -m immediate`) and, DETECTION seconds later, the
standby is promoted, as an operator's or a failover manager's promotion would. PEX carries on
by itself: the same gunicorn workers and timer worker connect to the promoted standby; no
acknowledged event is lost (the primary replicates synchronously: synchronous_commit=on,
synchronous_standby_names='*', so a commit is acknowledged only once the standby has it); no
confirmed reservation is lost and nothing is double-booked (`pex audit` on the promoted store).

The test runs a primary and a standby of its own on loopback (tests.pg.start_standby)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse
from uuid import UUID

import pytest

from pex.domain.values import State
from tests.pg import start_postgres, start_standby
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
    wait_for,
    write_figures,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.gunicorn, pytest.mark.xen, pytest.mark.timeout(180)]

CLIENTS = 6
BEFORE, DETECTION, AFTER = 3.0, 2.0, 6.0  # seconds of load before the crash, until the promotion, after it
RECOVERY_BOUND = 5.0  # after the promotion, requests succeed again within this
SEED = 11


def streaming_synchronously(primary) -> bool:
    with primary.admin() as conn:
        rows = conn.execute("SELECT state, sync_state FROM pg_stat_replication").fetchall()
    return ("streaming", "sync") in rows


@pytest.fixture
def replicated():
    """(primary, standby, the multi-host URL of a database on them)."""
    primary = start_postgres(own=True, settings="-c synchronous_commit=on")
    standby = None
    try:
        dbname = urlparse(primary.create_database()).path.lstrip("/")  # made before the base backup
        standby = start_standby(primary)
        # Synchronous from now on (before, with no standby, every commit would wait for one).
        with primary.admin() as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        wait_for(lambda: streaming_synchronously(primary), 30, interval=0.2, what="the standby to stream synchronously")
        yield primary, standby, f"postgresql://pex@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/{dbname}"
    finally:
        for server in (standby, primary):
            if server is not None:
                server.stop()


def test_the_primary_dies_the_standby_is_promoted_and_pex_carries_on_losing_nothing(
        replicated, simulator, make_timer_worker, tmp_path):
    primary, standby, database_url = replicated
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    tally = Tally()

    def negotiate_tomorrow(client, rng) -> None:
        client.negotiate(proposal("SMALL", 1, tomorrow + timedelta(hours=rng.randrange(48)), 3600))

    with api_server(database_url, tmp_path, workers=3) as server:
        worker = make_timer_worker(database_url, simulator.url).start()
        users = [server.register(f"client{n}") for n in range(CLIENTS)]
        workers_before = children(server.process.pid)
        with Load(server, users, tally, negotiate_tomorrow, SEED, attempts=100, pause=0.5, timeout=30) as load:
            load.at(BEFORE)
            crashed = time.monotonic()
            primary.crash()
            time.sleep(DETECTION)
            standby.promote()
            promoted = time.monotonic()
            time.sleep(AFTER)
        outcomes = load.outcomes

        restarted = check_it_carries_on(server, worker, workers_before, users[0], tally, "the failover")

    answers = tally.snapshot()
    before_crash = [a for a in answers if a.acknowledged and a.started + a.seconds < crashed]
    first_success = min((a.started + a.seconds for a in answers
                         if a.status and a.status < 300 and a.started > promoted), default=None)
    late_failures = [a for a in answers
                     if a.started >= promoted + RECOVERY_BOUND and (a.status is None or a.status >= 500)]
    status, report = run_audit(database_url, tmp_path)
    with store(database_url) as app:
        acknowledged, unacknowledged = check_acknowledged(app, answers)
        lost = [r for r in tally.confirmed()
                if app.get_reservation(UUID(r)).state not in (State.CONFIRMED, State.EXPIRED)]

    write_figures("postgres_failover", {
        "clients": CLIENTS, "gunicorn_workers": 3, "seconds_from_crash_to_promotion": DETECTION,
        "requests": len(answers), "statuses": dict(tally.statuses()), "problems": dict(tally.problems()),
        "acknowledged_before_the_crash": len(before_crash),
        "500s": sum(a.status == 500 for a in answers),
        "longest_request_seconds": round(max(a.seconds for a in answers), 2),
        "recovery_seconds_after_promotion": round(first_success - promoted, 2) if first_success else None,
        f"failures_from_{RECOVERY_BOUND:g}s_after_the_promotion": len(late_failures),
        "outcomes": dict(outcomes), "confirmed": len(tally.confirmed()),
        "acknowledgements_checked": acknowledged, "acknowledgements_not_in_store": len(unacknowledged),
        "lost_confirmations": len(lost), "pex_processes_restarted": restarted,
        "audit_exit_status": status, "audit": audit_figures(report),
    })
    assert before_crash, "no answer was acknowledged before the crash: the test proved nothing"
    assert unacknowledged == [], unacknowledged[:5]
    assert lost == [], lost[:5]
    assert not any(a.status == 500 for a in answers)
    assert first_success is not None and late_failures == [], late_failures[:5]
    assert status == 0, report
