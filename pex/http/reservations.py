"""The reservation endpoints of the paper's Table 2: negotiate, read, delete, activate.

POST creates a reservation and submits its first proposal (initiateReservation +
requestReservation in one call), answering Figure 8 or 9. PUT is one negotiation step of the
original protocol. Each responder parses, calls one application method, renders. The list is
read from the persisted read model (pex.projections.readmodels), caught up first so that it
shows the caller's own writes; one reservation, and its ETag, from the aggregate.

Every reply is rendered in one of two forms (`represent`): the original implementation's, by
default, or PEX's, for a client whose Accept header names application/vnd.pex+json.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import falcon

from pex.application import NotFound, PexApplication, ReservationView
from pex.domain.values import Reply, State
from pex.http.paging import link_next, page_of
from pex.http.problems import Problem
from pex.projections.readmodels import ReadModels
from pex.wire import (
    PEX_JSON,
    extension_end_from_json,
    original_outcome,
    original_reply,
    original_reservation,
    outcome_json,
    prefers_pex_form,
    reservation_json,
    step_from_json,
    terms_from_json,
    wire_id,
)

IDEMPOTENCY_KEY = re.compile(r'^"?([\x21\x23-\x7e]{1,255})"?$')


def reservation_url(reservation_id: UUID) -> str:
    return f"/OpenPEX/reservations/{wire_id(reservation_id)}"


def represent(req: falcon.Request, resp: falcon.Response, pex: Callable[[], Any], original: Callable[[], Any]) -> None:
    """Content negotiation (RFC 9110 §12.5.1) between the two forms of a reply: PEX's, as
    application/vnd.pex+json, only to a client that names it; else the original's, as
    application/json, which is what every client of the original can parse."""
    resp.vary = ("Accept",)
    if prefers_pex_form(req.get_header("Accept")):
        resp.content_type = PEX_JSON
        resp.media = pex()
    else:
        resp.content_type = falcon.MEDIA_JSON
        resp.media = original()


def rich_reservation(application: PexApplication, view: ReservationView) -> dict[str, Any]:
    """PEX's form of one reservation: with its phase now and the prices' currency."""
    return reservation_json(view, application.reservation_phase(view), application.currency)


def rich_outcome(application: PexApplication, outcome) -> dict[str, Any]:
    return outcome_json(outcome, application.reservation_phase(outcome.reservation), application.currency)


def owner(req: falcon.Request) -> str | None:
    """Whose things the caller may see: their own, or (an administrator) everyone's."""
    user = req.context.user
    return None if user.is_admin else user.username


def check_if_match(req: falcon.Request, version: int) -> int | None:
    """Honour If-Match (RFC 9110 §13.1.1, strong comparison) against the aggregate version.

    Returns the version the command must still find when it saves (None without If-Match or
    with `*`), so that a change slipping in between this check and the save is a 412 too."""
    tags = req.if_match
    if tags is None:
        return None
    current = falcon.ETag(str(version))
    if any(tag == "*" for tag in tags):
        return None
    if any(isinstance(tag, falcon.ETag) and not tag.is_weak and tag.strong_compare(current) for tag in tags):
        return version
    raise Problem(
        412, "precondition-failed", "The resource has changed",
        f"If-Match does not match the current version; GET it again (ETag \"{version}\").",
    )


def load(application: PexApplication, req: falcon.Request, reservation_id: UUID) -> ReservationView:
    view = application.get_reservation(reservation_id, owner(req))
    deleted(view)
    return view


def deleted(view: ReservationView) -> None:
    """410 for a deleted reservation."""
    if view.state == State.CANCELLED:
        raise Problem(410, "deleted", "The reservation was deleted", "This reservation was deleted.")


