"""ReadModels: the persisted views behind the list endpoints and the portal (and the ledger),
kept up to date as one read model of the process's one follower (pex.projections.follower).

    read_models = ReadModels(app)                  # creates its tables unless CREATE_TABLE=n
    read_models.reservations(user_id="alice")      # catches up first: read-your-writes
    read_models.instances(user_id="alice", status="RUNNING")
    read_models.calendar(node="node1", start=t0, end=t1)

The follower polls the notification log (`select_notifications`, so it works on SQLite,
which has no subscriptions, as on PostgreSQL) and hands each batch of up to `batch_size`
events to `fold`, which applies them to every view that has not seen them, in one
transaction that also moves each view's tracking row (pex.projections.store). The rows
queries return are the one type of each read shape (pex.projections.shapes), as the
aggregate-backed queries return. The same loop rebuilds a view after
`reset`: one transaction per batch, thousands of events a second.

Queries catch up before they read (pass fresh=False to skip that), so a caller sees its own
writes; catching up when nothing is new costs two small queries. Any number of processes
may catch up at once: the tracking rows let exactly one apply each batch, and the others
start again from where it left off.

Who does what in a running PEX: the processes with DDL rights make the tables once and catch
up before the others start (`prepare_read_models`: `pex init`, and the gunicorn master before
it forks); every worker process (`pex worker`, the one `pex serve` embeds) catches up every
tick, so the ledger seals new events within a tick even when nobody reads; each gunicorn
worker builds its own ReadModels (create_tables=False) after the fork, and its list
endpoints and portal pages query them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.postgres import PostgresRecorder
from eventsourcing.sqlite import SQLiteRecorder
from eventsourcing.utils import strtobool

from pex.domain.lifecycle import Phase, phase_of
from pex.domain.reservation import Step
from pex.domain.values import Allocation, Offer, Resources, State, Terms
from pex.projections.follower import Follower, ReadModel, ReadModelError, Recorded, after
from pex.projections.ledger import LedgerView
from pex.projections.shapes import InstanceView, ReservationView
from pex.projections.store import (
    Batch,
    Key,
    MemoryStore,
    PositionsMoved,
    PostgresStore,
    Row,
    SQLiteStore,
    Store,
    Table,
    Where,
)
from pex.projections.views import ALLOCATIONS, INSTANCES, NODES, RESERVATIONS, View, read_model_views

log = logging.getLogger(__name__)


# The order of each list, a unique key: a page ends at a row's values of these (`after`).
RESERVATION_ORDER = ("created_seq",)
INSTANCE_ORDER = ("start", "reservation_id", "index")


# --- what queries return: plain values ---------------------------------------------------


def reservation_from_row(row: Row) -> ReservationView:
    """A row of the reservations view as the one reservation type: pex.wire renders it exactly
    as it renders the aggregate's (only the history's steps carry no terms)."""
    proposal = terms_from_json(row["proposal"]) if row["proposal"] else None
    # A row has all of the standing terms or none (before the first proposal).
    parts = (row["size"], row["template"], row["instances_fixed"], row["instances_option"], row["start"], row["end"])
    offer = None
    if row["per_instance"] is not None and all(p is not None for p in parts):
        # The provider's standing offer, as the aggregate keeps it (after a user walked away or
        # it lapsed, too); none before the provider answered and after a rejection.
        terms = Terms(*parts, row["price"], bool(row["auto_start"]))
        placement = tuple(Allocation(node, n) for node, n in row["placement"] or ())
        offer = Offer(terms, Resources(*row["per_instance"]), placement, tuple(row["changes"] or ()))
    return ReservationView(
        id=row["id"],
        user_id=row["user_id"],
        state=State(row["state"]),
        round=row["round"],
        proposal=proposal,
        offer=offer,
        alternatives=tuple(offer_from_json(a) for a in row["alternatives"] or ()),
        valid_until=row["valid_until"],
        instance_ids=tuple(UUID(i) for i in row["instance_ids"] or ()),
        history=tuple(
            Step(datetime.fromisoformat(s["at"]), s["party"], s["reply"], note=s["note"]) for s in row["history"] or ()
        ),
        version=row["version"],
        created_on=row["created_at"],
        modified_on=row["updated_at"],
    )


def terms_from_json(t: dict[str, Any]) -> Terms:
    """Terms from their JSON form in a row (pex.projections.views.terms_json)."""
    return Terms(
        t["size"], t["template"], t["instances_fixed"], t["instances_option"],
        datetime.fromisoformat(t["start"]), datetime.fromisoformat(t["end"]),
        Decimal(t["price"]) if t["price"] is not None else None, t["auto_start"],
        datetime.fromisoformat(t["latest_start"]) if t.get("latest_start") else None,
        timedelta(microseconds=t["min_duration_us"]) if t.get("min_duration_us") is not None else None,
    )  # fmt: skip


def offer_from_json(o: dict[str, Any]) -> Offer:
    """An offer from its JSON form in a row (pex.projections.views.offer_json)."""
    return Offer(
        terms_from_json(o["terms"]), Resources(*o["per_instance"]),
        tuple(Allocation(node, n) for node, n in o["placement"]), tuple(o["changes"]),
    )  # fmt: skip


def instance_from_row(row: Row) -> InstanceView:
    """A row of the instances view as the one instance type."""
    return InstanceView(**{k: v for k, v in row.items() if k not in ("created_at", "updated_at")})


@dataclass(frozen=True)
class NodeRow:
    id: UUID
    name: str
    capacity: Resources
    available: bool
    registered_at: datetime
    updated_at: datetime
    version: int

    @classmethod
    def from_row(cls, row: Row) -> NodeRow:
        return cls(
            row["id"], row["name"], Resources(row["cpus"], row["memory_mb"], row["disk_gb"]), row["available"],
            row["registered_at"], row["updated_at"], row["version"],
        )  # fmt: skip


@dataclass(frozen=True)
class CalendarEntry:
    """A booking or a live hold of one reservation on one node, over [start, end)."""

    node: str
    reservation_id: UUID
    kind: str  # "booking" or "hold"
    start: datetime
    end: datetime
    instances: int
    per_instance: Resources
    hold_until: datetime | None
    recorded_at: datetime

    @property
    def is_hold(self) -> bool:
        return self.kind == "hold"

    @property
    def demand(self) -> Resources:
        return self.per_instance * self.instances

    def counts_at(self, at: datetime) -> bool:
        """Whether it still occupies capacity, seen at `at` (as pex.domain.node.NodeAllocation)."""
        if self.end <= at:
            return False
        return self.hold_until is None or self.hold_until > at

    @classmethod
    def from_row(cls, row: Row) -> CalendarEntry:
        return cls(
            row["node"], row["reservation_id"], row["kind"], row["start"], row["end"], row["instances"],
            Resources(row["cpus"], row["memory_mb"], row["disk_gb"]), row["hold_until"], row["recorded_at"],
        )  # fmt: skip


@dataclass(frozen=True)
class Progress:
    position: int  # the notification id every view has reached
    events: int  # how many notifications were folded
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# --- the read models ---------------------------------------------------------------------


def store_for(app: Any) -> Store:
    """A store in the application's own database: its PostgreSQL schema, or its SQLite file;
    memory for the `memory:` store."""
    recorder = app.recorder
    if isinstance(recorder, PostgresRecorder):  # the library's, or pex.adapters.postgres's
        datastore = recorder.datastore
        return PostgresStore(datastore, datastore.schema)
    if isinstance(recorder, SQLiteRecorder):
        pool = recorder.datastore.pool
        if not pool.is_sqlite_memory_mode:
            timeout = float(app.factory.env.get("SQLITE_LOCK_TIMEOUT") or 10)
            return SQLiteStore(pool.db_name, lock_timeout=timeout)
    return MemoryStore()


class ReadModels:
    name = "pex.read_models"  # to the follower; each view's position is its own tracking row
    batch_size = 1000

    def __init__(
        self,
        app: Any,
        views: Sequence[View] | None = None,
        store: Store | None = None,
        create_tables: bool | None = None,
    ):
        """`app` is a PexApplication (its recorder is read and its mapper decodes). The views
        default to the three read models and the ledger. Tables are created (if missing)
        unless `create_tables` is False or the application's CREATE_TABLE setting is off."""
        self.app = app
        self.views: tuple[View, ...] = tuple(views) if views is not None else (*read_model_views(app), LedgerView())
        self.by_name = {v.name: v for v in self.views}
        self.store = store if store is not None else store_for(app)
        if create_tables is None:
            create_tables = bool(strtobool(app.factory.env.get("CREATE_TABLE") or "yes"))
        if create_tables:
            self._drop_changed_views()
            self.store.create([t for v in self.views for t in v.tables], self.by_name)
        self._lock = threading.RLock()
        self._positions: dict[str, int] | None = None  # as `position()` last read them
        self._folded = 0
        # The process's one follower (the application's); a bare application gets its own.
        self.follower: Follower = getattr(app, "follower", None) or Follower(app.recorder, app.mapper)

    def _drop_changed_views(self) -> None:
        """A view whose tables an earlier PEX made with other columns is dropped, so that it is
        made again and rebuilt from the log. The ledger never is: it is evidence."""
        for view in self.views:
            changed = self.store.changed(view.tables)
            if not changed:
                continue
            if not view.rebuildable:
                raise ReadModelError(
                    f"the {view.name}'s tables ({', '.join(changed)}) have other columns than this PEX expects, "
                    "and it is never rebuilt from the log: migrate them by hand"
                )
            log.warning("the %s view's tables (%s) changed: they are made again and rebuilt from the log", view.name, ", ".join(changed))
            self.store.drop(view.name, view.tables)

    # --- following the log ---------------------------------------------------------------

    def catch_up(self) -> int:
        """Fold every event not yet in the views; return the notification id they reached."""
        return self._catch_up().position

    def _catch_up(self, *others: ReadModel) -> Progress:
        """Catch up, and `others` with the views, from the same reads of the log."""
        began = time.monotonic()
        with self._lock:
            self._folded = 0
            position = self.follower.follow(self, *others)
            return Progress(position, self._folded, time.monotonic() - began)

    # The follower's read model (pex.projections.follower): the lowest tracking row, and a
    # batch folded in one transaction that moves every view's row.

    def position(self) -> int:
        with self._lock:
            self._positions = self.store.positions(self.by_name)
            return min(self._positions.values())

    def fold(self, batch: Sequence[Recorded]) -> bool:
        with self._lock:
            positions = self._positions if self._positions is not None else self.store.positions(self.by_name)
            self._positions = None  # what a fold leaves is read again
            last = batch[-1].id
            for view in self.views:
                if positions[view.name] < last:
                    view.prepare([recorded.event for recorded in after(batch, positions[view.name])])
            try:
                with self.store.batch(positions) as writing:
                    self._preload(writing, batch, positions)
                    for view in self.views:
                        seen = positions[view.name]
                        if seen >= last:
                            continue
                        for recorded in after(batch, seen):
                            view.apply(writing, recorded.event, recorded.notification)
                        writing.track(view.name, last)
            except PositionsMoved:
                return False  # another follower applied it; the follower asks where they are
            self._folded += len(after(batch, min(positions.values())))
            return True

    def _preload(self, writing: Batch, batch: Sequence[Recorded], positions: dict[str, int]) -> None:
        """Read every row the views will ask the batch for, a query per table."""
        wanted: dict[str, tuple[Table, set[Key]]] = {}
        for view in self.views:
            for recorded in after(batch, positions[view.name]):
                for table, key in view.rows_read(recorded.event):
                    wanted.setdefault(table.name, (table, set()))[1].add(key)
        for table, keys in wanted.values():
            writing.preload(table, keys)

    def follow(self, interval: float = 0.5, stop: threading.Event | None = None) -> None:
        """Catch up, then poll every `interval` seconds until `stop` is set (a worker loop)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.catch_up()
            stop.wait(interval)

    def rebuild(self, names: Iterable[str] | None = None, reseal: bool = False) -> Progress:
        """Drop the named views (default: every rebuildable one) and fold them again from the
        start of the log. The ledger is rebuilt only with `reseal` (it is evidence: a new
        seal accepts the log as it now is)."""
        names = list(names) if names is not None else [v.name for v in self.views if v.rebuildable]
        for name in names:
            view = self.by_name.get(name)
            if view is None:
                raise ReadModelError(f"no view {name!r}; views are {', '.join(self.by_name)}")
            if not view.rebuildable and not reseal:
                raise ReadModelError(
                    f"the {name} is never rebuilt from the log: it is the evidence of what was recorded; "
                    "--reseal rebuilds it, accepting the log as it now is"
                )
        with self._lock:
            for name in names:
                self.store.reset(name, self.by_name[name].tables)
            return self._catch_up()

    def positions(self) -> dict[str, int]:
        return self.store.positions(self.by_name)

    def close(self) -> None:
        self.store.close()

    # --- queries -------------------------------------------------------------------------

    def reservations(
        self, user_id: str | None = None, state: State | str | None = None, *, fresh: bool = True,
        not_in: Iterable[State] = (), limit: int | None = None, after: UUID | None = None,
    ) -> list[ReservationView]:
        """Reservations, oldest first; only `user_id`'s and only in `state` if given, none in
        `not_in`. A page: at most `limit`, those made after the reservation `after` (none if
        there is no such reservation)."""
        where = []
        if user_id is not None:
            where.append(Where("user_id", "=", user_id))
        if state is not None:
            where.append(Where("state", "=", State(state).value))
        where += [Where("state", "!=", State(s).value) for s in not_in]
        key = None
        if after is not None:  # the page goes on from where that reservation is in the order
            found = self._select(RESERVATIONS, [Where("id", "=", after)], (), fresh)
            if not found:
                return []
            key, fresh = tuple(found[0][c] for c in RESERVATION_ORDER), False
        rows = self._select(RESERVATIONS, where, RESERVATION_ORDER, fresh, limit, key)
        return [reservation_from_row(r) for r in rows]

    def reservation(self, reservation_id: UUID, *, fresh: bool = True) -> ReservationView | None:
        rows = self._select(RESERVATIONS, [Where("id", "=", reservation_id)], (), fresh)
        return reservation_from_row(rows[0]) if rows else None

    def instances(
        self,
        user_id: str | None = None,
        status: str | None = None,
        reservation_id: UUID | None = None,
        *,
        fresh: bool = True,
        not_in: Iterable[str] = (),
        limit: int | None = None,
        after: Sequence[Any] | None = None,
    ) -> list[InstanceView]:
        """Instances by start time; only `user_id`'s, in `status`, of `reservation_id` if given,
        none in the statuses `not_in`. A page: at most `limit`, those after the key `after`
        (INSTANCE_ORDER)."""
        where = []
        if user_id is not None:
            where.append(Where("user_id", "=", user_id))
        if status is not None:
            where.append(Where("status", "=", status))
        if reservation_id is not None:
            where.append(Where("reservation_id", "=", reservation_id))
        where += [Where("status", "!=", s) for s in not_in]
        rows = self._select(INSTANCES, where, INSTANCE_ORDER, fresh, limit, after)
        return [instance_from_row(r) for r in rows]

    def phases(self, reservations: Iterable[Any], now: datetime, *, fresh: bool = False) -> dict[UUID, Phase]:
        """Each reservation's phase at `now` (pex.domain.lifecycle), from its instances' rows:
        one query for one user's (or everyone's) instances, not one per reservation."""
        reservations = list(reservations)
        users = {r.user_id for r in reservations if r.instance_ids}
        statuses: dict[UUID, list[str]] = {}
        if users:
            rows = self.instances(next(iter(users)) if len(users) == 1 else None, fresh=fresh)
            for i in rows:
                statuses.setdefault(i.reservation_id, []).append(i.status)
        phases = {}
        for r in reservations:
            t = r.terms
            phases[r.id] = phase_of(
                r.state, bool(t and t.auto_start), t.start if t else None, t.end if t else None, now, statuses.get(r.id, ()),
            )
        return phases

    def instance(self, instance_id: UUID, *, fresh: bool = True) -> InstanceView | None:
        rows = self._select(INSTANCES, [Where("id", "=", instance_id)], (), fresh)
        return instance_from_row(rows[0]) if rows else None

    def nodes(self, *, fresh: bool = True) -> list[NodeRow]:
        return [NodeRow.from_row(r) for r in self._select(NODES, [], ("name",), fresh)]

    def calendar(
        self,
        node: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        at: datetime | None = None,
        *,
        holds: bool = True,
        fresh: bool = True,
    ) -> list[CalendarEntry]:
        """Bookings and live holds overlapping [start, end) (either may be open), by node and
        start. A hold is live while `at` (default: the application's clock) is before its
        hold_until; `holds=False` leaves holds out."""
        where = []
        if node is not None:
            where.append(Where("node", "=", node))
        if start is not None:
            where.append(Where("end", ">", start))
        if end is not None:
            where.append(Where("start", "<", end))
        at = at or self.app.clock()
        rows = self._select(ALLOCATIONS, where, ("node", "start", "reservation_id"), fresh)
        return [
            CalendarEntry.from_row(r)
            for r in rows
            if r["kind"] == "booking" or (holds and r["hold_until"] is not None and r["hold_until"] > at)
        ]

    def _select(self, table, where, order_by, fresh: bool, limit: int | None = None,
                after: Sequence[Any] | None = None) -> list[Row]:
        """Rows in `order_by` order; with `after` (a value for each column of `order_by`, a
        unique key) only those that sort after it: keyset pagination, so a page is found by
        the index and stays right while rows are added before it."""
        if fresh:
            self.catch_up()
        if after is None:
            return self.store.select(table, where, order_by, limit)
        # (a, b, c) > (x, y, z) is a = x ∧ b = y ∧ c > z, or a = x ∧ b > y, or a > x: the
        # stores take conjunctions only, and in this order the three come out sorted.
        rows: list[Row] = []
        for k in reversed(range(len(order_by))):
            bound = [Where(c, "=", v) for c, v in zip(order_by[:k], after[:k], strict=True)]
            bound.append(Where(order_by[k], ">", after[k]))
            rows += self.store.select(table, [*where, *bound], order_by, None if limit is None else limit - len(rows))
            if limit is not None and len(rows) >= limit:
                break
        return rows


def prepare_read_models(app: Any, *others: ReadModel) -> Progress:
    """Make the read models' tables (rebuilding any view whose columns changed), bring them and
    the ledger up to the head of the log (with `others`, the in-memory models the processes
    start from, from the same reads), and close their connections: what one process with DDL
    rights does before the others start (`pex init`, the gunicorn master before it forks)."""
    read_models = ReadModels(app, create_tables=True)
    try:
        return read_models._catch_up(*others)
    finally:
        read_models.close()
