"""Rendering portal pages: the Jinja2 environment, time zones, and what every page is given.

Times are stored and computed in UTC. A page shows them in the user's time zone (chosen on
/preferences and kept in the session; UTC until chosen), each in a <time> element whose
datetime attribute and title give the instant in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import falcon
from jinja2 import Environment, PackageLoader, pass_context, select_autoescape
from markupsafe import Markup, escape

from pex.http.portal.sessions import CSRF_FIELD

UTC = UTC
# An instant in a text: PEX's form (pex.domain.values.time_text, "2026-03-02 10:00 UTC"), or
# the ISO 8601 one that texts recorded before it carry ("2026-03-02T10:00:00+00:00").
ISO_INSTANT = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)? UTC|\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:[+-]\d\d:\d\d|Z)"
)
LOCAL_INPUT = "%Y-%m-%dT%H:%M"  # the value of <input type="datetime-local">


@lru_cache(maxsize=1)
def time_zones() -> tuple[str, ...]:
    return tuple(sorted(z for z in available_timezones() if "/" in z or z == "UTC"))


def zone(name: str | None) -> ZoneInfo:
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def is_zone(name: str) -> bool:
    return name in time_zones()


def local_input(when: datetime | None, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime(LOCAL_INPUT) if when else ""


def parse_local(value: str, tz: ZoneInfo, not_before: datetime | None = None) -> datetime:
    """A datetime-local value ("2026-03-02T10:00") in zone `tz`, as UTC. ValueError if malformed.

    In the hour the clocks go back a wall time names two instants: the first, unless it is
    before `not_before` (now, for a start) and the second is not. Typed at 02:29 the second time
    round, "02:30" means in a minute, not an hour ago."""
    value = (value or "").strip()
    if not value:
        raise ValueError("enter a date and time")
    try:
        naive = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("enter a date and time like 2026-03-02 10:00") from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    first, second = (naive.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    if not_before is not None and first < not_before <= second:
        return second
    return first


def utc_text(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@pass_context
def when_filter(context, when: datetime | None, style: str = "full") -> Markup:
    """<time datetime="…Z" title="… UTC">the instant in the user's zone</time>."""
    if when is None:
        return Markup("—")
    tz = context.get("tz") or zone(None)
    local = when.astimezone(tz)
    if style == "time":
        text = local.strftime("%H:%M")
    elif style == "date":
        text = local.strftime("%a %-d %b %Y")
    else:
        text = local.strftime("%a %-d %b %Y, %H:%M %Z")
    iso = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(iso, utc_text(when), text)


@pass_context
def change_filter(context, text: str) -> Markup:
    """A provider's change note ("start moved 2 hours later, to 2026-03-02T10:00:00+00:00")
    with the ISO instants in it shown in the user's zone."""
    parts, last = [], 0
    for match in ISO_INSTANT.finditer(text):
        parts.append(escape(text[last : match.start()]))
        try:
            instant = datetime.fromisoformat(match.group(0).replace("Z", "+00:00").replace(" UTC", "+00:00"))
            parts.append(when_filter(context, instant))
        except ValueError:
            parts.append(escape(match.group(0)))
        last = match.end()
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


def span_text(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = []
    if days:
        parts.append(f"{days} day{'s' * (days != 1)}")
    if hours:
        parts.append(f"{hours} hour{'s' * (hours != 1)}")
    if minutes:
        parts.append(f"{minutes} minute{'s' * (minutes != 1)}")
    return " ".join(parts) or "0 minutes"


def money_text(value: Decimal | None, currency: str) -> str:
    """A price as the portal writes every one: `0.20 USD` (the amount, then PEX_CURRENCY)."""
    return "—" if value is None else f"{value:.2f} {currency}"


def memory_text(megabytes: int) -> str:
    return f"{megabytes} MB" if megabytes < 1024 else f"{megabytes / 1024:g} GB"


class Renderer:
    """Renders a template into a response, with what every page needs."""

    def __init__(self, currency: str) -> None:
        self.env = Environment(
            loader=PackageLoader("pex.http", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(when=when_filter, change=change_filter, span=span_text, memory=memory_text,
                                money=lambda value: money_text(value, currency))

    def render(self, req: falcon.Request, resp: falcon.Response, template: str, status: int = 200, **context) -> None:
        session = req.context.get("session")
        signer = req.context.get("signer")
        tz = zone(session.tz if session else None)
        page = {
            "user": req.context.get("user"),
            "tz": tz,
            "tz_name": tz.key,
            "tz_chosen": bool(session and session.tz),
            "csrf_field": CSRF_FIELD,
            "csrf_token": signer.csrf_token(session) if signer and session else "",
            "flashes": session.pop_flashes() if session else [],
            "path": req.path,
            **context,
        }
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Cache-Control", "no-store")
        resp.text = self.env.get_template(template).render(page)
