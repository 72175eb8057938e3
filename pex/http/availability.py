"""/OpenPEX/availability: when `count` instances of a size are free, without holding anything.

Parses the query, calls one application query (PexApplication.availability), renders the
windows as the paper's wire renders times (RFC 1123). A parameter that cannot be read, or is
out of its range, is a problem naming it (`#query/<name>`): 400 from the OpenAPI contract for
what it can say (a missing or non-integer parameter), else 422, as for a proposal's fields."""

from __future__ import annotations

from datetime import datetime, timedelta

import falcon

from pex.application import PexApplication
from pex.application.availability import DEFAULT_WINDOWS
from pex.http.problems import Problem
from pex.wire import parse_time, window_json

MAX_DURATION_MS = 10**13  # beyond any policy's longest reservation; the query says the real one


class Availability:
    """/OpenPEX/availability"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        errors: list[tuple[str, str]] = []

        def integer(name: str, default: int | None, maximum: int) -> int:
            raw = req.get_param(name)
            if raw is None:
                if default is None:
                    errors.append((f"#query/{name}", "is required"))
                return default or 0
            if not raw.isdigit() or not 1 <= int(raw) <= maximum:
                errors.append((f"#query/{name}", f"is a whole number from 1 to {maximum}"))
                return 0
            return int(raw)

        def time(name: str) -> datetime | None:
            raw = req.get_param(name)
            if raw is None:
                return None
            try:
                return parse_time(raw)
            except ValueError as bad:
                errors.append((f"#query/{name}", str(bad)))
                return None

        size = req.get_param("type")
        if not size:
            errors.append(("#query/type", "is required"))
        count = integer("count", None, 10**6)
        duration = integer("duration", None, MAX_DURATION_MS)
        limit = integer("limit", DEFAULT_WINDOWS, 10**6)
        earliest, latest = time("from"), time("to")
        if errors:
            raise Problem(
                422, "invalid-query", "The query's parameters are not acceptable",
                "; ".join(f"{p}: {d}" for p, d in errors), errors,
            )
        windows = self.application.availability(
            req.context.user.username, size or "", count, timedelta(milliseconds=duration), earliest, latest, limit
        )
        resp.media = [window_json(w) for w in windows]
