"""Login state beside the event store: failed-login counters and portal sessions.

Neither is domain history (nobody replays a mistyped password), so both are plain tables in
the application's own database, next to the read models (pex.projections.store): every
gunicorn worker and every host behind one load balancer counts the same failures and honours
the same logouts. The `memory:` store keeps them in the process.

    pex_login_failures   (username, client) → failures, last failure, blocked until.
                         The row with username "" counts every failure of the client.
    pex_sessions         digest of a portal session id → username, password version, expiry.

Both stay bounded: counters are forgotten an hour after their last failure and each client
keeps at most CLIENT_ROWS of them; a user has at most USER_SESSIONS sessions, and expired
ones are deleted. Times are seconds since the epoch (floats), stored as milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pex.projections.store import MemoryStore, SqlStatements, SqlStore, Store, Table

CLIENT_TOTAL = ""  # the username of a client's row of all its failures (no username is empty)
CLIENT_ROWS = 100  # counters kept per client address, besides its total
ALL_ROWS = 100_000  # counters kept in all; the oldest go first
USER_SESSIONS = 20  # portal sessions kept per user; logging in once more ends the oldest

FAILURES = Table(
    "pex_login_failures",
    (("username", "text"), ("client", "text"), ("failures", "int"), ("last_failure_ms", "int"), ("blocked_until_ms", "int")),
    key=("username", "client"),
    indexes=(("client", "last_failure_ms"), ("last_failure_ms",)),
)
SESSIONS = Table(
    "pex_sessions",
    (("sid_digest", "text"), ("username", "text"), ("password_version", "int"), ("expires_ms", "int")),
    key=("sid_digest",),
    indexes=(("username", "expires_ms"), ("expires_ms",)),
)
TABLES = (FAILURES, SESSIONS)


@dataclass(frozen=True)
class Failures:
    """A client's failures for one username, and all of its failures, after one more."""

    user: int
    client: int


@dataclass(frozen=True)
class SessionRecord:
    username: str
    password_version: int
    expires: float


def ms(seconds: float) -> int:
    return int(seconds * 1000)


