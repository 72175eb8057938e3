"""HTTP basic authentication (RFC 7617) for every API call, as the paper requires.

Verifying an argon2 hash costs tens of milliseconds and megabytes by design, so a successful
check is remembered for a short while, keyed by an HMAC of the credentials under a key that
lives only in this process. A remembered check counts only while the user's password is the
one it was made with (the password version, read with the user on every request), so a
password change ends it in every worker at once.

Failed checks are counted in the store (pex.projections.login_state), shared by every worker and host,
per username and client, and per client in all (LoginThrottle). The client is the peer
address, or, when the peer is a proxy named in PEX_TRUSTED_PROXIES, the address the proxies
say they forwarded for (ClientAddress). Credentials are never logged and never kept in clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future

import falcon

from pex.application.accounts import UserView
from pex.domain.user import is_valid_username
from pex.http.problems import Problem
from pex.projections.login_state import ALL_ROWS, CLIENT_ROWS, CLIENT_TOTAL, LoginState
from pex.settings import Network

CHALLENGE = 'Basic realm="OpenPEX", charset="UTF-8"'


def unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Authentication required", detail, headers={"WWW-Authenticate": CHALLENGE})


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None
    return username, password


class VerificationCache:
    """Successful (username, password) checks for `ttl` seconds, bounded in size. Whoever
    reads one compares its password_version with the user's current one (BasicAuth)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, size: int = 10_000):
        self.ttl, self.clock, self.size = ttl, clock, size
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, UserView]] = OrderedDict()
        self._in_flight: dict[bytes, Future] = {}
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str) -> bytes:
        message = username.encode() + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, username: str, password: str) -> UserView | None:
        if self.ttl <= 0:
            return None
        digest = self._digest(username, password)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, username: str, password: str, user: UserView) -> None:
        if self.ttl <= 0:
            return
        digest = self._digest(username, password)
        with self._lock:
            self._entries[digest] = (self.clock() + self.ttl, user)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def forget(self, username: str, password: str) -> None:
        with self._lock:
            self._entries.pop(self._digest(username, password), None)

    def check_once(self, username: str, password: str, check: Callable[[], UserView | None]) -> UserView | None:
        """check(), run once for identical credentials that arrive while it runs: the others
        wait for its answer (or its error) instead of each taking a place in the line of
        password checks. A client that opens several connections at once (a script's thread
        pool, a browser) would otherwise cost one argon2 computation per connection, and
        be refused 503 password-checks-busy by its own burst."""
        digest = self._digest(username, password)
        with self._lock:
            flight = self._in_flight.get(digest)
            first = flight is None
            if flight is None:
                flight = self._in_flight[digest] = Future()
        if not first:
            return flight.result()
        try:
            user = check()
        except BaseException as error:
            flight.set_exception(error)
            raise
        else:
            flight.set_result(user)
            return user
        finally:
            with self._lock:
                del self._in_flight[digest]


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it: 1.2.3.4, 1.2.3.4:5678, [::1], [::1]:5678, ::1."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class ClientAddress:
    """Falcon middleware: puts the client's address in req.context.client.

    The peer's address, unless the peer is a trusted proxy: then the proxies' record in
    `header` (X-Forwarded-For, or Forwarded's for=) is read from the right, skipping trusted
    proxies, and the first address that is not one is the client. Only the one header the
    proxy is said to write is read: a proxy that writes X-Forwarded-For passes a Forwarded
    header from the client through untouched, and the client could pick its address there.
    A header from an untrusted peer is ignored; with no trusted proxies (the default) behind
    a proxy, every client has the proxy's address and shares its allowance."""

    def __init__(self, trusted: Iterable[Network] = (), header: str = "X-Forwarded-For"):
        if header.lower() not in ("x-forwarded-for", "forwarded"):
            raise ValueError(f"the forwarded header is X-Forwarded-For or Forwarded, not {header!r}")
        self.trusted, self.header = tuple(trusted), header.lower()

    def is_trusted(self, address) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    def client(self, req: falcon.Request) -> str:
        peer = parse_address(req.remote_addr or "")
        if not self.is_trusted(peer):
            return str(peer) if peer is not None else (req.remote_addr or "-")
        for hop in reversed(self._forwarded_for(req)):
            address = parse_address(hop)
            if address is None:
                break  # an obfuscated or garbled hop: the last trusted proxy is the client we know
            if not self.is_trusted(address):
                return str(address)
            peer = address
        return str(peer)

    def _forwarded_for(self, req: falcon.Request) -> list[str]:
        value = req.get_header(self.header) or ""
        if self.header == "x-forwarded-for":
            return value.split(",") if value else []
        hops = []
        for element in value.split(","):
            for pair in element.split(";"):
                name, _, given = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    hops.append(given)
        return hops

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.client = self.client(req)


def client_of(req: falcon.Request) -> str:
    """The client's address as ClientAddress found it (the peer's, without the middleware)."""
    return req.context.get("client") or req.remote_addr or "-"


