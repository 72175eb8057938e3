"""The composition root: builds PEX from the settings an entry point read (pex.settings). It
reads no environment itself, and nothing happens at import time. Build one application per
process, after any fork."""

from __future__ import annotations

import logging
import os
import random
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from importlib import import_module
from urllib.parse import parse_qs, unquote, urlparse

import falcon
from eventsourcing.utils import get_topic

from pex.adapters.postgres import OneStatementSaves
from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.enactment import XenEnactment
from pex.adapters.xen.simulator import XapiSimulator
from pex.adapters.xen.simulator.testbed import config_for
from pex.adapters.xen.transport import TlsPolicy
from pex.application import PexApplication
from pex.clock import system_clock
from pex.domain.negotiation import NegotiationPolicy, Negotiator
from pex.domain.placement_policies import PlacementPolicy, placement_policy
from pex.domain.pricing import FlatRatePricing, MarketPricing, PeakHourPricing, PricingPolicy
from pex.http.app import create_app
from pex.projections.readmodels import ReadModels, prepare_read_models
from pex.settings import Settings, SettingsError, WorkerSettings
from pex.workers.dispatch import Dispatch
from pex.workers.embedded import EmbeddedWorker
from pex.workers.index import DispatchIndex
from pex.workers.runner import SIMULATOR_PASSWORD, SIMULATOR_USERNAME, WorkerProcess

log = logging.getLogger("pex.bootstrap")


def persistence_env(database_url: str) -> dict[str, str]:
    """The eventsourcing settings for a PEX database URL.

    postgresql://user:password@host:port/dbname (or ?host=/socket/dir), also in libpq's
    multi-host form, postgresql://user:password@primary:5432,standby:5432/dbname (see
    `postgres_session_attrs`), sqlite:///relative/path, sqlite:////absolute/path, or memory:
    (in-process, for tests and simulations)."""
    url = urlparse(database_url)
    if url.scheme in ("postgresql", "postgres"):
        query = parse_qs(url.query)
        user, password, hosts, ports = postgres_servers(url.netloc)
        if "host" in query:
            hosts = query["host"][0]
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            # Each save one statement, the table's lock held for no round trip (its docstring).
            "APPLICATION_RECORDER_TOPIC": get_topic(OneStatementSaves),
            "POSTGRES_DBNAME": url.path.lstrip("/") or "pex",
            # libpq takes the lists as they are: it tries the servers in order.
            "POSTGRES_HOST": hosts,
            "POSTGRES_PORT": ports,
            "POSTGRES_USER": user,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_LOCK_TIMEOUT": "5",
            # No ping before every use of a pooled connection: it was a round trip of every
            # query's; a connection broken by an outage fails its query, which eventsourcing
            # retries on another (tests/reliability/test_postgres_outage.py).
            "POSTGRES_PRE_PING": "n",
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


