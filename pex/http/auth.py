"""HTTP basic authentication (RFC 7617) for every API call, as the paper requires.

Verifying an argon2 hash costs tens of milliseconds and megabytes by design, so a successful
check is remembered for a short while, keyed by an HMAC of the credentials under a key that
lives only in this process. Failed checks are counted per username and client address; past
a few, that pair is refused (429 + Retry-After) for a delay that doubles with each further
failure. Both live in the process: with N workers a guesser gets N times the allowance.
Credentials are never logged and never kept in clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import falcon

from pex.accounts import UserView
from pex.http.problems import Problem

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
    """Successful (username, password) checks for `ttl` seconds, bounded in size."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic, size: int = 10_000):
        self.ttl, self.clock, self.size = ttl, clock, size
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, UserView]] = OrderedDict()
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


class LoginThrottle:
    """Failed logins per (username, client address): after `allowed` failures, that pair is
    refused for `lockout` seconds, doubling with every failure after that (capped at 15 min)."""

    MAX_DELAY = 900.0

    def __init__(self, allowed: int, lockout: float, clock: Callable[[], float] = time.monotonic, size: int = 100_000):
        self.allowed, self.lockout, self.clock, self.size = allowed, lockout, clock, size
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, username: str, address: str) -> float:
        """Seconds until this pair may try again; 0 if it may try now."""
        if self.allowed <= 0:
            return 0.0
        with self._lock:
            count, until = self._failures.get((username, address), (0, 0.0))
        return max(0.0, until - self.clock()) if count >= self.allowed else 0.0

    def failed(self, username: str, address: str) -> None:
        if self.allowed <= 0:
            return
        key = (username, address)
        with self._lock:
            count, _ = self._failures.pop(key, (0, 0.0))
            count += 1
            delay = 0.0
            if count >= self.allowed:
                delay = min(self.MAX_DELAY, self.lockout * 2 ** (count - self.allowed))
            self._failures[key] = (count, self.clock() + delay)
            while len(self._failures) > self.size:
                self._failures.popitem(last=False)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username, address), None)


class BasicAuth:
    """Falcon middleware: authenticates every request to a resource whose `auth` attribute is
    "user" or "admin", and puts the UserView in req.context.user."""

    def __init__(self, authenticate: Callable[[str, str], UserView | None], cache: VerificationCache, throttle: LoginThrottle):
        self.authenticate, self.cache, self.throttle = authenticate, cache, throttle

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
        user = self.cache.get(username, password)
        if user is None:
            address = req.remote_addr or "-"
            wait = self.throttle.retry_after(username, address)
            if wait > 0:
                raise Problem(
                    429,
                    "too-many-failed-logins",
                    "Too many failed logins",
                    "Too many failed logins for this username from this address; wait and retry.",
                    headers={"Retry-After": str(int(wait) + 1)},
                )
            user = self.authenticate(username, password)
            if user is None:
                self.throttle.failed(username, address)
                raise unauthorized("Unknown username or wrong password.")
            self.throttle.succeeded(username, address)
            self.cache.put(username, password, user)
        req.context.user = user
        if needed == "admin" and not user.is_admin:
            raise Problem(403, "forbidden", "Administrators only", "Only an administrator may do this.")