class LoginThrottle:
    """Failed logins, counted in the store so every worker and host sees the same counts.

    Per (username, client): after `allowed` failures that pair is refused for `lockout`
    seconds, doubling with every further failure, at most MAX_DELAY; a success clears it.
    So a guesser elsewhere never locks the owner out of their own client. Per client in all
    (every username): after `client_allowed` failures, the same backoff for every login from
    that client, which a success does not clear: spraying many names from one client is
    slowed as much as guessing one. Counters are forgotten FORGET_SECONDS after their last
    failure; a client keeps at most CLIENT_ROWS counters (the oldest go), the table at most
    ALL_ROWS."""

    MAX_DELAY = 900.0
    FORGET_SECONDS = 3600.0
    PURGE_EVERY = 60.0

    def __init__(
        self,
        state: LoginState,
        allowed: int,
        lockout: float,
        client_allowed: int = 50,
        clock: Callable[[], float] = time.time,
    ):
        self.state, self.allowed, self.lockout, self.client_allowed, self.clock = state, allowed, lockout, client_allowed, clock
        self._purged = float("-inf")
        self._lock = threading.Lock()

    @staticmethod
    def _name(username: str) -> str:
        # Names that cannot exist share one counter: no unbounded keys out of garbage.
        return username.lower() if is_valid_username(username) else "!invalid"

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this pair may try again; 0 if it may try now."""
        if self.allowed <= 0:
            return 0.0
        return max(0.0, self.state.blocked_until(self._name(username), address) - self.clock())

    def _delay(self, failures: int, allowed: int) -> float:
        if allowed <= 0 or failures < allowed:
            return 0.0
        return min(self.MAX_DELAY, self.lockout * 2 ** min(failures - allowed, 32))

    def failed(self, username: str, address: str) -> None:
        if self.allowed <= 0:
            return
        now, name = self.clock(), self._name(username)
        counts = self.state.count_failure(name, address, now, now - self.FORGET_SECONDS)
        user_delay = self._delay(counts.user, self.allowed)
        if user_delay:
            self.state.block(name, address, now + user_delay)
        client_delay = self._delay(counts.client, self.client_allowed)
        if client_delay:
            self.state.block(CLIENT_TOTAL, address, now + client_delay)
        if counts.user == 1:  # a new counter: keep the client's few
            self.state.forget(now - self.FORGET_SECONDS, client=address, keep=CLIENT_ROWS)
        with self._lock:
            due = now - self._purged >= self.PURGE_EVERY
            if due:
                self._purged = now
        if due:
            self.state.forget(now - self.FORGET_SECONDS, keep=ALL_ROWS)

    def succeeded(self, username: str, address: str) -> None:
        if self.allowed <= 0:
            return
        self.state.clear(self._name(username), address)


class BasicAuth:
    """Falcon middleware: authenticates every request to a resource whose `auth` attribute is
    "user" or "admin", and puts the UserView in req.context.user."""

    def __init__(
        self,
        authenticate: Callable[[str, str], UserView | None],
        cache: VerificationCache,
        throttle: LoginThrottle,
        get_user: Callable[[str], UserView | None],
    ):
        self.authenticate, self.cache, self.throttle, self.get_user = authenticate, cache, throttle, get_user

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        req.context.user = None
        needed = getattr(resource, "auth", "user") if resource is not None else None
        if isinstance(needed, dict):  # per method, e.g. {"GET": "user", "POST": "admin"}
            needed = needed.get(req.method, "user")
        if needed is None or req.method == "OPTIONS":
            return
        credentials = parse_basic(req.get_header("Authorization"))
        if credentials is None:
            raise unauthorized("Send HTTP basic credentials (register with POST /OpenPEX/users).")
        username, password = credentials
        user = self._remembered(username, password)
        if user is None:
            address = client_of(req)
            wait = self.throttle.retry_after(username, address)
            if wait > 0:
                raise Problem(
                    429,
                    "too-many-failed-logins",
                    "Too many failed logins",
                    "Too many failed logins for this username from this address; wait and retry.",
                    headers={"Retry-After": str(int(wait) + 1)},
                )
            user = self.cache.check_once(username, password, lambda: self.authenticate(username, password))
            if user is None:
                self.throttle.failed(username, address)
                raise unauthorized("Unknown username or wrong password.")
            self.throttle.succeeded(username, address)
            self.cache.put(username, password, user)
        req.context.user = user
        if needed == "admin" and not user.is_admin:
            raise Problem(403, "forbidden", "Administrators only", "Only an administrator may do this.")

    def _remembered(self, username: str, password: str) -> UserView | None:
        """The user as they are now, if these credentials passed a check under their current
        password; reading the user is a lookup, never an argon2 computation."""
        remembered = self.cache.get(username, password)
        if remembered is None:
            return None
        current = self.get_user(remembered.username)
        if current is None or current.password_version != remembered.password_version:
            self.cache.forget(username, password)
            return None
        return current


class OpenPexHeaders:
    """Falcon middleware, off by default (PEX_OPENPEX_HEADERS): takes the original
    implementation's `OpenPEX-User` and `OpenPEX-Pass` headers, which its reference client
    sends instead of HTTP basic authentication, as basic credentials. It runs before
    BasicAuth, so they are checked, cached and throttled exactly as basic ones; an
    Authorization header, when there is one, wins. They are credentials in clear text in
    custom headers, which proxies and logs treat less carefully than Authorization: serve
    them only over HTTPS, and only while an original client needs them."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        user, password = req.get_header("OpenPEX-User"), req.get_header("OpenPEX-Pass")
        if user is None or password is None or req.get_header("Authorization") is not None:
            return
        if ":" in user:  # basic credentials would split it: another user, another password
            return
        # WSGI hands header values over as latin-1; the bytes are what the client sent.
        raw = user.encode("latin-1", "replace") + b":" + password.encode("latin-1", "replace")
        req.env["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(raw).decode("ascii")