def postgres_servers(netloc: str) -> tuple[str, str, str, str]:
    """(user, password, hosts, ports) of a URL's `user:password@host:port,host:port` part:
    hosts and ports as comma-separated lists of the same length, as libpq takes them (a
    server without a port has 5432). urllib cannot read a port out of a multi-host netloc."""
    userinfo, _, servers = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    hosts, ports = [], []
    for server in (servers or "localhost").split(","):
        if server.startswith("["):  # [IPv6]:port
            host, _, rest = server[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = server.partition(":")
        if port and not port.isdigit():
            raise SettingsError(f"PEX_DATABASE_URL: {server!r} is not host:port")
        hosts.append(unquote(host) or "localhost")
        ports.append(port or "5432")
    return unquote(user) or "pex", unquote(password), ",".join(hosts), ",".join(ports)


def postgres_session_attrs(database_url: str) -> str | None:
    """libpq's target_session_attrs for a PostgreSQL URL: its `?target_session_attrs=`, or, when
    it names more than one server (a primary and its standbys), `read-write`: PEX then connects
    to whichever of them takes writes, and after a failover to the standby that was promoted.
    None for a single server (libpq's default, any)."""
    url = urlparse(database_url)
    if url.scheme not in ("postgresql", "postgres"):
        return None
    query = parse_qs(url.query)
    if "target_session_attrs" in query:
        return query["target_session_attrs"][0]
    return "read-write" if "," in url.netloc.rpartition("@")[2] else None


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


def tune_postgres_pool(app: PexApplication, session_attrs: str | None) -> None:
    """Bound the waits (`bound_waits_for_postgres`) and, with `session_attrs`, make every
    connection of the pool ask libpq for that kind of server (`postgres_session_attrs`).
    eventsourcing builds the pool unopened from its own settings, which have no such field;
    its kwargs are read at each connection."""
    bound_waits_for_postgres(app)
    if session_attrs:
        app.factory.datastore.pool.kwargs["target_session_attrs"] = session_attrs  # type: ignore[attr-defined]


def bound_waits_for_postgres(app: PexApplication) -> None:
    """Make an unreachable PostgreSQL a prompt 503, and its return a prompt recovery.

    eventsourcing's POSTGRES_CONNECT_TIMEOUT takes whole seconds only, and with the 10 s PEX
    gave it, a request hung for as long as the database was down, up to some 100 s, and then
    answered 500. And the pool retries a lost connection with delays that double for five
    minutes, so after a 40 s outage it slept some 20 s more before it reconnected.
    docs/reliability.md has the figures, before and after."""
    pool = app.factory.datastore.pool  # type: ignore[attr-defined]  # the PostgreSQL factory's
    pool.timeout = POOL_WAIT_SECONDS
    pool.reconnect_timeout = POOL_RECONNECT_SECONDS


def pricing_policy(name: str) -> PricingPolicy:
    if name == "flat":
        return FlatRatePricing()
    if name == "peak":
        return PeakHourPricing()
    if name == "market":
        return MarketPricing()
    module, _, attr = name.partition(":")
    try:
        return getattr(import_module(module), attr)()
    except (ImportError, AttributeError, ValueError) as error:
        raise SettingsError(f"PEX_PRICING: cannot load pricing policy {name!r}: {error}") from None


def placement_of(name: str, seed: int = 0, ties: int = 0) -> PlacementPolicy:
    """The placement policy PEX_PLACEMENT names; `random` draws from its own source seeded
    with PEX_PLACEMENT_SEED, never from the process's global one; best fit takes equal nodes
    in the tie order `ties`."""
    return placement_policy(name, random.Random(seed), ties)


def build_application(settings: Settings, clock: Callable[[], datetime] = system_clock) -> PexApplication:
    env = persistence_env(settings.database_url)
    env["CREATE_TABLE"] = "y" if settings.create_tables else "n"
    policy = NegotiationPolicy(
        offer_ttl=settings.offer_ttl,
        horizon=settings.horizon,
        max_rounds=settings.max_rounds,
        max_alternatives=settings.max_alternatives,
        placement=placement_of(settings.placement, settings.placement_seed, settings.placement_ties),
    )
    app = PexApplication(
        env=env, clock=clock, pricing=pricing_policy(settings.pricing), policy=policy,
        currency=settings.currency, passwords=settings.passwords, credit=settings.credit,
    )
    # With a pool, its hosts are the nodes and its templates the ones offered (pex pool sync).
    app.pool_configured = not settings.worker.simulated
    app.prepare_lead = settings.worker.prepare_lead
    app.repack, app.repack_margin = settings.repack, settings.repack_margin
    app.vm_password_key = settings.vm_password_key.encode() if settings.vm_password_key else None
    app.webhook_settings = settings.webhooks
    if env["PERSISTENCE_MODULE"] == "eventsourcing.postgres":
        tune_postgres_pool(app, postgres_session_attrs(settings.database_url))
    if settings.install_demo_pool:
        app.install_demo_pool()
    return app


def build_simulated_application(
    clock: Callable[[], datetime], negotiator: Negotiator, policy: NegotiationPolicy, pricing: PricingPolicy | None = None
) -> PexApplication:
    """An application in memory for `pex simulate` (pex.simulation): one provider's strategy
    (with the placement in `policy`, and `pricing`) on a clock the simulation moves."""
    return PexApplication(
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock, negotiator=negotiator, policy=policy, pricing=pricing
    )


def build_pool_enactment(settings: Settings, pool: WorkerSettings | None = None) -> XenEnactment:
    """The enactment on one Xen pool (`pool`, one of `settings.pools`; by default the only
    one), for the pool commands (`pex pool sync`)."""
    worker = pool or settings.pool(None)
    if worker.simulated:
        raise SettingsError("set PEX_XEN_URL (and PEX_XEN_USERNAME, PEX_XEN_PASSWORD), or PEX_POOLS, to name the Xen pool")
    return XenEnactment(xen_dispatcher(worker))


def xen_dispatcher(worker: WorkerSettings, url: str | None = None, username: str | None = None,
                   password: str | None = None) -> XenDispatcher:
    """The dispatcher to one pool's master (`worker`'s, or `url`, `username`, `password`)."""
    return XenDispatcher(
        url or worker.xen_url or "", username or worker.xen_username, password if password is not None else worker.xen_password,
        timeout=worker.xen_timeout, task_timeout=worker.xen_task_timeout,
        tls=TlsPolicy.of(ca_file=worker.xen_ca_file, fingerprints=worker.xen_cert_sha256, ignore=worker.xen_ignore_ssl),
        members=worker.xen_members, pool=worker.pool,
    )


# --- the HTTP side ---------------------------------------------------------------------

def prepare_store(settings: Settings) -> int:
    """Create the tables (the read models' too, caught up to the head of the log, so that no
    worker's first request folds a backlog) and, on an empty store, the demo pool; bring the
    start-up checkpoints to the head of the log, so that every process that starts next folds
    nothing more; return the number of nodes. Each step costs what was recorded since the
    last process followed the log, not the history. Closes every connection it opened: the
    caller may fork next."""
    application = build_application(replace(settings, create_tables=True))
    try:
        # The workers keep their checkpoint current; one left far behind (no worker ran) is
        # brought up here, with the rest.
        dispatch = DispatchIndex() if DispatchIndex.lag(application) >= application.checkpoint_every else None
        others = [application.decisions] + ([dispatch.read_model(application)] if dispatch is not None else [])
        # One read of the tail for the views, the ledger and the checkpointed models alike.
        progress = prepare_read_models(application, *others)
        if progress.events:
            log.info("read models caught up", extra={"events": progress.events, "position": progress.position})
        nodes = len(application.nodes())  # from the checkpoint, and the tail after it
        application.save_checkpoint()
        if dispatch is not None:
            dispatch.save_checkpoint(application)
        return nodes
    finally:
        application.close()


def build_http_app(settings: Settings) -> tuple[falcon.App, PexApplication, ReadModels]:
    """One HTTP worker's Falcon app, with the application and read models it serves from.

    Workers never create tables nor install the demo pool: the master did that once before
    forking (prepare_store), and concurrent DDL from many workers fails."""
    application = build_application(replace(settings, create_tables=False, install_demo_pool=False))
    # Load the start-up checkpoint and fold the tail now, before the first request; a store
    # that does not answer yet must not fail the worker's boot (the first request that needs
    # the timeline tries again).
    try:
        application.follow()
    except Exception as error:
        log.warning("could not follow the log at start: %s", error)
    read_models = ReadModels(application, create_tables=False)
    return create_app(application, settings.http, read_models=read_models), application, read_models


# --- the workers -----------------------------------------------------------------------

def build_worker_process(
    settings: Settings,
    worker_settings: WorkerSettings | None = None,
    clock: Callable[[], datetime] = system_clock,
) -> WorkerProcess:
    """The workers of one process: the timer, the monitors and the read models' follower,
    dispatching through the Xen enactment to the pool of `worker_settings` (by default the
    only one: PEX_XEN_URL's, or a simulated pool in this process when it is unset)."""
    worker_settings = worker_settings or settings.worker
    simulator = None
    if worker_settings.simulated:
        config = config_for(5, guest_ip_delay=worker_settings.simulated_guest_ip_delay)
        simulator = XapiSimulator(config).start()
        url, username, password = simulator.url, SIMULATOR_USERNAME, SIMULATOR_PASSWORD
        log.warning("no PEX_XEN_URL: dispatching to a simulated pool (the paper's testbed) at %s", url)
    else:
        url = worker_settings.xen_url or ""  # set: not simulated
        username, password = worker_settings.xen_username, worker_settings.xen_password
    dispatcher = xen_dispatcher(worker_settings, url, username, password)
    app = build_application(settings, clock)
    app.pool_configured = not worker_settings.simulated
    app.prepare_lead = worker_settings.prepare_lead
    # The user's requests this process serves are carried out at once, not at the next tick.
    app.dispatch_now = dispatch = Dispatch(app, XenEnactment(dispatcher), worker_settings.worker_id, worker_settings.lease,
                                           pool=worker_settings.pool)
    # Their tables follow PEX_CREATE_TABLES, as the event store's do in this process: the
    # embedded worker is given n, after `pex serve` made them.
    read_models = ReadModels(app, create_tables=settings.create_tables)
    return WorkerProcess(app, dispatcher, worker_settings, dispatch, simulator, read_models,
                         pool_configured=not worker_settings.simulated)


def start_embedded(settings: Settings, worker_settings: WorkerSettings | None = None) -> EmbeddedWorker:
    """Start the embedded worker, one for each pool PEX_POOLS names (see the module docstring);
    a no-op handle when disabled."""
    worker_settings = worker_settings or settings.worker
    if not worker_settings.embedded_enabled:
        return EmbeddedWorker()
    if settings.database_url.startswith("memory:"):
        log.warning("PEX_DATABASE_URL=memory: is private to one process; no embedded worker")
        return EmbeddedWorker()
    # Tables (the read models' too) and the demo pool, once and before anyone else: concurrent
    # DDL fails on PostgreSQL, and the worker is told not to make any.
    app = build_application(replace(settings, create_tables=True))
    try:
        prepare_read_models(app)
    finally:
        app.close()
    env = {**os.environ, "PEX_DATABASE_URL": settings.database_url, "PEX_CREATE_TABLES": "n"}
    command = [sys.executable, "-m", "pex.workers", "--exit-with-parent", str(os.getpid())]
    processes = []
    names: list[str | None] = [p.pool for p in settings.named_pools]
    for pool in names or [None]:
        process = subprocess.Popen(command + (["--pool", pool] if pool else []), env=env)
        log.info("embedded worker started (pid %s)%s", process.pid,
                 f" for the pool {pool}" if pool else " on a simulated pool" if worker_settings.simulated else "")
        processes.append(process)
    return EmbeddedWorker(processes)
