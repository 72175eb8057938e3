"""The event store's PostgreSQL recorder, with each save in one statement.

eventsourcing's recorder saves in a pipelined transaction: it takes the events table's
EXCLUSIVE lock (so that notification ids are committed in the order they are issued, and a
reader tailing the log never passes over one that commits later), sends the NOTIFY and the
INSERT, waits for their results, and only then sends the COMMIT. The lock, which every writer
of the store queues for, is held across that second round trip and the client's work between.

This recorder does the same inside one server-side function, called as one prepared
statement in autocommit mode: the lock, the NOTIFY and the INSERT, and the commit that ends
the statement, with no round trip while the lock is held. What it stores, and the order
readers see, are the library's (tests/test_store_order.py has a reader tail the log while
several write; tests/test_races.py holds the no-overbooking promise on it).

The library's own function (POSTGRES_ENABLE_DB_FUNCTIONS) does without the lock, and tailing
readers then skip events that commit out of order, so it stays off."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.utils import retry
from psycopg.errors import UndefinedFunction
from psycopg.sql import SQL, Identifier

log = logging.getLogger(__name__)


class OneStatementSaves(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = Identifier(datastore.schema), Identifier(self.events_table_name)
        self.save_function_name = f"pex_save_{self.events_table_name}"
        self.check_identifier_length(self.save_function_name)
        function = Identifier(self.save_function_name)
        id_type = Identifier(datastore.originator_id_type)
        # The events come as four arrays, one a column, sent in binary: psycopg dumps an array
        # of uuids, integers or bytes in C, where an array of the library's composite type
        # (its own function's argument, and this one's until 2026-12-04, whose overload a
        # store made then still has, unused) was dumped field by field in Python as text:
        # the largest part of a save's CPU in a PEX process.
        self.save_function_signature = SQL("{schema}.{function}({id_type}[], bigint[], text[], bytea[])").format(
            schema=schema, function=function, id_type=id_type)
        self.sql_create_statements.append(SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}("
            "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "SET LOCAL lock_timeout = '{lock_timeout}s'; "
            "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY INSERT INTO {schema}.{table} AS t (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) "
            "RETURNING notification_id; "
            "END; $BODY$"
        ).format(
            schema=schema, function=function, table=table, id_type=id_type,
            lock_timeout=datastore.lock_timeout, channel=Identifier(self.channel_name),
        ))
        self.save_statement = SQL(
            "SELECT * FROM {schema}.{function}(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
        ).format(schema=schema, function=function, id_type=id_type)
        self._function_missing = False

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if kwargs.get("tracking") is not None:  # a process application's: the library's way
            return super().insert_events(stored_events, **kwargs)
        if not stored_events:
            return None
        if not self._function_missing:
            try:
                with self.datastore.get_connection() as conn, conn.cursor() as curs:
                    curs.execute(self.save_statement, self.save_parameters(stored_events), prepare=True)
                    return [row[self.save_function_name] for row in curs.fetchall()]
            except ProgrammingError as error:
                if not isinstance(error.__cause__, UndefinedFunction):
                    raise
            # Tables an earlier PEX made, not made since (`pex init` and `pex serve` make them):
            # this process saves as the library does; the next one started will find it.
            self._function_missing = True
            log.warning("the store has no %s function (pex init makes it): saving as the library does",
                        self.save_function_name)
        return super().insert_events(stored_events, **kwargs)

    @staticmethod
    def save_parameters(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], list[int], list[str], list[bytes]]:
        """The save statement's four arrays: the events' ids, versions, topics and states."""
        return (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
