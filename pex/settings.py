"""Settings, read from the environment (PEX_* variables) once, by the entry points, and handed
to the composition root (pex.bootstrap): one tree, `Settings`, with the store's and the
negotiation's settings at its root and the parts of the accounts (`passwords`), the HTTP edge
(`http`, with the portal's `http.portal`) and the workers (`worker`). Nothing else reads the
environment: every part is handed down explicitly, to a child process too (gunicorn's workers
inherit the tree from the process that forked them; docs/architecture.md)."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

from pex.domain.errors import CatalogueError
from pex.domain.placement_policies import PLACEMENT_POLICIES
from pex.domain.pool import DEFAULT_POOL, PoolReserve, check_pool_name
from pex.domain.pricing import DEFAULT_CURRENCY

DEFAULT_DATABASE_URL = "sqlite:///var/pex.sqlite3"


class SettingsError(ValueError):
    pass


TRUE = ("y", "yes", "1", "true", "on")
FALSE = ("n", "no", "0", "false", "off")


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """An on/off variable; empty or unset is the default, anything unrecognised an error."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(f"{name} must be on or off (y/n), not {raw!r}")


def env_number(env: Mapping[str, str], name: str, default, kind=float, positive: bool = False):
    """A numeric variable; empty or unset is the default. Never negative; with `positive`,
    never zero either."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if value < 0 or (positive and value == 0):
        raise SettingsError(f"{name} must be {'positive' if positive else 'zero or more'}, not {raw!r}")
    return value


def currency_code(text: str) -> str:
    """PEX_CURRENCY: an ISO 4217 code, three letters (EUR, USD, AUD)."""
    code = text.strip().upper()
    if len(code) != 3 or not code.isascii() or not code.isalpha():
        raise SettingsError(f"PEX_CURRENCY: {text!r} is not a currency code of three letters, like EUR")
    return code


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    offer_ttl: timedelta = timedelta(minutes=5)
    horizon: timedelta = timedelta(days=60)
    max_rounds: int = 5
    max_alternatives: int = 3
    # Re-packing: a request that does not fit as asked may move other reservations' bookings
    # that start later than the prepare lead plus this margin (pex.application.negotiation).
    repack: bool = True
    repack_margin: timedelta = timedelta(minutes=10)
    pricing: str = "flat"  # "flat", "peak", "market", or "module:Class"
    placement: str = "best-fit"  # pex.domain.placement_policies.PLACEMENT_POLICIES
    placement_seed: int = 0  # what the random placement's source is seeded with
    # The tie order best fit takes equal nodes in (pex.domain.placement.tie_order): not an
    # operator's setting; pex serve gives each HTTP worker its own.
    placement_ties: int = 0
    credit: bool = False  # PEX_CREDIT=on: a CONFIRM is charged to its user's credit, and refused beyond it
    currency: str = DEFAULT_CURRENCY  # what every price is in: shown beside each one
    install_demo_pool: bool = True  # when the store has no catalogue yet
    create_tables: bool = True
    passwords: PasswordSettings = field(default_factory=lambda: PasswordSettings())
    http: HttpSettings = field(default_factory=lambda: HttpSettings())
    worker: WorkerSettings = field(default_factory=lambda: WorkerSettings())
    # Every Xen pool's workers' settings, in the order PEX_POOLS names them (`pools`); empty
    # without it: then there is one pool, named `default`, whose settings are `worker`.
    # With it, `worker` is the first pool's.
    named_pools: tuple[WorkerSettings, ...] = ()
    # PEX_VM_PASSWORD_KEY: with it, every VM gets a password of its own (pex.application.instances.vm_password),
    # derived from this key and the instance id, so that no password is ever stored. The API's
    # processes and the workers must share it. Never shown (repr=False).
    vm_password_key: str | None = field(default=None, repr=False)
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings())

    @property
    def pools(self) -> tuple[WorkerSettings, ...]:
        """Every pool's settings: PEX_POOLS's, or the one pool's, `worker`."""
        return self.named_pools or (self.worker,)

    def pool(self, name: str | None) -> WorkerSettings:
        """The settings of the pool named `name`; with None, of the only pool (an error when
        PEX_POOLS names more than one: each has workers of its own)."""
        if name is None:
            if len(self.pools) > 1:
                raise SettingsError(
                    f"PEX_POOLS names {len(self.pools)} pools ({', '.join(p.pool for p in self.pools)}): "
                    "name the one to work on with --pool")
            return self.pools[0]
        for pool in self.pools:
            if pool.pool == name:
                return pool
        raise SettingsError(f"no pool {name!r}: the pools are {', '.join(p.pool for p in self.pools)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            return env_number(env, name, default, positive=True)

        database_url = env.get("PEX_DATABASE_URL") or DEFAULT_DATABASE_URL
        worker = WorkerSettings.from_env(env)
        if env.get("PEX_POOLS") and env.get("PEX_XEN_URL"):
            raise SettingsError("PEX_POOLS names the pools' masters: unset PEX_XEN_URL, and name its pool in the "
                                "file instead ([pool.default] keeps its nodes' names)")
        pools = pools_from(env["PEX_POOLS"], worker, database_url) if env.get("PEX_POOLS") else ()
        return cls(
            database_url=database_url,
            offer_ttl=timedelta(seconds=number("PEX_OFFER_TTL_SECONDS", 300)),
            horizon=timedelta(days=number("PEX_HORIZON_DAYS", 60)),
            max_rounds=int(number("PEX_MAX_ROUNDS", 5)),
            max_alternatives=int(number("PEX_MAX_ALTERNATIVES", 3)),
            repack=env_flag(env, "PEX_REPACK", True),
            repack_margin=timedelta(seconds=env_number(env, "PEX_REPACK_MARGIN_SECONDS", 600, positive=False)),
            pricing=env.get("PEX_PRICING", "flat"),
            placement=placement_name(env.get("PEX_PLACEMENT") or "best-fit"),
            placement_seed=int(env_number(env, "PEX_PLACEMENT_SEED", 0, int)),
            credit=env_flag(env, "PEX_CREDIT", False),
            currency=currency_code(env.get("PEX_CURRENCY", DEFAULT_CURRENCY)),
            install_demo_pool=env_flag(env, "PEX_DEMO_POOL", True),
            create_tables=env_flag(env, "PEX_CREATE_TABLES", True),
            passwords=PasswordSettings.from_env(env),
            http=HttpSettings.from_env(env),
            worker=pools[0] if pools else worker,
            named_pools=pools,
            vm_password_key=vm_password_key(env.get("PEX_VM_PASSWORD_KEY") or ""),
            webhooks=WebhookSettings.from_env(env),
        )


def placement_name(text: str) -> str:
    """PEX_PLACEMENT: one of the placement policies (pex.domain.placement_policies)."""
    name = text.strip().lower()
    if name not in PLACEMENT_POLICIES:
        raise SettingsError(f"PEX_PLACEMENT must be one of {', '.join(PLACEMENT_POLICIES)}, not {text!r}")
    return name


MIN_VM_PASSWORD_KEY = 32


def vm_password_key(text: str) -> str | None:
    """PEX_VM_PASSWORD_KEY: empty (no VM passwords) or a secret of at least 32 characters."""
    key = text.strip()
    if key and len(key) < MIN_VM_PASSWORD_KEY:
        raise SettingsError(f"PEX_VM_PASSWORD_KEY must be at least {MIN_VM_PASSWORD_KEY} characters "
                            "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key or None


# --- the webhooks' part ----------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSettings:
    """What users are told, and how (pex.workers.webhooks): the leads of the timed notifications
    and the delivery's bounds. The API's processes and the workers read the same ones."""

    # A receiver on a loopback, private, link-local or otherwise non-public address is refused
    # (at registration and at every delivery, whatever the name resolves to then) unless this
    # is on: an operator's choice for receivers inside their own network, and the tests'.
    allow_private: bool = False
    lapse_lead: timedelta = timedelta(seconds=60)  # "your offer lapses soon", this long before
    ending_lead: timedelta = timedelta(minutes=15)  # "your reservation ends soon", this long before
    timeout: float = 5.0  # seconds one delivery may take in all (connect, send, answer)
    attempts: int = 8  # deliveries of one notification before it is given up (FAILED)
    retry: float = 5.0  # seconds before the second attempt; each next waits twice as long
    retry_max: float = 3600.0  # at most this long between two attempts
    log_size: int = 100  # finished deliveries kept per user (the delivery log); older ones go
    max_age: timedelta = timedelta(hours=1)  # a notification due longer ago than this is not sent
    threads: int = 4  # deliveries under way at once, on the worker's own threads
    interval: float = 1.0  # seconds between two looks at the outbox

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float, kind=float, positive: bool = True):
            return env_number(env, name, default, kind, positive)

        return cls(
            allow_private=env_flag(env, "PEX_WEBHOOK_ALLOW_PRIVATE", False),
            lapse_lead=timedelta(seconds=number("PEX_WEBHOOK_LAPSE_LEAD_SECONDS", 60, positive=False)),
            ending_lead=timedelta(seconds=number("PEX_WEBHOOK_ENDING_LEAD_SECONDS", 900, positive=False)),
            timeout=number("PEX_WEBHOOK_TIMEOUT_SECONDS", cls.timeout),
            attempts=number("PEX_WEBHOOK_ATTEMPTS", cls.attempts, int),
            retry=number("PEX_WEBHOOK_RETRY_SECONDS", cls.retry),
            retry_max=number("PEX_WEBHOOK_RETRY_MAX_SECONDS", cls.retry_max),
            log_size=number("PEX_WEBHOOK_LOG_SIZE", cls.log_size, int),
            max_age=timedelta(seconds=number("PEX_WEBHOOK_MAX_AGE_SECONDS", 3600)),
            threads=number("PEX_WEBHOOK_THREADS", cls.threads, int),
            interval=number("PEX_WEBHOOK_INTERVAL_SECONDS", cls.interval),
        )


# --- the accounts' part ----------------------------------------------------------------

PASSWORD_PROFILES = ("default", "cheapest")


@dataclass(frozen=True)
class PasswordSettings:
    """How passwords are hashed, and how many argon2 checks one process runs (pex.application.accounts)."""

    profile: str = "default"  # argon2id RFC 9106 low-memory; "cheapest" for tests, never for production
    checks: int = 1  # at once
    checks_waiting: int = 2  # in line behind them
    check_wait_seconds: float = 0.5  # how long one waits in line

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PasswordSettings:
        env = os.environ if environ is None else environ
        profile = env.get("PEX_PASSWORD_PROFILE") or "default"
        if profile not in PASSWORD_PROFILES:
            raise SettingsError(f"PEX_PASSWORD_PROFILE must be one of {', '.join(PASSWORD_PROFILES)}, not {profile!r}")
        return cls(
            profile=profile,
            checks=env_number(env, "PEX_PASSWORD_CHECKS", cls.checks, int, positive=True),
            checks_waiting=env_number(env, "PEX_PASSWORD_CHECKS_WAITING", cls.checks_waiting, int),
            check_wait_seconds=env_number(env, "PEX_PASSWORD_CHECK_WAIT_SECONDS", cls.check_wait_seconds),
        )


# --- the HTTP edge's part ----------------------------------------------------------------

DEFAULT_BIND = "127.0.0.1:8080"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_proxies(text: str) -> tuple[Network, ...]:
    """PEX_TRUSTED_PROXIES: addresses or networks (CIDR), separated by commas or spaces."""
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in text.replace(",", " ").split())
    except ValueError as error:
        raise SettingsError(f"PEX_TRUSTED_PROXIES: {error}") from None


