"""The persisted read models: they say what the aggregates say, on every store; each resumes
exactly where its last committed batch stopped; any of them can be dropped and rebuilt."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from pex.domain.instance import Instance
from pex.projections.ledger import LedgerView
from pex.projections.readmodels import ReadModelError, ReadModels, store_for
from pex.projections.store import MemoryStore
from pex.projections.views import InstancesView, ReservationsView, read_model_views
from tests.projections.histories import (
    FIXED_HISTORY,
    assert_read_models_match_aggregates,
    assert_same_views,
    play,
    rebuilt,
    tables_of,
)


@pytest.fixture
def read_models(app):
    models = ReadModels(app)
    yield models
    models.close()


def test_the_read_models_say_what_the_aggregates_say(app, clock, read_models):
    play(app, clock, FIXED_HISTORY, read_models)
    assert_read_models_match_aggregates(app, read_models)
    assert_same_views(read_models, rebuilt(app))


def test_queries_see_the_callers_own_writes(app, read_models):
    assert read_models.reservations(user_id="alice") == []
    rid = app.initiate_reservation("alice")
    [row] = read_models.reservations(user_id="alice")
    assert row.id == rid and row.state.value == "INITIATED" and row.terms is None


def test_a_view_can_be_dropped_and_rebuilt_while_the_others_keep_their_place(app, clock, read_models):
    play(app, clock, FIXED_HISTORY[:8], read_models)
    read_models.catch_up()
    before = tables_of(read_models)
    positions = read_models.positions()

    progress = read_models.rebuild(["calendar"])

    assert progress.events > 0 and progress.position == positions["calendar"]
    assert read_models.positions() == positions
    assert tables_of(read_models) == before
    with pytest.raises(ReadModelError):
        read_models.rebuild(["ledger"])  # evidence is never re-derived without --reseal
    with pytest.raises(ReadModelError):
        read_models.rebuild(["no such view"])


class Crash(Exception):
    pass


class CrashingView(ReservationsView):
    """The reservations view, dying at one event as a process might."""

    def __init__(self, at_event: int):
        self.at_event = at_event

    def apply(self, batch, event, notification):
        if notification.id == self.at_event:
            raise Crash(notification.id)
        super().apply(batch, event, notification)


@pytest.mark.parametrize("database_url", ["memory", "sqlite"], indirect=True)
def test_a_crash_loses_only_the_batch_in_flight_and_catching_up_resumes_exactly_there(app, clock):
    play(app, clock, FIXED_HISTORY)
    store = store_for(app)
    crashing = ReadModels(app, views=[CrashingView(at_event=23), *read_model_views(app)[1:], LedgerView()], store=store)
    crashing.batch_size = 5
    with pytest.raises(Crash):
        crashing.catch_up()
    assert set(crashing.positions().values()) == {20}  # the batches up to #20 committed, with their rows
    assert max(r.version for r in crashing.reservations(fresh=False)) >= 1

    if isinstance(store, MemoryStore):
        resumed = ReadModels(app, store=store)
    else:
        resumed = ReadModels(app)  # a new process, with connections of its own to the same tables
    resumed.batch_size = 5
    resumed.catch_up()

    assert_same_views(resumed, rebuilt(app))
    assert_read_models_match_aggregates(app, resumed)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_followers_in_several_processes_apply_each_batch_once(app, clock):
    play(app, clock, FIXED_HISTORY)
    followers = [ReadModels(app, store=None) for _ in range(3)]  # each with connections of its own
    for f in followers:
        f.batch_size = 3
    errors = []

    def follow(f):
        try:
            f.catch_up()
        except Exception as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=follow, args=(f,)) for f in followers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_same_views(followers[0], rebuilt(app))
    for f in followers:
        f.close()


# Events of the kind the Xen work adds to the Instance aggregate, defined here: the view has
# never heard of them, and shows what their own apply does to the instance.
class Started(Instance.Event):
    node: str

    def apply(self, instance: Instance) -> None:
        instance.status, instance.node = "RUNNING", self.node


class IpAddressReported(Instance.Event):
    ip_address: str

    def apply(self, instance: Instance) -> None:
        instance.ip_address = self.ip_address


class Hiccuped(Instance.Event):
    """An event that changes nothing the view shows."""


class Crashed(Instance.Event):
    reason: str

    def apply(self, instance: Instance) -> None:
        instance.status, instance.ip_address = "CRASHED", None


def test_the_instance_view_follows_instance_events_it_has_never_heard_of(app, clock, read_models):
    play(app, clock, FIXED_HISTORY[:2])
    [first, *_] = read_models.instances()
    instance = app.repository.get(first.id)
    instance.trigger_event(Started, node=first.node, at=clock())
    instance.trigger_event(IpAddressReported, ip_address="10.0.0.7", at=clock())
    instance.trigger_event(Hiccuped, at=clock())
    app.save(instance)

    row = read_models.instance(first.id)
    assert (row.status, row.ip_address, row.version) == ("RUNNING", "10.0.0.7", 4)

    instance = app.repository.get(first.id)
    instance.trigger_event(Crashed, reason="kernel panic", at=clock())
    app.save(instance)
    restarted = ReadModels(app, store=read_models.store)  # a new process: it loads the instance as it stood
    row = restarted.instance(first.id)
    assert (row.status, row.ip_address, row.note, row.version) == ("CRASHED", None, "kernel panic", 5)
    assert_same_views(restarted, rebuilt(app))


class InstancesViewThatLetsSavesQueue(InstancesView):
    """The instances view, which at its first event (inside its batch's transaction) lets
    `queue_saves` start saves in other threads of the process and wait for them to queue."""

    def __init__(self, load, queue_saves):
        super().__init__(load)
        self.queue_saves = queue_saves

    def apply(self, batch, event, notification):
        queue_saves, self.queue_saves = self.queue_saves, lambda: None
        queue_saves()
        super().apply(batch, event, notification)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_saves_of_the_process_that_queue_behind_a_fold_each_go_through(app, clock):
    """On SQLite a fold's batch holds the file's write lock. A save of the same process then
    waits in its INSERT, and the next one for the event store's one writer connection, in the
    pool's queue: a fold that read an aggregate through that pool inside its batch (as the
    instances view did, for an instance it had not followed) waited behind them, and the
    second save gave up after the pool's 5 s. A worker lost its record of a VM it had started."""
    play(app, clock, FIXED_HISTORY[:2])
    before = ReadModels(app)
    first, second, third = before.instances()[:3]
    before.close()
    instance = app.repository.get(first.id)
    instance.trigger_event(Hiccuped, at=clock())
    app.save(instance)  # a new process knows nothing of first: it must load it as it stood
    errors: list[Exception] = []

    def save_one(instance_id):
        try:
            other = app.repository.get(instance_id)
            other.trigger_event(Hiccuped, at=clock())
            app.save(other)
        except Exception as error:
            errors.append(error)

    savers = [threading.Thread(target=save_one, args=(i.id,)) for i in (second, third)]

    def queue_saves():
        for saver in savers:
            saver.start()
        time.sleep(0.5)  # both reach the store's locks: one in its INSERT, one for the writer

    def load(instance_id, version):
        return app.repository.get(instance_id, version=version)

    views = [v if v.name != "instances" else InstancesViewThatLetsSavesQueue(load, queue_saves) for v in read_model_views(app)]
    restarted = ReadModels(app, views=[*views, LedgerView()], store=None)  # with connections of its own
    restarted.catch_up()
    for saver in savers:
        saver.join()
    assert errors == []
    assert [restarted.instance(i.id).version for i in (first, second, third)] == [2, 2, 2]
    restarted.close()


