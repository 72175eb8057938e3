"""The stored events of many aggregates in one query.

eventsourcing reads the events of one aggregate a query, and on PostgreSQL each query costs
some 0.4 ms through psycopg whatever it carries: a batch of 50 claims (pex.application.
instances), which loads 50 instances and their reservations, spent 40 ms on 100 queries. These
read the same rows, from the table the library writes, through its own datastore and with its
own columns, in one query; on a store without SQL (the in-memory one) they ask the recorder
aggregate by aggregate."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from psycopg.sql import SQL, Identifier


def stored_events_of(recorder: AggregateRecorder, originator_ids: Collection[UUID]) -> dict[UUID, list[StoredEvent]]:
    """Every stored event of each aggregate, in the order of its versions (an aggregate with
    none is left out)."""
    if not originator_ids:
        return {}
    if isinstance(recorder, PostgresAggregateRecorder):
        rows = _postgres_rows(recorder, originator_ids)
    elif isinstance(recorder, SQLiteAggregateRecorder):
        rows = _sqlite_rows(recorder, originator_ids)
    else:
        return {i: events for i in originator_ids if (events := list(recorder.select_events(i)))}
    found: dict[Any, list[StoredEvent]] = defaultdict(list)
    for event in sorted(rows, key=lambda e: e.originator_version):
        found[event.originator_id].append(event)  # a UUID, as the recorder converts it
    return dict(found)


def _postgres_rows(recorder: PostgresAggregateRecorder, originator_ids: Collection[UUID]) -> list[StoredEvent]:
    statement = SQL("SELECT * FROM {schema}.{table} WHERE originator_id = ANY(%s)").format(
        schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name)
    )
    with recorder.datastore.get_connection() as connection, connection.cursor() as cursor:
        cursor.execute(statement, [list(originator_ids)])
        return [
            StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
            for row in cursor.fetchall()
        ]


def _sqlite_rows(recorder: SQLiteAggregateRecorder, originator_ids: Collection[UUID]) -> list[StoredEvent]:
    ids = [i.hex for i in originator_ids]  # as the recorder stores them
    rows: list[Any] = []
    # SQLite takes at most 999 parameters a statement in its older builds.
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        statement = (
            f"SELECT * FROM {recorder.events_table_name} WHERE originator_id IN ({','.join('?' * len(part))})"
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, part)
            rows += cursor.fetchall()
    return [
        StoredEvent(recorder.convert_originator_id(row["originator_id"]), row["originator_version"], row["topic"], row["state"])
        for row in rows
    ]