def forwarded_header(name: str) -> str:
    if name.strip().lower() not in ("x-forwarded-for", "forwarded"):
        raise SettingsError(f"PEX_FORWARDED_HEADER must be X-Forwarded-For or Forwarded, not {name!r}")
    return name.strip()


_SHA256 = re.compile(r"[0-9a-f]{64}")


def certificate_fingerprints(text: str) -> tuple[str, ...]:
    """PEX_XEN_CERT_SHA256: comma- or space-separated SHA-256 fingerprints (colons optional),
    one per host of the pool, as 64 lowercase hex digits each."""
    fingerprints = []
    for word in re.split(r"[,\s]+", text.strip()):
        if not word:
            continue
        digits = word.replace(":", "").lower()
        if not _SHA256.fullmatch(digits):
            raise SettingsError(f"PEX_XEN_CERT_SHA256: {word!r} is not a SHA-256 fingerprint (64 hex digits)")
        fingerprints.append(digits)
    return tuple(fingerprints)


def xen_ca_file(path: str | None) -> str | None:
    if not path:
        return None
    if not os.path.isfile(path):
        raise SettingsError(f"PEX_XEN_CA_FILE: no file {path!r}")
    return path


@dataclass(frozen=True)
class HttpSettings:
    bind: str = DEFAULT_BIND
    workers: int = 2
    threads: int = 4
    registration: bool = True  # POST /OpenPEX/users open to anyone
    max_body_bytes: int = 64 * 1024
    request_timeout_seconds: float = 10.0  # for a whole request (headers and body) to arrive
    auth_cache_seconds: float = 60.0  # successful password checks remembered this long
    login_failures_allowed: int = 5  # per username and client address, before slowing down; 0: no throttle
    login_lockout_seconds: float = 30.0  # the first delay; doubles with every further failure
    login_client_failures_allowed: int = 50  # per client address, whatever the usernames
    trusted_proxies: tuple[Network, ...] = ()  # peers whose forwarded_header is believed
    forwarded_header: str = "X-Forwarded-For"  # or "Forwarded" (RFC 7239): the one the proxies write
    validate_responses: bool = False  # check every response against the OpenAPI document (tests)
    log_requests: bool = True
    metrics_auth: bool = False  # /metrics only for an administrator's Basic credentials
    openpex_headers: bool = False  # accept the original's OpenPEX-User/OpenPEX-Pass headers
    # Where the gunicorn workers write their metrics for /metrics to merge (prometheus_client's
    # multiprocess mode); None: each process counts alone. `pex serve` makes one when unset.
    metrics_dir: str | None = None
    portal: PortalSettings = field(default_factory=lambda: PortalSettings())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpSettings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float, kind=float, positive: bool = False):
            return env_number(env, name, default, kind, positive)

        return cls(
            bind=env.get("PEX_BIND") or DEFAULT_BIND,
            workers=max(1, number("PEX_WORKERS", cls.workers, int)),
            threads=max(1, number("PEX_THREADS", cls.threads, int)),
            registration=env_flag(env, "PEX_REGISTRATION", True),
            max_body_bytes=number("PEX_MAX_BODY_BYTES", cls.max_body_bytes, int),
            request_timeout_seconds=number("PEX_REQUEST_TIMEOUT_SECONDS", cls.request_timeout_seconds, positive=True),
            auth_cache_seconds=number("PEX_AUTH_CACHE_SECONDS", cls.auth_cache_seconds),
            login_failures_allowed=number("PEX_LOGIN_FAILURES_ALLOWED", cls.login_failures_allowed, int),
            login_lockout_seconds=number("PEX_LOGIN_LOCKOUT_SECONDS", cls.login_lockout_seconds),
            login_client_failures_allowed=number(
                "PEX_LOGIN_CLIENT_FAILURES_ALLOWED", cls.login_client_failures_allowed, int
            ),
            trusted_proxies=trusted_proxies(env.get("PEX_TRUSTED_PROXIES") or ""),
            forwarded_header=forwarded_header(env.get("PEX_FORWARDED_HEADER") or "X-Forwarded-For"),
            validate_responses=env_flag(env, "PEX_VALIDATE_RESPONSES", False),
            log_requests=env_flag(env, "PEX_LOG_REQUESTS", True),
            metrics_auth=env_flag(env, "PEX_METRICS_AUTH", False),
            openpex_headers=env_flag(env, "PEX_OPENPEX_HEADERS", False),
            # prometheus_client's own variable: operators and its documentation know it by this name.
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            portal=PortalSettings.from_env(env),
        )


