"""The webhooks' state beside the event store: the users' signing secrets and the outbox, which
is also each user's delivery log (pex.workers.webhooks fills and empties it).

Neither is domain history, so both are plain tables in the application's own database, next to
the read models (pex.projections.store), as the login state is (pex.projections.login_state):

    pex_webhook_secrets      secret id → username, secret. The User aggregate's WebhookSet
                             names the secret by its id; the secret itself is in no event, so
                             a rotation or a removal forgets it for good.
    pex_webhook_deliveries   one notification for one user: its body (the JSON signed and
                             sent, the same bytes at every attempt), its status (pending,
                             delivered, failed: given up, cancelled: no longer true when due,
                             dropped: no webhook when due), its attempts, when it is next tried
                             (a claimed attempt's lease, while one is under way) and the last
                             answer or error.

How far the notifier has read the log is its own row of pex_view_tracking ("pex.webhooks"),
made at the head of the log when the tables are made (`create`): what was recorded before
webhooks existed is told to nobody.
A user's log stays bounded: after each finished delivery only the `keep` newest finished ones
are kept. Times are seconds since the epoch (floats), stored as milliseconds.

Every change of a delivery is one conditional statement (`claim`: only if it is still pending,
due, and at the attempt the caller saw; `finish`: only the attempt the caller claimed), so two
workers never both send one attempt, and one whose lease lapsed cannot overwrite its successor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from pex.projections.store import APPLICATION_NAME, TRACKING_TABLE, MemoryStore, SqlStatements, SqlStore, Store, Table

VIEW = "pex.webhooks"  # the notifier's position in the log

PENDING, DELIVERED, FAILED, CANCELLED, DROPPED = "pending", "delivered", "failed", "cancelled", "dropped"
FINISHED = (DELIVERED, FAILED, CANCELLED, DROPPED)

SECRETS = Table(
    "pex_webhook_secrets",
    (("secret_id", "text"), ("username", "text"), ("secret", "text"), ("created_ms", "int")),
    key=("secret_id",),
    indexes=(("username",),),
)
DELIVERIES = Table(
    "pex_webhook_deliveries",
    (
        ("id", "text"), ("username", "text"), ("kind", "text"), ("body", "text"), ("status", "text"),
        ("attempts", "int"), ("due_ms", "int"), ("next_ms", "int"), ("created_ms", "int"),
        ("last_code", "int"), ("last_error", "text"), ("finished_ms", "int"),
    ),
    key=("id",),
    indexes=(("status", "next_ms"), ("username", "created_ms")),
)  # fmt: skip
TABLES = (SECRETS, DELIVERIES)


@dataclass(frozen=True)
class Delivery:
    """One notification for one user, and how its delivery went so far."""

    id: str  # also the body's "id": a receiver that gets it twice knows it
    username: str
    kind: str  # offer.lapsing, reservation.started, reservation.ending, reservation.ended, instance.failed
    body: str  # the JSON sent
    status: str = PENDING
    attempts: int = 0
    due: float = 0.0  # when it is (was) to be sent
    next: float = 0.0  # when it is tried next (pending)
    created: float = 0.0
    last_code: int | None = None  # the receiver's last HTTP status
    last_error: str | None = None  # why the last attempt failed
    finished: float | None = None


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def _delivery(row: Any) -> Delivery:
    finished = row["finished_ms"]
    return Delivery(
        row["id"], row["username"], row["kind"], row["body"], row["status"], row["attempts"], row["due_ms"] / 1000,
        row["next_ms"] / 1000, row["created_ms"] / 1000, row["last_code"], row["last_error"],
        finished / 1000 if finished is not None else None,
    )  # fmt: skip


class WebhookState:
    """The interface; `webhook_state_for(store)` picks the implementation."""

    def create(self, head: int = 0) -> None:
        """Make the tables; a notifier position made now starts at `head` (the log's last
        notification id): what was recorded before webhooks existed is told to nobody."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- secrets ---

    def put_secret(self, secret_id: str, username: str, secret: str, now: float) -> None:
        raise NotImplementedError

    def secret(self, secret_id: str) -> str | None:
        raise NotImplementedError

    def forget_secrets(self, username: str, keep: str | None = None) -> None:
        """Forget every secret of `username` but the one `keep` names."""
        raise NotImplementedError

    # --- the outbox ---

    def position(self) -> int:
        """The last notification id of the log the notifier has read."""
        raise NotImplementedError

    def move(self, expected: int, position: int) -> bool:
        """Move the position from `expected` to `position`; False if another notifier moved it."""
        raise NotImplementedError

    def add(self, delivery: Delivery) -> bool:
        """Add a pending delivery unless one of the same id exists (reading the log again adds
        nothing twice); whether it was added."""
        raise NotImplementedError

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Pending deliveries to try at `now`, the longest due first."""
        raise NotImplementedError

    def claim(self, delivery: Delivery, now: float, until: float) -> Delivery | None:
        """Take the next attempt of `delivery` (as `due` gave it) until `until`; None if it is
        no longer pending, due, or at that attempt (another worker took it)."""
        raise NotImplementedError

    def finish(self, claimed: Delivery, status: str, now: float, next_at: float | None = None,
               code: int | None = None, error: str | None = None) -> bool:
        """Record the outcome of the attempt `claimed` (as `claim` gave it): `status` (PENDING
        again with `next_at`, for a retry); False if that attempt is no longer the last."""
        raise NotImplementedError

    def deliveries(self, username: str, limit: int = 100) -> list[Delivery]:
        """The user's deliveries, newest first."""
        raise NotImplementedError

    def get(self, delivery_id: str) -> Delivery | None:
        raise NotImplementedError

    def prune(self, username: str, keep: int) -> None:
        """Keep only the `keep` newest finished deliveries of `username`."""
        raise NotImplementedError


