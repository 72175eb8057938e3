"""Start-up checkpoints: a process that starts loads the capacity timeline, the reservation
index and the dispatch index from the checkpoint and folds only the tail of the log after it;
what it then decides equals what a process that folded the whole log decides; a checkpoint
that cannot be trusted is ignored; and not even a lying one can overbook a node."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pex.application import Contention
from pex.application.core import CHECKPOINT_SCHEMA
from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain.catalogue import TABLE_1_SIZES
from pex.domain.node import node_id, peak_demand
from pex.domain.values import Terms
from pex.projections.capacity import CapacityTimeline
from pex.projections.readmodels import prepare_read_models
from pex.projections.reservations import ReservationIndex
from pex.projections.store import MemoryStore, SQLiteStore, StoredCheckpoint
from pex.settings import Settings
from pex.workers.index import CHECKPOINT as DISPATCH_CHECKPOINT
from pex.workers.index import STATE_SCHEMA as DISPATCH_SCHEMA
from pex.workers.index import DispatchIndex
from tests.projections.histories import ETCH, FIXED_HISTORY, H, histories, play
from tests.support import T0

SIZES = {s.name: s for s in TABLE_1_SIZES}


def fold(app, timeline: CapacityTimeline, index: ReservationIndex, after: int = 0) -> None:
    for notification in app.recorder.select_notifications(start=after, limit=10**6, inclusive_of_start=False):
        event = app.mapper.to_domain_event(notification)
        timeline.apply(event)
        index.apply(event)
        timeline.position = notification.id


def decisions(app, timeline: CapacityTimeline, at: datetime) -> list:
    """What the negotiator answers, on `timeline`, to a spread of proposals made at `at`."""
    answers = []
    for size in ("SMALL", "XLARGE"):
        for fixed, option in ((1, 0), (3, 2), (6, 0)):
            for start_h, hours in ((0, 1), (2, 4), (9, 2)):
                start = at + start_h * H
                terms = Terms(size, ETCH, fixed, option, start, start + hours * H, None)
                answers.append(app.negotiator(terms, SIZES[size], timeline, at, app.pricing, app.policy, 1, None))
    return answers


def what_counts(timeline: CapacityTimeline, at: datetime) -> dict:
    """Everything a decision at `at` reads of a timeline."""
    timeline.forget_before(at)
    return {
        "nodes": {
            name: (n.capacity, n.available, dict(n.bookings), {r: h for r, h in n.holds.items() if h.counts_at(at)}, dict(n.levels))
            for name, n in timeline.nodes.items()
        },
        "ids": dict(timeline.node_by_id),
        "boundaries": dict(timeline.boundaries),
        "change_points": timeline.change_points(at, at + timedelta(days=3), at),
    }


@settings(max_examples=40)
@given(histories, st.integers(0, 100))
def test_a_timeline_and_index_from_a_checkpoint_and_the_tail_decide_as_ones_folded_from_the_start(history, cut):
    clock = ManualClock(T0)
    app = build_application(Settings(database_url="memory:"), clock=clock)
    try:
        k = len(history) * cut // 100
        play(app, clock, history[:k])
        app.follow()
        state = json.loads(json.dumps({"timeline": app.timeline.to_state(), "index": app.index.to_state()}))
        position = app.timeline.position
        play(app, clock, history[k:])

        resumed = CapacityTimeline.from_state(state["timeline"], position)
        resumed_index = ReservationIndex.from_state(state["index"])
        fold(app, resumed, resumed_index, after=position)
        full, full_index = CapacityTimeline(), ReservationIndex(pending_only=True)
        fold(app, full, full_index)

        now = clock()
        for at in (now, now + 2 * H, now + 30 * H):
            assert what_counts(resumed, at) == what_counts(full, at)
            assert decisions(app, resumed, at) == decisions(app, full, at)
        assert resumed_index == full_index
        assert sorted(resumed_index.lapsed_offers(now)) == sorted(full_index.lapsed_offers(now))
        assert sorted(resumed_index.ended(now)) == sorted(full_index.ended(now))
    finally:
        app.close()


def test_the_pending_index_forgets_reservations_that_are_over(memory_app, clock):
    play(memory_app, clock, FIXED_HISTORY)
    memory_app.follow()
    states = {r.id: r.state for r in memory_app.list_reservations()}
    over = {rid for rid, state in states.items() if state.value in ("REJECTED", "EXPIRED", "CANCELLED")}
    assert over, "the history ends some reservations"
    assert set(memory_app.index.reservations) == set(states) - over
    assert all(rid not in ids for ids in memory_app.index.by_user.values() for rid in over)


# --- a process that starts, on a store -----------------------------------------------------


def sqlite_url(directory: str) -> str:
    return f"sqlite:///{directory}/pex.sqlite3"


def counting_decodes(app) -> list[int]:
    """Count the events `app` decodes from now on."""
    decoded = [0]
    to_domain_event = app.mapper.to_domain_event

    def counted(stored):
        decoded[0] += 1
        return to_domain_event(stored)

    app.mapper.to_domain_event = counted
    return decoded


def started(url: str, clock) -> tuple:
    """A new process's application, having followed the log; and how many events it decoded."""
    app = build_application(Settings(database_url=url, create_tables=False, install_demo_pool=False), clock=clock)
    decoded = counting_decodes(app)
    app.follow()
    return app, decoded[0]


