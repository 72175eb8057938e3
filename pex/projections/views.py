"""The persisted read models, as folds of the event log into table rows.

- ReservationsView: one row per reservation with its state and its standing terms (the
  provider's offer once there is one, else the user's proposal), the alternatives beside a
  counter-offer and the negotiation's history: everything `GET /OpenPEX/reservations` shows of
  each (pex.wire.reservation_json), and the portal's reservations screen.
- InstancesView: one row per instance (name, node, status, start, end, ip address), for the
  instances screen. It follows whatever events the Instance aggregate gains (see the class).
- CalendarView: the pool's nodes and, per node, every booking and hold over time.

A view is a name, its tables, and `apply(batch, event, notification)`, which reads and writes
rows only through the batch (pex.projections.store), so the same fold fills PostgreSQL,
SQLite or memory. What else it must read (the instances view: an aggregate as it stood) it
reads in `prepare(events)`, before the batch's transaction opens. A view must be a pure
function of the events: no clock, no other view. Events a view does not know are ignored (an
unknown event of an aggregate it follows still moves the row's version).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.persistence import Notification

from pex.domain.instance import Instance
from pex.domain.node import Node
from pex.domain.reservation import Reservation
from pex.domain.values import Offer, Reply, State, Terms, time_text
from pex.projections.store import Batch, Key, Row, Table

MICROSECOND = timedelta(microseconds=1)


def event_time(event: Any) -> datetime:
    """The time of the decision an event records (`at`); the library's timestamp otherwise."""
    return getattr(event, "at", None) or event.timestamp


class View:
    name: str = ""
    tables: tuple[Table, ...] = ()
    rebuildable = True  # `pex replay` may drop and rebuild it

    def apply(self, batch: Batch, event: Any, notification: Notification) -> None:
        raise NotImplementedError

    def rows_read(self, event: Any) -> Iterable[tuple[Table, Key]]:
        """The rows `apply` will `get` from the batch for `event`: the batch reads them all
        in one query per table before it applies the first (`Batch.preload`)."""
        return ()

    def prepare(self, events: Sequence[Any]) -> None:
        """Read what `apply` will need of the store beyond the batch, for `events` (the next
        batch's, in order), before the batch's transaction opens. On SQLite that transaction
        holds the file's write lock; a read through the event store's pool inside it waits
        in the pool's queue behind a thread that waits for the pool's writer, whose INSERT
        waits for that lock: the three stood still until the pool's timeout (5 s), and the
        waiting writer's save failed (a worker's record of a VM it had started)."""


# --- reservations ----------------------------------------------------------------------

RESERVATIONS = Table(
    "pex_view_reservations",
    (
        ("id", "uuid"),
        ("user_id", "text"),
        ("state", "text"),
        ("round", "int"),
        # the standing terms: the offer once the provider answered, else the proposal
        ("size", "text"),
        ("template", "text"),
        ("instances_fixed", "int"),
        ("instances_option", "int"),
        ("instances", "int"),
        ("start", "time"),
        ("end", "time"),
        ("price", "money"),
        ("auto_start", "bool"),
        ("valid_until", "time"),  # while an offer waits for the user
        ("placement", "json"),  # the offer's [[node, instances], ...], or null
        ("changes", "json"),  # what the offer changed in the user's proposal, in words
        ("per_instance", "json"),  # the offer's [cpus, memory_mb, disk_gb] per instance; null without an offer
        ("alternatives", "json"),  # other offers beside a counter-offer (offer_json)
        ("history", "json"),  # the negotiation, step by step: [{at, party, reply, note}]
        ("reason", "text"),  # why it was rejected or deleted
        ("proposal", "json"),  # the user's last proposal (terms_json)
        ("instance_ids", "json"),
        ("created_seq", "int"),  # the notification id that created it: creation order
        ("created_at", "time"),
        ("updated_at", "time"),
        ("version", "int"),
    ),
    key=("id",),
    indexes=(("user_id", "state"), ("state",)),
)


