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


def price_text(price, currency: str) -> str:
    """A price as the CLI writes every one: `0.20 USD`; `-` for none."""
    return "-" if price is None else f"{price} {currency}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns aligned under a header row, as a person reads them; `--json` is for programs."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for line in (headers, *rows):
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2))


def print_outcome(app, outcome, as_json: bool) -> None:
    """One provider answer: its reply, the offer, what changed and why, in the texts' UTC form."""
    from pex.domain.lifecycle import PHASE_WORDS
    from pex.domain.values import time_text

    r = outcome.reservation
    phase = app.reservation_phase(r)
    if as_json:
        from pex.wire import outcome_json

        print_json(outcome_json(outcome, phase, app.currency))
        return
    click.echo(f"reservation {str(r.id).upper()}: {outcome.reply.value} ({r.state.value}: {PHASE_WORDS[phase]})")
    if outcome.reason:
        click.echo(f"  reason: {outcome.reason}")
    asked = r.proposal
    if asked is not None and asked.flexible:
        click.echo(
            f"  asked: a start from {time_text(asked.start)} to {time_text(asked.last_start)}, "
            f"for {asked.shortest} to {asked.duration}"
        )
    if r.offer is not None:
        t = r.offer.terms
        click.echo(
            f"  offer: {t.instances_fixed}+{t.instances_option} {t.size} '{t.template}' "
            f"from {time_text(t.start)} to {time_text(t.end)} for {price_text(t.price, app.currency)}"
            f"{'' if t.auto_start else ', started only once activated'}"
        )
        click.echo("  on: " + ", ".join(f"{a.node} ({a.instances})" for a in r.offer.placement))
        for change in r.offer.changes:
            click.echo(f"  {'' if change.startswith('why: ') else 'changed: '}{change}")
        if r.valid_until:
            click.echo(f"  valid until: {time_text(r.valid_until)}")
    e = getattr(r, "extension", None)
    if e is not None:
        click.echo(
            f"  extension: {e.reply.value} to {time_text(e.end)} (asked {time_text(e.asked_end)}) for "
            f"{price_text(e.price, app.currency)} more; valid until {time_text(e.valid_until)}"
        )
        for change in e.changes:
            click.echo(f"  changed: {change}")
        click.echo(f"  confirm it: pex respond {str(r.id).upper()} CONFIRM")
    for i, alt in enumerate(r.alternatives, 1):
        t = alt.terms
        click.echo(
            f"  alternative {i}: {t.instances} from {time_text(t.start)} to {time_text(t.end)}"
            f" for {price_text(t.price, app.currency)}"
            f" ({'; '.join(alt.changes)})"
        )


def parse_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a reservation id") from None