@dataclass(frozen=True)
class PortalSettings:
    """The web portal's sessions (pex.http.portal). Every gunicorn worker, and every host behind
    one load balancer, must sign with the same secret: production sets PEX_SECRET_KEY; without
    it the portal makes one once and keeps it in `var_dir` (pex.http.portal.secret)."""

    secret_key: str | None = None
    var_dir: str = "var"
    # None: Secure when the request came over HTTPS (falcon's req.scheme, which honours
    # X-Forwarded-Proto only behind gunicorn's forwarded_allow_ips). True/False: always/never.
    cookie_secure: bool | None = None
    session_hours: float = 12.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PortalSettings:
        env = os.environ if environ is None else environ
        secure_raw = (env.get("PEX_COOKIE_SECURE") or "auto").strip().lower()
        if secure_raw == "auto":
            secure = None
        elif secure_raw in TRUE:
            secure = True
        elif secure_raw in FALSE:
            secure = False
        else:
            raise SettingsError(f"PEX_COOKIE_SECURE must be auto, on or off, not {secure_raw!r}")
        key = env.get("PEX_SECRET_KEY") or None
        if key is not None and len(key) < 16:
            raise SettingsError("PEX_SECRET_KEY must be at least 16 characters")
        return cls(
            secret_key=key,
            var_dir=env.get("PEX_VAR_DIR") or "var",
            cookie_secure=secure,
            session_hours=env_number(env, "PEX_SESSION_HOURS", cls.session_hours, positive=True),
        )


