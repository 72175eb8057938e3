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
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import falcon

from pex.application import Outcome, PexApplication, ReservationView
from pex.domain.errors import IllegalMove
from pex.domain.negotiation import check_terms
from pex.domain.values import Reply, State, Terms
from pex.http.problems import Problem
from pex.projections.readmodels import ReadModels
from pex.wire import (
    PEX_JSON,
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
    if any(not tag.is_weak and tag.strong_compare(current) for tag in tags):
        return version
    raise Problem(
        412, "precondition-failed", "The resource has changed",
        f"If-Match does not match the current version; GET it again (ETag \"{version}\").",
    )


def load(application: PexApplication, req: falcon.Request, reservation_id: UUID) -> ReservationView:
    view = application.get_reservation(reservation_id, owner(req))
    if view.state == State.CANCELLED:
        raise Problem(410, "deleted", "The reservation was deleted", "This reservation was deleted.")
    return view


def check_proposal(application: PexApplication, terms: Terms, user: str, reservation_id: UUID) -> None:
    """Refuse a malformed first proposal, or one over a quota, before a reservation exists for
    it, so a refused POST changes nothing (the same checks run again inside submit_proposal)."""
    catalogue = application.catalogue()
    catalogue.size(terms.size)
    catalogue.check_template(terms.template)
    check_terms(terms, application.clock(), application.policy_in_force(user))
    if reservation_id not in application.repository:  # a replay answers what was answered then
        application.check_quotas(user, terms, reservation_id)


def first_answer(view: ReservationView) -> tuple[Terms | None, Reply | None, str]:
    """The first proposal and the provider's answer to it, from the recorded history."""
    proposed, answer, note = None, None, ""
    for step in view.history:
        if step.party == "user" and step.reply == "PROPOSE":
            proposed = step.terms
        elif proposed is not None and step.party == "provider" and step.reply in ("ACCEPT", "COUNTER", "REJECT"):
            answer, note = Reply(step.reply), step.note
            break
    return proposed, answer, note


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
        rows = self.read_models.reservations(owner(req), State(state) if state else None)
        if state is None:
            rows = [r for r in rows if r.state != State.CANCELLED]
        represent(
            req, resp,
            lambda: {"reservations": [reservation_json(r) for r in rows]},
            lambda: [original_reservation(r) for r in rows],
        )

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = req.context.user.username
        terms = terms_from_json(req.get_media())
        key = self._idempotency_key(req)
        reservation_id = uuid5(NAMESPACE_URL, f"/pex/users/{user}/idempotency/{key}") if key else uuid4()
        check_proposal(self.application, terms, user, reservation_id)
        reservation_id = self.application.initiate_reservation(user, reservation_id)
        replayed = False
        try:
            outcome = self.application.submit_proposal(reservation_id, terms)
        except IllegalMove:
            if key is None:
                raise
            # The same key was used before: answer what was answered then.
            outcome, replayed = self._replay(reservation_id, terms), True
        except Exception:
            if key is None:
                self._abandon(reservation_id)
            raise
        if not replayed:
            req.context.metrics.replies.labels(outcome.reply.value).inc()
        resp.status = falcon.HTTP_201
        resp.location = reservation_url(reservation_id)
        resp.etag = str(outcome.reservation.version)
        if replayed:
            resp.set_header("Idempotent-Replayed", "true")
        represent(req, resp, lambda: outcome_json(outcome), lambda: original_outcome(outcome))

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

    def _replay(self, reservation_id: UUID, terms: Terms) -> Outcome:
        view = self.application.get_reservation(reservation_id)
        proposed, answer, note = first_answer(view)
        if proposed is None or answer is None:
            raise Problem(
                409, "idempotency-key-in-use", "A request with this Idempotency-Key is still in progress",
                "Retry in a moment.", headers={"Retry-After": "1"},
            )
        if proposed != terms:
            raise Problem(
                422, "idempotency-key-reused", "This Idempotency-Key was used for another proposal",
                "Use a new Idempotency-Key for a different proposal.",
            )
        return Outcome(answer, view, note)

    def _abandon(self, reservation_id: UUID) -> None:
        """Best effort: a POST that failed after initiating leaves no open reservation behind."""
        try:
            self.application.cancel(reservation_id, "the proposal was refused")
        except Exception:
            pass


class Reservation:
    """/OpenPEX/reservations/{reservation_id}"""

    auth = "user"
    contract = True

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        view = load(self.application, req, reservation_id)
        resp.etag = str(view.version)
        represent(req, resp, lambda: reservation_json(view), lambda: original_reservation(view))

    def on_put(self, req: falcon.Request, resp: falcon.Response, reservation_id: UUID) -> None:
        reply, terms, proposal_id = step_from_json(req.get_media())
        view = load(self.application, req, reservation_id)
        if proposal_id is not None and proposal_id != reservation_id:
            raise Problem(
                422, "invalid-proposal", "The proposal belongs to another reservation",
                "proposal.id must be this reservation's id (or be left out).",
                [("/proposal/id", "is not the id of the reservation in the URL")],
            )
        expected = check_if_match(req, view.version)
        req.context.proposal_pointer = "/proposal"
        outcome = self.application.respond(reservation_id, Reply(reply), terms, expected_version=expected)
        req.context.metrics.replies.labels(outcome.reply.value).inc()
        resp.etag = str(outcome.reservation.version)
        represent(req, resp, lambda: outcome_json(outcome), lambda: original_outcome(outcome))

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
        represent(req, resp, lambda: reservation_json(view), lambda: original_reply(view, "REQUEST_SUCCESS"))


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
        represent(req, resp, lambda: reservation_json(view), lambda: original_reservation(view))