def terms_json(terms: Terms) -> dict[str, Any]:
    return {
        "size": terms.size,
        "template": terms.template,
        "instances_fixed": terms.instances_fixed,
        "instances_option": terms.instances_option,
        "start": terms.start.isoformat(),
        "end": terms.end.isoformat(),
        "price": str(terms.price) if terms.price is not None else None,
        "auto_start": terms.auto_start,
        # A flexible proposal's freedom, only when it has some (rows written before lack it).
        **({"latest_start": terms.latest_start.isoformat()} if terms.latest_start is not None else {}),
        **({"min_duration_us": terms.min_duration // MICROSECOND} if terms.min_duration is not None else {}),
    }


def terms_columns(terms: dict[str, Any] | None) -> Row:
    """The standing-terms columns of a reservation row, from terms_json (or all None)."""
    if terms is None:
        names = ("size", "template", "instances_fixed", "instances_option", "instances", "start", "end", "price", "auto_start")
        return dict.fromkeys(names)
    return {
        "size": terms["size"],
        "template": terms["template"],
        "instances_fixed": terms["instances_fixed"],
        "instances_option": terms["instances_option"],
        "instances": terms["instances_fixed"] + terms["instances_option"],
        "start": datetime.fromisoformat(terms["start"]),
        "end": datetime.fromisoformat(terms["end"]),
        "price": terms["price"],
        "auto_start": terms["auto_start"],
    }


def offer_columns(offer: Offer) -> Row:
    return {
        **terms_columns(terms_json(offer.terms)),
        "placement": [[a.node, a.instances] for a in offer.placement],
        "changes": list(offer.changes),
        "per_instance": list(astuple(offer.per_instance)),
    }


def offer_json(offer: Offer) -> dict[str, Any]:
    """An offer as a JSON value (an alternative): what pex.projections.readmodels reads back."""
    return {
        "terms": terms_json(offer.terms),
        "per_instance": list(astuple(offer.per_instance)),
        "placement": [[a.node, a.instances] for a in offer.placement],
        "changes": list(offer.changes),
    }


class ReservationsView(View):
    name = "reservations"
    tables = (RESERVATIONS,)

    def rows_read(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, Reservation.Event) and not isinstance(event, Reservation.Initiated):
            yield RESERVATIONS, (event.originator_id,)

    def apply(self, batch: Batch, event: Any, notification: Notification) -> None:
        if not isinstance(event, Reservation.Event):
            return
        at = event_time(event)
        if isinstance(event, Reservation.Initiated):
            batch.put(
                RESERVATIONS,
                {
                    "id": event.originator_id,
                    "user_id": event.user_id,
                    "state": State.INITIATED.value,
                    "round": 0,
                    **terms_columns(None),
                    "alternatives": [],
                    "history": [],
                    "created_seq": notification.id,
                    "created_at": at,
                    "updated_at": at,
                    "version": event.originator_version,
                },
            )
            return
        row = batch.get(RESERVATIONS, (event.originator_id,))
        if row is None:
            return
        change = RESERVATION_CHANGES.get(type(event).__name__)
        if change is not None:
            change(row, event)
        row["updated_at"], row["version"] = at, event.originator_version
        batch.put(RESERVATIONS, row)


# How each Reservation event changes a row, mirroring how it changes the aggregate (its
# state, offer, alternatives, and the steps it appends to its history).


def _step(row: Row, e: Any, party: str, reply: str, note: str = "") -> None:
    row["history"] = [*row["history"], {"at": event_time(e).isoformat(), "party": party, "reply": reply, "note": note}]


def _proposal_submitted(row: Row, e: Reservation.ProposalSubmitted) -> None:
    row["state"], row["round"], row["proposal"] = State.SUBMITTED.value, row["round"] + 1, terms_json(e.terms)
    if row["placement"] is None:  # no offer yet: the proposal is what stands
        row.update(terms_columns(row["proposal"]))
    _step(row, e, "user", "COUNTER" if row["round"] > 1 else "PROPOSE")


def _accepted(row: Row, e: Reservation.Accepted) -> None:
    row.update(offer_columns(e.offer))
    row.update(state=State.ACCEPTED.value, valid_until=e.valid_until, reason=None, alternatives=[])
    _step(row, e, "provider", Reply.ACCEPT.value)


def _counter_offered(row: Row, e: Reservation.CounterOffered) -> None:
    row.update(offer_columns(e.offer))
    row.update(
        state=State.COUNTERED.value, valid_until=e.valid_until, reason=None,
        alternatives=[offer_json(a) for a in e.alternatives],
    )  # fmt: skip
    _step(row, e, "provider", Reply.COUNTER.value, "; ".join(e.offer.changes))


def _rejected(row: Row, e: Reservation.Rejected) -> None:
    row.update(terms_columns(row["proposal"]))
    row.update(
        state=State.REJECTED.value, valid_until=None, placement=None, changes=None, per_instance=None,
        alternatives=[], reason=e.reason,
    )  # fmt: skip
    _step(row, e, "provider", Reply.REJECT.value, e.reason)


def _becomes(state: State, steps: tuple[tuple[str, str], ...], **values: Any) -> Callable[[Row, Any], None]:
    def change(row: Row, e: Any) -> None:
        row.update(state=state.value, **values)
        for party, reply in steps:
            _step(row, e, party, reply)

    return change


def _confirmed(row: Row, e: Reservation.Confirmed) -> None:
    row.update(
        state=State.CONFIRMED.value, valid_until=None, alternatives=[], instance_ids=[str(i) for i in e.instance_ids]
    )
    _step(row, e, "user", Reply.CONFIRM.value)
    _step(row, e, "provider", Reply.REQUEST_SUCCESS.value)


def _cancelled(row: Row, e: Reservation.Cancelled) -> None:
    row.update(state=State.CANCELLED.value, valid_until=None, reason=e.reason)
    _step(row, e, "user", "DELETE", e.reason)


def _terminated(row: Row, e: Reservation.Terminated) -> None:
    reason = f"ended by {e.by}: {e.reason}"
    row.update(state=State.CANCELLED.value, valid_until=None, reason=reason)
    _step(row, e, "provider", "TERMINATE", reason)


def _released(row: Row, e: Reservation.Released) -> None:
    # As the aggregate: the standing terms end at the release and cost the used part.
    end = max(row["start"], min(e.at, e.agreed_end))
    row.update(state=State.EXPIRED.value, end=end, price=str(e.price) if e.price is not None else None)
    _step(row, e, "user", "RELEASE", f"released by {e.by}")


def _extension_offered(row: Row, e: Reservation.ExtensionOffered) -> None:
    # As the aggregate: the standing terms do not change until the extension is confirmed.
    _step(row, e, "user", "EXTEND", f"to {time_text(e.asked_end)}")
    _step(row, e, "provider", e.reply, "; ".join([f"to {time_text(e.end)} for {e.price}", *e.changes]))


def _extension_rejected(row: Row, e: Reservation.ExtensionRejected) -> None:
    _step(row, e, "user", "EXTEND", f"to {time_text(e.asked_end)}")
    _step(row, e, "provider", Reply.REJECT.value, e.reason)


def _extension_confirmed(row: Row, e: Reservation.ExtensionConfirmed) -> None:
    row.update(end=e.end, price=str(e.price) if e.price is not None else None)
    _step(row, e, "user", Reply.CONFIRM.value, "the extension")
    _step(row, e, "provider", Reply.REQUEST_SUCCESS.value, f"extended to {time_text(e.end)}")


def _placement_changed(row: Row, e: Any) -> None:
    row["placement"] = [[a.node, a.instances] for a in e.placement]


RESERVATION_CHANGES: dict[str, Callable[[Row, Any], None]] = {
    "ProposalSubmitted": _proposal_submitted,
    "Accepted": _accepted,
    "CounterOffered": _counter_offered,
    "Rejected": _rejected,
    "CounterAccepted": _becomes(State.ACCEPTED, (("user", Reply.ACCEPT.value), ("provider", Reply.CONFIRM_REQUEST.value))),
    "Declined": _becomes(State.REJECTED, (("user", Reply.REJECT.value),), valid_until=None),
    "Confirmed": _confirmed,
    "OfferExpired": _becomes(State.EXPIRED, (("provider", "OFFER_EXPIRED"),), valid_until=None),
    "Activated": _becomes(State.ACTIVATED, (("user", "ACTIVATE"),)),
    "Cancelled": _cancelled,
    "Terminated": _terminated,
    "Expired": _becomes(State.EXPIRED, (("provider", "EXPIRED"),)),
    "Released": _released,
    "PlacementChanged": _placement_changed,
    "ExtensionOffered": _extension_offered,
    "ExtensionRejected": _extension_rejected,
    "ExtensionConfirmed": _extension_confirmed,
    "ExtensionDeclined": lambda row, e: _step(row, e, "user", Reply.REJECT.value, "the extension"),
    "ExtensionLapsed": lambda row, e: _step(row, e, "provider", "OFFER_EXPIRED", "the extension offer lapsed"),
}


# --- instances -------------------------------------------------------------------------

INSTANCES = Table(
    "pex_view_instances",
    (
        ("id", "uuid"),
        ("reservation_id", "uuid"),
        ("user_id", "text"),
        ("index", "int"),
        ("name", "text"),
        ("size", "text"),
        ("template", "text"),
        ("node", "text"),
        ("start", "time"),
        ("end", "time"),
        ("status", "text"),
        ("ip_address", "text"),
        ("note", "text"),  # the reason the last event that gave one gave (an end, a move)
        ("error", "text"),  # why the VM never ran, for an instance whose start kept failing
        ("failed_at", "time"),
        ("created_at", "time"),
        ("updated_at", "time"),
        ("version", "int"),
    ),
    key=("id",),
    indexes=(("user_id", "status"), ("reservation_id",)),
)



def is_instance_event(event: Any) -> bool:
    return isinstance(event, Instance.Event) or type(event).__qualname__.startswith("Instance.")


def instance_columns(instance: Any) -> Row:
    """The columns an Instance aggregate shows; attributes it does not have (yet) are None."""
    status = getattr(instance, "status", None)
    return {
        "id": instance.id,
        "reservation_id": instance.reservation_id,
        "user_id": instance.user_id,
        "index": instance.index,
        "name": instance.name,
        "size": instance.size,
        "template": instance.template,
        "node": instance.node,
        "start": instance.start,
        "end": instance.end,
        "status": getattr(status, "value", status),
        "ip_address": getattr(instance, "ip_address", None),
        "error": instance.last_error if getattr(instance, "failed_at", None) is not None else None,
        "failed_at": getattr(instance, "failed_at", None),
        "version": instance.version,
    }


class InstancesView(View):
    """Rows follow the Instance aggregate by applying each event to the aggregate itself (its
    own `apply`), so every event it gains is shown exactly as the aggregate sees it, with no
    change here; an event it does not know changes nothing but the version. To show a new
    attribute, add a column to INSTANCES and a line to instance_columns.

    The aggregates are kept in a bounded cache; one not in it (after a restart, or a batch
    that was rolled back) is loaded as it stood before the event, which is a function of the
    log alone, so the view stays a fold of the log."""

    name = "instances"
    tables = (INSTANCES,)
    cache_size = 10_000

    def __init__(self, load: Callable[[Any, int], Any]):
        """`load(instance_id, version)`: the Instance as it was at `version` (repository.get)."""
        self.load = load
        self.cache: OrderedDict[Any, Any] = OrderedDict()
        self.loaded: dict[Any, Any] = {}  # by `prepare`, for the batch it prepared

    def apply(self, batch: Batch, event: Any, notification: Notification) -> None:
        if not is_instance_event(event):
            return
        instance = event.mutate(self._before(event))
        self.cache[instance.id] = instance
        self.cache.move_to_end(instance.id)
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        at = event_time(event)
        row = batch.get(INSTANCES, (instance.id,)) or {"created_at": at, "note": None}
        row.update(instance_columns(instance), updated_at=at)
        reason = getattr(event, "reason", None)
        if isinstance(reason, str) and reason:
            row["note"] = reason
        batch.put(INSTANCES, row)

    def rows_read(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if is_instance_event(event):
            yield INSTANCES, (event.originator_id,)

    def prepare(self, events: Sequence[Any]) -> None:
        # Each instance's first event in the batch needs the instance as it stood before it;
        # the next ones follow from what `apply` made of the first.
        self.loaded = {}
        seen: set[Any] = set()
        for event in events:
            if not is_instance_event(event) or event.originator_id in seen:
                continue
            seen.add(event.originator_id)
            version = event.originator_version
            cached = self.cache.get(event.originator_id)
            if version > 1 and (cached is None or cached.version != version - 1):
                self.loaded[event.originator_id] = self.load(event.originator_id, version - 1)

    def _before(self, event: Any) -> Any:
        version = event.originator_version
        if version == 1:
            return None
        for known in (self.cache.get(event.originator_id), self.loaded.get(event.originator_id)):
            if known is not None and known.version == version - 1:
                return known
        return self.load(event.originator_id, version - 1)  # unprepared: the audit's, in memory


# --- the pool's calendar ---------------------------------------------------------------

NODES = Table(
    "pex_view_nodes",
    (
        ("id", "uuid"),
        ("name", "text"),
        ("cpus", "int"),
        ("memory_mb", "int"),
        ("disk_gb", "int"),
        ("available", "bool"),
        ("registered_at", "time"),
        ("updated_at", "time"),
        ("version", "int"),
    ),
    key=("id",),
    indexes=(("name",),),
)

ALLOCATIONS = Table(
    "pex_view_node_allocations",
    (
        ("node_id", "uuid"),
        ("reservation_id", "uuid"),
        ("node", "text"),
        ("kind", "text"),  # "booking" or "hold"
        ("start", "time"),
        ("end", "time"),
        ("instances", "int"),
        ("cpus", "int"),  # per instance
        ("memory_mb", "int"),
        ("disk_gb", "int"),
        ("hold_until", "time"),  # a hold stops counting then, released or not
        ("recorded_at", "time"),
    ),
    key=("node_id", "reservation_id"),
    indexes=(("node", "end"), ("reservation_id",)),
)


class CalendarView(View):
    """Bookings stay after they end (the calendar is history too); a released hold or booking
    goes. A hold that lapsed without being released yet stays until its release, and the
    query leaves it out by `hold_until`."""

    name = "calendar"
    tables = (NODES, ALLOCATIONS)

    def rows_read(self, event: Any) -> Iterable[tuple[Table, Key]]:
        if isinstance(event, Node.Event) and not isinstance(event, Node.Registered):
            yield NODES, (event.originator_id,)

    def apply(self, batch: Batch, event: Any, notification: Notification) -> None:
        if not isinstance(event, Node.Event):
            return
        at = event_time(event)
        if isinstance(event, Node.Registered):
            c = event.capacity
            batch.put(
                NODES,
                {
                    "id": event.originator_id,
                    "name": event.name,
                    "cpus": c.cpus,
                    "memory_mb": c.memory_mb,
                    "disk_gb": c.disk_gb,
                    "available": True,
                    "registered_at": at,
                    "updated_at": at,
                    "version": event.originator_version,
                },
            )
            return
        node = batch.get(NODES, (event.originator_id,))
        if node is None:
            return
        if isinstance(event, Node.Resized):
            node.update(cpus=event.capacity.cpus, memory_mb=event.capacity.memory_mb, disk_gb=event.capacity.disk_gb)
        elif isinstance(event, (Node.Lost, Node.Returned)):
            node["available"] = isinstance(event, Node.Returned)
        elif isinstance(event, (Node.CapacityHeld, Node.CapacityBooked)):
            hold = isinstance(event, Node.CapacityHeld)
            batch.put(
                ALLOCATIONS,
                {
                    "node_id": event.originator_id,
                    "reservation_id": event.reservation_id,
                    "node": node["name"],
                    "kind": "hold" if hold else "booking",
                    "start": event.start,
                    "end": event.end,
                    "instances": event.instances,
                    "cpus": event.per_instance.cpus,
                    "memory_mb": event.per_instance.memory_mb,
                    "disk_gb": event.per_instance.disk_gb,
                    "hold_until": event.hold_until if isinstance(event, Node.CapacityHeld) else None,
                    "recorded_at": at,
                },
            )
        elif isinstance(event, (Node.HoldReleased, Node.BookingReleased)):
            batch.delete(ALLOCATIONS, (event.originator_id, event.reservation_id))
        node["updated_at"], node["version"] = at, event.originator_version
        batch.put(NODES, node)


VIEW_NAMES = ("reservations", "instances", "calendar")


def read_model_views(app: Any) -> tuple[View, ...]:
    """The read models of one application (the instances view loads aggregates through it)."""
    return (
        ReservationsView(),
        InstancesView(lambda instance_id, version: app.repository.get(instance_id, version=version)),
        CalendarView(),
    )