# --- the workers' part ------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerSettings:
    # The pool master's XAPI endpoint; None runs an in-process simulated pool (the paper's testbed).
    xen_url: str | None = None
    xen_username: str = "root"
    xen_password: str = ""
    xen_ignore_ssl: bool = False  # the explicit, logged opt-out of certificate checks
    xen_ca_file: str | None = None  # a PEM bundle that signed the pool's certificates
    xen_cert_sha256: tuple[str, ...] = ()  # or the pinned fingerprints of its hosts' certificates
    xen_members: tuple[str, ...] = ()  # other hosts' addresses, to find the master by when PEX_XEN_URL is down
    xen_timeout: float = 30.0  # one XAPI request
    xen_task_timeout: float = 600.0  # one asynchronous XAPI task (a start, a shutdown)
    worker_id: str | None = None  # default: host:pid:random
    tick: float = 1.0  # seconds between timer ticks
    threads: int = 4  # dispatches running at once
    lease: timedelta = timedelta(minutes=2)  # a dispatch claim, renewed while it runs
    node_grace: timedelta = timedelta(seconds=30)  # a lost node's instances move after this
    guest_timeout: timedelta = timedelta(minutes=5)  # a guest silent this long is unresponsive
    resync: float = 60.0  # seconds between full comparisons of Xen and PEX
    watch_timeout: float = 10.0  # how long one event.from may block
    embedded: str = "auto"  # run a worker inside `pex serve`: auto (when no PEX_XEN_URL), y, n
    simulated_guest_ip_delay: float = 2.0  # the in-process simulator's boot-to-IP delay
    log_level: str = "INFO"  # of `pex worker` and `pex xen-sim`, which log JSON lines as the servers do
    prepare_lead: timedelta = timedelta(minutes=10)  # VMs are made this long before their start
    # What each host of the pool keeps back from guests (PEX_POOL_RESERVE, pex.domain.pool).
    pool_reserve: PoolReserve = field(default_factory=PoolReserve)
    # The name PEX knows this pool by (PEX_POOLS; pex.domain.pool): its nodes are named after it.
    pool: str = DEFAULT_POOL

    @property
    def simulated(self) -> bool:
        return not self.xen_url

    @property
    def embedded_enabled(self) -> bool:
        return self.embedded == "y" or (self.embedded == "auto" and self.simulated)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            return env_number(env, name, default)

        embedded = (env.get("PEX_EMBEDDED_WORKER") or "auto").lower()
        if embedded in TRUE:
            embedded = "y"
        elif embedded in FALSE:
            embedded = "n"
        elif embedded != "auto":
            raise SettingsError(f"PEX_EMBEDDED_WORKER must be auto, y or n, not {embedded!r}")
        ignore_ssl = env_flag(env, "PEX_XEN_IGNORE_SSL", False)
        ca_file = xen_ca_file(env.get("PEX_XEN_CA_FILE"))
        fingerprints = certificate_fingerprints(env.get("PEX_XEN_CERT_SHA256") or "")
        if ignore_ssl and (ca_file or fingerprints):
            raise SettingsError("PEX_XEN_IGNORE_SSL contradicts PEX_XEN_CA_FILE and PEX_XEN_CERT_SHA256: choose one")
        return cls(
            xen_url=env.get("PEX_XEN_URL") or None,
            xen_username=env.get("PEX_XEN_USERNAME") or "root",
            xen_password=env.get("PEX_XEN_PASSWORD", ""),
            xen_ignore_ssl=ignore_ssl,
            xen_ca_file=ca_file,
            xen_cert_sha256=fingerprints,
            xen_members=tuple(w for w in re.split(r"[,\s]+", env.get("PEX_XEN_MEMBERS") or "") if w),
            xen_timeout=number("PEX_XEN_TIMEOUT_SECONDS", 30.0),
            xen_task_timeout=number("PEX_XEN_TASK_TIMEOUT_SECONDS", 600.0),
            worker_id=env.get("PEX_WORKER_ID") or None,
            tick=number("PEX_WORKER_TICK_SECONDS", 1.0),
            threads=max(1, int(number("PEX_WORKER_THREADS", 4))),
            lease=timedelta(seconds=number("PEX_DISPATCH_LEASE_SECONDS", 120)),
            node_grace=timedelta(seconds=number("PEX_NODE_GRACE_SECONDS", 30)),
            guest_timeout=timedelta(seconds=number("PEX_GUEST_TIMEOUT_SECONDS", 300)),
            resync=number("PEX_RESYNC_SECONDS", 60),
            watch_timeout=number("PEX_WATCH_TIMEOUT_SECONDS", 10),
            embedded=embedded,
            simulated_guest_ip_delay=number("PEX_SIM_GUEST_IP_DELAY_SECONDS", 2.0),
            log_level=(env.get("PEX_LOG_LEVEL") or "INFO").upper(),
            pool_reserve=pool_reserve(env.get("PEX_POOL_RESERVE") or ""),
            prepare_lead=timedelta(seconds=number("PEX_PREPARE_LEAD_SECONDS", 600)),
        )


