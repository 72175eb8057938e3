"""The audit: re-read the whole event log (or a prefix of it), rebuild every projection from
scratch in memory, and check PEX's promises against what was recorded.

Promises checked, each against the log alone (never against the aggregates' own checks):

capacity     No node is above capacity at any instant: bookings in force (from their decision
             time until their end or release) never sum above the capacity in force; and each
             hold or booking fitted, beside every booking and live hold, when it was decided,
             judged at that decision's own `at`. A lost node takes nothing new; a drained
             one nothing that lasts until its drain (a booking there may only shrink).
bookings     Every confirmed reservation had, from its confirmation, bookings for all its
             instances over exactly its interval on the nodes its offer named; nothing is
             booked without a confirmation, and a booking is released only by a deletion
             (or moves with an instance: re-placed, re-packed, or live-migrating off a
             drained node); a reservation released early keeps no booking past its release;
             a booking made when an instance moved (re-placed or re-packed) is over the
             agreed interval with the agreed resources; all of a reservation's bookings are
             on the nodes of one pool.
instances    Every instance was scheduled on a node booked for its reservation, over its
             interval; one re-packed to another node was scheduled, before its start, with
             no VM made; every instance that ran, ran inside that interval (up to `grace` late;
             the interval of a reservation released early ends at its release)
             on a node booked for it, or an event of the instance gives a `reason`; and every
             instance that should have run (its reservation activated, or confirmed to start
             by itself) ran, unless it was cancelled, deleted or its reservation ended first,
             or it was stranded (no node had room: explained), at most `grace` after it should;
             judged from the first dispatch in the log on (a log no worker ever dispatched
             from, a negotiation alone, says nothing about runs).
protocol     Each reservation's events, replayed against the legal-move table LEGAL_MOVES,
             are legal moves, in order, with offers confirmed or accepted only while valid,
             ACCEPT offering the terms as proposed, and no proposal left unanswered.
versions     Every aggregate's events are numbered 1, 2, 3, … with no gap, the first one
             creating it. (Gaps in notification ids are normal and ignored.)
credit       Every user's credit follows from its events and is never negative: each grant,
             charge and refund moves the balance by its amount to the balance it records; a
             charge is the price of the reservation of the user's confirmed in the same save,
             once; a refund gives back, once, what an early end left unused of a charge
             (the charge less pex.domain.pricing.used_part at the end), in the same save.
ledger       Every stored event is exactly what the ledger sealed: none altered, removed or
             slipped in behind it, and the ledger's chain of digests links up.
read models  The stored read models equal the same views rebuilt here, each compared at the
             position it had reached.
projections  The in-memory projections the application uses agree with the rebuilt views.

The auditor only reads: it runs under a read-only database role. It reads the log with a
loop and folds of its own, never through the one follower (pex.projections.follower) nor the
models it feeds: an auditor must not trust the read models it checks.
"""

from __future__ import annotations

import gc
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import CanInitAggregate
from eventsourcing.persistence import Notification

from pex.domain.instance import Instance
from pex.domain.node import Node, NodeAllocation
from pex.domain.pool import DEFAULT_POOL
from pex.domain.pricing import used_part
from pex.domain.reservation import LEGAL_MOVES, Reservation
from pex.domain.user import User, legacy_user_id, user_id
from pex.domain.values import Offer, Resources, State, Terms
from pex.projections.capacity import CapacityTimeline
from pex.projections.ledger import GENESIS, LEDGER, LEDGER_HEAD, chained, event_digest
from pex.projections.reservations import ReservationIndex
from pex.projections.store import Key, MemoryStore, Row, Where, row_digest
from pex.projections.views import RESERVATIONS, View, event_time, is_instance_event, read_model_views

PROMISES = ("capacity", "bookings", "instances", "protocol", "credit", "versions", "ledger", "read models", "projections", "decoding")

