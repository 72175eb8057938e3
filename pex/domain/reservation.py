"""The Reservation aggregate: one user's negotiation (paper §3.1) and the life that follows it.

Its event stream is the whole negotiation history: who proposed which terms when, each reply
of the provider, each state change. The legal moves of each state are the table LEGAL_MOVES;
a command checks it first and raises IllegalMove, so a refused move records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import IllegalMove, InvalidProposal, OfferExpired
from pex.domain.pricing import used_part
from pex.domain.values import Allocation, CopiedByContainers, Offer, Reply, Resources, State, Terms, time_text


def extension_hold_id(reservation_id: UUID) -> UUID:
    """Under which id the nodes hold an extension's capacity [end, new end): apart from the
    reservation's own booking, which stays as agreed until the user confirms the extension."""
    return uuid5(NAMESPACE_URL, f"/pex/reservations/{reservation_id}/extension")

# The moves of an extension's own negotiation (`extend`), which a confirmed or activated
# reservation allows: the provider's answer to the user's request for a later end ("extend":
# an offer or a refusal), and the offer's end: the user's CONFIRM or REJECT, or its lapse.
EXTENSION_MOVES = ("extend", "confirm_extension", "decline_extension", "expire_extension")

# Which move each state allows. "submit" is the user's opening proposal, "counter" a user's
# own proposal in answer to a COUNTER; both are evaluated by the provider in the same command.
LEGAL_MOVES: dict[State, frozenset[str]] = {
    State.INITIATED: frozenset({"submit", "cancel", "terminate"}),
    State.ACCEPTED: frozenset({"confirm", "decline", "cancel", "expire_offer", "terminate"}),
    State.COUNTERED: frozenset({"accept_counter", "counter", "decline", "cancel", "expire_offer", "terminate"}),
    State.REJECTED: frozenset({"cancel", "terminate"}),
    State.CONFIRMED: frozenset({"activate", "cancel", "expire", "release", "replace", "terminate", *EXTENSION_MOVES}),
    # Its user ends an activated reservation early by releasing it ("release", paying for the
    # used part); an administrator may also end it ("terminate").
    State.ACTIVATED: frozenset({"expire", "release", "replace", "terminate", *EXTENSION_MOVES}),
    State.EXPIRED: frozenset(),
    State.CANCELLED: frozenset(),
    # SUBMITTED exists only between a proposal and the provider's answer, inside one command.
    State.SUBMITTED: frozenset({"answer"}),
}

# Wire verbs of the original implementation, mapped to the moves above.
USER_REPLIES = {Reply.CONFIRM: "confirm", Reply.ACCEPT: "accept_counter", Reply.REJECT: "decline", Reply.COUNTER: "counter"}


@dataclass(frozen=True)
class Step:
    """One line of the negotiation history, as kept in the aggregate for queries."""

    at: datetime
    party: str  # "user" or "provider"
    reply: str
    terms: Terms | None = None
    note: str = ""


@dataclass(frozen=True)
class Extension:
    """The provider's offer to move a confirmed or activated reservation's end from its
    agreed end to `end` (ACCEPT: the end asked, `asked_end`; COUNTER: the longest it can
    give) for `price` more, held on the nodes of `placement` until `valid_until`. When some
    instances, not started yet, move to other nodes to get it, `moved_from` is the placement it
    was offered against (empty: every instance stays where it is booked)."""

    asked_end: datetime
    end: datetime
    price: Decimal | None
    placement: tuple[Allocation, ...]
    valid_until: datetime
    reply: Reply
    changes: tuple[str, ...] = ()
    moved_from: tuple[Allocation, ...] = ()

    @property
    def moves(self) -> bool:
        return bool(self.moved_from)