# What a pool's table in PEX_POOLS may set: the Xen pool's (as PEX_XEN_* sets the one pool's).
POOL_KEYS = {
    "database_url", "xen_url", "xen_username", "xen_password", "xen_password_file", "xen_ca_file",
    "xen_cert_sha256", "xen_ignore_ssl", "xen_members", "reserve",
}


def pools_from(path: str, worker: WorkerSettings, database_url: str) -> tuple[WorkerSettings, ...]:
    """PEX_POOLS: a TOML file of `[pool.NAME]` tables, each a Xen pool, with its master's
    `xen_url` (required), `xen_username` (default root), `xen_password` or
    `xen_password_file` (its first line), and optionally `xen_ca_file`, `xen_cert_sha256`
    (a list), `xen_ignore_ssl`, `xen_members` (a list), `reserve` (as PEX_POOL_RESERVE, for
    this pool's hosts) and `database_url`. Every other worker setting (ticks, leases,
    timeouts) is the environment's, for every pool. docs/operations.md, "Many pools"."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"PEX_POOLS: cannot read {path!r}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"PEX_POOLS: {path} is not TOML: {error}") from None
    tables = document.get("pool")
    if set(document) != {"pool"} or not isinstance(tables, dict) or not tables:
        raise SettingsError(f"PEX_POOLS: {path} must hold [pool.NAME] tables, one per Xen pool, and nothing else")
    pools = []
    for name, table in tables.items():
        where = f"PEX_POOLS: [pool.{name}]"
        try:
            check_pool_name(name)
        except CatalogueError as error:
            raise SettingsError(f"{where}: {error}") from None
        if not isinstance(table, dict):
            raise SettingsError(f"{where} must be a table")
        if unknown := sorted(set(table) - POOL_KEYS):
            raise SettingsError(f"{where}: unknown {', '.join(unknown)} (it may set {', '.join(sorted(POOL_KEYS))})")
        # One store for every pool, for now: a pool in a database of its own (issue 15's
        # shards) is refused rather than silently written to the directory's.
        if table.get("database_url", database_url) != database_url:
            raise SettingsError(
                f"{where}: database_url must be PEX_DATABASE_URL's: every pool is in that one store "
                "(a pool in a database of its own is not supported yet)")
        url = _text(table, "xen_url", where)
        if not url:
            raise SettingsError(f"{where}: set xen_url, its master's XAPI endpoint")
        password = _text(table, "xen_password", where)
        if "xen_password_file" in table:
            if "xen_password" in table:
                raise SettingsError(f"{where}: set xen_password or xen_password_file, not both")
            password = _password_file(_text(table, "xen_password_file", where), where)
        ignore_ssl = table.get("xen_ignore_ssl", False)
        if not isinstance(ignore_ssl, bool):
            raise SettingsError(f"{where}: xen_ignore_ssl must be true or false")
        fingerprints = certificate_fingerprints(" ".join(_texts(table, "xen_cert_sha256", where)))
        ca_file = xen_ca_file(_text(table, "xen_ca_file", where) or None)
        if ignore_ssl and (ca_file or fingerprints):
            raise SettingsError(f"{where}: xen_ignore_ssl contradicts xen_ca_file and xen_cert_sha256: choose one")
        reserve = pool_reserve(_text(table, "reserve", where)) if "reserve" in table else worker.pool_reserve
        pools.append(replace(
            worker, pool=name, xen_url=url, xen_username=_text(table, "xen_username", where) or "root",
            xen_password=password, xen_ignore_ssl=ignore_ssl, xen_ca_file=ca_file, xen_cert_sha256=fingerprints,
            xen_members=_texts(table, "xen_members", where), pool_reserve=reserve,
        ))
    return tuple(pools)


def _text(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key, "")
    if not isinstance(value, str):
        raise SettingsError(f"{where}: {key} must be a string")
    return value


def _texts(table: Mapping[str, object], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def _password_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as error:
        raise SettingsError(f"{where}: cannot read xen_password_file {path!r}: {error.strerror}") from None


def pool_reserve(text: str) -> PoolReserve:
    try:
        return PoolReserve.parse(text)
    except CatalogueError as error:
        raise SettingsError(f"PEX_POOL_RESERVE: {error}") from None