# The move each Reservation event records, by event name and the state it was recorded in.
EVENT_MOVES = {
    "ProposalSubmitted": lambda state: "counter" if state == State.COUNTERED else "submit",
    "Accepted": lambda state: "answer",
    "CounterOffered": lambda state: "answer",
    "Rejected": lambda state: "answer",
    "CounterAccepted": lambda state: "accept_counter",
    "Declined": lambda state: "decline",
    "Confirmed": lambda state: "confirm",
    "OfferExpired": lambda state: "expire_offer",
    "Activated": lambda state: "activate",
    "Cancelled": lambda state: "cancel",
    "Terminated": lambda state: "terminate",  # an administrator ended it
    "Expired": lambda state: "expire",
    "Released": lambda state: "release",  # its user ended it early
    "PlacementChanged": lambda state: "replace",  # the Scheduler's answer to a lost node
    # An extension's own negotiation, while the reservation stands (its state does not change).
    "ExtensionOffered": lambda state: "extend",
    "ExtensionRejected": lambda state: "extend",
    "ExtensionConfirmed": lambda state: "confirm_extension",
    "ExtensionDeclined": lambda state: "decline_extension",
    "ExtensionLapsed": lambda state: "expire_extension",
}
# The state each event leaves the reservation in (absent: the state does not change).
STATE_AFTER = {
    "ProposalSubmitted": State.SUBMITTED,
    "Accepted": State.ACCEPTED,
    "CounterOffered": State.COUNTERED,
    "Rejected": State.REJECTED,
    "CounterAccepted": State.ACCEPTED,
    "Declined": State.REJECTED,
    "Confirmed": State.CONFIRMED,
    "OfferExpired": State.EXPIRED,
    "Activated": State.ACTIVATED,
    "Cancelled": State.CANCELLED,
    "Terminated": State.CANCELLED,
    "Expired": State.EXPIRED,
    "Released": State.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class EventRef:
    """Where an event is in the log, to show it as evidence."""

    notification_id: int
    originator_id: Any
    version: int
    topic: str
    at: datetime | None
    label: str = ""

    def __str__(self) -> str:
        name = self.topic.rpartition(":")[2]
        when = f" at {self.at.isoformat()}" if self.at else ""
        who = self.label or str(self.originator_id)[:8]
        return f"#{self.notification_id} {name} v{self.version} of {who}{when}"


@dataclass(frozen=True, slots=True)
class Violation:
    promise: str
    message: str
    evidence: tuple[EventRef, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"promise": self.promise, "message": self.message, "evidence": [str(e) for e in self.evidence]}


@dataclass
class Report:
    source: str = ""
    events: int = 0
    first_id: int | None = None
    last_id: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    aggregates: Counter = field(default_factory=Counter)
    reservation_states: Counter = field(default_factory=Counter)
    bookings: int = 0
    holds: int = 0
    instances_ran: int = 0
    explained: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, str] = field(default_factory=dict)  # promise -> what was checked
    violations: list[Violation] = field(default_factory=list)
    chain: str = GENESIS  # the running digest of the log as read
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def by_promise(self) -> dict[str, list[Violation]]:
        grouped: dict[str, list[Violation]] = defaultdict(list)
        for v in self.violations:
            grouped[v.promise].append(v)
        return grouped

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "events": self.events,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "first_at": self.first_at.isoformat() if self.first_at else None,
            "last_at": self.last_at.isoformat() if self.last_at else None,
            "aggregates": dict(self.aggregates),
            "reservation_states": dict(self.reservation_states),
            "bookings": self.bookings,
            "holds": self.holds,
            "instances_ran": self.instances_ran,
            "chain": {"notification_id": self.last_id, "sha256": self.chain},
            "checked": self.checked,
            "explained": self.explained,
            "notes": self.notes,
            "violations": [v.as_dict() for v in self.violations],
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate),
        }

    def render(self, max_per_promise: int = 20) -> str:
        lines = [f"PEX audit of {self.source}" if self.source else "PEX audit"]
        span = f" (#{self.first_id}–#{self.last_id})" if self.first_id is not None else ""
        when = f", {self.first_at:%Y-%m-%d %H:%M} – {self.last_at:%Y-%m-%d %H:%M} UTC" if self.first_at else ""
        lines.append(f"  {self.events} events{span}{when}")
        if self.aggregates:
            lines.append("  aggregates: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.aggregates.items())))
        if self.reservation_states:
            lines.append("  reservations: " + ", ".join(f"{s} {n}" for s, n in sorted(self.reservation_states.items())))
        lines.append(f"  bookings recorded: {self.bookings}, holds: {self.holds}, instances that ran: {self.instances_ran}")
        if self.last_id is not None:
            lines.append(f"  log chain at #{self.last_id}: {self.chain}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        for item in self.explained:
            lines.append(f"  explained: {item}")
        grouped = self.by_promise()
        lines.append("checks")
        for promise in PROMISES:
            found = grouped.get(promise, [])
            if not found and promise not in self.checked:
                continue
            mark = "✗" if found else "✓"
            what = self.checked.get(promise, "")
            lines.append(f"  {mark} {promise}: {what}" + (f" — {len(found)} violation(s)" if found else ""))
            for v in found[:max_per_promise]:
                lines.append(f"      - {v.message}")
                for ref in v.evidence[:8]:
                    lines.append(f"          {ref}")
            if len(found) > max_per_promise:
                lines.append(f"      … and {len(found) - max_per_promise} more")
        verdict = "no violations" if self.ok else f"{len(self.violations)} violation(s)"
        lines.append(f"{verdict}. {self.events} events in {self.seconds:.2f} s ({self.rate:,.0f} events/s)")
        return "\n".join(lines)


# --- the audit ---------------------------------------------------------------------------


@dataclass(slots=True)  # one per booking, reservation or instance of the log: kept small
class Booking:
    node: str
    reservation_id: UUID
    allocation: NodeAllocation
    ref: EventRef
    booked_at: datetime
    released_at: datetime | None = None
    release_ref: EventRef | None = None


@dataclass(slots=True)
class ReservationTrack:
    ref: EventRef
    user_id: str
    state: State = State.INITIATED
    proposal: Terms | None = None
    offer: Offer | None = None
    valid_until: datetime | None = None
    confirmed: EventRef | None = None
    confirmed_offer: Offer | None = None
    instance_ids: tuple[UUID, ...] = ()
    cancelled_at: datetime | None = None  # deleted, terminated or released: its bookings end then
    released_at: datetime | None = None
    activated_at: datetime | None = None
    last: EventRef | None = None
    # An extension offered: (its end, valid until, the nodes that hold it).
    extension: tuple[datetime, datetime, frozenset[str]] | None = None
    # Each extension confirmed: (the event, the new end, the nodes it was offered on).
    extended: list[tuple[EventRef, datetime, frozenset[str]]] = field(default_factory=list)


@dataclass(slots=True)
class InstanceTrack:
    ref: EventRef
    aggregate: Any  # the Instance, replayed here through its own apply
    reservation_id: UUID
    name: str
    start: datetime
    end: datetime  # as it stands: an extension of its reservation moves it (Instance.Extended)
    scheduled_node: str
    scheduled_end: datetime
    running_since: tuple[datetime, str, EventRef] | None = None  # (since, node, event)
    ran: bool = False
    stranded: bool = False  # no node had room for it at some point
    claimed: bool = False  # a worker claimed dispatch work on it
    reasons: list[EventRef] = field(default_factory=list)


class Auditor:
    page_size = 2000

    def __init__(
        self,
        app: Any,
        read_models: Any | None = None,
        until: datetime | None = None,
        until_id: int | None = None,
        expect_chain: tuple[int, str] | None = None,
        grace: timedelta = timedelta(minutes=5),
        source: str = "",
    ):
        """`app` gives the recorder and mapper; `read_models` (a ReadModels) the stored views
        and ledger to compare with. `until` audits the log as it stood at that time (it stops
        at the first event decided later), `until_id` up to that notification id."""
        self.app = app
        self.read_models = read_models
        self.until, self.until_id = until, until_id
        self.expect_chain = expect_chain
        self.grace = grace
        self.report = Report(source=source)
        self.views: tuple[View, ...] = read_model_views(app)
        self.timeline = CapacityTimeline()
        self.index = ReservationIndex()
        self.rebuilt = MemoryStore()
        self.rebuilt.create([t for v in self.views for t in v.tables], [v.name for v in self.views])
        self._pending: list[tuple[Notification, Any]] = []
        self.versions: dict[Any, int] = {}
        self.node_names: dict[Any, str] = {}
        self.node_lost: dict[str, bool] = {}
        self.node_pools: dict[str, str] = {}  # the Xen pool of each node's host
        self.node_drains: dict[str, datetime | None] = {}  # drained from then
        self.capacities: dict[str, list[tuple[datetime, Resources]]] = defaultdict(list)
        self.bookings: dict[tuple[str, UUID], list[Booking]] = defaultdict(list)
        self.allocation_refs: dict[tuple[str, UUID], EventRef] = {}
        self.booking_releases: list[tuple[str, UUID, datetime, EventRef]] = []
        self.reservations: dict[UUID, ReservationTrack] = {}
        self.instances: dict[UUID, InstanceTrack] = {}
        self.instance_moves: set[tuple[UUID, str, datetime]] = set()  # (reservation, node, at)
        # An extension's confirmation → the first event after its save (see _reservation_event).
        self.save_ends: dict[int, int] = {}
        self._saves_open: dict[int, bool] = {}  # → whether an event of another aggregate came since
        self.first_dispatch_at: datetime | None = None  # when a worker first claimed work
        self.credit: dict[Any, Decimal] = {}  # user id → balance, as the credit events move it
        self.charges: dict[UUID, tuple[Any, Decimal, EventRef]] = {}  # reservation → (user, charged, event)
        self.extension_prices: dict[tuple[UUID, datetime], Decimal | None] = {}  # (reservation, confirmed at) → its price
        self.refunded: set[UUID] = set()
        self.credit_events = 0

    # --- driving -------------------------------------------------------------------------

    def run(self) -> Report:
        try:
            return self._run()
        finally:
            gc.unfreeze()  # what the pages froze (below) goes back to the collector

    def _run(self) -> Report:
        began = time.monotonic()
        report = self.report
        stored = self._stored_views()
        ledger = LedgerCheck(self)  # reads how far the ledger is sealed before the log's head
        head = self.app.recorder.max_notification_id() or 0
        if self.until_id is not None:
            head = min(head, self.until_id)
        compare_at = {name: pos for name, (pos, _) in stored.items() if pos > 0}
        chain = GENESIS
        truncated = False
        for notification in self._notifications(head):
            try:
                event = self.app.mapper.to_domain_event(notification)
            except Exception as error:  # an altered event may no longer decode
                event = None
                self.violate("decoding", f"event #{notification.id} cannot be decoded: {error}", self._raw_ref(notification))
            if event is not None and self.until is not None and event_time(event) > self.until:
                truncated = True
                break
            for name in [n for n, pos in compare_at.items() if notification.id > pos]:
                self._compare_view(name, compare_at.pop(name), stored[name][1])
            digest = event_digest(notification)
            chain = chained(chain, digest)
            ledger.see(notification, digest)
            if self.expect_chain and self.expect_chain[0] == notification.id:
                self._check_expected_chain(self.expect_chain, chain)
                self.expect_chain = None
            self._account(notification, event)
            if event is not None:
                try:
                    self._check(notification, event)
                except Exception as error:  # an event of a shape no check expects: report it, go on
                    self.violate("decoding", f"event #{notification.id} could not be checked: {error!r}", self._raw_ref(notification))
            self._pending.append((notification, event))
            if len(self._pending) >= self.page_size:
                self._flush()
                # What the audit has rebuilt so far stays until its end: kept out of the
                # collector's full passes, which would each walk all of it again (a third of the
                # audit's time at 400,000 events). What a page makes and drops is still
                # collected; `run` gives the rest back to the collector when it ends.
                gc.freeze()
        self._flush()
        ledger.finish(truncated=truncated)
        report.chain = chain
        last = report.last_id or 0
        for name, pos in compare_at.items():
            if truncated or self.until_id is not None:
                report.notes.append(f"the stored {name} view is at #{pos}, beyond the audited log (#{last}): not compared")
                continue
            if pos > last:
                report.notes.append(f"the stored {name} view is at #{pos}, beyond the log's last event #{last}: were events removed?")
            self._compare_view(name, pos, stored[name][1])
        if self.expect_chain:
            self.violate("ledger", f"no event #{self.expect_chain[0]} in the audited log to check the expected chain against")
        self._finish(truncated or self.until_id is not None)
        report.seconds = time.monotonic() - began
        return report

    def _notifications(self, head: int) -> Iterator[Notification]:
        start = 0
        while start < head:
            page = self.app.recorder.select_notifications(start=start, limit=self.page_size, inclusive_of_start=False)
            for n in page:
                if n.id > head:
                    return
                yield n
            if len(page) < self.page_size:
                return
            start = page[-1].id

    def _flush(self) -> None:
        if not self._pending:
            return
        names = [v.name for v in self.views]
        with self.rebuilt.batch(self.rebuilt.positions(names)) as batch:
            for notification, event in self._pending:
                if event is None:
                    continue
                for view in self.views:
                    try:
                        view.apply(batch, event, notification)
                    except Exception as error:  # a log the views cannot fold: say so, go on
                        self.violate("read models", f"the {view.name} view cannot fold event #{notification.id}: {error!r}", self._raw_ref(notification))
            for name in names:
                batch.track(name, self._pending[-1][0].id)
        self._pending.clear()

    def violate(self, promise: str, message: str, *evidence: EventRef | None) -> None:
        self.report.violations.append(Violation(promise, message, tuple(e for e in evidence if e is not None)))

    # --- every event ---------------------------------------------------------------------

    def _raw_ref(self, n: Notification) -> EventRef:
        oid = n.originator_id
        label = self.node_names.get(oid) or (self.instances[oid].name if isinstance(oid, UUID) and oid in self.instances else "")
        if not label and oid in self.reservations:
            label = "reservation " + short(oid)
        return EventRef(n.id, oid, n.originator_version, n.topic, None, label)

    def ref(self, n: Notification, event: Any) -> EventRef:
        return EventRef(n.id, n.originator_id, n.originator_version, n.topic, event_time(event), self._label(event))

    def _label(self, event: Any) -> str:
        oid = event.originator_id
        if oid in self.node_names:
            return self.node_names[oid]
        if isinstance(event, Node.Registered):
            return event.name
        if oid in self.instances:
            return self.instances[oid].name
        if isinstance(event, Instance.Scheduled):
            return event.name
        if isinstance(event, Reservation.Event):
            return "reservation " + str(oid).upper()[:8]
        return str(oid)[:8]

    def _account(self, n: Notification, event: Any) -> None:
        report = self.report
        report.events += 1
        report.first_id = report.first_id if report.first_id is not None else n.id
        report.last_id = n.id
        if event is not None:
            at = event_time(event)
            report.first_at = report.first_at or at
            report.last_at = at if report.last_at is None or at > report.last_at else report.last_at
        expected = self.versions.get(n.originator_id, 0) + 1
        if n.originator_version != expected:
            what = f"version {n.originator_version} where {expected} was due"
            missing = "; an event is missing" if n.originator_version > expected else ""
            self.violate("versions", f"{self._label_raw(n, event)}: {what}{missing}", self._ref_any(n, event))
        elif expected == 1 and event is not None and not isinstance(event, CanInitAggregate):
            self.violate("versions", f"{self._label_raw(n, event)}: its first event does not create it", self._ref_any(n, event))
        self.versions[n.originator_id] = max(n.originator_version, self.versions.get(n.originator_id, 0))
        if event is not None and n.originator_version == 1:
            report.aggregates[type(event).__qualname__.partition(".")[0]] += 1

    def _ref_any(self, n: Notification, event: Any) -> EventRef:
        return self.ref(n, event) if event is not None else self._raw_ref(n)

    def _label_raw(self, n: Notification, event: Any) -> str:
        return self._label(event) if event is not None else str(n.originator_id)

    def _check(self, n: Notification, event: Any) -> None:
        if self._saves_open and not isinstance(event, Reservation.Event):
            self._saves_open = dict.fromkeys(self._saves_open, True)
        if isinstance(event, Node.Event):
            self._node_event(n, event)
        elif isinstance(event, Reservation.Event):
            self._reservation_event(n, event)
        elif is_instance_event(event):
            self._instance_event(n, event)
        elif isinstance(event, (User.CreditGranted, User.CreditCharged, User.ExtensionCharged, User.CreditRefunded)):
            self._credit_event(n, event)
        self.index.apply(event)

    # --- credit --------------------------------------------------------------------------

    def _credit_event(self, n: Notification, e: Any) -> None:
        ref = self.ref(n, e)
        self.credit_events += 1
        uid = e.originator_id
        before = self.credit.get(uid, Decimal("0.00"))
        moved = -e.amount if isinstance(e, (User.CreditCharged, User.ExtensionCharged)) else e.amount
        if before + moved != e.balance:
            self.violate("credit", f"user {short(uid)}: {before} {'+' if moved >= 0 else '-'} {abs(moved)} is not the balance {e.balance} recorded", ref)
        if e.balance < 0:
            self.violate("credit", f"user {short(uid)}: the balance went below zero, to {e.balance}", ref)
        self.credit[uid] = e.balance
        if isinstance(e, User.CreditCharged):
            self._check_charge(uid, e, ref)
        elif isinstance(e, User.ExtensionCharged):
            self._check_extension_charge(uid, e, ref)
        elif isinstance(e, User.CreditRefunded):
            self._check_refund(uid, e, ref)

    def _check_charge(self, uid: Any, e: Any, ref: EventRef) -> None:
        rid = e.reservation_id
        track = self.reservations.get(rid)
        if rid in self.charges:
            self.violate("credit", f"reservation {short(rid)} was charged twice", self.charges[rid][2], ref)
        elif track is None or track.confirmed is None or track.confirmed_offer is None or track.confirmed.at != e.at:
            self.violate("credit", f"user {short(uid)} was charged {e.amount} for reservation {short(rid)}, not confirmed with it", ref)
        elif uid not in (user_id(track.user_id), legacy_user_id(track.user_id)):
            self.violate("credit", f"reservation {short(rid)} of {track.user_id} was charged to another user", track.confirmed, ref)
        elif track.confirmed_offer.terms.price != e.amount:
            self.violate(
                "credit", f"reservation {short(rid)} was confirmed at {track.confirmed_offer.terms.price} and charged {e.amount}",
                track.confirmed, ref,
            )
        self.charges.setdefault(rid, (uid, e.amount, ref))

    def _check_extension_charge(self, uid: Any, e: Any, ref: EventRef) -> None:
        """An extension is charged its price, to the user charged for the reservation, in the
        save that confirmed it; the reservation's charge grows by it."""
        rid = e.reservation_id
        charge = self.charges.get(rid)
        confirmed = self.extension_prices.get((rid, e.at))
        if charge is None or charge[0] != uid:
            self.violate("credit", f"user {short(uid)} was charged {e.amount} for extending reservation {short(rid)}, not charged to them", ref)
            return
        if confirmed is None:
            self.violate("credit", f"user {short(uid)} was charged {e.amount} for extending reservation {short(rid)}, not extended then", ref)
        elif confirmed != e.amount:
            self.violate("credit", f"reservation {short(rid)} was extended for {confirmed} and charged {e.amount}", ref)
        self.charges[rid] = (uid, charge[1] + e.amount, charge[2])

    def _check_refund(self, uid: Any, e: Any, ref: EventRef) -> None:
        rid = e.reservation_id
        charge = self.charges.get(rid)
        track = self.reservations.get(rid)
        if charge is None or charge[0] != uid:
            self.violate("credit", f"user {short(uid)} was refunded {e.amount} for reservation {short(rid)}, never charged to them", ref)
            return
        if rid in self.refunded:
            self.violate("credit", f"reservation {short(rid)} was refunded twice", ref)
            return
        self.refunded.add(rid)
        ended = track.cancelled_at if track is not None else None
        if track is None or track.confirmed_offer is None or ended != e.at:
            self.violate("credit", f"reservation {short(rid)} was refunded without ending early in the same save", charge[2], ref)
            return
        terms = track.confirmed_offer.terms
        end = track.extended[-1][1] if track.extended else terms.end  # as extended, if it was
        due = charge[1] - used_part(charge[1], terms.start, end, ended)
        if e.amount != due:
            self.violate("credit", f"reservation {short(rid)} ended at {ended.isoformat()}: {due} was due back, {e.amount} refunded", charge[2], ref)

    def _check_unrefunded(self) -> None:
        """A charged reservation that ended before its end (released, deleted, terminated) was refunded."""
        for rid, (_, charged, ref) in self.charges.items():
            track = self.reservations.get(rid)
            if rid in self.refunded or track is None or track.cancelled_at is None or track.confirmed_offer is None:
                continue
            if track.cancelled_at < track.confirmed_offer.terms.end:
                self.violate("credit", f"reservation {short(rid)} ended early and its charge of {charged} was never refunded", ref)

    # --- capacity ------------------------------------------------------------------------

    def _node_event(self, n: Notification, e: Any) -> None:
        ref = self.ref(n, e)
        if isinstance(e, Node.Registered):
            self.node_names[e.originator_id] = e.name
            self.node_lost[e.name] = False
            self.node_pools[e.name] = e.pool
            self.capacities[e.name].append((e.at, e.capacity))
            self.timeline.apply(e)
            return
        name = self.node_names.get(e.originator_id)
        if name is None:
            self.timeline.apply(e)
            return
        if isinstance(e, Node.Resized):
            self.capacities[name].append((e.at, e.capacity))
        elif isinstance(e, (Node.Lost, Node.Returned)):
            self.node_lost[name] = isinstance(e, Node.Lost)
        elif isinstance(e, (Node.DrainScheduled, Node.DrainCancelled)):
            self.node_drains[name] = e.drain_from if isinstance(e, Node.DrainScheduled) else None
        elif isinstance(e, (Node.CapacityHeld, Node.CapacityBooked)):
            self._judge_at_decision(name, e, ref)
            key = (name, e.reservation_id)
            self._end_booking(key, e.at, ref)  # a hold or booking replaces this reservation's own
            if isinstance(e, Node.CapacityBooked):
                self.report.bookings += 1
                allocation = NodeAllocation(e.reservation_id, e.start, e.end, e.instances, e.per_instance)
                self.bookings[key].append(Booking(name, e.reservation_id, allocation, ref, e.at))
            else:
                self.report.holds += 1
            self.allocation_refs[key] = ref
        elif isinstance(e, (Node.HoldReleased, Node.BookingReleased)):
            key = (name, e.reservation_id)
            if isinstance(e, Node.BookingReleased):
                self.booking_releases.append((name, e.reservation_id, e.at, ref))
            self._end_booking(key, e.at, ref)
        self.timeline.apply(e)

    def _end_booking(self, key: tuple[str, UUID], at: datetime, ref: EventRef) -> None:
        for booking in self.bookings.get(key, ()):
            if booking.released_at is None:
                booking.released_at, booking.release_ref = at, ref

    def _judge_at_decision(self, name: str, e: Any, ref: EventRef) -> None:
        """The hold or booking must fit beside the bookings and live holds of its decision time."""
        if self.node_lost.get(name):
            self.violate("capacity", f"{name} took a {kind_of(e)} for reservation {short(e.reservation_id)} while lost", ref)
        drain = self.node_drains.get(name)
        if drain is not None and e.end > drain:
            own = self.timeline.nodes[name].bookings.get(e.reservation_id)
            shrinks = (isinstance(e, Node.CapacityBooked) and own is not None and own.start <= e.start
                       and e.end <= own.end and (e.per_instance * e.instances).fits_in(own.demand))
            if not shrinks:
                self.violate("capacity", f"{name} took a {kind_of(e)} for reservation {short(e.reservation_id)} until "
                             f"{e.end.isoformat()} while drained from {drain.isoformat()}", ref)
        start = max(e.start, e.at)
        if start >= e.end:
            return
        demand = e.per_instance * e.instances
        free = self.timeline.nodes[name].free(start, e.end, e.at, e.reservation_id)
        if not demand.fits_in(free):
            others = [
                self.allocation_refs.get((name, a.reservation_id))
                for a in self.timeline.allocations(name, e.at)
                if a.reservation_id != e.reservation_id and a.start < e.end and a.end > start
            ]
            self.violate(
                "capacity",
                f"{name} was over capacity when it took a {kind_of(e)} of {e.instances}× {fmt(e.per_instance)} for "
                f"reservation {short(e.reservation_id)} over {span(start, e.end)}: it needed {fmt(demand)}, "
                f"only {fmt(free)} was free at {e.at.isoformat()}",
                ref,
                *[o for o in others if o is not None][:6],
            )

    def _check_booked_demand(self) -> None:
        """Sweep each node's bookings in force over time against the capacity in force."""
        by_node: dict[str, list[Booking]] = defaultdict(list)
        for (node, _), bookings in self.bookings.items():
            by_node[node].extend(bookings)
        for node, bookings in by_node.items():
            points: list[tuple[datetime, int, Any]] = []
            for at, capacity in self.capacities[node]:
                points.append((at, 1, capacity))
            for b in bookings:
                start = max(b.allocation.start, b.booked_at)
                end = min(b.allocation.end, b.released_at) if b.released_at else b.allocation.end
                if start < end:
                    points.append((start, 2, b))
                    points.append((end, 0, b))
            points.sort(key=lambda p: (p[0], p[1]))
            capacity, level, live = Resources(), Resources(), set()
            over = False
            i = 0
            while i < len(points):
                t = points[i][0]
                while i < len(points) and points[i][0] == t:
                    _, kind, item = points[i]
                    if kind == 1:
                        capacity = item
                    elif kind == 2:
                        level = level + item.allocation.demand
                        live.add(id(item))
                    else:
                        level = level - item.allocation.demand
                        live.discard(id(item))
                    i += 1
                if not level.fits_in(capacity):
                    if not over:
                        evidence = [b.ref for b in bookings if id(b) in live]
                        self.violate(
                            "capacity",
                            f"{node} is booked above capacity from {t.isoformat()}: {fmt(level)} booked, capacity {fmt(capacity)}",
                            *evidence[:8],
                        )
                    over = True
                else:
                    over = False

    # --- protocol and bookings -----------------------------------------------------------

    def _reservation_event(self, n: Notification, e: Any) -> None:
        ref = self.ref(n, e)
        rid = e.originator_id
        name = type(e).__name__
        # A save that books records its reservation's events first, then its nodes' and the
        # rest, and no other reservation's: a reservation event after those begins a later save,
        # which may share the instant (a manual clock, a fast user).
        for confirmed, past_its_reservation in list(self._saves_open.items()):
            if past_its_reservation:
                self.save_ends[confirmed] = n.id
                del self._saves_open[confirmed]
        if isinstance(e, Reservation.ExtensionConfirmed):
            self._saves_open[n.id] = False
        if isinstance(e, Reservation.Initiated):
            self.reservations[rid] = ReservationTrack(ref, e.user_id, last=ref)
            return
        track = self.reservations.get(rid)
        if track is None:
            self.violate("protocol", f"reservation {short(rid)}: {name} before it was initiated", ref)
            return
        state = track.state
        move_of = EVENT_MOVES.get(name)
        if move_of is None:
            self.violate("protocol", f"reservation {short(rid)}: no move is known for {name}; teach pex.projections.audit.EVENT_MOVES", ref)
            return
        move = move_of(state)
        if move not in LEGAL_MOVES[state]:
            self.violate("protocol", f"reservation {short(rid)}: {move} is not a legal move while {state.value}", track.last, ref)
        at = e.at
        if name in ("Confirmed", "CounterAccepted") and (track.valid_until is None or track.valid_until <= at):
            lapsed = track.valid_until.isoformat() if track.valid_until else "before"
            self.violate("protocol", f"reservation {short(rid)}: {move} of an offer that lapsed at {lapsed}", ref)
        if name == "OfferExpired" and track.valid_until is not None and track.valid_until > at:
            self.violate("protocol", f"reservation {short(rid)}: offer expired while valid until {track.valid_until.isoformat()}", ref)
        if name == "Activated" and track.offer is not None and track.offer.terms.end <= at:
            self.violate("protocol", f"reservation {short(rid)}: activated after its end", ref)
        if name == "Expired" and track.offer is not None and track.offer.terms.end > at:
            self.violate("protocol", f"reservation {short(rid)}: expired before its end {track.offer.terms.end.isoformat()}", ref)
        if name == "Released" and track.offer is not None and track.offer.terms.end <= at:
            self.violate("protocol", f"reservation {short(rid)}: released after its end {track.offer.terms.end.isoformat()}", ref)
        if name in ("ExtensionConfirmed", "ExtensionDeclined", "ExtensionLapsed") and track.extension is None:
            self.violate("protocol", f"reservation {short(rid)}: {name} with no extension offered", track.last, ref)
        elif name == "ExtensionConfirmed" and track.extension is not None:
            offered, valid_until, _ = track.extension
            if valid_until <= at:
                self.violate("protocol", f"reservation {short(rid)}: extension confirmed after its offer lapsed at {valid_until.isoformat()}", ref)
            if e.end != offered:
                self.violate("protocol", f"reservation {short(rid)}: extension confirmed to {e.end.isoformat()}, offered to {offered.isoformat()}", ref)
        elif name == "ExtensionLapsed" and track.extension is not None and track.extension[1] > at:
            self.violate("protocol", f"reservation {short(rid)}: extension offer lapsed while valid until {track.extension[1].isoformat()}", ref)
        if name == "ExtensionOffered" and track.offer is not None and not track.offer.terms.end < e.end <= e.asked_end:
            self.violate("protocol", f"reservation {short(rid)}: an extension offered to {e.end.isoformat()}, not after its end and up to the end asked", ref)
        if name == "Accepted" and track.proposal is not None:
            asked, offered = track.proposal, e.offer.terms
            if not asked.allows(offered):
                self.violate(
                    "protocol",
                    f"reservation {short(rid)}: ACCEPT changed the proposed terms beyond the freedom they gave (a COUNTER should have)",
                    track.last, ref,
                )
        # the state and what stands after the event, as the aggregate keeps them
        if name == "ProposalSubmitted":
            track.proposal = e.terms
        elif name in ("Accepted", "CounterOffered"):
            track.offer, track.valid_until = e.offer, e.valid_until
        elif name == "Rejected":
            track.offer, track.valid_until = None, None
        elif name in ("Declined", "OfferExpired", "Cancelled", "Terminated"):
            track.valid_until = None
            if name in ("Cancelled", "Terminated"):
                track.cancelled_at = at
        elif name == "Released":
            track.cancelled_at = track.released_at = at
        elif name == "Confirmed":
            track.valid_until, track.confirmed, track.confirmed_offer = None, ref, track.offer
            track.instance_ids = tuple(e.instance_ids)
        elif name == "Activated":
            track.activated_at = at
        elif name == "ExtensionOffered":
            track.extension = (e.end, e.valid_until, frozenset(a.node for a in e.placement))
        elif name == "ExtensionConfirmed" and track.offer is not None:
            track.offer = replace(track.offer, terms=track.offer.terms.but(end=e.end, price=e.price))
            track.extended.append((ref, e.end, track.extension[2] if track.extension else frozenset()))
            self.extension_prices[(rid, at)] = e.extension_price
        if name in ("ExtensionRejected", "ExtensionConfirmed", "ExtensionDeclined", "ExtensionLapsed") or name in STATE_AFTER:
            track.extension = None
        track.state, track.last = STATE_AFTER.get(name, state), ref

    def _check_confirmed_bookings(self) -> None:
        track: ReservationTrack | None  # the later loops look reservations up
        for rid, track in self.reservations.items():
            if track.confirmed is None:
                continue
            offer = track.confirmed_offer
            if offer is None:
                self.violate("bookings", f"reservation {short(rid)} was confirmed without an offer", track.confirmed)
                continue
            terms = offer.terms
            if sum(a.instances for a in offer.placement) != terms.instances or len(track.instance_ids) != terms.instances:
                self.violate(
                    "bookings",
                    f"reservation {short(rid)}: {terms.instances} instances agreed, {sum(a.instances for a in offer.placement)} "
                    f"placed, {len(track.instance_ids)} scheduled",
                    track.confirmed,
                )
            for a in offer.placement:
                found = [
                    b
                    for b in self.bookings.get((a.node, rid), ())
                    if b.booked_at == track.confirmed.at
                    and (b.allocation.start, b.allocation.end, b.allocation.instances, b.allocation.per_instance)
                    == (terms.start, terms.end, a.instances, offer.per_instance)
                ]
                if not found:
                    self.violate(
                        "bookings",
                        f"reservation {short(rid)} was confirmed without a booking of {a.instances}× {fmt(offer.per_instance)} "
                        f"on {a.node} over {span(terms.start, terms.end)}",
                        track.confirmed,
                        *[b.ref for b in self.bookings.get((a.node, rid), ())][:4],
                    )
        self._check_extension_bookings()
        for (node, rid), bookings in self.bookings.items():
            track = self.reservations.get(rid)
            confirmed = track.confirmed if track is not None else None
            extended_at = {ref.at for ref, *_ in track.extended} if track is not None else set()
            for b in bookings:
                if b.booked_at in extended_at:
                    # Its extension was confirmed then (checked by _check_extension_bookings),
                    # moving instances that had not started to other nodes, or not.
                    continue
                if (rid, node, b.booked_at) in self.instance_moves:
                    agreed = track.confirmed_offer if track is not None else None
                    if agreed is not None and (b.allocation.start, b.allocation.end, b.allocation.per_instance) != (
                        agreed.terms.start, agreed.terms.end, agreed.per_instance
                    ):
                        self.violate(
                            "bookings",
                            f"reservation {short(rid)} was booked again on {node} when an instance moved, over "
                            f"{span(b.allocation.start, b.allocation.end)} × {fmt(b.allocation.per_instance)}, not as agreed",
                            b.ref,
                        )
                    continue  # an instance of it was moved here at that moment
                if track is None or confirmed is None or b.booked_at != confirmed.at:
                    state = track.state.value if track else "unknown"
                    self.violate("bookings", f"{node} booked capacity for reservation {short(rid)} ({state}) without a confirmation at that time", b.ref)
                elif track.confirmed_offer is not None and node not in track.confirmed_offer.nodes:
                    self.violate("bookings", f"reservation {short(rid)} is booked on {node}, which its offer did not name", b.ref, confirmed)
        for (node, rid), bookings in self.bookings.items():
            track = self.reservations.get(rid)
            released = track.released_at if track is not None else None
            if released is None:
                continue
            for b in bookings:
                if b.allocation.end > released and (b.released_at is None or b.released_at > released):
                    self.violate("bookings", f"reservation {short(rid)} was released, but {node} kept its booking", b.ref)
        self._check_one_pool_each()
        for node, rid, at, ref in self.booking_releases:
            track = self.reservations.get(rid)
            if (rid, node, at) in self.instance_moves:
                continue  # an instance of it moved away from there, or was stranded
            if track is None or track.cancelled_at != at:
                state = track.state.value if track else "unknown"
                self.violate("bookings", f"{node} released the booking of reservation {short(rid)} ({state}) without its deletion at that time", ref)

    def _check_one_pool_each(self) -> None:
        """A reservation's instances all live in one pool (pex.domain.pool): every booking it
        ever had is on nodes of one pool."""
        pools: defaultdict[UUID, dict[str, Booking]] = defaultdict(dict)
        for (node, rid), bookings in self.bookings.items():
            if bookings:
                pools[rid].setdefault(self.node_pools.get(node, DEFAULT_POOL), bookings[0])
        for rid, first in pools.items():
            if len(first) > 1:
                self.violate(
                    "bookings", f"reservation {short(rid)} is booked in the pools {', '.join(sorted(first))}: "
                    "its instances live in one", *[b.ref for _, b in sorted(first.items())][:4])

    def _check_extension_bookings(self) -> None:
        """Every confirmed extension booked all the reservation's instances from its start to
        exactly the new end, at the moment of its confirmation, and nothing else then."""
        by_reservation: dict[UUID, list[Booking]] = defaultdict(list)
        for (_, rid), bookings in self.bookings.items():
            by_reservation[rid].extend(bookings)
        for rid, track in self.reservations.items():
            if not track.extended or track.confirmed_offer is None:
                continue
            terms = track.confirmed_offer.terms
            for ref, end, nodes in track.extended:
                # Booked in the extension's save: recorded after it (the reservation is saved
                # first), before the next save that recorded a reservation event.
                ends = self.save_ends.get(ref.notification_id)
                booked = [
                    b for b in by_reservation.get(rid, ())
                    if b.booked_at == ref.at and ref.notification_id < b.ref.notification_id
                    and (ends is None or b.ref.notification_id < ends)
                ]
                # On the nodes the offer held, from the start to the new end: some of them, where
                # instances not started yet moved for it, new to the reservation.
                wrong = [b for b in booked if (b.allocation.start, b.allocation.end) != (terms.start, end)
                         or b.node not in nodes]
                instances = sum(b.allocation.instances for b in booked)
                if wrong or instances != terms.instances:
                    self.violate(
                        "bookings",
                        f"reservation {short(rid)} was extended to {end.isoformat()} with {instances} of its "
                        f"{terms.instances} instances booked over {span(terms.start, end)}"
                        + (f", some not on the nodes offered ({', '.join(sorted(nodes))})"
                           if any(b.node not in nodes for b in booked) else ""),
                        ref, *[b.ref for b in (wrong or booked)][:4],
                    )

    # --- instances -----------------------------------------------------------------------

    def _instance_event(self, n: Notification, e: Any) -> None:
        """Follow each instance's status and node by replaying its events through the Instance
        aggregate's own apply: a run starts when it becomes RUNNING and ends when it stops
        being so, or moves to another node. A move (even back to the same node) or a STRANDED
        instance also makes the booking changes of that moment legitimate (the Scheduler's
        answer to a lost node)."""
        ref = self.ref(n, e)
        if isinstance(e, Instance.Scheduled):
            self.instances[e.originator_id] = InstanceTrack(
                ref, e.mutate(None), e.reservation_id, e.name, e.start, e.end, scheduled_node=e.node, scheduled_end=e.end
            )
            return
        instance = self.instances.get(e.originator_id)
        if instance is None:
            return
        aggregate = instance.aggregate
        before = (status_of(aggregate), aggregate.node)
        if isinstance(e, Instance.Repacked):
            self._judge_repack(instance, e, ref)
        try:
            e.mutate(aggregate)
        except Exception as error:  # out of order (versions are judged elsewhere): skip it
            self.violate("instances", f"instance {instance.name}: {type(e).__name__} does not apply: {error}", ref)
            return
        status, node = status_of(aggregate), aggregate.node
        at = event_time(e)
        if isinstance(e, Instance.Extended):
            track = self.reservations.get(instance.reservation_id)
            if track is None or not any(end == e.end and r.at == at for r, end, _ in track.extended):
                self.violate("instances", f"instance {instance.name} was extended to {e.end.isoformat()} without its reservation's extension", ref)
            instance.end = aggregate.end
        if isinstance(e, Instance.DispatchClaimed):
            instance.claimed = True
            if self.first_dispatch_at is None:
                self.first_dispatch_at = at
        if isinstance(getattr(e, "reason", None), str) and e.reason:
            instance.reasons.append(ref)
        # A Moved back onto the node it was stranded from (returned) changes no node, but books;
        # so does a Repacked (a re-pack that made room for another reservation).
        moved = node != before[1] or isinstance(e, (Instance.Moved, Instance.Repacked))
        if isinstance(e, (Instance.MigrationPlanned, Instance.MigrationAbandoned)):
            # Booked on the node it is to migrate to, or given back there: legitimate then.
            self.instance_moves.add((instance.reservation_id, e.to_node, at))
        if moved or (status == "STRANDED" and before[0] != "STRANDED"):
            self.instance_moves.add((instance.reservation_id, before[1], at))
            self.instance_moves.add((instance.reservation_id, node, at))
        instance.stranded = instance.stranded or status == "STRANDED"
        was_running, runs = before[0] == "RUNNING", status == "RUNNING"
        if was_running and (not runs or node != before[1]):
            self._end_run(instance, at, ref)
        if runs and (not was_running or node != before[1]):
            instance.running_since = (at, node, ref)
            if not instance.ran:
                instance.ran = True
                self.report.instances_ran += 1

    def _judge_repack(self, instance: InstanceTrack, e: Any, ref: EventRef) -> None:
        """A re-pack moves only an instance that is scheduled, not started, with no VM made."""
        aggregate = instance.aggregate
        problems = []
        if status_of(aggregate) != "SCHEDULED":
            problems.append(f"it was {status_of(aggregate)}")
        if getattr(aggregate, "vm_uuid", None) or getattr(aggregate, "vm_may_exist", False):
            problems.append("a VM had been made for it")
        if e.at >= instance.start:
            problems.append(f"its start {instance.start.isoformat()} had come")
        if problems:
            self.violate(
                "instances",
                f"instance {instance.name} was re-packed from {e.from_node} to {e.to_node}, but " + " and ".join(problems),
                ref,
            )

    def _check_scheduled_instances(self) -> None:
        for iid, instance in self.instances.items():
            track = self.reservations.get(instance.reservation_id)
            if track is None or track.confirmed is None or iid not in track.instance_ids:
                self.violate("instances", f"instance {instance.name} was scheduled without a confirmed reservation listing it", instance.ref)
            elif track.confirmed_offer is not None:
                terms = track.confirmed_offer.terms
                node, interval = instance.scheduled_node, (instance.start, instance.scheduled_end)
                if node not in track.confirmed_offer.nodes or interval != (terms.start, terms.end):
                    self.violate(
                        "instances",
                        f"instance {instance.name} was scheduled on {node} over {span(*interval)}, not as booked",
                        instance.ref,
                    )

    def _check_instances_that_never_ran(self, end_of_log: datetime | None) -> None:
        """Every instance that should have run by `grace` before the end of the log ran."""
        if end_of_log is None or self.first_dispatch_at is None:
            return
        for instance in self.instances.values():
            track = self.reservations.get(instance.reservation_id)
            if instance.ran or track is None or track.confirmed_offer is None:
                continue
            if track.confirmed_offer.terms.auto_start:
                due = instance.start
            elif track.activated_at is not None:
                due = max(instance.start, track.activated_at)
            else:
                continue  # never activated: its VMs were not to run
            if due + self.grace < self.first_dispatch_at and not instance.claimed:
                continue  # overdue before any worker ran against this store
            aggregate = instance.aggregate
            ended_by = [track.cancelled_at] if track.cancelled_at is not None else []
            if due + self.grace > min([end_of_log, instance.end, *ended_by]):
                continue  # not yet overdue when the log, the interval or the reservation ended
            if getattr(aggregate, "delete_requested", False) or status_of(aggregate) in ("CANCELLED", "DELETED"):
                continue
            message = f"instance {instance.name} should have run from {due.isoformat()} and never did"
            error = getattr(aggregate, "last_error", None)
            if error:
                message += f" (last error: {error})"
            if instance.stranded:
                self.report.explained.append(f"{message} — it was stranded: no node had room")
            else:
                self.violate("instances", message, instance.ref)

    def _end_run(self, instance: InstanceTrack, until: datetime, ref: EventRef | None) -> None:
        assert instance.running_since is not None  # only a run that is going ends
        since, node, started = instance.running_since
        instance.running_since = None
        problems = []
        if since < instance.start:
            problems.append(f"started at {since.isoformat()}, before its reservation's start {instance.start.isoformat()}")
        end = self._end_of(instance)
        if until > end + self.grace:
            problems.append(f"still ran at {until.isoformat()}, after its reservation's end {end.isoformat()}")
        booked = any(
            b.booked_at <= since and (b.released_at is None or b.released_at > since)
            for b in self.bookings.get((node, instance.reservation_id), ())
        )
        last = ref.notification_id if ref else 10**18
        if not booked:
            problems.append(f"ran on {node}, where its reservation had no booking then")
            # The end that removes a misplaced VM (its reason: the reservation ended) does not
            # explain where it ran; only a reason given while it ran there does.
            last -= 1
        if not problems:
            return
        reasons = [r for r in instance.reasons if started.notification_id <= r.notification_id <= last]
        message = f"instance {instance.name} " + "; ".join(problems)
        if reasons:
            self.report.explained.append(f"{message} — explained by {reasons[0]}")
        else:
            self.violate("instances", message, started, *([ref] if ref else []))

    def _end_of(self, instance: InstanceTrack) -> datetime:
        """When the instance's reservation ended: its interval's end, or its early release."""
        track = self.reservations.get(instance.reservation_id)
        released = track.released_at if track is not None else None
        return instance.end if released is None else min(released, instance.end)

    # --- at the end ----------------------------------------------------------------------

    def _finish(self, truncated: bool) -> None:
        report = self.report
        self._check_booked_demand()
        self._check_confirmed_bookings()
        self._check_scheduled_instances()
        self._check_unrefunded()
        end_of_log = self.until or report.last_at
        for instance in self.instances.values():
            if instance.running_since is not None and end_of_log is not None and end_of_log > self._end_of(instance) + self.grace:
                self._end_run(instance, end_of_log, None)
        self._check_instances_that_never_ran(end_of_log)
        for rid, track in self.reservations.items():
            report.reservation_states[track.state.value] += 1
            if track.state == State.SUBMITTED and not truncated:
                self.violate("protocol", f"reservation {short(rid)}: its last proposal was never answered", track.last)
        self._check_projections()
        report.checked.update(
            {
                "capacity": f"nodes: {len(self.node_names)}, bookings: {report.bookings}, holds: {report.holds}",
                "bookings": f"confirmed reservations: {sum(1 for t in self.reservations.values() if t.confirmed)}",
                "instances": f"instances: {len(self.instances)}, of which ran: {report.instances_ran}",
                "protocol": f"negotiations replayed against LEGAL_MOVES: {len(self.reservations)}",
                "credit": f"credit events: {self.credit_events}, charges: {len(self.charges)}, refunds: {len(self.refunded)}",
                "versions": f"aggregates: {len(self.versions)}",
                "projections": "capacity timeline and reservation index against the rebuilt views",
            }
        )

    def _check_projections(self) -> None:
        """The application's own in-memory projections, rebuilt, agree with the views."""
        self._flush()
        rows = self.rebuilt.rows.get(RESERVATIONS.name, {})
        for rid, entry in self.index.reservations.items():
            row = rows.get((rid,))
            if row is None or row["state"] != entry.state.value:
                self.violate("projections", f"reservation {short(rid)}: the index says {entry.state.value}, the view {row and row['state']}")
            track = self.reservations.get(rid)
            if track is not None and track.state != entry.state:
                self.violate("projections", f"reservation {short(rid)}: the index says {entry.state.value}, the protocol replay {track.state.value}")

    # --- stored views and the ledger -----------------------------------------------------

    def _stored_views(self) -> dict[str, tuple[int, dict[str, dict[Key, bytes]]]]:
        if self.read_models is None:
            self.report.notes.append("no stored read models given: they were not compared")
            return {}
        names = [v.name for v in self.views]
        try:
            positions, contents = self.read_models.store.snapshot([t for v in self.views for t in v.tables], names, digests=True)
        except Exception as error:
            self.report.notes.append(f"the stored read models could not be read ({error.__class__.__name__}): not compared")
            return {}
        self.report.checked["read models"] = ", ".join(f"{n} at #{positions[n]}" for n in names)
        for name in names:
            if positions[name] == 0:
                self.report.notes.append(f"the {name} view has not been built yet: not compared")
        return {
            v.name: (positions[v.name], {t.name: contents[t.name] for t in v.tables}) for v in self.views
        }

    def _compare_view(self, name: str, position: int, stored: dict[str, dict[Key, bytes]]) -> None:
        """Compare the rebuilt view, now at `position`, with the digests of the stored rows
        read at the start; rows that differ are read again to show how."""
        self._flush()
        tables = {t.name: t for v in self.views for t in v.tables}
        for table_name, stored_digests in stored.items():
            table = tables[table_name]
            rebuilt = self.rebuilt.rows.get(table_name, {})
            missing = [k for k in rebuilt if k not in stored_digests]
            extra = [k for k in stored_digests if k not in rebuilt]
            differing = [k for k in rebuilt.keys() & stored_digests.keys() if row_digest(table, rebuilt[k]) != stored_digests[k]]
            if not (missing or extra or differing):
                continue
            details = [f"{len(missing)} rows missing, {len(extra)} rows too many, {len(differing)} rows differ"]
            for key in sorted(differing, key=key_text)[:3]:
                now = self._stored_row(table, key)
                details += [
                    f"{key_text(key)}.{c}: stored {value_text(now[c])}, rebuilt {value_text(v)}"
                    for c, v in rebuilt[key].items()
                    if now is not None and now[c] != v
                ][:3]
            details += [f"{key_text(k)} missing" for k in missing[:2]] + [f"{key_text(k)} should not be there" for k in extra[:2]]
            self.violate("read models", f"the stored {name} view ({table_name}, at #{position}) differs from the log: " + "; ".join(details))

    def _stored_row(self, table: Any, key: Key) -> Row | None:
        if self.read_models is None:
            return None
        try:
            rows = self.read_models.store.select(table, [Where(c, "=", v) for c, v in zip(table.key, key, strict=True)])
        except Exception:
            return None
        return rows[0] if rows else None

    def _check_expected_chain(self, expect_chain: tuple[int, str], chain: str) -> None:
        at, expected = expect_chain
        if chain != expected.lower():
            self.violate("ledger", f"the log's chain at #{at} is {chain}, not the {expected} written down: the log was rewritten")


class LedgerCheck:
    """Compares the log, event by event in id order, with the ledger's rows (read in pages)."""

    page = 5000

    def __init__(self, auditor: Auditor):
        self.auditor = auditor
        self.active = False
        self.chain = GENESIS
        report = auditor.report
        read_models = auditor.read_models
        if read_models is None:
            report.notes.append("no ledger given: the log was not checked for tampering")
            return
        self.store = read_models.store
        try:
            heads = self.store.select(LEDGER_HEAD, [Where("name", "=", "head")])
        except Exception as error:
            report.notes.append(f"the ledger could not be read ({error.__class__.__name__}): the log was not checked for tampering")
            return
        self.sealed_to = heads[0]["notification_id"] if heads else 0
        if self.sealed_to == 0:
            report.notes.append("the ledger is empty: the log was not checked for tampering (catching up the read models seals it)")
            return
        self.limit = self.sealed_to if auditor.until_id is None else min(self.sealed_to, auditor.until_id)
        self.active = True
        self.rows = self._rows()
        self.row = next(self.rows, None)
        self.seen_up_to = 0
        report.checked["ledger"] = f"every event against its seal, up to #{self.sealed_to}"

    def _rows(self) -> Iterator[Row]:
        after = 0
        while True:
            where = [Where("notification_id", ">", after), Where("notification_id", "<=", self.limit)]
            page = self.store.select(LEDGER, where, ("notification_id",), limit=self.page)
            yield from page
            if len(page) < self.page:
                return
            after = page[-1]["notification_id"]

    def _advance(self, row: Row) -> None:
        expected = chained(self.chain, row["event_sha256"])
        if expected != row["chain_sha256"]:
            self.auditor.violate("ledger", f"the ledger's chain breaks at #{row['notification_id']}: the ledger itself was edited")
        self.chain = row["chain_sha256"]
        self.row = next(self.rows, None)

    def _removed(self, row: Row) -> None:
        names = {str(k): v for k, v in self.auditor.node_names.items()}
        who = names.get(row["originator_id"], row["originator_id"])
        self.auditor.violate(
            "ledger",
            f"event #{row['notification_id']} ({row['topic'].rpartition(':')[2]} v{row['originator_version']} of "
            f"{who}) was removed from the log after it was sealed",
        )
        self._advance(row)

    def see(self, n: Notification, digest: str) -> None:
        """`digest`: the event_digest of `n`, computed once for the chain and for the seal."""
        if not self.active or n.id > self.limit:
            return
        self.seen_up_to = n.id
        while self.row is not None and self.row["notification_id"] < n.id:
            self._removed(self.row)
        row = self.row
        if row is not None and row["notification_id"] == n.id:
            stored = (str(n.originator_id), n.originator_version, n.topic, digest)
            sealed = (row["originator_id"], row["originator_version"], row["topic"], row["event_sha256"])
            if stored != sealed:
                self.auditor.violate(
                    "ledger",
                    f"event #{n.id} was altered after it was sealed: what is stored differs from the ledger's digest",
                    self.auditor._raw_ref(n),
                )
            self._advance(row)
        else:
            self.auditor.violate(
                "ledger",
                f"event #{n.id} is in the log but not in the ledger, which sealed the log up to #{self.sealed_to}: it was slipped in",
                self.auditor._raw_ref(n),
            )

    def finish(self, truncated: bool) -> None:
        """Rows the log never reached were removed, unless the audit stopped early on purpose."""
        if not self.active:
            return
        up_to = self.seen_up_to if truncated else self.limit
        while self.row is not None and self.row["notification_id"] <= up_to:
            self._removed(self.row)
        if self.sealed_to < (self.auditor.report.last_id or 0):
            self.auditor.report.notes.append(f"events after #{self.sealed_to} are not sealed in the ledger yet")


# --- formatting helpers ------------------------------------------------------------------


def status_of(instance: Any) -> str:
    status = getattr(instance, "status", None)
    return str(getattr(status, "value", status))


def short(rid: Any) -> str:
    return str(rid).upper()[:8]


def fmt(r: Resources) -> str:
    return f"{r.cpus} CPU/{r.memory_mb} MB/{r.disk_gb} GB"


def span(start: datetime, end: datetime) -> str:
    return f"[{start.isoformat()}, {end.isoformat()})"


def kind_of(event: Any) -> str:
    return "hold" if isinstance(event, Node.CapacityHeld) else "booking"


def value_text(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


def key_text(key: Key) -> str:
    return "/".join(str(k) for k in key)
