"""The composition root: builds PEX from settings. Nothing else reads the environment, and
nothing happens at import time. Build one application per process, after any fork."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from datetime import datetime
from importlib import import_module
from urllib.parse import parse_qs, unquote, urlparse

from pex.application import PexApplication
from pex.clock import system_clock
from pex.domain.negotiation import NegotiationPolicy
from pex.domain.pricing import FlatRatePricing, PeakHourPricing, PricingPolicy
from pex.settings import Settings, SettingsError

log = logging.getLogger("pex.bootstrap")


def persistence_env(database_url: str) -> dict[str, str]:
    """The eventsourcing settings for a PEX database URL.

    postgresql://user:password@host:port/dbname (or ?host=/socket/dir), sqlite:///relative/path,
    sqlite:////absolute/path, or memory: (in-process, for tests and simulations)."""
    url = urlparse(database_url)
    if url.scheme in ("postgresql", "postgres"):
        query = parse_qs(url.query)
        host = query.get("host", [url.hostname or "localhost"])[0]
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "pex",
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "pex"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_LOCK_TIMEOUT": "5",
            "POSTGRES_PRE_PING": "y",
            "POSTGRES_POOL_SIZE": query.get("pool_size", ["4"])[0],
            "POSTGRES_MAX_OVERFLOW": query.get("max_overflow", ["8"])[0],
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return env
    if url.scheme == "sqlite":
        path = unquote(url.path)
        path = path[1:]  # sqlite:///relative/path, sqlite:////absolute/path
        if not path:
            raise SettingsError("sqlite URL needs a path, e.g. sqlite:///var/pex.sqlite3")
        if path != ":memory:" and not path.startswith("file:"):
            private_sqlite_file(path)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "10"}
    if url.scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    raise SettingsError(f"PEX_DATABASE_URL must be postgresql://…, sqlite:///… or memory:, not {database_url!r}")


def private_sqlite_file(path: str) -> None:
    """Make the SQLite file (which holds every password hash) readable by its owner only,
    before SQLite opens it: a missing directory is made 0700, a missing file 0600, and
    SQLite gives its -wal and -shm files the database file's mode. An existing file that
    others may read (made by an earlier PEX, under a umask of 022) is tightened, loudly."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700)
    except FileExistsError:
        pass
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            os.chmod(name, mode & ~(stat.S_IRWXG | stat.S_IRWXO))
            log.warning("%s had mode %04o (others could read the password hashes): now %04o", name, mode, mode & 0o700)


# How long one database call waits for a pooled connection before eventsourcing tries it again
# (10 attempts, 0.2 s apart): about 7 s in all before the API answers 503 store-unavailable.
# Long enough for the pool to open a few connections one after another to a distant server.
POOL_WAIT_SECONDS = 0.5
# How long psycopg_pool keeps retrying one lost connection, with doubling delays, before it
# gives up; the next call that finds the pool empty then starts a fresh attempt at once.
POOL_RECONNECT_SECONDS = 2.0


def bound_waits_for_postgres(app: PexApplication) -> None:
    """Make an unreachable PostgreSQL a prompt 503, and its return a prompt recovery.

    eventsourcing's POSTGRES_CONNECT_TIMEOUT takes whole seconds only, and with the 10 s PEX
    gave it, a request hung for as long as the database was down, up to some 100 s, and then
    answered 500. And the pool retries a lost connection with delays that double for five
    minutes, so after a 40 s outage it slept some 20 s more before it reconnected.
    docs/reliability.md has the figures, before and after."""
    pool = app.factory.datastore.pool
    pool.timeout = POOL_WAIT_SECONDS
    pool.reconnect_timeout = POOL_RECONNECT_SECONDS


def pricing_policy(name: str) -> PricingPolicy:
    if name == "flat":
        return FlatRatePricing()
    if name == "peak":
        return PeakHourPricing()
    module, _, attr = name.partition(":")
    try:
        return getattr(import_module(module), attr)()
    except (ImportError, AttributeError, ValueError) as error:
        raise SettingsError(f"PEX_PRICING: cannot load pricing policy {name!r}: {error}") from None


def build_application(settings: Settings | None = None, clock: Callable[[], datetime] = system_clock) -> PexApplication:
    settings = settings or Settings.from_env()
    env = persistence_env(settings.database_url)
    env["CREATE_TABLE"] = "y" if settings.create_tables else "n"
    env.update(settings.extra_env)
    policy = NegotiationPolicy(
        offer_ttl=settings.offer_ttl,
        horizon=settings.horizon,
        max_rounds=settings.max_rounds,
        max_alternatives=settings.max_alternatives,
    )
    app = PexApplication(env=env, clock=clock, pricing=pricing_policy(settings.pricing), policy=policy)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
        bound_waits_for_postgres(app)
    if settings.install_demo_pool:
        app.install_demo_pool()
    return app