class LoginState:
    """The interface; `login_state_for(store)` picks the implementation."""

    def create(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- failed logins ---

    def blocked_until(self, username: str, client: str) -> float:
        """The latest time either the (username, client) counter or the client's total blocks."""
        raise NotImplementedError

    def count_failure(self, username: str, client: str, now: float, forget_before: float) -> Failures:
        """One more failure, counting afresh a counter whose last failure is before `forget_before`."""
        raise NotImplementedError

    def block(self, username: str, client: str, until: float) -> None:
        raise NotImplementedError

    def clear(self, username: str, client: str) -> None:
        raise NotImplementedError

    def forget(self, before: float, client: str | None = None, keep: int | None = None) -> None:
        """Delete counters last failed before `before`; then keep only the `keep` newest (of
        `client`'s counters, besides its total, when given; else of all)."""
        raise NotImplementedError

    def counters(self, client: str | None = None) -> int:
        raise NotImplementedError

    # --- portal sessions ---

    def open_session(self, sid_digest: str, username: str, password_version: int, expires: float, now: float) -> None:
        raise NotImplementedError

    def session(self, sid_digest: str) -> SessionRecord | None:
        raise NotImplementedError

    def close_session(self, sid_digest: str) -> None:
        raise NotImplementedError

    def close_sessions_of(self, username: str) -> None:
        raise NotImplementedError

    def sessions(self) -> int:
        raise NotImplementedError


def login_state_for(store: Store) -> LoginState:
    if isinstance(store, SqlStore):
        return SqlLoginState(store)
    if isinstance(store, MemoryStore):
        return MemoryLoginState()
    raise TypeError(f"no login state for {type(store).__name__}")


class MemoryLoginState(LoginState):
    def __init__(self) -> None:
        self._failures: dict[tuple[str, str], list[int]] = {}  # key → [failures, last_ms, blocked_ms]
        self._sessions: dict[str, tuple[str, int, int]] = {}
        self._lock = threading.Lock()

    def create(self) -> None:
        pass

    def blocked_until(self, username: str, client: str) -> float:
        with self._lock:
            rows = [self._failures.get((u, client)) for u in (username, CLIENT_TOTAL)]
        return max((row[2] for row in rows if row), default=0) / 1000

    def count_failure(self, username: str, client: str, now: float, forget_before: float) -> Failures:
        counts = []
        with self._lock:
            for key in ((username, client), (CLIENT_TOTAL, client)):
                row = self._failures.get(key)
                if row is None or row[1] < ms(forget_before):
                    row = self._failures[key] = [0, 0, 0]
                row[0] += 1
                row[1] = ms(now)
                counts.append(row[0])
        return Failures(*counts)

    def block(self, username: str, client: str, until: float) -> None:
        with self._lock:
            row = self._failures.get((username, client))
            if row is not None:
                row[2] = ms(until)

    def clear(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop((username, client), None)

    def forget(self, before: float, client: str | None = None, keep: int | None = None) -> None:
        with self._lock:
            for key in [k for k, row in self._failures.items() if row[1] < ms(before)]:
                del self._failures[key]
            if keep is None:
                return
            keys = [k for k in self._failures if client is None or (k[1] == client and k[0] != CLIENT_TOTAL)]
            keys.sort(key=lambda k: self._failures[k][1], reverse=True)
            for key in keys[keep:]:
                del self._failures[key]

    def counters(self, client: str | None = None) -> int:
        with self._lock:
            return sum(1 for k in self._failures if client is None or k[1] == client)

    def open_session(self, sid_digest: str, username: str, password_version: int, expires: float, now: float) -> None:
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s[2] <= ms(now)]:
                del self._sessions[key]
            self._sessions[sid_digest] = (username, password_version, ms(expires))
            mine = sorted((s[2], k) for k, s in self._sessions.items() if s[0] == username)
            for _, key in mine[:-USER_SESSIONS]:
                del self._sessions[key]

    def session(self, sid_digest: str) -> SessionRecord | None:
        with self._lock:
            found = self._sessions.get(sid_digest)
        return SessionRecord(found[0], found[1], found[2] / 1000) if found else None

    def close_session(self, sid_digest: str) -> None:
        with self._lock:
            self._sessions.pop(sid_digest, None)

    def close_sessions_of(self, username: str) -> None:
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s[0] == username]:
                del self._sessions[key]

    def sessions(self) -> int:
        with self._lock:
            return len(self._sessions)


