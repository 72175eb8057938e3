"""Every 4xx and 5xx of the API as RFC 9457 problem details (application/problem+json).

ERRORS is the one table that maps what the service layer raises to HTTP. Resources raise
domain errors or `Problem`; nothing else decides a status code. Problem types are URIs under
/OpenPEX/problems/ and are listed, with their meaning, in docs/api.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import falcon
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError

from pex.application import Contention, NotFound, VersionConflict
from pex.application.accounts import PasswordChecksBusy
from pex.application.errors import InvalidQuery, ProposalInProgress, ProposalReused
from pex.domain.errors import (
    CapacityExceeded,
    CatalogueError,
    IllegalMove,
    InvalidProposal,
    NodeUnavailable,
    OfferExpired,
)
from pex.domain.quotas import QuotaError, QuotaExceeded, TooManyLiveOffers
from pex.domain.user import AccountError, CreditError, InsufficientCredit, UsernameTaken
from pex.wire import WireError

log = logging.getLogger("pex.http")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "/OpenPEX/problems/"


class Problem(falcon.HTTPError):
    """An HTTP error with an RFC 9457 type and, for validation, `errors: [{pointer, detail}]`."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        errors: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(falcon.code_to_http_status(status), title=title, description=detail, headers=headers)
        self.kind = kind
        self.errors = errors or []
        self.extra = extra


@dataclass(frozen=True)
class Mapping:
    status: int
    kind: str
    title: str
    retry_after: int | None = None
    detail: str | None = None  # said instead of the error's own text, when that is not for clients


# The store could not be reached (PostgreSQL restarting or failing over, the network, SQLite's
# lock timeout), even after eventsourcing's own retries. Transient: the client should retry.
# The error's text names hosts and ports, so clients get a fixed detail.
STORE_UNAVAILABLE = Mapping(
    503, "store-unavailable", "The event store is unreachable; retry shortly", retry_after=5,
    detail="The event store did not answer in time. Retry after Retry-After seconds; a change may "
    "have been recorded before the store went away, so read the resource first, or retry a POST "
    "with the same Idempotency-Key.",
)

# The one table: exception raised by the service layer → HTTP.
ERRORS: dict[type[Exception], Mapping] = {
    NotFound: Mapping(404, "not-found", "No such resource"),
    InvalidQuery: Mapping(422, "invalid-query", "The query's parameters are not acceptable"),
    VersionConflict: Mapping(412, "precondition-failed", "The resource has changed"),
    WireError: Mapping(422, "invalid-proposal", "The request body is not a valid proposal"),
    InvalidProposal: Mapping(422, "invalid-proposal", "The proposal cannot be negotiated"),
    # `limit` in the body names the quota (pex.domain.quotas), `allowed` its value.
    QuotaExceeded: Mapping(422, "quota-exceeded", "The proposal goes over a quota"),
    TooManyLiveOffers: Mapping(409, "quota-exceeded", "You hold as many live offers as one user may"),
    QuotaError: Mapping(422, "invalid-quotas", "The quotas are not acceptable"),
    AccountError: Mapping(422, "invalid-account", "The account details are not acceptable"),
    CreditError: Mapping(422, "invalid-credit", "The credit grant is not acceptable"),
    # `price` and `balance` in the body; the offer stays valid until it lapses (PEX_CREDIT=on).
    InsufficientCredit: Mapping(402, "insufficient-credit", "The reservation costs more than your credit"),
    IllegalMove: Mapping(409, "illegal-move", "The protocol does not allow that move now"),
    OfferExpired: Mapping(409, "offer-expired", "The offer has lapsed"),
    UsernameTaken: Mapping(409, "username-taken", "That username is taken"),
    CatalogueError: Mapping(409, "catalogue-conflict", "The catalogue or pool refused the change"),
    CapacityExceeded: Mapping(409, "capacity-exceeded", "Not enough free capacity"),
    NodeUnavailable: Mapping(409, "node-unavailable", "The node takes no new reservations"),
    ProposalInProgress: Mapping(
        409, "idempotency-key-in-use", "A request with this Idempotency-Key is still in progress", retry_after=1,
        detail="Retry in a moment.",
    ),
    ProposalReused: Mapping(
        422, "idempotency-key-reused", "This Idempotency-Key was used for another proposal",
        detail="Use a new Idempotency-Key for a different proposal.",
    ),
    Contention: Mapping(503, "contention", "Too many concurrent changes; retry shortly", retry_after=1),
    PasswordChecksBusy: Mapping(503, "password-checks-busy", "Too many password checks at once; retry shortly", retry_after=1),
    StoreOperationalError: STORE_UNAVAILABLE,
    StoreInterfaceError: STORE_UNAVAILABLE,
}


