"""One reservation's negotiation and life as a readable timeline (`pex history ID`).

It reads the reservation's own events, the events of the nodes its offers named that concern
it (holds, bookings, releases), and the events of its instances, and prints them in the
order they were decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pex.domain.instance import Instance
from pex.domain.node import Node, node_id
from pex.domain.reservation import Reservation
from pex.domain.values import Offer, Terms
from pex.projections.views import event_time, is_instance_event


@dataclass(frozen=True)
class Line:
    at: datetime
    who: str  # "user", "provider", a node's or an instance's name
    what: str
    detail: str = ""
    order: tuple = ()

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S}  {self.who:<14} {self.what:<18} {self.detail}".rstrip()


def describe_terms(t: Terms, with_price: str = "") -> str:
    option = f"+{t.instances_option}" if t.instances_option else ""
    price = f" {with_price} {t.price}" if t.price is not None and with_price else ""
    return f"{t.instances_fixed}{option} {t.size} '{t.template}' {t.start:%Y-%m-%d %H:%M} → {t.end:%Y-%m-%d %H:%M}{price}"


def describe_offer(o: Offer) -> str:
    on = ", ".join(f"{a.node}×{a.instances}" for a in o.placement)
    return f"{describe_terms(o.terms, 'for')} on {on}"


def reservation_lines(e: Any) -> list[tuple[str, str, str]]:
    """(who, what, detail) lines for one Reservation event."""
    name = type(e).__name__
    if isinstance(e, Reservation.Initiated):
        return [("user", "INITIATE", f"by {e.user_id}")]
    if name == "ProposalSubmitted":
        return [("user", "PROPOSE", describe_terms(e.terms, "at most"))]
    if name == "Accepted":
        return [("provider", "ACCEPT", f"{describe_offer(e.offer)}; valid until {e.valid_until:%H:%M:%S}")]
    if name == "CounterOffered":
        changes = "; ".join(e.offer.changes)
        alternatives = f"; {len(e.alternatives)} alternative(s)" if e.alternatives else ""
        return [("provider", "COUNTER", f"{describe_offer(e.offer)} ({changes}); valid until {e.valid_until:%H:%M:%S}{alternatives}")]
    if name == "Rejected":
        return [("provider", "REJECT", e.reason)]
    if name == "CounterAccepted":
        return [("user", "ACCEPT", ""), ("provider", "CONFIRM_REQUEST", "")]
    if name == "Declined":
        return [("user", "REJECT", "")]
    if name == "Confirmed":
        return [("user", "CONFIRM", ""), ("provider", "REQUEST_SUCCESS", f"{len(e.instance_ids)} instance(s) scheduled")]
    if name == "OfferExpired":
        return [("provider", "OFFER_EXPIRED", "the offer lapsed")]
    if name == "Activated":
        return [("user", "ACTIVATE", "")]
    if name == "Cancelled":
        return [("user", "DELETE", e.reason)]
    if name == "Terminated":
        return [("provider", "TERMINATE", f"ended by {e.by}: {e.reason}")]
    if name == "Released":
        return [("user", "RELEASE", f"released by {e.by} at {e.at:%Y-%m-%d %H:%M}; {e.price if e.price is not None else 'no'} charged")]
    if name == "Expired":
        return [("provider", "EXPIRED", "the interval is over")]
    if name == "ExtensionOffered":
        changes = f" ({'; '.join(e.changes)})" if e.changes else ""
        return [("user", "EXTEND", f"to {e.asked_end:%Y-%m-%d %H:%M}"),
                ("provider", e.reply, f"to {e.end:%Y-%m-%d %H:%M} for {e.price}{changes}; valid until {e.valid_until:%H:%M:%S}")]
    if name == "ExtensionRejected":
        return [("user", "EXTEND", f"to {e.asked_end:%Y-%m-%d %H:%M}"), ("provider", "REJECT", e.reason)]
    if name == "ExtensionConfirmed":
        return [("user", "CONFIRM", "the extension"), ("provider", "REQUEST_SUCCESS", f"extended to {e.end:%Y-%m-%d %H:%M}; {e.price} in all")]
    if name == "ExtensionDeclined":
        return [("user", "REJECT", "the extension")]
    if name == "ExtensionLapsed":
        return [("provider", "OFFER_EXPIRED", "the extension offer lapsed")]
    if name == "PlacementChanged":
        on = ", ".join(f"{a.node}×{a.instances}" for a in e.placement) or "nowhere"
        return [("provider", "RE-PLACED", f"now on {on}: {e.reason}")]
    return [("provider", name, "")]


def node_line(name: str, e: Any) -> tuple[str, str, str] | None:
    if isinstance(e, Node.CapacityHeld):
        return (name, "HOLD", f"{e.instances}× until {e.hold_until:%H:%M:%S}")
    if isinstance(e, Node.CapacityBooked):
        return (name, "BOOK", f"{e.instances}× {e.start:%Y-%m-%d %H:%M} → {e.end:%Y-%m-%d %H:%M}")
    if isinstance(e, (Node.HoldReleased, Node.BookingReleased)):
        return (name, "RELEASE", f"{'hold' if isinstance(e, Node.HoldReleased) else 'booking'}: {e.reason}")
    return None


# What is worth showing of an Instance event, when it carries it.
INSTANCE_DETAILS = ("node", "from_node", "to_node", "ip_address", "power_state", "cause", "action", "worker", "error", "reason")


def instance_line(e: Any) -> tuple[str, str, str]:
    if isinstance(e, Instance.Scheduled):
        return (e.name, "Scheduled", f"on {e.node}")
    details = [f"{k}={getattr(e, k)}" for k in INSTANCE_DETAILS if getattr(e, k, None)]
    return ("", type(e).__name__, " ".join(details))


def reservation_history(app: Any, reservation_id: UUID) -> list[Line]:
    """The timeline of one reservation; raises pex.application.NotFound if there is none."""
    events = list(app.reservation_events(reservation_id))
    lines: list[Line] = []
    nodes: set[str] = set()
    instance_ids: list[UUID] = []
    for e in events:
        for who, what, detail in reservation_lines(e):
            lines.append(Line(event_time(e), who, what, detail, (e.timestamp, 0, len(lines))))
        offer = getattr(e, "offer", None)
        if offer is not None:
            nodes.update(offer.nodes)
        instance_ids.extend(getattr(e, "instance_ids", ()) or ())
    for name in sorted(nodes):
        for e in app.events.get(node_id(name)):
            if getattr(e, "reservation_id", None) == reservation_id and (parts := node_line(name, e)):
                lines.append(Line(event_time(e), *parts, (e.timestamp, 1, len(lines))))
    for iid in instance_ids:
        name = ""
        for e in app.events.get(iid):
            if not is_instance_event(e):
                continue
            who, what, detail = instance_line(e)
            name = who or name
            lines.append(Line(event_time(e), name, what, detail, (e.timestamp, 2, len(lines))))
    lines.sort(key=lambda line: (line.at, line.order))
    # The provider books only once the user has confirmed, but records the bookings first
    # (they are checked before anything is recorded): show the user's CONFIRM before them.
    for i, line in enumerate(lines):
        if line.who == "user" and line.what == "CONFIRM":
            j = i
            while j > 0 and lines[j - 1].at == line.at and lines[j - 1].who not in ("user", "provider"):
                j -= 1
            lines.insert(j, lines.pop(i))
    return lines


def render_history(app: Any, reservation_id: UUID) -> str:
    view = app.get_reservation(reservation_id)
    head = f"reservation {str(reservation_id).upper()} of {view.user_id}: {view.state.value}"
    return "\n".join([head, *(str(line) for line in reservation_history(app, reservation_id))])
