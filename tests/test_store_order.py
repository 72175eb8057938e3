"""The PostgreSQL event store keeps the log's order while many write (pex.adapters.postgres):
each save is one statement that takes the table's lock before its events get their ids, so ids
commit in the order they are issued, and a reader tailing the log (every process's follower,
the read models, the webhook outbox) never passes over one that commits after it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL

from pex.adapters.postgres import OneStatementSaves
from pex.bootstrap import build_application
from pex.domain import Node, Resources
from pex.domain.node import node_id
from pex.settings import Settings

pytestmark = pytest.mark.postgres

WRITERS, SAVES = 4, 150


def test_a_reader_tailing_the_log_while_four_write_passes_over_no_event(postgres_url, clock):
    writers = [build_application(Settings(database_url=postgres_url, install_demo_pool=i > 0), clock=clock)
               for i in range(WRITERS)]
    reader = build_application(Settings(database_url=postgres_url, install_demo_pool=False), clock=clock)
    assert all(isinstance(w.recorder, OneStatementSaves) for w in writers)
    done = threading.Event()
    seen: list[int] = []

    def write(app, w: int) -> None:
        for i in range(SAVES):  # one to three new nodes a save: saves of several events too
            app.save(*(Node(name=f"w{w}-{i}-{k}", capacity=Resources(4, 4096, 100), at=clock()) for k in range(1 + i % 3)))

    def tail() -> None:
        last = 0
        while True:
            finished = done.is_set()  # read before the page: a page read after it holds the rest
            page = reader.recorder.select_notifications(start=last, limit=50, inclusive_of_start=False)
            seen.extend(n.id for n in page)
            last = page[-1].id if page else last
            if finished and not page:
                return

    threads = [threading.Thread(target=write, args=(app, w)) for w, app in enumerate(writers)]
    tailing = threading.Thread(target=tail)
    tailing.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    tailing.join()

    stored = [n.id for n in reader.recorder.select_notifications(start=1, limit=100_000)]
    assert len(stored) >= WRITERS * SAVES * 2
    assert seen == stored  # in order, and none passed over
    for app in (*writers, reader):
        app.close()


def test_a_save_waits_for_one_that_took_its_ids_first_to_commit(postgres_url, clock):
    """The order the tailing test relies on, made to happen: a save whose events got their ids
    and has not committed yet holds the table, so one begun after it commits after it."""
    app = build_application(Settings(database_url=postgres_url), clock=clock)
    recorder = app.recorder
    first = Node(name="first", capacity=Resources(4, 4096, 100), at=clock())
    events = recorder.save_parameters([app.mapper.to_stored_event(e) for e in first.collect_events()])
    second_saved = threading.Event()

    def save_second() -> None:
        app.save(Node(name="second", capacity=Resources(4, 4096, 100), at=clock()))
        second_saved.set()

    with recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(recorder.save_statement, events)  # the first save, its commit held back
        first_id = cursor.fetchall()[0][recorder.save_function_name]
        saving = threading.Thread(target=save_second)
        saving.start()
        assert not second_saved.wait(1.0)  # it waits for the table: no id after first_id is committed
    saving.join()
    assert second_saved.is_set()
    order = [(n.id, n.originator_id) for n in recorder.select_notifications(start=first_id, limit=10)]
    assert [oid for _, oid in order] == [first.id, node_id("second")]
    app.close()


def test_a_save_on_a_version_already_taken_records_nothing_of_it(postgres_url, clock):
    here = build_application(Settings(database_url=postgres_url), clock=clock)
    there = build_application(Settings(database_url=postgres_url, install_demo_pool=False), clock=clock)
    node = Node(name="contended", capacity=Resources(4, 4096, 100), at=clock())
    here.save(node)
    mine, theirs = here.repository.get(node.id), there.repository.get(node.id)
    mine.resize(Resources(8, 8192, 200), clock())
    theirs.resize(Resources(2, 2048, 50), clock() + timedelta(seconds=1))
    bystander = Node(name="bystander", capacity=Resources(4, 4096, 100), at=clock())
    head = here.recorder.max_notification_id()
    here.save(mine)
    with pytest.raises(IntegrityError):
        there.save(theirs, bystander)  # one save, one statement: all of it or nothing
    assert here.recorder.max_notification_id() == head + 1
    assert there.repository.get(node.id).capacity == Resources(8, 8192, 200)
    assert bystander.id not in {n.originator_id for n in there.recorder.select_notifications(start=1, limit=10_000)}
    here.close()
    there.close()


def test_a_store_an_earlier_pex_made_is_saved_to_as_the_library_does_until_pex_init(postgres_url, clock, caplog):
    made = build_application(Settings(database_url=postgres_url), clock=clock)
    with made.recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(SQL("DROP FUNCTION {}").format(made.recorder.save_function_signature))  # as no earlier PEX made it
    made.close()
    settings = Settings(database_url=postgres_url, install_demo_pool=False, create_tables=False)
    app = build_application(settings, clock=clock)
    app.save(Node(name="after the upgrade", capacity=Resources(4, 4096, 100), at=clock()))
    app.save(Node(name="and again", capacity=Resources(4, 4096, 100), at=clock()))
    assert [r.message for r in caplog.records if "pex init makes it" in r.message] == [
        "the store has no pex_save_pex_events function (pex init makes it): saving as the library does"
    ]
    assert app.repository.get(node_id("and again")).name == "and again"
    app.close()
    build_application(Settings(database_url=postgres_url, install_demo_pool=False), clock=clock).close()  # pex init
    again = build_application(settings, clock=clock)
    caplog.clear()
    again.save(Node(name="in one statement", capacity=Resources(4, 4096, 100), at=clock()))
    assert not [r for r in caplog.records if "pex init makes it" in r.message]
    again.close()