class Reservation(CopiedByContainers, Aggregate):
    """A user's request for N instances of a size from a start time for a duration."""

    class Event(Aggregate.Event):
        at: datetime

    class Initiated(Aggregate.Created):
        user_id: str
        at: datetime

    class ProposalSubmitted(Event):
        """The user proposed terms (opening, or as a counter to the provider's offer)."""

        terms: Terms
        per_instance: Resources

        def apply(self, r: Reservation) -> None:
            r.state = State.SUBMITTED
            r.proposal, r.per_instance, r.round = self.terms, self.per_instance, r.round + 1
            r.history.append(Step(self.at, "user", "COUNTER" if r.round > 1 else "PROPOSE", self.terms))

    class Accepted(Event):
        """The provider can satisfy the proposal as it is, and holds capacity until `valid_until`."""

        offer: Offer
        valid_until: datetime

        def apply(self, r: Reservation) -> None:
            r.state, r.offer, r.valid_until, r.alternatives = State.ACCEPTED, self.offer, self.valid_until, ()
            r.history.append(Step(self.at, "provider", Reply.ACCEPT.value, self.offer.terms))

    class CounterOffered(Event):
        """The provider offers other terms (held until `valid_until`) and, beside them, alternatives."""

        offer: Offer
        alternatives: tuple[Offer, ...]
        valid_until: datetime

        def apply(self, r: Reservation) -> None:
            r.state, r.offer, r.valid_until = State.COUNTERED, self.offer, self.valid_until
            r.alternatives = tuple(self.alternatives)
            r.history.append(Step(self.at, "provider", Reply.COUNTER.value, self.offer.terms, "; ".join(self.offer.changes)))

    class Rejected(Event):
        """The provider cannot satisfy the proposal in any manner."""

        reason: str

        def apply(self, r: Reservation) -> None:
            r.state, r.offer, r.valid_until, r.alternatives = State.REJECTED, None, None, ()
            r.history.append(Step(self.at, "provider", Reply.REJECT.value, note=self.reason))

    class CounterAccepted(Event):
        """The user accepted the provider's counter-offer; the provider asks for confirmation."""

        def apply(self, r: Reservation) -> None:
            r.state = State.ACCEPTED
            r.history.append(Step(self.at, "user", Reply.ACCEPT.value))
            r.history.append(Step(self.at, "provider", Reply.CONFIRM_REQUEST.value))

    class Declined(Event):
        """The user walked away from the provider's offer."""

        def apply(self, r: Reservation) -> None:
            r.state, r.valid_until = State.REJECTED, None
            r.history.append(Step(self.at, "user", Reply.REJECT.value))

    class Confirmed(Event):
        """The user confirmed and the provider booked the offer: the reservation is agreed."""

        instance_ids: tuple[UUID, ...]

        def apply(self, r: Reservation) -> None:
            r.state, r.valid_until, r.alternatives = State.CONFIRMED, None, ()
            r.instance_ids = tuple(self.instance_ids)
            r.history.append(Step(self.at, "user", Reply.CONFIRM.value))
            r.history.append(Step(self.at, "provider", Reply.REQUEST_SUCCESS.value))

    class OfferExpired(Event):
        """The offer lapsed before the user confirmed it; its holds are released."""

        def apply(self, r: Reservation) -> None:
            r.state, r.valid_until = State.EXPIRED, None
            r.history.append(Step(self.at, "provider", "OFFER_EXPIRED"))

    class Activated(Event):
        def apply(self, r: Reservation) -> None:
            r.state = State.ACTIVATED
            r.history.append(Step(self.at, "user", "ACTIVATE"))

    class Cancelled(Event):
        reason: str

        def apply(self, r: Reservation) -> None:
            r.state, r.valid_until, r.extension = State.CANCELLED, None, None
            r.history.append(Step(self.at, "user", "DELETE", note=self.reason))

    class Terminated(Cancelled):
        """An administrator ended the reservation, whatever its state (an activated one too):
        `by` who and `reason` why. It is then CANCELLED like a deletion, so everything that
        follows the log releases its capacity and ends its VMs as for one."""

        by: str

        def apply(self, r: Reservation) -> None:
            r.state, r.valid_until, r.extension = State.CANCELLED, None, None
            r.history.append(Step(self.at, "provider", "TERMINATE", note=f"ended by {self.by}: {self.reason}"))

    class PlacementChanged(Event):
        """The Scheduler re-placed instances after a node was lost: `placement` is where the
        reservation is booked now (stranded instances are booked nowhere)."""

        placement: tuple[Allocation, ...]
        reason: str

        def apply(self, r: Reservation) -> None:
            assert r.offer is not None
            r.offer = replace(r.offer, placement=tuple(self.placement))

    class Expired(Event):
        """The reservation's interval is over."""

        def apply(self, r: Reservation) -> None:
            r.state, r.extension = State.EXPIRED, None
            r.history.append(Step(self.at, "provider", "EXPIRED"))

    class Released(Expired):
        """Its user (or `by` an administrator) ended it early, at `at`: from then its capacity
        is free and its VMs are ended as at a natural end. The standing terms end at `at` (or
        at their start, if released before it) and cost `price`, the used part of the agreed
        price (pex.domain.pricing.used_part); `agreed_end` and `agreed_price` were agreed."""

        by: str
        agreed_end: datetime
        agreed_price: Decimal | None
        price: Decimal | None

        def apply(self, r: Reservation) -> None:
            assert r.offer is not None
            terms = r.offer.terms
            r.state, r.extension = State.EXPIRED, None
            r.offer = replace(r.offer, terms=terms.but(end=max(terms.start, min(self.at, terms.end)), price=self.price))
            r.history.append(Step(self.at, "user", "RELEASE", r.offer.terms, f"released by {self.by}"))

    # --- an extension's negotiation: the reservation stays as agreed until CONFIRM ----------

    class ExtensionOffered(Event):
        """The user asked to move the end to `asked_end`; the provider offers `end` (the one
        asked: ACCEPT; the longest it can give: COUNTER, with the `changes` in words) for
        `price` more, the capacity of [agreed end, `end`) held on `placement`'s nodes until
        `valid_until`; with `moved_from` (the placement as it stood), the instances of the nodes
        that `placement` no longer has move, not started yet, to the nodes it adds, which hold
        [start, `end`) for them. The standing terms do not change until the user confirms."""

        asked_end: datetime
        end: datetime
        price: Decimal | None
        placement: tuple[Allocation, ...]
        valid_until: datetime
        reply: str
        changes: tuple[str, ...]
        moved_from: tuple[Allocation, ...] = ()  # recorded since extensions may move instances

        def apply(self, r: Reservation) -> None:
            r.extension = Extension(
                self.asked_end, self.end, self.price, tuple(self.placement), self.valid_until, Reply(self.reply),
                tuple(self.changes), tuple(self.moved_from),
            )
            r.history.append(Step(self.at, "user", "EXTEND", note=f"to {time_text(self.asked_end)}"))
            note = "; ".join([f"to {time_text(self.end)} for {self.price}", *self.changes])
            r.history.append(Step(self.at, "provider", self.reply, note=note))

    class ExtensionRejected(Event):
        """The user asked to move the end to `asked_end`; the provider cannot give any later end."""

        asked_end: datetime
        reason: str

        def apply(self, r: Reservation) -> None:
            r.extension = None
            r.history.append(Step(self.at, "user", "EXTEND", note=f"to {time_text(self.asked_end)}"))
            r.history.append(Step(self.at, "provider", Reply.REJECT.value, note=self.reason))

    class ExtensionConfirmed(Event):
        """The user confirmed the extension and the provider booked it: the reservation now
        ends at `end` and costs `price` in all (`agreed_end` and `agreed_price` were agreed
        before; `extension_price` is what the extension added)."""

        end: datetime
        price: Decimal | None
        agreed_end: datetime
        agreed_price: Decimal | None
        extension_price: Decimal | None

        def apply(self, r: Reservation) -> None:
            assert r.offer is not None
            r.offer = replace(r.offer, terms=r.offer.terms.but(end=self.end, price=self.price))
            r.extension = None
            r.history.append(Step(self.at, "user", Reply.CONFIRM.value, note="the extension"))
            r.history.append(Step(self.at, "provider", Reply.REQUEST_SUCCESS.value, r.offer.terms, f"extended to {time_text(self.end)}"))

    class ExtensionDeclined(Event):
        """The user walked away from the extension offer: the reservation stays as it was."""

        def apply(self, r: Reservation) -> None:
            r.extension = None
            r.history.append(Step(self.at, "user", Reply.REJECT.value, note="the extension"))

    class ExtensionLapsed(Event):
        """The extension offer lapsed unconfirmed; its holds are released, the reservation
        stays as it was."""

        def apply(self, r: Reservation) -> None:
            r.extension = None
            r.history.append(Step(self.at, "provider", "OFFER_EXPIRED", note="the extension offer lapsed"))

    # Read by reservations rebuilt before extensions existed.
    extension: Extension | None = None

    def __init__(self, user_id: str, at: datetime):
        self.user_id = user_id
        self.initiated_at = at
        self.state = State.INITIATED
        self.round = 0
        self.proposal: Terms | None = None
        self.per_instance: Resources | None = None
        self.offer: Offer | None = None
        self.alternatives: tuple[Offer, ...] = ()
        self.valid_until: datetime | None = None
        self.instance_ids: tuple[UUID, ...] = ()
        self.history: list[Step] = []
        self.extension: Extension | None = None  # an extension offered, until confirmed, declined or lapsed

    @classmethod
    def initiate(cls, user_id: str, at: datetime, reservation_id: UUID) -> Reservation:
        """initiateReservation: open a negotiation under an id the caller chose."""
        return cls._create(cls.Initiated, id=reservation_id, user_id=user_id, at=at)

    # --- queries -----------------------------------------------------------------------

    @property
    def agreed(self) -> Offer | None:
        """The booked terms, once confirmed."""
        if self.state in (State.CONFIRMED, State.ACTIVATED) or (self.state == State.EXPIRED and self.instance_ids):
            return self.offer
        return None

    @property
    def holds_capacity(self) -> bool:
        return self.state in (State.ACCEPTED, State.COUNTERED, State.CONFIRMED, State.ACTIVATED)

    def can(self, move: str) -> bool:
        return move in LEGAL_MOVES[self.state]

    # --- commands ----------------------------------------------------------------------

    def check(self, move: str, detail: str = "") -> None:
        if not self.can(move):
            raise IllegalMove(move, self.state.value, detail)

    def submit(self, terms: Terms, per_instance: Resources, at: datetime) -> None:
        self.check("counter" if self.state == State.COUNTERED else "submit")
        self.trigger_event(self.ProposalSubmitted, terms=terms, per_instance=per_instance, at=at)

    def accept(self, offer: Offer, valid_until: datetime, at: datetime) -> None:
        self.check("answer")
        self.trigger_event(self.Accepted, offer=offer, valid_until=valid_until, at=at)

    def counter_offer(self, offer: Offer, alternatives: tuple[Offer, ...], valid_until: datetime, at: datetime) -> None:
        self.check("answer")
        self.trigger_event(self.CounterOffered, offer=offer, alternatives=alternatives, valid_until=valid_until, at=at)

    def reject(self, reason: str, at: datetime) -> None:
        self.check("answer")
        self.trigger_event(self.Rejected, reason=reason, at=at)

    def accept_counter(self, at: datetime) -> None:
        self.check("accept_counter")
        self.check_offer_valid(at)
        self.trigger_event(self.CounterAccepted, at=at)

    def decline(self, at: datetime) -> None:
        self.check("decline")
        self.trigger_event(self.Declined, at=at)

    def confirm(self, instance_ids: tuple[UUID, ...], at: datetime) -> None:
        self.check("confirm", "only an accepted offer can be confirmed" if self.state == State.COUNTERED else "")
        self.check_offer_valid(at)
        self.trigger_event(self.Confirmed, instance_ids=instance_ids, at=at)

    def expire_offer(self, at: datetime) -> None:
        self.check("expire_offer")
        if self.valid_until is not None and self.valid_until > at:
            raise IllegalMove("expire_offer", self.state.value, f"the offer is valid until {time_text(self.valid_until)}")
        self.trigger_event(self.OfferExpired, at=at)

    def activate(self, at: datetime) -> None:
        self.check("activate")
        assert self.offer is not None
        if self.offer.terms.end <= at:
            raise IllegalMove("activate", self.state.value, "the reservation's interval is over")
        self.trigger_event(self.Activated, at=at)

    def cancel(self, reason: str, at: datetime) -> None:
        self.check("cancel", "an activated reservation cannot be deleted" if self.state == State.ACTIVATED else "")
        self.trigger_event(self.Cancelled, reason=reason, at=at)

    def terminate(self, by: str, reason: str, at: datetime) -> None:
        self.check("terminate")
        self.trigger_event(self.Terminated, by=by, reason=reason, at=at)

    def replace_placement(self, placement: tuple[Allocation, ...], reason: str, at: datetime) -> None:
        self.check("replace")
        self.trigger_event(self.PlacementChanged, placement=tuple(placement), reason=reason, at=at)

    def expire(self, at: datetime) -> None:
        self.check("expire")
        assert self.offer is not None
        if self.offer.terms.end > at:
            raise IllegalMove("expire", self.state.value, f"it ends at {time_text(self.offer.terms.end)}")
        self.trigger_event(self.Expired, at=at)

    def release(self, by: str, at: datetime) -> None:
        """End a confirmed or activated reservation now, paying for the used part only."""
        self.check("release")
        assert self.offer is not None
        terms = self.offer.terms
        if terms.end <= at:
            raise IllegalMove("release", self.state.value, f"it ended at {time_text(terms.end)}")
        price = None if terms.price is None else used_part(terms.price, terms.start, terms.end, at)
        self.trigger_event(self.Released, by=by, agreed_end=terms.end, agreed_price=terms.price, price=price, at=at)

    # --- commands: an extension ------------------------------------------------------------

    def check_extendable(self, asked_end: datetime, at: datetime) -> None:
        """Refuse a request to end later that no answer can take: not CONFIRMED or ACTIVATED
        (IllegalMove), over already, or an end not after the agreed one (InvalidProposal)."""
        self.check("extend", "only a confirmed or activated reservation is extended")
        assert self.offer is not None
        terms = self.offer.terms
        if terms.end <= at:
            raise IllegalMove("extend", self.state.value, f"it ended at {time_text(terms.end)}")
        if asked_end.tzinfo is None:
            raise InvalidProposal("endTime", "times must carry a time zone")
        if asked_end <= terms.end:
            raise InvalidProposal("endTime", f"an extension ends after the agreed end, {time_text(terms.end)}")

    def offer_extension(
        self, asked_end: datetime, end: datetime, price: Decimal | None, placement: tuple[Allocation, ...],
        valid_until: datetime, changes: tuple[str, ...], at: datetime, moved_from: tuple[Allocation, ...] = (),
    ) -> None:
        """The provider's offer of `end` (ACCEPT if it is `asked_end`, else COUNTER), on
        `placement` (moved from `moved_from`, when instances move)."""
        self.check_extendable(asked_end, at)
        assert self.offer is not None
        if not self.offer.terms.end < end <= asked_end:
            raise ValueError("an extension offer ends after the agreed end, at most at the end asked")
        reply = Reply.ACCEPT if end == asked_end else Reply.COUNTER
        self.trigger_event(
            self.ExtensionOffered, asked_end=asked_end, end=end, price=price, placement=tuple(placement),
            valid_until=valid_until, reply=reply.value, changes=tuple(changes), moved_from=tuple(moved_from), at=at,
        )

    def reject_extension(self, asked_end: datetime, reason: str, at: datetime) -> None:
        self.check_extendable(asked_end, at)
        self.trigger_event(self.ExtensionRejected, asked_end=asked_end, reason=reason, at=at)

    def confirm_extension(self, at: datetime) -> None:
        """The user's CONFIRM of the extension offered: the end moves, the price grows by the
        extension's. An offer that lapsed is OfferExpired."""
        self.check("confirm_extension")
        extension, offer = self.extension, self.offer
        if extension is None or offer is None:
            raise IllegalMove("confirm", self.state.value, "no extension is offered")
        if extension.valid_until <= at:
            raise OfferExpired(f"the extension offer lapsed at {time_text(extension.valid_until)}")
        terms = offer.terms
        price = None if terms.price is None or extension.price is None else terms.price + extension.price
        self.trigger_event(
            self.ExtensionConfirmed, end=extension.end, price=price, agreed_end=terms.end, agreed_price=terms.price,
            extension_price=extension.price, at=at,
        )

    def decline_extension(self, at: datetime) -> None:
        self.check("decline_extension")
        if self.extension is None:
            raise IllegalMove("reject", self.state.value, "no extension is offered")
        self.trigger_event(self.ExtensionDeclined, at=at)

    def expire_extension(self, at: datetime) -> None:
        self.check("expire_extension")
        if self.extension is None:
            raise IllegalMove("expire_extension", self.state.value, "no extension is offered")
        if self.extension.valid_until > at:
            raise IllegalMove(
                "expire_extension", self.state.value, f"the offer is valid until {time_text(self.extension.valid_until)}"
            )
        self.trigger_event(self.ExtensionLapsed, at=at)

    def check_offer_valid(self, at: datetime) -> None:
        if self.valid_until is None or self.valid_until <= at:
            raise OfferExpired(f"the offer lapsed at {time_text(self.valid_until) if self.valid_until else 'an earlier time'}")