class Reservations:
    """/OpenPEX/reservations"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication, read_models: ReadModels):
        self.application = application
        self.read_models = read_models

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        state = req.get_param("state")
        if state is not None and state not in State.__members__:
            raise Problem(400, "invalid-request", "Unknown state", f"state must be one of {', '.join(State.__members__)}",
                          [("#query/state", "is not a reservation state")])
        limit, after = page_of(req, "reservations")
        rows = self.read_models.reservations(
            owner(req), State(state) if state else None, not_in=() if state else (State.CANCELLED,),
            limit=limit + 1, after=after[0] if after else None,
        )
        rows = link_next(req, resp, "reservations", rows, limit, lambda r: (r.id,))

        def rich() -> dict[str, Any]:
            phases = self.read_models.phases(rows, self.application.clock())
            currency = self.application.currency
            return {"reservations": [reservation_json(r, phases[r.id], currency) for r in rows]}

        represent(req, resp, rich, lambda: [original_reservation(r) for r in rows])

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.user.username
        terms = terms_from_json(req.get_media())
        key = self._idempotency_key(req)
        reservation_id = uuid5(NAMESPACE_URL, f"/pex/users/{user}/idempotency/{key}") if key else None
        # With a key, a failed attempt leaves its reservation for the client's retry.
        proposed = self.application.propose(user, terms, reservation_id, keep_on_failure=key is not None)
        outcome = proposed.outcome
        if not proposed.replayed:
            req.context.metrics.replies.labels(outcome.reply.value).inc()
        resp.status = falcon.HTTP_201
        resp.location = reservation_url(outcome.reservation.id)
        resp.etag = str(outcome.reservation.version)
        if proposed.replayed:
            resp.set_header("Idempotent-Replayed", "true")
        represent(req, resp, lambda: rich_outcome(self.application, outcome), lambda: original_outcome(outcome))

    @staticmethod
    def _idempotency_key(req: falcon.Request) -> str | None:
        raw = req.get_header("Idempotency-Key")
        if raw is None:
            return None
        match = IDEMPOTENCY_KEY.match(raw.strip())
        if not match:
            raise Problem(
                400, "invalid-idempotency-key", "Invalid Idempotency-Key",
                "An Idempotency-Key is 1 to 255 visible ASCII characters (a UUID is best).",
                [("#header/Idempotency-Key", "1 to 255 visible ASCII characters")],
            )
        return match.group(1)


class Reservation:
    """/OpenPEX/reservations/{reservation_id}"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        view = load(self.application, req, reservation_id)
        resp.etag = str(view.version)
        represent(req, resp, lambda: rich_reservation(self.application, view), lambda: original_reservation(view))

    def on_put(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        reply, terms, proposal_id = step_from_json(req.get_media())
        caller = owner(req)

        def admit(view: ReservationView) -> None:
            # Asked by the step of the reservation it loads, so that the edge reads it once.
            if caller is not None and view.user_id != caller:
                raise NotFound("no such reservation")
            deleted(view)
            if proposal_id is not None and proposal_id != reservation_id:
                raise Problem(
                    422, "invalid-proposal", "The proposal belongs to another reservation",
                    "proposal.id must be this reservation's id (or be left out).",
                    [("/proposal/id", "is not the id of the reservation in the URL")],
                )
            check_if_match(req, view.version)  # on the version the step saves against

        req.context.proposal_pointer = "/proposal"
        outcome = self.application.respond(reservation_id, Reply(reply), terms, admit=admit)
        req.context.metrics.replies.labels(outcome.reply.value).inc()
        resp.etag = str(outcome.reservation.version)
        represent(req, resp, lambda: rich_outcome(self.application, outcome), lambda: original_outcome(outcome))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        view = load(self.application, req, reservation_id)
        expected = check_if_match(req, view.version)
        user = req.context.user
        if user.is_admin and (view.user_id != user.username or view.state == State.ACTIVATED):
            # An administrator ends someone else's reservation, or an activated one: recorded
            # with who and why (?reason=), and its running VMs are ended by the worker.
            reason = req.get_param("reason") or "ended by an administrator"
            view = self.application.terminate(reservation_id, user.username, reason, expected_version=expected)
        else:
            view = self.application.cancel(reservation_id, expected_version=expected)
        # The original answered a delete with a reply object (its deleteReservation's).
        represent(req, resp, lambda: rich_reservation(self.application, view), lambda: original_reply(view, "REQUEST_SUCCESS"))


class Activation:
    """/OpenPEX/reservations/{reservation_id}/activate"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_put(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        view = load(self.application, req, reservation_id)
        expected = check_if_match(req, view.version)  # a stale If-Match is 412 even when already activated
        if view.state != State.ACTIVATED:  # activating twice is a no-op, as a PUT should be
            view = self.application.activate(reservation_id, expected_version=expected)
        resp.etag = str(view.version)
        represent(req, resp, lambda: rich_reservation(self.application, view), lambda: original_reservation(view))



class Release:
    """/OpenPEX/reservations/{reservation_id}/release: its user (or an administrator) ends a
    confirmed or activated reservation now; any other state is a 409 (illegal-move)."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_put(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        view = load(self.application, req, reservation_id)
        expected = check_if_match(req, view.version)
        view = self.application.release(
            reservation_id, req.context.user.username, owner(req), expected_version=expected
        )
        resp.etag = str(view.version)
        represent(req, resp, lambda: reservation_json(view), lambda: original_reservation(view))


class Extension:
    """/OpenPEX/reservations/{reservation_id}/extend: its user (or an administrator) asks a
    confirmed or activated reservation to end later; the provider answers ACCEPT, COUNTER or
    REJECT with the extension offered, which the user's CONFIRM (PUT on the reservation)
    books. PEX's own endpoint: it answers PEX's reply object, whatever the Accept header."""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_put(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        end = extension_end_from_json(req.get_media())
        view = load(self.application, req, reservation_id)
        expected = check_if_match(req, view.version)
        outcome = self.application.extend(reservation_id, end, owner(req), expected_version=expected)
        req.context.metrics.replies.labels(outcome.reply.value).inc()
        resp.etag = str(outcome.reservation.version)
        body = rich_outcome(self.application, outcome)
        represent(req, resp, lambda: body, lambda: body)