def test_an_event_that_cannot_be_decoded_stops_the_views_with_a_clear_message(memory_app):
    from uuid import uuid4

    from eventsourcing.persistence import StoredEvent

    memory_app.recorder.insert_events([StoredEvent(uuid4(), 1, "pex.domain.gone:Thing.Happened", b"{}")])
    read_models = ReadModels(memory_app)
    with pytest.raises(ReadModelError, match="cannot be decoded"):
        read_models.catch_up()


def test_the_calendar_shows_bookings_over_time_and_holds_while_they_are_live(app, clock, read_models):
    from datetime import timedelta

    play(app, clock, FIXED_HISTORY[:3])  # alice's booking, and bob's counter-offer held
    now = clock()
    holds = [e for e in read_models.calendar(at=now) if e.is_hold]
    assert holds and all(e.hold_until > now for e in holds)
    later = now + timedelta(minutes=10)
    assert not [e for e in read_models.calendar(at=later) if e.is_hold]
    bookings = read_models.calendar(node="node1", holds=False)
    assert [e.kind for e in bookings] == ["booking"]
    booking = bookings[0]
    assert read_models.calendar(node="node1", start=booking.end, holds=False) == []
    assert read_models.calendar(node="node1", end=booking.start, holds=False) == []
    assert read_models.calendar(node="node1", start=booking.start, end=booking.start + timedelta(minutes=1), holds=False) == [booking]
    assert isinstance(booking.recorded_at, datetime)


def alter(read_models: ReadModels, table: str, statement: str) -> None:
    store = read_models.store
    with store.transaction(write=True) as cursor:
        cursor.execute(statement.format(table=store.qualified(table)))


@pytest.mark.parametrize("database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_view_an_earlier_pex_made_with_other_columns_is_made_again_and_rebuilt(app, clock):
    play(app, clock, FIXED_HISTORY)
    earlier = ReadModels(app)
    earlier.catch_up()
    alter(earlier, "pex_view_reservations", "ALTER TABLE {table} DROP COLUMN history")  # as before it had one
    positions = earlier.positions()
    earlier.close()

    upgraded = ReadModels(app)  # what `pex init` and the gunicorn master do

    assert upgraded.positions() == {**positions, "reservations": 0}  # the others, the ledger above all, kept
    assert all(row.history for row in upgraded.reservations())
    assert_same_views(upgraded, rebuilt(app))
    assert_read_models_match_aggregates(app, upgraded)

    alter(upgraded, "pex_ledger", "ALTER TABLE {table} ADD COLUMN signed_by text")
    with pytest.raises(ReadModelError, match="never rebuilt"):
        ReadModels(app)  # evidence is never dropped to be made again
    ReadModels(app, create_tables=False).close()  # a process that makes no tables does not look
    upgraded.close()
