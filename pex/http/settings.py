"""Settings of the HTTP edge (PEX_* variables), read only by the composition roots
(`pex serve`, pex.http.wsgi). The store's settings are pex.settings.Settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from pex.settings import SettingsError

DEFAULT_BIND = "127.0.0.1:8080"


def _flag(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("y", "yes", "1", "true", "on"):
        return True
    if value in ("n", "no", "0", "false", "off"):
        return False
    raise SettingsError(f"{raw!r} is not on/off")


@dataclass(frozen=True)
class HttpSettings:
    bind: str = DEFAULT_BIND
    workers: int = 2
    threads: int = 4
    registration: bool = True  # POST /OpenPEX/users open to anyone
    max_body_bytes: int = 64 * 1024
    auth_cache_seconds: float = 60.0  # successful password checks remembered this long
    login_failures_allowed: int = 5  # per username and client address, before slowing down
    login_lockout_seconds: float = 30.0  # the first delay; doubles with every further failure
    validate_responses: bool = False  # check every response against the OpenAPI document (tests)
    log_requests: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpSettings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float, kind=float):
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if value < 0:
                raise SettingsError(f"{name} cannot be negative")
            return value

        return cls(
            bind=env.get("PEX_BIND") or DEFAULT_BIND,
            workers=max(1, number("PEX_WORKERS", cls.workers, int)),
            threads=max(1, number("PEX_THREADS", cls.threads, int)),
            registration=_flag(env.get("PEX_REGISTRATION"), True),
            max_body_bytes=number("PEX_MAX_BODY_BYTES", cls.max_body_bytes, int),
            auth_cache_seconds=number("PEX_AUTH_CACHE_SECONDS", cls.auth_cache_seconds),
            login_failures_allowed=number("PEX_LOGIN_FAILURES_ALLOWED", cls.login_failures_allowed, int),
            login_lockout_seconds=number("PEX_LOGIN_LOCKOUT_SECONDS", cls.login_lockout_seconds),
            validate_responses=_flag(env.get("PEX_VALIDATE_RESPONSES"), False),
            log_requests=_flag(env.get("PEX_LOG_REQUESTS"), True),
        )