class SqlLoginState(LoginState, SqlStatements):
    """The tables in SQLite or PostgreSQL, through the read models' store (its connections and
    transactions). Each method is one short transaction; statements are written with `?`
    placeholders and get the store's own."""

    def __init__(self, store: SqlStore):
        self.store = store
        self.failures = store.qualified(FAILURES.name)
        self.sessions_table = store.qualified(SESSIONS.name)

    def create(self) -> None:
        self.store.create(TABLES, ())

    def close(self) -> None:
        self.store.close()

    def blocked_until(self, username: str, client: str) -> float:
        rows = self._run(
            f"SELECT MAX(blocked_until_ms) AS until FROM {self.failures} WHERE client = ? AND username IN (?, ?)",
            (client, username, CLIENT_TOTAL),
            write=False,
        )
        return (rows[0]["until"] or 0) / 1000 if rows else 0.0

    def count_failure(self, username: str, client: str, now: float, forget_before: float) -> Failures:
        # An upsert, so two workers counting at once both count (no read-then-write).
        statement = self._sql(
            f"INSERT INTO {self.failures} AS f (username, client, failures, last_failure_ms, blocked_until_ms) "
            "VALUES (?, ?, 1, ?, 0) ON CONFLICT (username, client) DO UPDATE SET "
            "failures = CASE WHEN f.last_failure_ms < ? THEN 1 ELSE f.failures + 1 END, "
            "blocked_until_ms = CASE WHEN f.last_failure_ms < ? THEN 0 ELSE f.blocked_until_ms END, "
            "last_failure_ms = excluded.last_failure_ms RETURNING failures"
        )
        counts = []
        with self.store.transaction(write=True) as cursor:
            for name in (username, CLIENT_TOTAL):
                cursor.execute(statement, (name, client, ms(now), ms(forget_before), ms(forget_before)))
                counts.append(cursor.fetchall()[0]["failures"])
        return Failures(*counts)

    def block(self, username: str, client: str, until: float) -> None:
        self._run(
            f"UPDATE {self.failures} SET blocked_until_ms = ? WHERE username = ? AND client = ?",
            (ms(until), username, client),
        )

    def clear(self, username: str, client: str) -> None:
        self._run(f"DELETE FROM {self.failures} WHERE username = ? AND client = ?", (username, client))

    def forget(self, before: float, client: str | None = None, keep: int | None = None) -> None:
        with self.store.transaction(write=True) as cursor:
            cursor.execute(self._sql(f"DELETE FROM {self.failures} WHERE last_failure_ms < ?"), (ms(before),))
            if keep is None:
                return
            if client is None:
                cursor.execute(
                    f"DELETE FROM {self.failures} WHERE (username, client) IN (SELECT username, client FROM "
                    f"{self.failures} ORDER BY last_failure_ms DESC {self._offset(keep)})"
                )
            else:
                cursor.execute(
                    self._sql(
                        f"DELETE FROM {self.failures} WHERE client = ? AND username IN (SELECT username FROM "
                        f"{self.failures} WHERE client = ? AND username <> ? ORDER BY last_failure_ms DESC "
                        f"{self._offset(keep)})"
                    ),
                    (client, client, CLIENT_TOTAL),
                )

    def counters(self, client: str | None = None) -> int:
        if client is None:
            rows = self._run(f"SELECT COUNT(*) AS n FROM {self.failures}", write=False)
        else:
            rows = self._run(f"SELECT COUNT(*) AS n FROM {self.failures} WHERE client = ?", (client,), write=False)
        return rows[0]["n"]

    def open_session(self, sid_digest: str, username: str, password_version: int, expires: float, now: float) -> None:
        with self.store.transaction(write=True) as cursor:
            cursor.execute(self._sql(f"DELETE FROM {self.sessions_table} WHERE expires_ms <= ?"), (ms(now),))
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self.sessions_table} (sid_digest, username, password_version, expires_ms) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (sid_digest) DO NOTHING"
                ),
                (sid_digest, username, password_version, ms(expires)),
            )
            cursor.execute(
                self._sql(
                    f"DELETE FROM {self.sessions_table} WHERE sid_digest IN (SELECT sid_digest FROM "
                    f"{self.sessions_table} WHERE username = ? ORDER BY expires_ms DESC {self._offset(USER_SESSIONS)})"
                ),
                (username,),
            )

    def session(self, sid_digest: str) -> SessionRecord | None:
        rows = self._run(
            f"SELECT username, password_version, expires_ms FROM {self.sessions_table} WHERE sid_digest = ?",
            (sid_digest,),
            write=False,
        )
        if not rows:
            return None
        return SessionRecord(rows[0]["username"], rows[0]["password_version"], rows[0]["expires_ms"] / 1000)

    def close_session(self, sid_digest: str) -> None:
        self._run(f"DELETE FROM {self.sessions_table} WHERE sid_digest = ?", (sid_digest,))

    def close_sessions_of(self, username: str) -> None:
        self._run(f"DELETE FROM {self.sessions_table} WHERE username = ?", (username,))

    def sessions(self) -> int:
        return self._run(f"SELECT COUNT(*) AS n FROM {self.sessions_table}", write=False)[0]["n"]
