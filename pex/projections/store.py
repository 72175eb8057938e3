"""Where the persisted read models live: a few plain tables beside the event store, and the
row of `pex_view_tracking` that says how far each view has read the notification log.

Three stores hold the same tables:

- PostgresStore: tables in the application's own database and schema, reached through the
  application's connection pool;
- SQLiteStore: tables in the application's own SQLite file (WAL), on connections of its own;
- MemoryStore: dicts, for the `memory:` store of tests and simulations, and for the auditor,
  which rebuilds every view in memory to compare it with the stored one.

A view changes rows only inside a Batch: one transaction that also moves the view's
tracking row to the last notification it folded, so a view is always exactly the fold of a
prefix of the log, and after a crash it resumes where its last committed batch stopped.
This is the tracking-recorder pattern of eventsourcing's PostgresTrackingRecorder and
SQLiteTrackingRecorder, written out here because several views share one SQLite file (whose
library tracking table has a fixed name) and each needs a position of its own, so that one
view can be rebuilt while the others keep theirs.

Two followers that catch up at once cannot both apply a batch: a batch locks the tracking
rows it moves (PostgreSQL FOR UPDATE, SQLite BEGIN IMMEDIATE) and gives up with
PositionsMoved when they are no longer where it started from.

A view's tables are made by `create` where the process has DDL rights (pex init, the gunicorn
master); a table an earlier PEX made with other columns is dropped (`changed`, `drop`) and
made again, and its view rebuilt from the log.

Beside the views, `pex_checkpoints` keeps one row per in-memory projection that a process
would otherwise fold from the start of the log when it starts (pex.projections.checkpoints):
its state, the schema of that state, and the notification id it reflects. A checkpoint is
replaced only by one of a later position, so a slow process never moves it back.

Rows are dicts of plain Python values (str, int, bool, UTC datetime, Decimal, UUID, and
lists/dicts for JSON columns); every store gives back exactly what was put, so rows from any
two stores can be compared with ==.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any
from uuid import UUID

TRACKING_TABLE = "pex_view_tracking"
CHECKPOINT_TABLE = "pex_checkpoints"
APPLICATION_NAME = "pex"

Row = dict[str, Any]
Key = tuple[Any, ...]

# Column kinds, and the SQL type each has in each database.
KINDS = {
    #          SQLite     PostgreSQL
    "text": ("TEXT", "text"),
    "int": ("INTEGER", "bigint"),
    "bool": ("INTEGER", "boolean"),
    "time": ("TEXT", "timestamptz"),  # SQLite: fixed-width ISO 8601 in UTC, so text order is time order
    "money": ("TEXT", "numeric"),
    "uuid": ("TEXT", "uuid"),
    "json": ("TEXT", "text"),
    "bytes": ("BLOB", "bytea"),
}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, kind)
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()

    # Cached: every row written or compared asks for them (a frozen dataclass still has a __dict__).
    @cached_property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @cached_property
    def kinds(self) -> dict[str, str]:
        return dict(self.columns)

    def key_of(self, row: Row) -> Key:
        return tuple(row[c] for c in self.key)

    def normalize(self, row: Row) -> Row:
        """The row as every store gives it back: all columns, canonical values."""
        kinds = self.kinds
        unknown = row.keys() - kinds.keys()
        if unknown:
            raise ValueError(f"{self.name} has no column {', '.join(sorted(unknown))}")
        return {name: None if (value := row.get(name)) is None else fn(value) for name, fn in self.normalizers}

    @cached_property
    def digest_forms(self) -> tuple[tuple[str, Any], ...]:
        return tuple((name, DIGEST_FORMS.get(kind)) for name, kind in self.columns)

    @cached_property
    def normalizers(self) -> tuple[tuple[str, Any], ...]:
        return tuple((name, NORMALIZERS.get(kind, str)) for name, kind in self.columns)


def _time(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} in a read model")
    return value.astimezone(UTC)


# How each kind's values are made canonical (None stays None).
NORMALIZERS: dict[str, Any] = {
    "time": _time,
    "money": Decimal,
    "uuid": lambda value: value if isinstance(value, UUID) else UUID(str(value)),
    "json": lambda value: as_json(value),
    "bool": bool,
    "int": int,
    "text": str,
    "bytes": str,
}


def normalize(kind: str, value: Any) -> Any:
    if value is None:
        return None
    return NORMALIZERS.get(kind, str)(value)


JSON_SCALARS = (str, int, float, bool)


def as_json(value: Any) -> Any:
    """The value as it comes back from JSON: tuples become lists. Built directly for plain
    lists, dicts with text keys and scalars (a read model's history, say, is written on every
    event and a round trip through json text would cost more than the rest of the fold);
    anything else goes through json text, as a store would."""
    if value is None or type(value) in JSON_SCALARS:
        return value
    if type(value) in (list, tuple):
        return [as_json(v) for v in value]
    if type(value) is dict and all(type(k) is str for k in value):
        return {k: as_json(v) for k, v in value.items()}
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class Where:
    """One condition of a query: `column op value`, op one of = != < <= > >=."""

    column: str
    op: str
    value: Any

    def holds_for(self, row: Row) -> bool:
        v = row[self.column]
        if v is None:
            return False
        return {
            "=": v == self.value,
            "!=": v != self.value,
            "<": v < self.value,
            "<=": v <= self.value,
            ">": v > self.value,
            ">=": v >= self.value,
        }[self.op]


@dataclass(frozen=True)
class StoredCheckpoint:
    """One projection's saved state (bytes, in the projection's own `schema`) and the id of
    the last notification folded into it."""

    name: str
    schema: int
    position: int
    state: bytes
    saved_at: datetime


class PositionsMoved(Exception):
    """Another follower moved a view's tracking row since this batch read it: start again."""