def webhook_state_for(store: Store) -> WebhookState:
    if isinstance(store, SqlStore):
        return SqlWebhookState(store)
    if isinstance(store, MemoryStore):
        return MemoryWebhookState()
    raise TypeError(f"no webhook state for {type(store).__name__}")


class MemoryWebhookState(WebhookState):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, tuple[str, str]] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._position = 0
        self._created = False

    def create(self, head: int = 0) -> None:
        with self._lock:
            if not self._created:
                self._created, self._position = True, head

    def put_secret(self, secret_id: str, username: str, secret: str, now: float) -> None:
        with self._lock:
            self._secrets[secret_id] = (username, secret)

    def secret(self, secret_id: str) -> str | None:
        with self._lock:
            found = self._secrets.get(secret_id)
            return found[1] if found else None

    def forget_secrets(self, username: str, keep: str | None = None) -> None:
        with self._lock:
            for secret_id in [s for s, (u, _) in self._secrets.items() if u == username and s != keep]:
                del self._secrets[secret_id]

    def position(self) -> int:
        with self._lock:
            return self._position

    def move(self, expected: int, position: int) -> bool:
        with self._lock:
            if self._position != expected:
                return False
            self._position = position
            return True

    def add(self, delivery: Delivery) -> bool:
        with self._lock:
            if delivery.id in self._deliveries:
                return False
            self._deliveries[delivery.id] = delivery
            return True

    def due(self, now: float, limit: int) -> list[Delivery]:
        with self._lock:
            found = [d for d in self._deliveries.values() if d.status == PENDING and ms(d.next) <= ms(now)]
        return sorted(found, key=lambda d: (d.next, d.id))[:limit]

    def claim(self, delivery: Delivery, now: float, until: float) -> Delivery | None:
        with self._lock:
            stored = self._deliveries.get(delivery.id)
            if stored is None or stored.status != PENDING or stored.attempts != delivery.attempts or ms(stored.next) > ms(now):
                return None
            claimed = self._deliveries[delivery.id] = replace(stored, attempts=stored.attempts + 1, next=until)
            return claimed

    def finish(self, claimed: Delivery, status: str, now: float, next_at: float | None = None,
               code: int | None = None, error: str | None = None) -> bool:
        with self._lock:
            stored = self._deliveries.get(claimed.id)
            if stored is None or stored.status != PENDING or stored.attempts != claimed.attempts:
                return False
            self._deliveries[claimed.id] = replace(
                stored, status=status, next=next_at if next_at is not None else stored.next, last_code=code,
                last_error=error, finished=None if status == PENDING else now,
            )
            return True

    def deliveries(self, username: str, limit: int = 100) -> list[Delivery]:
        with self._lock:
            found = [d for d in self._deliveries.values() if d.username == username]
        return sorted(found, key=lambda d: (d.created, d.id), reverse=True)[:limit]

    def get(self, delivery_id: str) -> Delivery | None:
        with self._lock:
            return self._deliveries.get(delivery_id)

    def prune(self, username: str, keep: int) -> None:
        with self._lock:
            finished = sorted(
                (d for d in self._deliveries.values() if d.username == username and d.status in FINISHED),
                key=lambda d: (d.created, d.id), reverse=True,
            )
            for old in finished[keep:]:
                del self._deliveries[old.id]


