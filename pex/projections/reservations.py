"""An in-memory index of reservations and instances, folded from the event log.

It answers what the aggregates cannot answer alone: which reservations a user has, which
offers are waiting (for the expiry timer), which confirmed reservations are due to start or
end, and what each user holds or booked (for the quotas, pex.domain.quotas). Followed as the
log grows.

The timers' questions cost what is pending, not the history: offers still waiting and
reservations still standing are kept apart from the rest; a user's usage costs their
reservations that hold capacity now, not their history.

Both are fed by the process's one follower (pex.projections.follower) in the application
(pex.application.core: `Decisions`, `Listing`); the auditor folds its own.

Two flavours. The full index (the default; the auditor's, and the application's listings)
keeps every reservation and instance ever made. The application's decisions use one with
`pending_only`: it forgets a reservation once it is over (rejected, expired or cancelled)
and keeps no instance ownership, so it holds what is pending, not the history, and a
process loads it from a checkpoint (`to_state`/`from_state`, pex.projections.checkpoints)
in a time that does not grow with the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from pex.domain.instance import Instance
from pex.domain.quotas import Usage, cpu_seconds
from pex.domain.reservation import Reservation
from pex.domain.values import State


@dataclass
class ReservationEntry:
    id: UUID
    user_id: str
    state: State = State.INITIATED
    start: datetime | None = None
    end: datetime | None = None
    valid_until: datetime | None = None
    instance_ids: tuple[UUID, ...] = ()
    cpus: int = 0  # of one instance
    instances: int = 0
    # A confirmed or activated reservation's extension offer: the end offered (held until
    # valid_until, which then is the extension offer's).
    extension_end: datetime | None = None


HOLDING = (State.ACCEPTED, State.COUNTERED, State.CONFIRMED, State.ACTIVATED)
OVER = frozenset({State.REJECTED, State.EXPIRED, State.CANCELLED})
STATE_SCHEMA = 3  # of to_state/from_state; change it with the shape, and old checkpoints are ignored


@dataclass
class ReservationIndex:
    pending_only: bool = False
    reservations: dict[UUID, ReservationEntry] = field(default_factory=dict)
    by_user: dict[str, list[UUID]] = field(default_factory=dict)
    instances_by_user: dict[str, list[UUID]] = field(default_factory=dict)
    offers: dict[UUID, datetime] = field(default_factory=dict)  # waiting offers: valid until
    standing: set[UUID] = field(default_factory=set)  # confirmed or activated
    holding_by_user: dict[str, set[UUID]] = field(default_factory=dict)  # an offer or a booking

    def apply(self, event: object) -> None:
        if isinstance(event, Reservation.Initiated):
            self.reservations[event.originator_id] = ReservationEntry(event.originator_id, event.user_id)
            self.by_user.setdefault(event.user_id, []).append(event.originator_id)
            return
        if isinstance(event, Instance.Scheduled):
            if not self.pending_only:
                self.instances_by_user.setdefault(event.user_id, []).append(event.originator_id)
            return
        originator: UUID | None = getattr(event, "originator_id", None)
        entry = self.reservations.get(originator) if originator is not None else None
        if entry is None:
            return
        self._change(entry, event)
        if entry.valid_until is not None:
            self.offers[entry.id] = entry.valid_until
        else:
            self.offers.pop(entry.id, None)
        if entry.state in (State.CONFIRMED, State.ACTIVATED):
            self.standing.add(entry.id)
        else:
            self.standing.discard(entry.id)
        self._hold(entry)
        if self.pending_only and entry.state in OVER:
            self._forget(entry)  # last: whatever derives from the entry was updated above

    @staticmethod
    def _change(entry: ReservationEntry, event: object) -> None:
        if isinstance(event, Reservation.ProposalSubmitted):
            entry.state = State.SUBMITTED
        elif isinstance(event, (Reservation.Accepted, Reservation.CounterOffered)):
            entry.state = State.ACCEPTED if isinstance(event, Reservation.Accepted) else State.COUNTERED
            entry.start, entry.end, entry.valid_until = event.offer.terms.start, event.offer.terms.end, event.valid_until
            entry.cpus, entry.instances = event.offer.per_instance.cpus, event.offer.terms.instances
        elif isinstance(event, Reservation.CounterAccepted):
            entry.state = State.ACCEPTED
        elif isinstance(event, Reservation.Confirmed):
            entry.state, entry.valid_until, entry.instance_ids = State.CONFIRMED, None, tuple(event.instance_ids)
        elif isinstance(event, Reservation.Activated):
            entry.state = State.ACTIVATED
        elif isinstance(event, (Reservation.Rejected, Reservation.Declined)):
            entry.state, entry.valid_until = State.REJECTED, None
        elif isinstance(event, (Reservation.OfferExpired, Reservation.Expired)):
            entry.state, entry.valid_until = State.EXPIRED, None
        elif isinstance(event, Reservation.Cancelled):
            entry.state, entry.valid_until = State.CANCELLED, None
        elif isinstance(event, Reservation.ExtensionOffered):
            entry.valid_until, entry.extension_end = event.valid_until, event.end
        elif isinstance(event, Reservation.ExtensionConfirmed):
            entry.end, entry.valid_until, entry.extension_end = event.end, None, None
        elif isinstance(event, (Reservation.ExtensionRejected, Reservation.ExtensionDeclined, Reservation.ExtensionLapsed)):
            entry.valid_until, entry.extension_end = None, None
        if entry.state in OVER:
            entry.extension_end = None

    def _hold(self, entry: ReservationEntry) -> None:
        holding = self.holding_by_user.setdefault(entry.user_id, set())
        if entry.state in HOLDING:
            holding.add(entry.id)
        else:
            holding.discard(entry.id)
        if not holding:
            del self.holding_by_user[entry.user_id]  # keys stay bounded by the users holding something

    def _forget(self, entry: ReservationEntry) -> None:
        del self.reservations[entry.id]
        ids = self.by_user.get(entry.user_id, [])
        ids.remove(entry.id)
        if not ids:
            del self.by_user[entry.user_id]
        self.offers.pop(entry.id, None)
        self.standing.discard(entry.id)

    # --- checkpoints -----------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A pending-only index as plain JSON values; the offers and standing sets follow from
        the entries."""
        if not self.pending_only:
            raise ValueError("only a pending-only index is checkpointed: the full one is the history")
        return {
            "reservations": [
                [str(e.id), e.user_id, e.state.value, _time(e.start), _time(e.end), _time(e.valid_until),
                 [str(i) for i in e.instance_ids], e.cpus, e.instances, _time(e.extension_end)]
                for e in self.reservations.values()
            ],
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReservationIndex:
        index = cls(pending_only=True)
        for rid, user_id, value, start, end, valid_until, instance_ids, cpus, instances, extension_end in state["reservations"]:
            entry = ReservationEntry(
                UUID(rid), user_id, State(value), _from_time(start), _from_time(end), _from_time(valid_until),
                tuple(UUID(i) for i in instance_ids), cpus, instances, _from_time(extension_end),
            )  # fmt: skip
            index.reservations[entry.id] = entry
            index.by_user.setdefault(user_id, []).append(entry.id)
            if entry.valid_until is not None:
                index.offers[entry.id] = entry.valid_until
            if entry.state in (State.CONFIRMED, State.ACTIVATED):
                index.standing.add(entry.id)
            index._hold(entry)
        return index

    # --- queries ---------------------------------------------------------------------------

    def of_user(self, user_id: str | None) -> list[ReservationEntry]:
        if user_id is None:
            return list(self.reservations.values())
        return [self.reservations[rid] for rid in self.by_user.get(user_id, [])]

    def lapsed_offers(self, now: datetime) -> list[UUID]:
        return [rid for rid, valid_until in self.offers.items() if valid_until <= now]

    def ended(self, now: datetime) -> list[UUID]:
        return [rid for rid in self.standing if (end := self.reservations[rid].end) is not None and end <= now]

    def usage(self, user_id: str, now: datetime, excluding: UUID | None = None) -> Usage:
        """What `user_id` holds or booked from `now` on, leaving out `excluding` (the
        reservation under negotiation, whose offer a new one replaces)."""
        seconds, offers = 0, 0
        for rid in self.holding_by_user.get(user_id, ()):
            entry = self.reservations[rid]
            if rid == excluding or entry.start is None or entry.end is None:
                continue
            if entry.state in (State.ACCEPTED, State.COUNTERED):
                if entry.valid_until is None or entry.valid_until <= now:
                    continue  # lapsed: its hold no longer counts anywhere
                offers += 1
            seconds += cpu_seconds(entry.cpus, entry.instances, entry.start, entry.end, now)
            if entry.extension_end is not None and entry.valid_until is not None and entry.valid_until > now:
                offers += 1  # an extension offer, live: it holds [end, extension end)
                seconds += cpu_seconds(entry.cpus, entry.instances, entry.end, entry.extension_end, now)
        return Usage(seconds, offers)


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _from_time(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t) if t is not None else None