class Batch:
    """The changes of one transaction: rows read through it see its own earlier writes."""

    def __init__(self, load, load_many=None) -> None:
        self._load = load  # (table, key) -> row or None, from the store inside the transaction
        # (table, keys) -> {key: row} of those found: `preload`'s one query for many rows.
        self._load_many = load_many or (lambda table, keys: {k: r for k in keys if (r := load(table, k)) is not None})
        self._read: dict[tuple[str, Key], Row | None] = {}
        self.changes: dict[str, dict[Key, Row | None]] = {}
        self.tables: dict[str, Table] = {}
        self.positions: dict[str, int] = {}

    def get(self, table: Table, key: Key) -> Row | None:
        changed = self.changes.get(table.name, {})
        if key in changed:
            row = changed[key]
            return dict(row) if row is not None else None
        if (table.name, key) not in self._read:
            self._read[(table.name, key)] = self._load(table, key)
        row = self._read[(table.name, key)]
        return dict(row) if row is not None else None

    def preload(self, table: Table, keys: Iterable[Key]) -> None:
        """Read the rows of `table` under `keys` that `get` will ask for, in one query where
        it would send one each (a batch of the log's events reads hundreds)."""
        changed = self.changes.get(table.name, {})
        wanted = {k for k in keys if k not in changed and (table.name, k) not in self._read}
        if not wanted:
            return
        found = self._load_many(table, wanted)
        for key in wanted:
            self._read[(table.name, key)] = found.get(key)

    def put(self, table: Table, row: Row) -> None:
        row = table.normalize(row)
        self.tables[table.name] = table
        self.changes.setdefault(table.name, {})[table.key_of(row)] = row

    def update(self, table: Table, key: Key, **values: Any) -> Row | None:
        """Change some columns of an existing row; None (and nothing done) if there is none."""
        row = self.get(table, key)
        if row is None:
            return None
        row.update(values)
        self.put(table, row)
        return row

    def delete(self, table: Table, key: Key) -> None:
        self.tables[table.name] = table
        self.changes.setdefault(table.name, {})[key] = None

    def track(self, view: str, notification_id: int) -> None:
        self.positions[view] = notification_id


