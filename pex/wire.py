"""The paper's JSON (Figures 7–9) and the original implementation's wire, in two forms.

Field names are kept exactly: `duration` in milliseconds, `numInstancesFixed`,
`numInstancesOption`, `startTime` in RFC 1123 form (RFC 3339 is accepted too), `template`,
`type`, `id` (an upper-case GUID), `userid`, `reply`.

Replies come in two forms (docs/api.md, "Two forms of every reply"):

* **The original's** (`original_*`), the default: exactly the fields of the original's beans,
  ReservationReply, ReservationProposal, ReservationEntity and VMInstance, with their types
  (`userid` a number), lists as bare arrays. Its client parses replies with json-lib, which
  skips an unknown scalar field but throws on an unknown array, object or null field, so not
  one field more may be sent to it.
* **PEX's** (`*_json`), for clients that ask for `application/vnd.pex+json`: the same fields
  and PEX's additions (price, offer validity, state, alternatives, what changed, history,
  links), `userid` the username, lists wrapped in an object.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from uuid import UUID

from pex.domain.lifecycle import Phase, runs_by_itself
from pex.domain.pricing import DEFAULT_CURRENCY
from pex.domain.values import Offer, State, Terms

PROPOSAL_FIELDS = {
    "duration", "numInstancesFixed", "numInstancesOption", "startTime", "template", "type",
    "id", "userid", "price", "currency", "autoStart", "endTime", "state", "validUntil", "changes", "placement",
    "latestStart", "minDuration",
}
# What a user may answer in a negotiation step (PUT /OpenPEX/reservations/{id}).
USER_REPLY_VALUES = ("CONFIRM", "ACCEPT", "REJECT", "COUNTER")


class WireError(ValueError):
    """A field of a request body is missing or malformed. `errors` lists (pointer, detail)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {d}" for p, d in errors))


def rfc1123(when: datetime) -> str:
    """Every time PEX writes on the wire, in both forms: the paper's RFC 1123 (`Mon, 17 Aug 2009
    04:49:03 GMT`), whole seconds (docs/api.md, "Times and prices")."""
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def rfc1123_or_none(when: datetime | None) -> str | None:
    return rfc1123(when) if when is not None else None