def to_problem(req: falcon.Request, error: Exception) -> Problem | None:
    for cls in type(error).__mro__:
        mapping = ERRORS.get(cls)
        if mapping is not None:
            break
    else:
        return None
    errors: list[tuple[str, str]] = []
    extra: dict[str, Any] = {"limit": error.limit, "allowed": error.allowed} if isinstance(error, QuotaExceeded) else {}
    if isinstance(error, InsufficientCredit):
        extra = {"price": str(error.price), "balance": str(error.balance)}
    if isinstance(error, WireError):
        errors = list(error.errors)
        detail = "; ".join(f"{p}: {d}" for p, d in errors)
    elif isinstance(error, InvalidQuery):
        errors = [(f"#query/{error.field}", error.detail)]
        detail = str(error)
    elif isinstance(error, (InvalidProposal, AccountError, QuotaError, CreditError)):
        prefix = getattr(req.context, "proposal_pointer", "")
        errors = [(f"{prefix}/{error.field}", error.detail)] if error.field else []
        detail = str(error) if error.field else error.detail
    else:
        detail = mapping.detail or str(error) or mapping.title
    headers = {"Retry-After": str(mapping.retry_after)} if mapping.retry_after else None
    return Problem(mapping.status, mapping.kind, mapping.title, detail, errors, headers, **extra)


def handle(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict[str, Any]) -> None:
    """The error handler for everything: domain errors via ERRORS, HTTP errors as they are,
    and anything else as a logged 500 that tells the client nothing but the request id."""
    problem: falcon.HTTPError | None
    if isinstance(error, falcon.HTTPError):
        problem = error
    else:
        problem = to_problem(req, error)
        if isinstance(error, OfferExpired):
            metrics = getattr(req.context, "metrics", None)
            if metrics is not None:
                metrics.offers_expired.inc()
        if problem is None:
            log.error(
                "unhandled error",
                exc_info=error,
                extra={"request_id": getattr(req.context, "request_id", None), "path": req.path},
            )
            problem = Problem(500, "internal", "Internal server error", "The server failed; quote the request id.")
        elif isinstance(error, (StoreOperationalError, StoreInterfaceError)):
            log.warning(
                "event store unreachable: %s", error,
                extra={"request_id": getattr(req.context, "request_id", None), "path": req.path},
            )
    render(req, resp, problem)


def render(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    resp.status = error.status
    if error.headers:
        resp.set_headers(error.headers)
    body = problem_body(req, error)
    resp.content_type = PROBLEM_JSON
    resp.text = json.dumps(body)
    resp.media = None


def problem_body(req: falcon.Request, error: falcon.HTTPError) -> dict[str, Any]:
    status = error.status_code
    kind = getattr(error, "kind", None) or default_kind(status)
    if isinstance(error, falcon.MediaMalformedError):
        kind = "malformed-body"
    title = error.title or falcon.code_to_http_status(status)
    if title[:3].isdigit():  # falcon's own errors are titled "404 Not Found"
        title = title[4:]
    fallback = {404: f"Nothing is at {req.path}.", 405: f"{req.method} is not allowed here; see the Allow header."}
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": error.description or fallback.get(status, title),
        "instance": req.path,
        "request_id": getattr(req.context, "request_id", None),
    }
    errors = getattr(error, "errors", None)
    if errors:
        body["errors"] = [{"pointer": pointer, "detail": detail} for pointer, detail in errors]
    body.update(getattr(error, "extra", {}) or {})
    return body


def default_kind(status: int) -> str:
    """The problem type of a status when nothing more precise is known (also for the refusals
    pex.http.worker makes before a request reaches the application)."""
    return {
        400: "bad-request",
        401: "unauthorized",
        403: "forbidden",
        404: "not-found",
        405: "method-not-allowed",
        406: "not-acceptable",
        408: "request-timeout",
        411: "length-required",
        412: "precondition-failed",
        413: "payload-too-large",
        414: "uri-too-long",
        415: "unsupported-media-type",
        417: "expectation-failed",
        429: "too-many-requests",
        431: "headers-too-large",
        500: "internal",
        501: "not-implemented",
    }.get(status, "http-error")


def install(app: falcon.App) -> None:
    app.add_error_handler(Exception, handle)
    app.add_error_handler(falcon.HTTPError, handle)