class Store:
    """The interface every store offers to the views and to ReadModels."""

    kind = "abstract"

    def create(self, tables: Iterable[Table], views: Iterable[str]) -> None:
        raise NotImplementedError

    def positions(self, views: Iterable[str]) -> dict[str, int]:
        raise NotImplementedError

    @contextmanager
    def batch(self, expected: dict[str, int]) -> Iterator[Batch]:
        raise NotImplementedError
        yield  # pragma: no cover

    def reset(self, view: str, tables: Iterable[Table]) -> None:
        """Empty a view's tables and move it back to the start of the log, in one transaction."""
        raise NotImplementedError

    def changed(self, tables: Iterable[Table]) -> list[str]:
        """The names of the `tables` that exist with other columns than they declare (made by
        an earlier PEX)."""
        raise NotImplementedError

    def drop(self, view: str, tables: Iterable[Table]) -> None:
        """Drop a view's tables and move it back to the start of the log, in one transaction;
        `create` makes them again."""
        raise NotImplementedError

    def select(
        self, table: Table, where: Sequence[Where] = (), order_by: Sequence[str] = (), limit: int | None = None
    ) -> list[Row]:
        raise NotImplementedError

    def snapshot(
        self, tables: Iterable[Table], views: Iterable[str], digests: bool = False
    ) -> tuple[dict[str, int], dict[str, dict[Key, Any]]]:
        """Positions and every row of `tables`, read in one consistent snapshot; with
        `digests`, each row's row_digest instead of the row (a fraction of the memory)."""
        raise NotImplementedError

    def read_checkpoint(self, name: str) -> StoredCheckpoint | None:
        """The checkpoint saved under `name`, or None (none saved, or no table for them yet)."""
        raise NotImplementedError

    def write_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        """Save `checkpoint` unless one of the same schema and the same or a later position is
        stored (one of another schema is of no use to this PEX: after an upgrade it is replaced
        even before the log moves on); whether it was written. Raises if the table is missing (the process may not make tables)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# --- in memory -------------------------------------------------------------------------


class MemoryStore(Store):
    kind = "memory"

    def __init__(self) -> None:
        self.rows: dict[str, dict[Key, Row]] = {}
        self.tracking: dict[str, int] = {}
        self.checkpoints: dict[str, StoredCheckpoint] = {}
        self._lock = threading.RLock()

    def create(self, tables: Iterable[Table], views: Iterable[str]) -> None:
        with self._lock:
            for table in tables:
                self.rows.setdefault(table.name, {})
            for view in views:
                self.tracking.setdefault(view, 0)

    def positions(self, views: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {view: self.tracking.get(view, 0) for view in views}

    @contextmanager
    def batch(self, expected: dict[str, int]) -> Iterator[Batch]:
        with self._lock:
            if self.positions(expected) != expected:
                raise PositionsMoved(expected)

            def load(table: Table, key: Key) -> Row | None:
                row = self.rows.get(table.name, {}).get(key)
                return dict(row) if row is not None else None

            batch = Batch(load)
            yield batch  # an exception here discards the batch: nothing was touched yet
            for name, changes in batch.changes.items():
                rows = self.rows.setdefault(name, {})
                for key, row in changes.items():
                    if row is None:
                        rows.pop(key, None)
                    else:
                        rows[key] = row
            self.tracking.update(batch.positions)

    def reset(self, view: str, tables: Iterable[Table]) -> None:
        with self._lock:
            for table in tables:
                self.rows[table.name] = {}
            self.tracking[view] = 0

    def changed(self, tables: Iterable[Table]) -> list[str]:
        return []  # nothing outlives the process

    def drop(self, view: str, tables: Iterable[Table]) -> None:
        with self._lock:
            for table in tables:
                self.rows.pop(table.name, None)
            self.tracking[view] = 0

    def select(
        self, table: Table, where: Sequence[Where] = (), order_by: Sequence[str] = (), limit: int | None = None
    ) -> list[Row]:
        kinds = table.kinds
        where = [Where(w.column, w.op, normalize(kinds[w.column], w.value)) for w in where]
        with self._lock:
            rows = [dict(r) for r in self.rows.get(table.name, {}).values() if all(w.holds_for(r) for w in where)]
        rows.sort(key=lambda r: tuple(sort_key(r[c]) for c in order_by))
        return rows[:limit] if limit is not None else rows

    def snapshot(
        self, tables: Iterable[Table], views: Iterable[str], digests: bool = False
    ) -> tuple[dict[str, int], dict[str, dict[Key, Any]]]:
        with self._lock:
            return self.positions(views), {
                t.name: {k: row_digest(t, r) if digests else dict(r) for k, r in self.rows.get(t.name, {}).items()}
                for t in tables
            }


    def read_checkpoint(self, name: str) -> StoredCheckpoint | None:
        with self._lock:
            return self.checkpoints.get(name)

    def write_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        with self._lock:
            stored = self.checkpoints.get(checkpoint.name)
            if stored is not None and stored.schema == checkpoint.schema and stored.position >= checkpoint.position:
                return False
            self.checkpoints[checkpoint.name] = checkpoint
            return True


# How each kind's value enters a row's digest (absent: as it is).
DIGEST_FORMS: dict[str, Any] = {
    "time": lambda value: value.astimezone(UTC).isoformat(),
    "money": lambda value: str(Decimal(value).normalize()),
    "uuid": str,
    "text": str,
}
DIGEST_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def row_digest(table: Table, row: Row) -> bytes:
    """A short digest of a row's values, equal for equal rows from any store."""
    values = [
        None if (value := row[name]) is None else value if form is None else form(value) for name, form in table.digest_forms
    ]
    return hashlib.blake2b(DIGEST_ENCODER.encode(values).encode(), digest_size=16).digest()


