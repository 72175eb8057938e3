"""Random negotiation histories: whatever happened, the views the follower kept up to date
equal the same views rebuilt from scratch, they say what the aggregates say, the capacity
timeline agrees with the nodes, and the audit finds nothing wrong."""

from __future__ import annotations

import tempfile
from datetime import timedelta

import pytest
from hypothesis import given, settings

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.node import node_id, peak_demand
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from pex.settings import Settings
from tests.projections.histories import (
    FIXED_HISTORY,
    assert_read_models_match_aggregates,
    assert_same_views,
    histories,
    play,
    rebuilt,
)
from tests.support import T0


def check_promises(app, read_models: ReadModels) -> None:
    read_models.catch_up()
    assert_same_views(read_models, rebuilt(app))
    assert_read_models_match_aggregates(app, read_models)
    report = Auditor(app, read_models).run()
    assert report.ok, report.render()
    assert not report.notes, report.notes  # everything was compared, the ledger included
    app.follow()
    now = app.clock()
    index = app.index  # the timers' questions, answered from what is pending only
    entries = index.reservations.values()
    assert sorted(index.lapsed_offers(now)) == sorted(e.id for e in entries if e.valid_until and e.valid_until <= now)
    standing = [e for e in entries if e.state.value in ("CONFIRMED", "ACTIVATED")]
    assert sorted(index.ended(now)) == sorted(e.id for e in standing if e.end <= now)
    for node in app.nodes():
        aggregate = app.repository.get(node_id(node.name))
        for offset_h, hours in ((0, 1), (1, 6), (5, 30), (20, 2)):
            start = now + timedelta(hours=offset_h)
            end = start + timedelta(hours=hours)
            expected = aggregate.capacity - peak_demand(aggregate.live_allocations(now), start, end)
            assert app.timeline.free(node.name, start, end, now) == expected, node.name


def run_history(url: str, history, batch_size: int = 7) -> None:
    clock = ManualClock(T0)
    app = build_application(Settings(database_url=url), clock=clock)
    read_models = ReadModels(app)
    read_models.batch_size = batch_size  # several batches, so batch boundaries fall anywhere
    try:
        play(app, clock, history, read_models)
        check_promises(app, read_models)
    finally:
        read_models.close()
        app.close()


@given(histories)
def test_random_histories_in_memory(history):
    run_history("memory:", history)


@settings(max_examples=15)
@given(histories)
def test_random_histories_on_sqlite(history):
    with tempfile.TemporaryDirectory() as directory:
        run_history(f"sqlite:///{directory}/pex.sqlite3", history)


@pytest.mark.postgres
def test_a_long_history_on_postgresql(postgres_url):
    again = [(kind, *[a + 1 if isinstance(a, int) and kind != "wait" else a for a in args]) for kind, *args in FIXED_HISTORY]
    run_history(postgres_url, FIXED_HISTORY + again)
