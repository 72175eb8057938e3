"""Accounts: registering users, checking their passwords, portal sessions.

Passwords are kept only as argon2id hashes (argon2-cffi). The hashing profile is the
application's PasswordSettings (pex.settings; PEX_PASSWORD_PROFILE): "default" (RFC 9106
low-memory, the library's default) or "cheapest" (argon2-cffi's profile for tests, never for
production).

An argon2 check costs some 0.1 s of CPU and 64 MiB by design, and anyone can ask for one (an
unknown username costs the same as a wrong password, so timing tells no names). So one
process runs at most PEX_PASSWORD_CHECKS (1) of them at once, and lets at most
PEX_PASSWORD_CHECKS_WAITING (2) more wait, each at most PEX_PASSWORD_CHECK_WAIT_SECONDS
(0.5); any other is refused at once with PasswordChecksBusy (503 + Retry-After). The
gunicorn threads left over serve the requests whose password check the HTTP edge remembers,
which never queue here.

Sessions of the portal and the failed-login counters are plain tables beside the event store
(pex.projections.login_state), made with the application's other tables.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import strtobool

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.domain.user import (
    User,
    UsernameTaken,
    check_not_reserved,
    check_password,
    check_username,
)  # fmt: skip
from pex.projections.login_state import LoginState, login_state_for
from pex.projections.readmodels import store_for
from pex.projections.webhooks import Delivery, WebhookState, webhook_state_for
from pex.settings import PasswordSettings, WebhookSettings

T = TypeVar("T")

PASSWORD_PROFILES = {
    "default": profiles.RFC_9106_LOW_MEMORY,
    "cheapest": profiles.CHEAPEST,
}


@dataclass(frozen=True)
class UserView:
    username: str
    is_admin: bool
    registered_at: datetime
    version: int
    password_version: int = 0
    ssh_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreditEntry:
    """One line of a user's credit statement: a grant (`by` an administrator, with a note), a
    booking's charge or an early end's refund (with its reservation); `amount` is signed."""

    at: datetime
    kind: str  # "grant", "charge" or "refund"
    amount: Decimal
    balance: Decimal
    reservation_id: UUID | None = None
    by: str | None = None
    note: str = ""


@dataclass(frozen=True)
class CreditView:
    username: str
    balance: Decimal
    enforced: bool  # PEX_CREDIT: whether bookings are charged
    entries: tuple[CreditEntry, ...]  # the latest last
    version: int


@dataclass(frozen=True)
class WebhookView:
    """Where a user's notifications go (pex.workers.webhooks), and since when. `secret` only in
    the answer to the command that made it (a registration, a rotation): never again."""

    username: str
    url: str
    secret_id: str | None
    since: datetime | None
    secret: str | None = None


def new_webhook_secret() -> tuple[str, str]:
    """A secret's id (named in the WebhookSet event) and the secret (256 bits, kept beside the store)."""
    return secrets.token_hex(8), "whsec_" + secrets.token_urlsafe(32)


class PasswordChecksBusy(Exception):
    """This process is running and queueing as many password checks as it may: retry shortly."""


