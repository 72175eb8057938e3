"""What every `pex` command shares: building PEX through pex.bootstrap from the settings, and
reading times, durations, ids and outcomes on a terminal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import click


def read_settings():
    """The settings of this command, read once from the environment (pex.settings)."""
    from pex.settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def build(**overrides):
    from pex.bootstrap import build_application
    from pex.settings import SettingsError

    settings = read_settings()
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **overrides)
    try:
        return build_application(settings)
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def parse_time(value: str) -> datetime:
    """RFC 3339 / ISO 8601 with a zone, the paper's RFC 1123 form, or now+DURATION."""
    from email.utils import parsedate_to_datetime

    if value.startswith("now"):
        rest = value[3:].lstrip("+")
        return datetime.now(UTC).replace(microsecond=0) + (parse_duration(rest) if rest else timedelta(0))
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise click.BadParameter(f"{value!r} is not a time (use RFC 3339, RFC 1123 or now+2h)") from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{value!r} has no time zone (add Z or +00:00)")
    return when.astimezone(UTC)


def parse_duration(value: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    try:
        return timedelta(seconds=float(value[:-1]) * units[value[-1]])
    except (KeyError, ValueError, IndexError):
        raise click.BadParameter(f"{value!r} is not a duration like 90m, 6h or 2d") from None


class TimeParam(click.ParamType):
    name = "time"

    def convert(self, value, param, ctx):
        return value if isinstance(value, datetime) else parse_time(value)


class DurationParam(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        return value if isinstance(value, timedelta) else parse_duration(value)


def print_outcome(outcome, as_json: bool) -> None:
    r = outcome.reservation
    if as_json:
        from pex.wire import outcome_json

        click.echo(json.dumps(outcome_json(outcome), indent=2))
        return
    click.echo(f"reservation {str(r.id).upper()}: {outcome.reply.value} ({r.state.value})")
    if outcome.reason:
        click.echo(f"  reason: {outcome.reason}")
    if r.offer is not None:
        t = r.offer.terms
        click.echo(
            f"  offer: {t.instances_fixed}+{t.instances_option} {t.size} '{t.template}' "
            f"from {t.start.isoformat()} to {t.end.isoformat()} for {t.price}"
        )
        click.echo("  on: " + ", ".join(f"{a.node}×{a.instances}" for a in r.offer.placement))
        for change in r.offer.changes:
            click.echo(f"  changed: {change}")
        if r.valid_until:
            click.echo(f"  valid until: {r.valid_until.isoformat()}")
    for i, alt in enumerate(r.alternatives, 1):
        t = alt.terms
        click.echo(f"  alternative {i}: {t.instances} from {t.start.isoformat()} for {t.price} ({'; '.join(alt.changes)})")


def parse_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a reservation id") from None
