"""Pages of the API's lists: `?limit=N` rows at most (DEFAULT_LIMIT without it), and the next
page's URL in a `Link: <…>; rel="next"` header (RFC 8288), whose `cursor` names the last row
shown. The reply itself stays what the original client parses, a bare array (or PEX's object).

A cursor names the last row shown (a reservation's id; an instance's sort key,
pex.projections.readmodels' INSTANCE_ORDER), as base64url JSON tagged with the list it belongs to, so
the next page is read by the index after that key (keyset pagination): rows added meanwhile
never shift a page. It is opaque to clients; one that is malformed, or of another list, is a
400 `invalid-cursor`. A forged one can only start a page elsewhere in the caller's own list:
the owner filter applies to every page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import falcon

from pex.http.problems import Problem

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 200

# Each list's key, column by column: how a value goes into the cursor and comes back (a wrong
# type raises, so a tampered cursor is a 400, not a 500).
_ENCODE: dict[type, Callable[[Any], Any]] = {int: int, datetime: datetime.isoformat, UUID: str}
KEYS: dict[str, tuple[type, ...]] = {
    "reservations": (UUID,),  # the last one's id: the read model finds its place in the order
    "instances": (datetime, UUID, int),
}


def _decode_value(kind: type, value: Any) -> Any:
    if kind is int and type(value) is int:
        if not -(2**63) <= value < 2**63:  # what a database integer holds
            raise ValueError("out of range")
        return value
    if kind is datetime and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("a naive time")
        return parsed.astimezone(UTC)  # raises OverflowError at the ends of time
    if kind is UUID and isinstance(value, str):
        return UUID(value)
    raise ValueError(f"not a {kind.__name__}")


def encode_cursor(list_name: str, key: Sequence[Any]) -> str:
    values = [_ENCODE[kind](v) for kind, v in zip(KEYS[list_name], key, strict=True)]
    raw = json.dumps([list_name, *values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(list_name: str, cursor: str) -> tuple[Any, ...]:
    """The key a cursor of `list_name` names; a 400 problem for anything else."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, *values = json.loads(raw)
        kinds = KEYS[list_name]
        if name != list_name or len(values) != len(kinds):
            raise ValueError("a cursor of another list")
        return tuple(_decode_value(kind, v) for kind, v in zip(kinds, values, strict=True))
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise Problem(
            400, "invalid-cursor", "Invalid cursor",
            "cursor must be one that this list gave in its Link header (rel=\"next\"); leave it out for the first page.",
            [("#query/cursor", f"is not a cursor of this list ({error})")],
        ) from None


def page_of(req: falcon.Request, list_name: str) -> tuple[int, tuple[Any, ...] | None]:
    """The request's page: (limit, key after which it starts, or None for the first page).
    The OpenAPI contract has already refused a limit outside 1..MAX_LIMIT; this checks again
    for a caller that does not go through it."""
    limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT)
    cursor = req.get_param("cursor")
    return (limit or DEFAULT_LIMIT), (decode_cursor(list_name, cursor) if cursor is not None else None)


def link_next(req: falcon.Request, resp: falcon.Response, list_name: str, rows: list, limit: int,
              key_of: Callable[[Any], Sequence[Any]]) -> list:
    """`rows` were read with limit + 1: the first `limit` of them, and, when one more was found,
    the next page's Link (the same query, with the cursor of the last row kept)."""
    if len(rows) <= limit:
        return rows
    rows = rows[:limit]
    query = {k: v for k, v in req.params.items() if k != "cursor"}
    query["cursor"] = encode_cursor(list_name, key_of(rows[-1]))
    resp.append_header("Link", f'<{req.path}?{urlencode(query, doseq=True)}>; rel="next"')
    return rows