class PasswordChecks:
    """Runs argon2 computations: at most `running` at once, on threads of background CPU
    priority, and at most `waiting` more in line for at most `wait` seconds each; anyone
    else is refused at once, so that password checks never hold every thread of a worker.

    The priority matters as much as the bound: one check (parallelism 4) keeps four cores
    busy, and a worker's other requests would queue for CPU behind it. At nice 19 (Linux
    sets it per thread, and argon2's own threads inherit it) they hardly notice it."""

    def __init__(self, running: int, waiting: int, wait: float):
        self.running, self.waiting, self.wait = running, waiting, wait
        self._slots = threading.BoundedSemaphore(running)
        self._lock = threading.Lock()
        self._in_line = 0
        self._threads = ThreadPoolExecutor(running, thread_name_prefix="pex-password-check", initializer=background_priority)

    def run(self, compute: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._in_line >= self.running + self.waiting:
                raise PasswordChecksBusy("too many password checks at once")
            self._in_line += 1
        try:
            if not self._slots.acquire(timeout=self.wait):
                raise PasswordChecksBusy("too many password checks at once")
            try:
                return self._threads.submit(compute, *args).result()
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._in_line -= 1

    @property
    def in_line(self) -> int:
        with self._lock:
            return self._in_line

    def close(self) -> None:
        self._threads.shutdown(wait=False)


def background_priority() -> None:
    if sys.platform == "linux":  # elsewhere the call would lower the whole process
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:  # pragma: no cover  (not allowed: run at normal priority)
            pass


def session_digest(sid: str) -> str:
    """What the sessions table keeps of a session id: reading the table gives no session."""
    return hashlib.sha256(sid.encode()).hexdigest()


class Accounts(Core):
    """Account commands and queries. Expects the host to be an eventsourcing Application with
    a `clock` (PexApplication)."""

    _hasher: PasswordHasher | None = None
    # Set by pex.bootstrap from PEX_WEBHOOK_*: whether a receiver may be on a private address.
    webhook_settings: WebhookSettings = WebhookSettings()
    _hasher_lock = threading.Lock()

    def __init__(self, env=None, passwords: PasswordSettings | None = None):
        super().__init__(env)
        self.passwords = passwords or PasswordSettings()
        self.password_checks = PasswordChecks(
            self.passwords.checks, self.passwords.checks_waiting, self.passwords.check_wait_seconds
        )
        store = store_for(self)
        self.login_state: LoginState = login_state_for(store)
        self.webhook_state: WebhookState = webhook_state_for(store)
        if strtobool(self.factory.env.get("CREATE_TABLE") or "yes"):
            self.login_state.create()
            self.webhook_state.create(head=self.recorder.max_notification_id() or 0)

    @property
    def password_hasher(self) -> PasswordHasher:
        if self._hasher is None:
            with self._hasher_lock:
                if self._hasher is None:
                    self._hasher = PasswordHasher.from_parameters(PASSWORD_PROFILES[self.passwords.profile])
        return self._hasher

    def sign_up(self, username: str, password: str) -> UserView:
        """Someone registers themselves (the API, the portal): never an administrator, never
        a reserved name. Its argon2 hash waits its turn like a password check."""
        check_username(username)
        check_not_reserved(username)
        check_password(password)
        self._check_free(username)
        return self._register(username, self.password_checks.run(self.password_hasher.hash, password), False)

    def register_user(self, username: str, password: str, is_admin: bool = False) -> UserView:
        """Create an account (the operator's command: any valid name). A name registered
        before, in any case, by anyone, anywhere, is refused."""
        check_username(username)
        check_password(password)
        self._check_free(username)
        return self._register(username, self.password_hasher.hash(password), is_admin)

    def _check_free(self, username: str) -> None:
        if self._user(username, to_change=False) is not None:
            raise UsernameTaken(f"the username {username!r} is taken")

    def _register(self, username: str, password_hash: str, is_admin: bool) -> UserView:
        user = User.register(username, password_hash, is_admin, self.clock())
        try:
            self.save(user)
        except IntegrityError:
            raise UsernameTaken(f"the username {username!r} is taken") from None
        return self._user_view(user)

    def authenticate(self, username: str, password: str) -> UserView | None:
        """The user if the password is theirs, else None. Costs one argon2 verification, in
        turn (PasswordChecksBusy when too many are under way)."""
        user = self._user(username)
        if user is None:
            # Spend the same work as a real check, so timing does not tell which names exist.
            self.password_checks.run(lambda: self._verify(self._dummy_hash(), password))
            return None
        if not self.password_checks.run(self._verify, user.password_hash, password):
            return None
        return self._user_view(user)

    def close(self) -> None:
        self.password_checks.close()
        self.login_state.close()
        super().close()

    def get_user(self, username: str) -> UserView | None:
        user = self._user(username)
        return self._user_view(user) if user else None

    def set_password(self, username: str, password: str) -> None:
        """A new password; every session and remembered check made with the old one ends
        (they carry the password version, which this changes)."""
        check_password(password)
        user = self._existing_user(username)
        user.change_password(self.password_hasher.hash(password), self.clock())
        self.save(user)
        self.login_state.close_sessions_of(user.username)

    # --- portal sessions -----------------------------------------------------------------

    def open_session(self, sid: str, user: UserView, expires: datetime) -> None:
        self.login_state.open_session(
            session_digest(sid), user.username, user.password_version, expires.timestamp(), self.clock().timestamp()
        )

    def session_user(self, sid: str) -> UserView | None:
        """The user whose session `sid` is, while it is open, unexpired, and made with the
        user's current password."""
        record = self.login_state.session(session_digest(sid))
        if record is None or record.expires <= self.clock().timestamp():
            return None
        user = self.get_user(record.username)
        if user is None or user.password_version != record.password_version:
            return None
        return user

    def close_session(self, sid: str) -> None:
        self.login_state.close_session(session_digest(sid))

    def grant_admin(self, username: str) -> None:
        user = self._existing_user(username)
        user.grant_admin(self.clock())
        self.save(user)

    def set_ssh_keys(self, username: str, keys: object) -> UserView:
        """The user's SSH public keys from now on (an empty list clears them): handed to every
        VM of theirs made after this (pex.application.instances), not to those made before."""

        def attempt() -> UserView:
            user = self._existing_user(username)
            user.set_ssh_keys(keys, self.clock())
            if user.pending_events:
                self.save(user)
            return self._user_view(user)

        return self._retrying(attempt)

    # --- credit ------------------------------------------------------------------------

    def credit(self, username: str, entries: int = 50) -> CreditView:
        """The user's credit: the balance and the last `entries` lines of its statement."""
        return self._credit_view(self._existing_user(username), entries)

    def grant_credit(self, username: str, amount: object, by: str, note: str = "") -> CreditView:
        """An administrator (`by`) adds `amount` to the user's credit (negative: takes it back,
        never below zero); CreditError for a malformed amount."""

        def attempt() -> CreditView:
            user = self._existing_user(username)
            user.grant_credit(amount, by, note, self.clock())
            self._save(user)
            return self._credit_view(user)

        return self._retrying(attempt)

    def _credit_view(self, user: User, entries: int = 50) -> CreditView:
        lines: list[CreditEntry] = []
        for event in self.repository.event_store.get(user.id):
            if isinstance(event, User.CreditGranted):
                lines.append(CreditEntry(event.at, "grant", event.amount, event.balance, by=event.by, note=event.note))
            elif isinstance(event, (User.CreditCharged, User.ExtensionCharged)):
                lines.append(CreditEntry(event.at, "charge", -event.amount, event.balance, event.reservation_id))
            elif isinstance(event, User.CreditRefunded):
                lines.append(CreditEntry(event.at, "refund", event.amount, event.balance, event.reservation_id))
        return CreditView(user.username, user.balance, self.credit_enforced, tuple(lines[-entries:] if entries else ()), user.version)

    # --- webhooks ---------------------------------------------------------------------

    def webhook_of(self, username: str) -> WebhookView | None:
        """Where the user's notifications go, or None (no webhook, or no such user)."""
        user = self._user(username)
        url = getattr(user, "webhook_url", None) if user is not None else None
        if user is None or url is None:
            return None
        return WebhookView(user.username, url, user.webhook_secret_id, user.webhook_set_at)

    def set_webhook(self, username: str, url: object, rotate_secret: bool = False) -> WebhookView:
        """Send the user's notifications to `url` from now on. The first registration (and one
        with `rotate_secret`) makes a new signing secret, which the answer carries, once: later
        answers never show it. Changing only the URL keeps the secret."""
        allow_private = self.webhook_settings.allow_private

        def attempt() -> WebhookView:
            user = self._existing_user(username)
            known = getattr(user, "webhook_secret_id", None)
            secret_id, secret = (known, None) if known and not rotate_secret else new_webhook_secret()
            user.set_webhook(url, secret_id, self.clock(), allow_private)
            if secret is not None:
                # Kept before the event that names it is saved: a worker never finds the event
                # without its secret. A secret whose event fails to save is forgotten at the next.
                self.webhook_state.put_secret(secret_id, user.username, secret, self.clock().timestamp())
            if user.pending_events:
                self.save(user)
            self.webhook_state.forget_secrets(user.username, keep=secret_id)
            return WebhookView(user.username, user.webhook_url or "", secret_id, user.webhook_set_at, secret)

        return self._retrying(attempt)

    def remove_webhook(self, username: str) -> bool:
        """Tell the user nothing any more (what is pending for them is dropped); whether they had one."""

        def attempt() -> bool:
            user = self._existing_user(username)
            had = getattr(user, "webhook_url", None) is not None
            user.remove_webhook(self.clock())
            if user.pending_events:
                self.save(user)
            self.webhook_state.forget_secrets(user.username)
            return had

        return self._retrying(attempt)

    def webhook_deliveries(self, username: str, limit: int = 100) -> list[Delivery]:
        """The user's delivery log, newest first (pending deliveries too)."""
        user = self._existing_user(username)
        return self.webhook_state.deliveries(user.username, limit)

    def webhook_secret(self, secret_id: str) -> str | None:
        """The signing secret `secret_id` names (the notifier's, to sign with)."""
        return self.webhook_state.secret(secret_id)

    # --- plumbing ----------------------------------------------------------------------

    def _existing_user(self, username: str) -> User:
        user = self._user(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.password_hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    _dummy: str | None = None

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.password_hasher.hash("not a password anyone has")
        return self._dummy

    @staticmethod
    def _user_view(user: User) -> UserView:
        return UserView(user.username, user.is_admin, user.registered_at, user.version,
                        getattr(user, "password_version", 0), tuple(getattr(user, "ssh_keys", ())))
