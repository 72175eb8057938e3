"""Settings, read from the environment (PEX_* variables) by the composition root only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from collections.abc import Mapping

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


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    offer_ttl: timedelta = timedelta(minutes=5)
    horizon: timedelta = timedelta(days=60)
    max_rounds: int = 5
    max_alternatives: int = 3
    pricing: str = "flat"  # "flat", "peak", or "module:Class"
    install_demo_pool: bool = True  # when the store has no catalogue yet
    create_tables: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def number(name: str, default: float) -> float:
            return env_number(env, name, default, positive=True)

        return cls(
            database_url=env.get("PEX_DATABASE_URL") or DEFAULT_DATABASE_URL,
            offer_ttl=timedelta(seconds=number("PEX_OFFER_TTL_SECONDS", 300)),
            horizon=timedelta(days=number("PEX_HORIZON_DAYS", 60)),
            max_rounds=int(number("PEX_MAX_ROUNDS", 5)),
            max_alternatives=int(number("PEX_MAX_ALTERNATIVES", 3)),
            pricing=env.get("PEX_PRICING", "flat"),
            install_demo_pool=env_flag(env, "PEX_DEMO_POOL", True),
            create_tables=env_flag(env, "PEX_CREATE_TABLES", True),
        )