def sort_key(value: Any) -> tuple:
    """None first, then values of one type in their own order."""
    return (value is not None, value if value is not None else 0)


# --- SQL -------------------------------------------------------------------------------


class SqlStore(Store):
    """What SQLite and PostgreSQL share; subclasses supply connections and value adapters."""

    placeholder = "?"
    dialect = 0  # index into KINDS' SQL types

    def qualified(self, name: str) -> str:
        return quote(name)

    # -- hooks --

    @contextmanager
    def transaction(self, write: bool, snapshot: bool = False) -> Iterator[Any]:
        """A transaction; `snapshot` makes every read in it see one consistent state."""
        raise NotImplementedError
        yield  # pragma: no cover

    def to_db(self, kind: str, value: Any) -> Any:
        raise NotImplementedError

    def from_db(self, kind: str, value: Any) -> Any:
        raise NotImplementedError

    def lock_positions(self, cursor: Any, views: Sequence[str]) -> dict[str, int]:
        raise NotImplementedError

    def before_create(self, cursor: Any) -> None:
        pass

    def stored_columns(self, cursor: Any, name: str) -> set[str]:
        """The columns of the table `name` as the database has it; empty if there is none."""
        raise NotImplementedError

    # -- statements --

    def create(self, tables: Iterable[Table], views: Iterable[str]) -> None:
        with self.transaction(write=True) as cursor:
            self.before_create(cursor)
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.qualified(TRACKING_TABLE)} ("
                f"view_name {KINDS['text'][self.dialect]} PRIMARY KEY, "
                f"application_name {KINDS['text'][self.dialect]} NOT NULL, "
                f"notification_id {KINDS['int'][self.dialect]} NOT NULL)"
            )
            self._create_checkpoints(cursor)
            for table in tables:
                columns = ", ".join(f"{quote(name)} {KINDS[kind][self.dialect]}" for name, kind in table.columns)
                key = ", ".join(quote(c) for c in table.key)
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.qualified(table.name)} ({columns}, PRIMARY KEY ({key}))")
                for index in table.indexes:
                    name = quote(f"{table.name}_{'_'.join(index)}_idx")
                    cols = ", ".join(quote(c) for c in index)
                    cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {self.qualified(table.name)} ({cols})")
            p = self.placeholder
            for view in views:
                cursor.execute(
                    f"INSERT INTO {self.qualified(TRACKING_TABLE)} (view_name, application_name, notification_id) "
                    f"VALUES ({p}, {p}, 0) ON CONFLICT (view_name) DO NOTHING",
                    (view, APPLICATION_NAME),
                )

    def _create_checkpoints(self, cursor: Any) -> None:
        text, integer, time, data = (KINDS[k][self.dialect] for k in ("text", "int", "time", "bytes"))
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.qualified(CHECKPOINT_TABLE)} ("
            f"name {text} PRIMARY KEY, schema_version {integer} NOT NULL, notification_id {integer} NOT NULL, "
            f"saved_at {time} NOT NULL, state {data} NOT NULL)"
        )

    def read_checkpoint(self, name: str) -> StoredCheckpoint | None:
        p = self.placeholder
        with self.transaction(write=False) as cursor:
            if not self.stored_columns(cursor, CHECKPOINT_TABLE):
                return None
            cursor.execute(
                f"SELECT schema_version, notification_id, saved_at, state FROM {self.qualified(CHECKPOINT_TABLE)} WHERE name = {p}",
                (name,),
            )
            rows = fetch(cursor)
        if not rows:
            return None
        row = rows[0]
        return StoredCheckpoint(
            name, row["schema_version"], row["notification_id"], bytes(row["state"]), self.from_db("time", row["saved_at"])
        )

    def write_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        p = self.placeholder
        table = self.qualified(CHECKPOINT_TABLE)
        with self.transaction(write=True) as cursor:
            # The WHERE keeps the later of two racing writers, whichever commits last.
            cursor.execute(
                f"INSERT INTO {table} (name, schema_version, notification_id, saved_at, state) VALUES ({p}, {p}, {p}, {p}, {p}) "
                f"ON CONFLICT (name) DO UPDATE SET schema_version = excluded.schema_version, "
                f"notification_id = excluded.notification_id, saved_at = excluded.saved_at, state = excluded.state "
                f"WHERE {table}.notification_id < excluded.notification_id "
                f"OR {table}.schema_version <> excluded.schema_version",
                (
                    checkpoint.name, checkpoint.schema, checkpoint.position,
                    self.to_db("time", checkpoint.saved_at), checkpoint.state,
                ),
            )  # fmt: skip
            return cursor.rowcount > 0

    def positions(self, views: Iterable[str]) -> dict[str, int]:
        views = list(views)
        with self.transaction(write=False) as cursor:
            cursor.execute(f"SELECT view_name, notification_id FROM {self.qualified(TRACKING_TABLE)}")
            found = {row["view_name"]: row["notification_id"] for row in fetch(cursor)}
        return {view: found.get(view, 0) for view in views}

    @contextmanager
    def batch(self, expected: dict[str, int]) -> Iterator[Batch]:
        with self.transaction(write=True) as cursor:
            if self.lock_positions(cursor, sorted(expected)) != expected:
                raise PositionsMoved(expected)
            batch = Batch(lambda table, key: self._load(cursor, table, key),
                          lambda table, keys: self._load_many(cursor, table, keys))
            yield batch
            self._flush(cursor, batch)

    def _load(self, cursor: Any, table: Table, key: Key) -> Row | None:
        p = self.placeholder
        kinds = table.kinds
        condition = " AND ".join(f"{quote(c)} = {p}" for c in table.key)
        cursor.execute(
            f"SELECT * FROM {self.qualified(table.name)} WHERE {condition}",
            [self.to_db(kinds[c], v) for c, v in zip(table.key, key, strict=True)],
        )
        rows = fetch(cursor)
        return self._row(table, rows[0]) if rows else None

    # How many keys one statement of `_load_many` asks for (SQLite allows 32,766 parameters).
    keys_per_statement = 500

    def _load_many(self, cursor: Any, table: Table, keys: Iterable[Key]) -> dict[Key, Row]:
        if len(table.key) != 1:
            return {k: row for k in keys if (row := self._load(cursor, table, k)) is not None}
        column, kind = table.key[0], table.kinds[table.key[0]]
        keys = list(keys)
        found: dict[Key, Row] = {}
        for at in range(0, len(keys), self.keys_per_statement):
            chunk = keys[at:at + self.keys_per_statement]
            cursor.execute(*self._select_keys(table, column, [self.to_db(kind, k[0]) for k in chunk]))
            for raw in fetch(cursor):
                row = self._row(table, raw)
                found[table.key_of(row)] = row
        return found

    def _select_keys(self, table: Table, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        marks = ", ".join(self.placeholder for _ in values)
        return f"SELECT * FROM {self.qualified(table.name)} WHERE {quote(column)} IN ({marks})", values

    def _row(self, table: Table, raw: Any) -> Row:
        return {name: self.from_db(kind, raw[name]) for name, kind in table.columns}

    def _flush(self, cursor: Any, batch: Batch) -> None:
        p = self.placeholder
        for name, changes in batch.changes.items():
            table = batch.tables[name]
            deleted = [key for key, row in changes.items() if row is None]
            if deleted:
                self._delete(cursor, table, deleted)
            rows = [row for row in changes.values() if row is not None]
            if rows:
                self._upsert(cursor, table, rows)
        for view, notification_id in batch.positions.items():
            cursor.execute(
                f"UPDATE {self.qualified(TRACKING_TABLE)} SET notification_id = {p} WHERE view_name = {p}",
                (notification_id, view),
            )

    def _delete(self, cursor: Any, table: Table, keys: list[Key]) -> None:
        p, kinds = self.placeholder, table.kinds
        condition = " AND ".join(f"{quote(c)} = {p}" for c in table.key)
        cursor.executemany(
            f"DELETE FROM {self.qualified(table.name)} WHERE {condition}",
            [[self.to_db(kinds[c], v) for c, v in zip(table.key, key, strict=True)] for key in keys],
        )

    def _upsert(self, cursor: Any, table: Table, rows: list[Row]) -> None:
        p, kinds, columns = self.placeholder, table.kinds, table.column_names
        cursor.executemany(
            f"INSERT INTO {self.qualified(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(p for _ in columns)}) {self._on_conflict(table)}",
            [[self.to_db(kinds[c], row[c]) for c in columns] for row in rows],
        )

    @staticmethod
    def _on_conflict(table: Table) -> str:
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in table.column_names if c not in table.key)
        return f"ON CONFLICT ({', '.join(quote(c) for c in table.key)}) " + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")

    def reset(self, view: str, tables: Iterable[Table]) -> None:
        with self.transaction(write=True) as cursor:
            self.lock_positions(cursor, [view])
            for table in tables:
                cursor.execute(f"DELETE FROM {self.qualified(table.name)}")
            p = self.placeholder
            cursor.execute(f"UPDATE {self.qualified(TRACKING_TABLE)} SET notification_id = 0 WHERE view_name = {p}", (view,))

    def changed(self, tables: Iterable[Table]) -> list[str]:
        with self.transaction(write=False) as cursor:
            return [t.name for t in tables if (found := self.stored_columns(cursor, t.name)) and found != set(t.column_names)]

    def drop(self, view: str, tables: Iterable[Table]) -> None:
        with self.transaction(write=True) as cursor:
            self.before_create(cursor)
            for table in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {self.qualified(table.name)}")
            if self.stored_columns(cursor, TRACKING_TABLE):
                p = self.placeholder
                cursor.execute(f"UPDATE {self.qualified(TRACKING_TABLE)} SET notification_id = 0 WHERE view_name = {p}", (view,))

    def select(
        self, table: Table, where: Sequence[Where] = (), order_by: Sequence[str] = (), limit: int | None = None
    ) -> list[Row]:
        statement, params = self._select_statement(table, where, order_by, limit)
        with self.transaction(write=False) as cursor:
            cursor.execute(statement, params)
            return [self._row(table, raw) for raw in fetch(cursor)]

    def _select_statement(
        self, table: Table, where: Sequence[Where], order_by: Sequence[str], limit: int | None
    ) -> tuple[str, list[Any]]:
        kinds = table.kinds
        statement = f"SELECT * FROM {self.qualified(table.name)}"
        params: list[Any] = []
        if where:
            conditions = []
            for w in where:
                if w.op not in ("=", "!=", "<", "<=", ">", ">="):
                    raise ValueError(f"unknown operator {w.op!r}")
                conditions.append(f"{quote(w.column)} {w.op} {self.placeholder}")
                params.append(self.to_db(kinds[w.column], normalize(kinds[w.column], w.value)))
            statement += " WHERE " + " AND ".join(conditions)
        if order_by:
            statement += " ORDER BY " + ", ".join(quote(c) for c in order_by)
        if limit is not None:
            statement += f" LIMIT {int(limit)}"
        return statement, params

    def snapshot(
        self, tables: Iterable[Table], views: Iterable[str], digests: bool = False
    ) -> tuple[dict[str, int], dict[str, dict[Key, Any]]]:
        tables, views = list(tables), list(views)
        with self.transaction(write=False, snapshot=True) as cursor:
            cursor.execute(f"SELECT view_name, notification_id FROM {self.qualified(TRACKING_TABLE)}")
            found = {row["view_name"]: row["notification_id"] for row in fetch(cursor)}
            contents: dict[str, dict[Key, Any]] = {}
            for table in tables:
                cursor.execute(f"SELECT * FROM {self.qualified(table.name)}")
                rows = contents[table.name] = {}
                while page := cursor.fetchmany(2000):
                    for raw in page:
                        row = self._row(table, raw)
                        rows[table.key_of(row)] = row_digest(table, row) if digests else row
        return {v: found.get(v, 0) for v in views}, contents


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def fetch(cursor: Any) -> list[Any]:
    return cursor.fetchall()