def full_fold(url: str, clock):
    app = build_application(Settings(database_url=url, create_tables=False, install_demo_pool=False), clock=clock)
    app.checkpoint_name = "none saved under this name"
    app.follow()
    return app


def run_checkpointed(url: str, history, cut: int, clock) -> None:
    writer = build_application(Settings(database_url=url), clock=clock)
    prepare_read_models(writer)  # the tables, as `pex init` or the gunicorn master make them
    dispatch = DispatchIndex()
    try:
        play(writer, clock, history[:cut])
        writer.follow()
        assert writer.save_checkpoint()
        dispatch.follow(writer)
        assert dispatch.save_checkpoint(writer)
        checkpointed = writer.timeline.position
        play(writer, clock, history[cut:])
        writer.follow()
        tail = writer.timeline.position - checkpointed
    finally:
        writer.close()

    resumed, decoded = started(url, clock)
    reference = full_fold(url, clock)
    try:
        assert decoded == tail, "the new process folds the tail after the checkpoint, not the log"
        now = clock()
        for at in (now, now + 5 * H):
            assert what_counts(resumed.timeline, at) == what_counts(reference.timeline, at)
            assert decisions(resumed, resumed.timeline, at) == decisions(reference, reference.timeline, at)
        assert resumed.index == reference.index
        worker_index, reference_index = DispatchIndex(), DispatchIndex(resumed=True)
        worker_index.follow(resumed)
        reference_index.follow(reference)
        assert worker_index.position == reference_index.position
        assert worker_index == reference_index
    finally:
        resumed.close()
        reference.close()