def rfc3339(when: datetime | None) -> str | None:
    """A time as HTML's `datetime` attributes and the schema checker read it (never on the wire)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a time in RFC 1123 (Mon, 17 Aug 2009 04:49:03 GMT) or RFC 3339 form")
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            raise ValueError(f"{value!r} is not an RFC 1123 or RFC 3339 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value!r} is out of range") from None


def wire_id(reservation_id: UUID) -> str:
    return str(reservation_id).upper()


def parse_id(value: Any) -> UUID:
    try:
        return UUID(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a reservation id") from None


def terms_from_json(body: Any, pointer: str = "") -> Terms:
    """Figure 7 → Terms. Collects every problem before raising, so a client fixes them at once."""
    if not isinstance(body, dict):
        raise WireError([(pointer or "/", "a JSON object is expected")])
    # A misspelt optional field (numInstancesOptions) would otherwise silently default.
    errors: list[tuple[str, str]] = [
        (f"{pointer}/{name}", "is not a field of a proposal") for name in sorted(set(body) - PROPOSAL_FIELDS)
    ]

    def integer(name: str, default: int | None = None, minimum: int = 0, maximum: int = 10**15) -> int:
        value = body.get(name, default)
        if value is None:
            errors.append((f"{pointer}/{name}", "is required"))
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append((f"{pointer}/{name}", "must be an integer"))
            return 0
        if not minimum <= value <= maximum:
            errors.append((f"{pointer}/{name}", f"must be between {minimum} and {maximum}"))
            return 0
        return value

    def text(name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append((f"{pointer}/{name}", "is required and must be a non-empty string"))
            return ""
        return value

    duration_ms = integer("duration", minimum=1, maximum=10 * 366 * 86400 * 1000)
    fixed = integer("numInstancesFixed", maximum=100000)
    option = integer("numInstancesOption", default=0, maximum=100000)
    size, template = text("type"), text("template")
    start = None
    try:
        start = parse_time(body.get("startTime"))
    except ValueError as error:
        errors.append((f"{pointer}/startTime", str(error)))
    price = None
    if body.get("price") is not None:
        raw = body["price"]
        try:
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise InvalidOperation
            price = Decimal(str(raw))
            if not price.is_finite() or price < 0:
                raise InvalidOperation
        except InvalidOperation:
            errors.append((f"{pointer}/price", "must be a non-negative number"))
    auto_start = body.get("autoStart", True)  # the default: it runs once confirmed
    if not isinstance(auto_start, bool):
        errors.append((f"{pointer}/autoStart", "must be true or false"))
    # A flexible proposal (docs/api.md, "Flexible proposals"): null is as left out.
    latest_start = None
    if body.get("latestStart") is not None:
        try:
            latest_start = parse_time(body["latestStart"])
        except ValueError as error:
            errors.append((f"{pointer}/latestStart", str(error)))
    min_duration = None
    if body.get("minDuration") is not None:
        min_duration = timedelta(milliseconds=integer("minDuration", minimum=1, maximum=10 * 366 * 86400 * 1000))
    if start is not None and not errors:
        try:
            end = start + timedelta(milliseconds=duration_ms)
        except OverflowError:
            errors.append((f"{pointer}/startTime", "the reservation would end after the year 9999"))
    if errors:
        raise WireError(errors)
    assert start is not None
    return Terms(size, template, fixed, option, start, end, price, auto_start, latest_start, min_duration)


def terms_json(terms: Terms, reservation_id: UUID, user_id: str, currency: str = DEFAULT_CURRENCY) -> dict[str, Any]:
    """Terms → the proposal object of Figures 8 and 9 (plus PEX's extras)."""
    return {
        "duration": int(terms.duration.total_seconds() * 1000),
        "id": wire_id(reservation_id),
        "numInstancesFixed": terms.instances_fixed,
        "numInstancesOption": terms.instances_option,
        "startTime": rfc1123(terms.start),
        "template": terms.template,
        "type": terms.size,
        "userid": user_id,
        "endTime": rfc1123(terms.end),
        "price": str(terms.price) if terms.price is not None else None,
        "currency": currency,
        "autoStart": terms.auto_start,
        # The freedom a flexible proposal gave (null in an offer: its terms are the chosen ones).
        "latestStart": rfc1123_or_none(terms.latest_start),
        "minDuration": None if terms.min_duration is None else terms.min_duration // timedelta(milliseconds=1),
    }


def offer_json(offer: Offer, reservation_id: UUID, user_id: str, currency: str = DEFAULT_CURRENCY) -> dict[str, Any]:
    data = terms_json(offer.terms, reservation_id, user_id, currency)
    data["changes"] = list(offer.changes)
    data["placement"] = [{"node": a.node, "instances": a.instances} for a in offer.placement]
    return data


def extension_json(r, currency: str = DEFAULT_CURRENCY) -> dict[str, Any] | None:
    """The extension offered to a confirmed or activated reservation (PEX's form), or None:
    the end offered and asked, its price (the extension's alone), until when it is held."""
    e = getattr(r, "extension", None)
    if e is None:
        return None
    return {
        "reply": e.reply.value,
        "endTime": rfc1123(e.end),
        "askedEndTime": rfc1123(e.asked_end),
        "price": str(e.price) if e.price is not None else None,
        "currency": currency,
        "validUntil": rfc1123(e.valid_until),
        "changes": list(e.changes),
        "placement": [{"node": a.node, "instances": a.instances} for a in e.placement],
    }


def extension_end_from_json(body: Any) -> datetime:
    """An extension request `{"endTime": …}` → the end asked."""
    if not isinstance(body, dict):
        raise WireError([("/", 'a JSON object {"endTime": ...} is expected')])
    errors = [(f"/{name}", "is not a field of an extension request") for name in sorted(set(body) - {"endTime"})]
    end = None
    if "endTime" not in body:
        errors.append(("/endTime", "is required"))
    else:
        try:
            end = parse_time(body["endTime"])
        except ValueError as error:
            errors.append(("/endTime", str(error)))
    if errors or end is None:
        raise WireError(errors)
    return end


def reservation_links(r) -> dict[str, str]:
    """Where a client goes next from a reservation (PEX's extra `links`)."""
    url = f"/OpenPEX/reservations/{wire_id(r.id)}"
    links = {"self": url}
    terms = r.offer.terms if r.offer is not None else None
    if r.state == State.CONFIRMED and terms is not None and not runs_by_itself(r.state, terms.auto_start):
        links["activate"] = f"{url}/activate"  # only where nothing starts without it
    if r.state in (State.CONFIRMED, State.ACTIVATED):
        links["extend"] = f"{url}/extend"
        links["release"] = f"{url}/release"
    if r.instance_ids:
        links["instances"] = "/OpenPEX/instances"
    return links


def reservation_json(r, phase: Phase | None = None, currency: str = DEFAULT_CURRENCY) -> dict[str, Any]:
    """A ReservationView → JSON: the standing terms as `proposal`, with state and extras.
    `phase` (pex.domain.lifecycle) is what it means to its user: booked, running, ended..."""
    terms = r.terms

    def standing():
        if r.offer:
            return offer_json(r.offer, r.id, r.user_id, currency)
        return terms_json(terms, r.id, r.user_id, currency) if terms else None

    body = {
        "id": wire_id(r.id),
        "userid": r.user_id,
        "state": r.state.value,
        "round": r.round,
        "proposal": standing(),
        # What the user last proposed, as asked (a flexible proposal's freedom with it).
        "asked": terms_json(r.proposal, r.id, r.user_id, currency) if r.proposal else None,
        "validUntil": rfc1123_or_none(r.valid_until),
        "alternatives": [offer_json(a, r.id, r.user_id, currency) for a in r.alternatives],
        "instances": [str(i) for i in r.instance_ids],
        "history": [
            {"at": rfc1123(s.at), "party": s.party, "reply": s.reply, "note": s.note or None} for s in r.history
        ],
        "version": r.version,
        "links": reservation_links(r),
        "extension": extension_json(r, currency),
    }
    if phase is not None:
        body["phase"] = phase.value
    return body


def outcome_json(outcome, phase: Phase | None = None, currency: str = DEFAULT_CURRENCY) -> dict[str, Any]:
    """An Outcome → the reply object `{"proposal": …, "reply": …}` of the original protocol."""
    r = outcome.reservation
    if r.offer is not None:
        proposal = offer_json(r.offer, r.id, r.user_id, currency)
    elif r.proposal is not None:
        proposal = terms_json(r.proposal, r.id, r.user_id, currency)
    else:
        proposal = {"id": wire_id(r.id), "userid": r.user_id}
    proposal["state"] = r.state.value
    body: dict[str, Any] = {"proposal": proposal, "reply": outcome.reply.value, "state": r.state.value}
    if r.offer is not None and r.proposal is not None:
        body["asked"] = terms_json(r.proposal, r.id, r.user_id, currency)
    if phase is not None:
        body["phase"] = phase.value
    if r.valid_until is not None:
        body["validUntil"] = rfc1123(r.valid_until)
        proposal["validUntil"] = rfc1123(r.valid_until)
    if r.alternatives:
        body["alternatives"] = [offer_json(a, r.id, r.user_id, currency) for a in r.alternatives]
    if outcome.reason:
        body["reason"] = outcome.reason
    if getattr(r, "extension", None) is not None:
        body["extension"] = extension_json(r, currency)
    body["links"] = reservation_links(r)
    return body


def step_from_json(body: Any) -> tuple[str, Terms | None, UUID | None]:
    """A negotiation step `{"proposal": {...}, "reply": "CONFIRM"}` → (reply, terms, proposal id).

    The proposal is needed only with COUNTER; with the other replies it may be echoed back, as
    the original client does, and then only its `id` is looked at."""
    if not isinstance(body, dict):
        raise WireError([("/", "a JSON object {\"proposal\": {...}, \"reply\": ...} is expected")])
    errors = [(f"/{name}", "is not a field of a negotiation step") for name in sorted(set(body) - {"proposal", "reply"})]
    reply = body.get("reply")
    if reply not in USER_REPLY_VALUES:
        errors.append(("/reply", f"must be one of {', '.join(USER_REPLY_VALUES)}"))
    proposal = body.get("proposal")
    terms, proposal_id = None, None
    if proposal is not None and not isinstance(proposal, dict):
        errors.append(("/proposal", "must be a proposal object"))
    elif isinstance(proposal, dict) and proposal.get("id") is not None:
        try:
            proposal_id = parse_id(proposal["id"])
        except ValueError as error:
            errors.append(("/proposal/id", str(error)))
    if reply == "COUNTER":
        if proposal is None:
            errors.append(("/proposal", "a COUNTER carries the user's proposal"))
        elif isinstance(proposal, dict):
            try:
                terms = terms_from_json(proposal, "/proposal")
            except WireError as error:
                errors.extend(error.errors)
    if errors:
        raise WireError(errors)
    assert isinstance(reply, str)  # one of USER_REPLY_VALUES, or errors has it
    return reply, terms, proposal_id


def instance_json(i) -> dict[str, Any]:
    """An InstanceView → JSON: what the paper's instances screen shows, and where it runs."""
    return {
        "id": str(i.id),
        "name": i.name,
        "reservationId": wire_id(i.reservation_id),
        "userid": i.user_id,
        "type": i.size,
        "template": i.template,
        "node": i.node,
        "startTime": rfc1123(i.start),
        "endTime": rfc1123(i.end),
        "status": i.status,
        "ipAddress": i.ip_address,
        # Why a FAILED instance's VM never ran, and when it was marked so (null otherwise).
        "error": getattr(i, "error", None),
        "failedAt": rfc3339(i.failed_at) if getattr(i, "failed_at", None) else None,
        "version": i.version,
    }


# --- Which form a client asked for ----------------------------------------------------------

PEX_JSON = "application/vnd.pex+json"
_JSON_RANGES = ("application/json", "application/*", "*/*", "*")  # `*` alone: Java's URLConnection


def prefers_pex_form(accept: str | None) -> bool:
    """Whether an Accept header asks for PEX's form rather than the original's.

    Only by name: `application/vnd.pex+json` with a quality above 0 and at least that which
    the header gives application/json. A wildcard never chooses it, since every client of the
    original sends one (`text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2`). A malformed
    element is disregarded, never an error: the original form is always an acceptable answer."""
    if not accept:
        return False
    pex_quality, json_quality = None, 0.0
    for element in accept.split(","):
        media_range, *parameters = element.split(";")
        media_range = media_range.strip().lower()
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
                if not 0.0 <= quality <= 1.0:  # also NaN
                    quality = 0.0
        if media_range == PEX_JSON:
            pex_quality = max(pex_quality or 0.0, quality)
        elif media_range in _JSON_RANGES:
            json_quality = max(json_quality, quality)
    return pex_quality is not None and pex_quality > 0.0 and pex_quality >= json_quality


# --- The original's form --------------------------------------------------------------------

# The original's VMStatus; PEX's own statuses are told as the nearest of them.
ORIGINAL_VM_STATUS = {
    "SCHEDULED": "NOT_PROVISIONED",  # no VM yet
    "HALTED": "HALTED",
    "RUNNING": "RUNNING",
    "PAUSED": "PAUSED",
    "SUSPENDED": "SUSPENDED",
    "LOST": "UNRECOGNIZED",  # its node stopped answering: nobody knows
    "STRANDED": "NOT_PROVISIONED",  # its node was lost and no other had room: no VM
    "ENDED": "DELETED",
    "DELETED": "DELETED",
    "CANCELLED": "DELETED",
}
ORIGINAL_USERID_MAX = 32767  # the original stored userid as a Java short


def original_userid(username: str) -> int:
    """The original's `userid` is a number; PEX's users are names. A number from 1 to 32767
    derived from the name stands in for it (stable across processes and restarts). It names
    nobody: PEX knows the user from the credentials and ignores a userid sent back."""
    digest = hashlib.sha256(username.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % ORIGINAL_USERID_MAX + 1


def original_proposal(terms: Terms | None, reservation_id: UUID, user_id: str) -> dict[str, Any]:
    """The original's ReservationProposal: Figure 8's proposal, not one field more."""
    proposal: dict[str, Any] = {"id": wire_id(reservation_id), "userid": original_userid(user_id)}
    if terms is not None:
        proposal.update(
            duration=int(terms.duration.total_seconds() * 1000),
            numInstancesFixed=terms.instances_fixed,
            numInstancesOption=terms.instances_option,
            startTime=rfc1123(terms.start),
            template=terms.template,
            type=terms.size,
        )
    return dict(sorted(proposal.items()))  # the original's bean serializer wrote them sorted


def original_reply(r, reply: str) -> dict[str, Any]:
    """The original's ReservationReply (Figures 8 and 9): the standing terms and the reply."""
    terms = r.offer.terms if r.offer is not None else r.proposal
    return {"proposal": original_proposal(terms, r.id, r.user_id), "reply": reply}


def original_outcome(outcome) -> dict[str, Any]:
    return original_reply(outcome.reservation, outcome.reply.value)


def original_reservation(r) -> dict[str, Any]:
    """A ReservationView → the original's ReservationEntity, an item of its list.

    `activatedInstances` counts the reservation's instances once it is activated (0 before).
    A reservation deleted in PEX is listed only when asked for (state=CANCELLED), and then its
    status is PEX's CANCELLED, a value the original never had."""
    terms = r.terms
    return {
        "activatedInstances": len(r.instance_ids) if r.state == State.ACTIVATED else 0,
        "endTime": rfc1123(terms.end) if terms else None,
        "numInstancesFixed": terms.instances_fixed if terms else 0,
        "numInstancesOption": terms.instances_option if terms else 0,
        "requestId": wire_id(r.id),
        "startTime": rfc1123(terms.start) if terms else None,
        "status": r.state.value,
        "template": terms.template if terms else None,
        "type": terms.size if terms else None,
        "userid": original_userid(r.user_id),
    }


def original_instance(i) -> dict[str, Any]:
    """An InstanceView → the original's VMInstance, an item of its list."""
    return {
        "end_time": rfc1123(i.end),
        "ipAddress": i.ip_address,
        "name": i.name,
        "start_time": rfc1123(i.start),
        "status": ORIGINAL_VM_STATUS.get(i.status, "UNRECOGNIZED"),
        "userID": original_userid(i.user_id),
        "vmID": str(i.id),
    }


def window_json(w) -> dict[str, Any]:
    """A window of GET /OpenPEX/availability (pex.application.views.WindowView)."""
    return {"startTime": rfc1123(w.start), "endTime": rfc1123(w.end), "available": w.available, "price": str(w.price)}