class SQLiteStore(SqlStore):
    """Tables in the application's SQLite file. One connection per thread; writes take the
    database's write lock at BEGIN IMMEDIATE, so a batch never has to upgrade a read lock."""

    kind = "sqlite"
    placeholder = "?"
    dialect = 0

    def __init__(self, path: str, lock_timeout: float = 10.0) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self, write: bool, snapshot: bool = False) -> Iterator[Any]:
        conn = self._connection()
        cursor = conn.cursor()
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cursor
        except BaseException:
            conn.rollback()
            raise
        else:
            if write:
                conn.commit()
            else:
                conn.rollback()
        finally:
            cursor.close()

    def stored_columns(self, cursor: Any, name: str) -> set[str]:
        cursor.execute(f"PRAGMA table_info({quote(name)})")
        return {row["name"] for row in cursor.fetchall()}

    def lock_positions(self, cursor: Any, views: Sequence[str]) -> dict[str, int]:
        # BEGIN IMMEDIATE already excludes every other writer of the file.
        cursor.execute(f"SELECT view_name, notification_id FROM {quote(TRACKING_TABLE)}")
        found = {row["view_name"]: row["notification_id"] for row in cursor.fetchall()}
        return {view: found.get(view, 0) for view in views}

    def to_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "time":
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        if kind in ("money", "uuid"):
            return str(value)
        if kind == "json":
            return json.dumps(value, sort_keys=True)
        if kind == "bool":
            return int(bool(value))
        return value

    def from_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "time":
            return datetime.fromisoformat(value)
        if kind == "money":
            return Decimal(value)
        if kind == "uuid":
            return UUID(value)
        if kind == "json":
            return json.loads(value)
        if kind == "bool":
            return bool(value)
        return value

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._connections.clear()
        self._local = threading.local()