class SqlWebhookState(WebhookState, SqlStatements):
    """The tables in SQLite or PostgreSQL, through the read models' store (its connections and
    transactions); each method is one short transaction, its statements written with `?`
    placeholders and given the store's own."""

    COLUMNS = ", ".join(DELIVERIES.column_names)

    def __init__(self, store: SqlStore):
        self.store = store
        self.secrets_table = store.qualified(SECRETS.name)
        self.table = store.qualified(DELIVERIES.name)

    def create(self, head: int = 0) -> None:
        self.store.create(TABLES, ())
        self._run(
            f"INSERT INTO {self.store.qualified(TRACKING_TABLE)} (view_name, application_name, notification_id) "
            "VALUES (?, ?, ?) ON CONFLICT (view_name) DO NOTHING",
            (VIEW, APPLICATION_NAME, head),
        )

    def close(self) -> None:
        self.store.close()

    def put_secret(self, secret_id: str, username: str, secret: str, now: float) -> None:
        self._run(
            f"INSERT INTO {self.secrets_table} (secret_id, username, secret, created_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (secret_id) DO NOTHING",
            (secret_id, username, secret, ms(now)),
        )

    def secret(self, secret_id: str) -> str | None:
        rows = self._run(f"SELECT secret FROM {self.secrets_table} WHERE secret_id = ?", (secret_id,), write=False)
        return rows[0]["secret"] if rows else None

    def forget_secrets(self, username: str, keep: str | None = None) -> None:
        self._run(
            f"DELETE FROM {self.secrets_table} WHERE username = ? AND secret_id <> ?", (username, keep or ""),
        )

    def position(self) -> int:
        return self.store.positions([VIEW])[VIEW]

    def move(self, expected: int, position: int) -> bool:
        return self._change(
            f"UPDATE {self.store.qualified(TRACKING_TABLE)} SET notification_id = ? "
            "WHERE view_name = ? AND notification_id = ?",
            (position, VIEW, expected),
        ) == 1

    def add(self, d: Delivery) -> bool:
        return self._change(
            f"INSERT INTO {self.table} ({self.COLUMNS}) VALUES ({', '.join('?' for _ in DELIVERIES.columns)}) "
            "ON CONFLICT (id) DO NOTHING",
            (d.id, d.username, d.kind, d.body, d.status, d.attempts, ms(d.due), ms(d.next), ms(d.created),
             d.last_code, d.last_error, None if d.finished is None else ms(d.finished)),
        ) == 1  # fmt: skip

    def due(self, now: float, limit: int) -> list[Delivery]:
        rows = self._run(
            f"SELECT {self.COLUMNS} FROM {self.table} WHERE status = ? AND next_ms <= ? ORDER BY next_ms, id "
            f"LIMIT {int(limit)}",
            (PENDING, ms(now)),
            write=False,
        )
        return [_delivery(r) for r in rows]

    def claim(self, delivery: Delivery, now: float, until: float) -> Delivery | None:
        changed = self._change(
            f"UPDATE {self.table} SET attempts = attempts + 1, next_ms = ? "
            "WHERE id = ? AND status = ? AND attempts = ? AND next_ms <= ?",
            (ms(until), delivery.id, PENDING, delivery.attempts, ms(now)),
        )
        return replace(delivery, attempts=delivery.attempts + 1, next=ms(until) / 1000) if changed == 1 else None

    def finish(self, claimed: Delivery, status: str, now: float, next_at: float | None = None,
               code: int | None = None, error: str | None = None) -> bool:
        return self._change(
            f"UPDATE {self.table} SET status = ?, next_ms = ?, last_code = ?, last_error = ?, finished_ms = ? "
            "WHERE id = ? AND status = ? AND attempts = ?",
            (status, ms(next_at if next_at is not None else claimed.next), code, error,
             None if status == PENDING else ms(now), claimed.id, PENDING, claimed.attempts),
        ) == 1  # fmt: skip

    def deliveries(self, username: str, limit: int = 100) -> list[Delivery]:
        rows = self._run(
            f"SELECT {self.COLUMNS} FROM {self.table} WHERE username = ? ORDER BY created_ms DESC, id DESC "
            f"LIMIT {int(limit)}",
            (username,),
            write=False,
        )
        return [_delivery(r) for r in rows]

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self._run(f"SELECT {self.COLUMNS} FROM {self.table} WHERE id = ?", (delivery_id,), write=False)
        return _delivery(rows[0]) if rows else None

    def prune(self, username: str, keep: int) -> None:
        finished = ", ".join("?" for _ in FINISHED)
        self._run(
            f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} WHERE username = ? AND status IN "
            f"({finished}) ORDER BY created_ms DESC, id DESC {self._offset(keep)})",
            (username, *FINISHED),
        )
