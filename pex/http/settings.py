"""Settings of the HTTP edge (PEX_* variables), read only by the composition roots
(`pex serve`, pex.http.wsgi). The store's settings are pex.settings.Settings."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from pex.settings import SettingsError, env_flag, env_number

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
        )