@dataclass
class PostgresStore(SqlStore):
    """Tables in the application's PostgreSQL database and schema, through its datastore's pool
    (an eventsourcing PostgresDatastore: connections in autocommit, explicit transactions)."""

    datastore: Any
    schema: str = field(default="public")

    kind = "postgres"
    placeholder = "%s"
    dialect = 1
    # Serializes CREATE TABLE IF NOT EXISTS across processes: concurrent creation of one
    # table can fail in PostgreSQL's catalogue.
    advisory_lock_key = 0x50455856  # "PEXV"

    def qualified(self, name: str) -> str:
        return f"{quote(self.schema)}.{quote(name)}"

    @contextmanager
    def transaction(self, write: bool, snapshot: bool = False) -> Iterator[Any]:
        with self.datastore.transaction(commit=write) as cursor:
            if snapshot:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield cursor

    def before_create(self, cursor: Any) -> None:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.advisory_lock_key,))

    def stored_columns(self, cursor: Any, name: str) -> set[str]:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (self.schema, name),
        )
        return {row["column_name"] for row in cursor.fetchall()}

    def lock_positions(self, cursor: Any, views: Sequence[str]) -> dict[str, int]:
        cursor.execute(
            f"SELECT view_name, notification_id FROM {self.qualified(TRACKING_TABLE)} WHERE view_name = ANY(%s) ORDER BY view_name FOR UPDATE",
            (list(views),),
        )
        found = {row["view_name"]: row["notification_id"] for row in cursor.fetchall()}
        return {view: found.get(view, 0) for view in views}

    # A batch's reads and writes are one statement per table, whatever its rows: the values go
    # as one array per column, taken apart by unnest (a row each through executemany cost
    # PostgreSQL a statement each: a batch of the log writes a ledger row per event).
    keys_per_statement = 10_000

    def _select_keys(self, table: Table, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        array = f"%b::{KINDS[table.kinds[column]][self.dialect]}[]"
        return f"SELECT * FROM {self.qualified(table.name)} WHERE {quote(column)} = ANY({array})", [values]

    def _arrays(self, table: Table, columns: Sequence[str]) -> str:
        kinds = table.kinds
        return ", ".join(f"%b::{KINDS[kinds[c]][self.dialect]}[]" for c in columns)

    def _delete(self, cursor: Any, table: Table, keys: list[Key]) -> None:
        kinds = table.kinds
        names = ", ".join(quote(c) for c in table.key)
        cursor.execute(
            f"DELETE FROM {self.qualified(table.name)} WHERE ({names}) IN (SELECT * FROM unnest({self._arrays(table, table.key)}))",
            [[self.to_db(kinds[c], key[i]) for key in keys] for i, c in enumerate(table.key)],
        )

    def _upsert(self, cursor: Any, table: Table, rows: list[Row]) -> None:
        kinds, columns = table.kinds, table.column_names
        cursor.execute(
            f"INSERT INTO {self.qualified(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"SELECT * FROM unnest({self._arrays(table, columns)}) {self._on_conflict(table)}",
            [[self.to_db(kinds[c], row[c]) for row in rows] for c in columns],
        )

    def to_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "json":
            return json.dumps(value, sort_keys=True)
        return value

    def from_db(self, kind: str, value: Any) -> Any:
        if value is None:
            return None
        if kind == "time":
            return value.astimezone(UTC)
        if kind == "json":
            return json.loads(value)
        return value


class SqlStatements:
    """For side tables kept in the read models' store (login state, webhook deliveries):
    statements written with `?` placeholders, given the store's own, each run in one short
    transaction of the store's."""

    store: SqlStore

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.store.placeholder)

    def _offset(self, n: int) -> str:
        # SQLite allows OFFSET only after a LIMIT, where -1 means none.
        return f"LIMIT -1 OFFSET {int(n)}" if self.store.kind == "sqlite" else f"OFFSET {int(n)}"

    def _run(self, statement: str, params: tuple = (), write: bool = True) -> list[Any]:
        """The rows `statement` answers (none for one that answers none)."""
        with self.store.transaction(write=write) as cursor:
            cursor.execute(self._sql(statement), params)
            return cursor.fetchall() if cursor.description else []

    def _change(self, statement: str, params: tuple) -> int:
        """How many rows `statement` changed."""
        with self.store.transaction(write=True) as cursor:
            cursor.execute(self._sql(statement), params)
            return cursor.rowcount