@settings(max_examples=10)
@given(histories, st.integers(1, 99))
def test_a_process_that_starts_on_sqlite_loads_the_checkpoint_and_folds_only_the_tail(history, cut):
    with tempfile.TemporaryDirectory() as directory:
        run_checkpointed(sqlite_url(directory), history, len(history) * cut // 100, ManualClock(T0))


@pytest.mark.postgres
def test_a_process_that_starts_on_postgresql_loads_the_checkpoint_and_folds_only_the_tail(postgres_url):
    run_checkpointed(postgres_url, FIXED_HISTORY + FIXED_HISTORY, len(FIXED_HISTORY), ManualClock(T0))


# --- checkpoints that cannot be trusted -----------------------------------------------------


@pytest.fixture
def checkpointed(tmp_path):
    """An SQLite store with a history and a checkpoint at its head; yields its URL and clock."""
    clock = ManualClock(T0)
    url = sqlite_url(tmp_path)
    app = build_application(Settings(database_url=url), clock=clock)
    prepare_read_models(app)
    play(app, clock, FIXED_HISTORY)
    app.follow()
    assert app.save_checkpoint()
    app.close()
    return url, clock


def overwrite(url: str, name: str, **changes) -> None:
    """Change a stored checkpoint in place, as a bug, a crash or an operator might."""
    store = SQLiteStore(url.removeprefix("sqlite:///"))
    stored = store.read_checkpoint(name)
    fields = {"schema": stored.schema, "position": stored.position, "state": stored.state, **changes}
    with store.transaction(write=True) as cursor:
        cursor.execute(
            "UPDATE pex_checkpoints SET schema_version = ?, notification_id = ?, state = ? WHERE name = ?",
            (fields["schema"], fields["position"], fields["state"], name),
        )
    store.close()


@pytest.mark.parametrize(
    "damage",
    [
        {"state": b"not zlib at all"},
        {"schema": CHECKPOINT_SCHEMA + 1},  # another PEX's shape
        {"position": 10**9},  # ahead of the log
        {"position": 3},  # another event than the one it was taken at
    ],
    ids=["corrupt", "other-schema", "ahead-of-the-log", "another-event"],
)
def test_a_checkpoint_that_cannot_be_trusted_is_ignored_and_the_log_folded_from_the_start(checkpointed, damage):
    url, clock = checkpointed
    overwrite(url, "pex.application", **damage)
    resumed, decoded = started(url, clock)
    reference = full_fold(url, clock)
    try:
        assert decoded == reference.timeline.position  # all of it
        assert what_counts(resumed.timeline, clock()) == what_counts(reference.timeline, clock())
        assert resumed.index == reference.index
    finally:
        resumed.close()
        reference.close()


def test_a_store_without_checkpoints_folds_the_log_from_the_start(tmp_path, clock):
    url = sqlite_url(tmp_path)
    app = build_application(Settings(database_url=url), clock=clock)
    play(app, clock, FIXED_HISTORY[:6])
    with sqlite3.connect(f"{tmp_path}/pex.sqlite3") as db:  # a store made before checkpoints were
        db.execute("DROP TABLE pex_checkpoints")
    assert not app.save_checkpoint()  # logged, not raised
    app.close()
    resumed, decoded = started(url, clock)
    assert decoded == resumed.timeline.position > 0
    resumed.close()


@pytest.mark.parametrize("store_kind", ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_checkpoint_is_replaced_only_by_a_later_one(store_kind, tmp_path, request):
    if store_kind == "memory":
        store = MemoryStore()
    elif store_kind == "sqlite":
        store = SQLiteStore(str(tmp_path / "pex.sqlite3"))
    else:
        from pex.projections.readmodels import store_for

        app = build_application(Settings(database_url=request.getfixturevalue("postgres_url")))
        request.addfinalizer(app.close)
        store = store_for(app)
    store.create([], [])
    at = datetime(2026, 3, 2, tzinfo=UTC)
    assert store.read_checkpoint("x") is None
    assert store.write_checkpoint(StoredCheckpoint("x", 1, 20, b"twenty", at))
    assert not store.write_checkpoint(StoredCheckpoint("x", 1, 10, b"ten", at))  # a slower process
    assert not store.write_checkpoint(StoredCheckpoint("x", 1, 20, b"twenty again", at))
    assert store.read_checkpoint("x").state == b"twenty"
    assert store.write_checkpoint(StoredCheckpoint("x", 1, 30, b"thirty", at))
    assert (store.read_checkpoint("x").position, store.read_checkpoint("x").state) == (30, b"thirty")
    # An upgraded PEX replaces a checkpoint of another schema even at the same position, so its
    # next start need not fold the log again while the log has not moved.
    assert store.write_checkpoint(StoredCheckpoint("x", 2, 30, b"thirty, schema 2", at))
    assert (store.read_checkpoint("x").schema, store.read_checkpoint("x").state) == (2, b"thirty, schema 2")
    store.close()


def test_a_worker_whose_replica_cannot_be_loaded_at_its_version_folds_the_log_from_the_start(checkpointed):
    url, clock = checkpointed
    app = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    index = DispatchIndex()
    index.follow(app)
    state = index.to_state()
    assert state["instances"], "the history leaves live instances"
    state["instances"][0][1] += 100  # a version the store never had
    assert app.checkpoints.save(DISPATCH_CHECKPOINT, DISPATCH_SCHEMA, index.position, state, app.recorder)
    restarted = DispatchIndex()
    restarted.follow(app)
    reference = DispatchIndex(resumed=True)
    reference.follow(app)
    assert restarted == reference
    app.close()


# --- the nodes guard capacity whatever a checkpoint says ----------------------------------


def test_a_checkpoint_that_lies_about_the_bookings_cannot_overbook_a_node(checkpointed):
    url, clock = checkpointed
    app = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    app.follow()
    # Fill the pool: every node gets an XLARGE for the next hours.
    start = clock() + timedelta(hours=30)
    terms = Terms("XLARGE", ETCH, 5, 0, start, start + 2 * H, Decimal("100"))
    rid = app.initiate_reservation("alice")
    assert app.submit_proposal(rid, terms).reply.value == "ACCEPT"
    assert app.confirm(rid).reply.value == "REQUEST_SUCCESS"
    app.follow()
    # A checkpoint that says the pool is empty, at the head of the log.
    lie = app.timeline.to_state()
    for node in lie["nodes"]:
        node["bookings"], node["holds"] = [], []
    state = {"timeline": lie, "index": app.index.to_state()}
    with app.checkpoints.store.transaction(write=True) as cursor:
        cursor.execute("DELETE FROM pex_checkpoints WHERE name = ?", (app.checkpoint_name,))
    app.checkpoints.save(app.checkpoint_name, CHECKPOINT_SCHEMA, app.timeline.position, state, app.recorder)
    app.close()

    fooled = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    fooled.max_attempts = 3
    try:
        fooled.follow()
        assert not any(n.bookings for n in fooled.timeline.nodes.values()), "it believed the lie"
        other = fooled.initiate_reservation("bob")
        try:
            fooled.submit_proposal(other, terms)
        except Contention:
            pass  # every node refused the hold the timeline suggested
        for name in fooled.timeline.nodes:
            node = fooled.repository.get(node_id(name))
            live = node.live_allocations(clock())
            assert peak_demand(live, start, start + 2 * H).fits_in(node.capacity), name
    finally:
        fooled.close()


# --- the gunicorn master's preparation -------------------------------------------------------


def test_the_masters_preparation_folds_only_what_came_after_the_checkpoints(tmp_path, clock, monkeypatch):
    from eventsourcing.sqlite import SQLiteApplicationRecorder

    from pex.bootstrap import prepare_store

    url = sqlite_url(tmp_path)
    settings = Settings(database_url=url)
    prepare_store(settings)  # the first start: everything is new
    app = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    play(app, clock, FIXED_HISTORY)
    app.close()
    prepare_store(settings)  # a restart: the checkpoints catch up with the history once
    app = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    play(app, clock, FIXED_HISTORY[:3])
    tail = app.recorder.max_notification_id() - app.checkpoints.load(app.checkpoint_name, CHECKPOINT_SCHEMA, app.recorder)[0]
    app.close()

    read = [0]
    select_notifications = SQLiteApplicationRecorder.select_notifications

    def counted(self, *args, **kwargs):
        found = select_notifications(self, *args, **kwargs)
        read[0] += len(found)
        return found

    monkeypatch.setattr(SQLiteApplicationRecorder, "select_notifications", counted)
    prepare_store(settings)
    # The one follower reads the tail once for the read models, the timeline and the index
    # (and each checkpoint the event it was taken at); nothing before it.
    assert tail <= read[0] <= tail + 3


def test_a_store_that_fails_while_a_process_starts_costs_a_retry_not_a_fold_of_the_log(checkpointed):
    url, clock = checkpointed
    app = build_application(Settings(database_url=url, create_tables=False), clock=clock)
    decoded = counting_decodes(app)
    read_checkpoint = app.checkpoints.store.read_checkpoint

    def unreachable(name):
        raise OSError("the database does not answer")

    app.checkpoints.store.read_checkpoint = unreachable
    with pytest.raises(OSError):
        app.follow()
    app.checkpoints.store.read_checkpoint = read_checkpoint
    app.follow()
    assert decoded[0] == 0, "it started from the checkpoint at the head of the log"
    assert app.timeline.position == app.recorder.max_notification_id()
    app.close()


def test_a_catalogue_with_a_long_history_loads_from_a_snapshot(memory_app):
    from pex.domain.catalogue import CATALOGUE_ID

    for i in range(60):  # an operator who keeps changing the offer
        memory_app.register_template(f"template {i}")
    catalogue = memory_app.catalogue()
    snapshots = list(memory_app.snapshots.get(CATALOGUE_ID))
    assert snapshots, "the catalogue was snapshotted"
    replayed = catalogue.version - snapshots[-1].originator_version
    assert replayed < memory_app.node_snapshot_interval
    assert "template 59" in catalogue.templates
