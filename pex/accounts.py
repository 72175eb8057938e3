"""Accounts: registering users and checking their passwords. A mixin of PexApplication.

Passwords are kept only as argon2id hashes (argon2-cffi). The hashing profile comes from the
application's environment, PEX_PASSWORD_PROFILE: "default" (RFC 9106 low-memory, the
library's default) or "cheapest" (argon2-cffi's profile for tests, never for production).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from pex.domain.user import User, UsernameTaken, check_password, check_username, user_id

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


class Accounts:
    """Account commands and queries. Expects the host to be an eventsourcing Application with
    a `clock` (PexApplication)."""

    _hasher: PasswordHasher | None = None
    _hasher_lock = threading.Lock()

    @property
    def password_hasher(self) -> PasswordHasher:
        if self._hasher is None:
            with self._hasher_lock:
                if self._hasher is None:
                    name = self.env.get("PEX_PASSWORD_PROFILE") or "default"  # type: ignore[attr-defined]
                    if name not in PASSWORD_PROFILES:
                        raise ValueError(f"PEX_PASSWORD_PROFILE must be one of {', '.join(PASSWORD_PROFILES)}, not {name!r}")
                    self._hasher = PasswordHasher.from_parameters(PASSWORD_PROFILES[name])
        return self._hasher

    def register_user(self, username: str, password: str, is_admin: bool = False) -> UserView:
        """Create an account. A name registered before (by anyone, anywhere) is refused."""
        check_username(username)
        check_password(password)
        if user_id(username) in self.repository:  # type: ignore[attr-defined]
            raise UsernameTaken(f"the username {username!r} is taken")
        user = User.register(username, self.password_hasher.hash(password), is_admin, self.clock())  # type: ignore[attr-defined]
        try:
            self.save(user)  # type: ignore[attr-defined]
        except IntegrityError:
            raise UsernameTaken(f"the username {username!r} is taken") from None
        return self._user_view(user)

    def authenticate(self, username: str, password: str) -> UserView | None:
        """The user if the password is theirs, else None. Costs one argon2 verification."""
        user = self._user(username)
        if user is None:
            # Spend the same work as a real check, so timing does not tell which names exist.
            self._verify(self._dummy_hash(), password)
            return None
        if not self._verify(user.password_hash, password):
            return None
        return self._user_view(user)

    def get_user(self, username: str) -> UserView | None:
        user = self._user(username)
        return self._user_view(user) if user else None

    def set_password(self, username: str, password: str) -> None:
        check_password(password)
        user = self._existing_user(username)
        user.change_password(self.password_hasher.hash(password), self.clock())  # type: ignore[attr-defined]
        self.save(user)  # type: ignore[attr-defined]

    def grant_admin(self, username: str) -> None:
        user = self._existing_user(username)
        user.grant_admin(self.clock())  # type: ignore[attr-defined]
        self.save(user)  # type: ignore[attr-defined]

    # --- plumbing ----------------------------------------------------------------------

    def _existing_user(self, username: str) -> User:
        user = self._user(username)
        if user is None:
            from pex.application import NotFound

            raise NotFound(f"no user {username!r}")
        return user

    def _user(self, username: str) -> User | None:
        if not isinstance(username, str) or not username:
            return None
        try:
            user = self.repository.get(user_id(username))  # type: ignore[attr-defined]
        except AggregateNotFoundError:
            return None
        return user if isinstance(user, User) else None

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
        return UserView(user.username, user.is_admin, user.registered_at, user.version)
