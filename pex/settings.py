"""Settings, read from the environment (PEX_* variables) by the composition root only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from collections.abc import Mapping

DEFAULT_DATABASE_URL = "sqlite:///var/pex.sqlite3"


class SettingsError(ValueError):
    pass


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
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {raw!r}") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive")
            return value

        return cls(
            database_url=env.get("PEX_DATABASE_URL") or DEFAULT_DATABASE_URL,
            offer_ttl=timedelta(seconds=number("PEX_OFFER_TTL_SECONDS", 300)),
            horizon=timedelta(days=number("PEX_HORIZON_DAYS", 60)),
            max_rounds=int(number("PEX_MAX_ROUNDS", 5)),
            max_alternatives=int(number("PEX_MAX_ALTERNATIVES", 3)),
            pricing=env.get("PEX_PRICING", "flat"),
            install_demo_pool=env.get("PEX_DEMO_POOL", "y").lower() in ("y", "yes", "1", "true", "on"),
            create_tables=env.get("PEX_CREATE_TABLES", "y").lower() in ("y", "yes", "1", "true", "on"),
        )
