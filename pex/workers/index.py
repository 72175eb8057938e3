"""The workers' view of the log: what may need dispatching, and when.

`DispatchIndex` follows the event log (from the start, then from where it stopped) and keeps
a replica of every Instance that is not over, plus what the timer needs of reservations and
nodes. It only *selects* candidates: every decision is taken again on the aggregates, freshly
loaded, by the application's commands (a claim that lost a race records nothing).

Thread-safe: the timer and the monitors of one worker process share one index.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pex.domain.instance import Instance, Status, reservation_over, reservation_runs
from pex.domain.node import Node
from pex.domain.reservation import Reservation
from pex.domain.values import State

BATCH = 1000


@dataclass
class ReservationFacts:
    state: State = State.INITIATED
    auto_start: bool = False
    start: datetime | None = None
    end: datetime | None = None
    instance_ids: tuple[UUID, ...] = ()


@dataclass
class NodeFacts:
    name: str
    available: bool = True
    lost_at: datetime | None = None


@dataclass
class DispatchIndex:
    position: int = 0
    reservations: dict[UUID, ReservationFacts] = field(default_factory=dict)
    instances: dict[UUID, Instance] = field(default_factory=dict)
    finished: set[UUID] = field(default_factory=set)
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    node_names: dict[UUID, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # --- following the log -------------------------------------------------------------

    def follow(self, app: Any) -> None:
        """Apply what was recorded since the last call."""
        with self.lock:
            while True:
                batch = app.recorder.select_notifications(start=self.position, limit=BATCH, inclusive_of_start=False)
                for notification in batch:
                    self.apply(app.mapper.to_domain_event(notification))
                    self.position = notification.id
                if len(batch) < BATCH:
                    return

    def apply(self, event: Any) -> None:
        if isinstance(event, Instance.Event) or isinstance(event, Instance.Scheduled):
            self._apply_instance(event)
        elif isinstance(event, (Reservation.Event, Reservation.Initiated)):
            self._apply_reservation(event)
        elif isinstance(event, Node.Registered):
            self.nodes[event.name] = NodeFacts(event.name)
            self.node_names[event.originator_id] = event.name
        elif isinstance(event, Node.Lost):
            node = self.nodes.get(self.node_names.get(event.originator_id, ""))
            if node is not None:
                node.available, node.lost_at = False, event.at
        elif isinstance(event, Node.Returned):
            node = self.nodes.get(self.node_names.get(event.originator_id, ""))
            if node is not None:
                node.available, node.lost_at = True, None

    def _apply_instance(self, event: Any) -> None:
        iid = event.originator_id
        if isinstance(event, Instance.Scheduled):
            self.instances[iid] = event.mutate(None)
            return
        replica = self.instances.get(iid)
        if replica is None:
            return  # over, and nothing left to clean up
        event.mutate(replica)
        if replica.is_over and not replica.vm_may_exist:
            del self.instances[iid]
            self.finished.add(iid)

    def _apply_reservation(self, event: Any) -> None:
        rid = event.originator_id
        if isinstance(event, Reservation.Initiated):
            self.reservations[rid] = ReservationFacts()
            return
        facts = self.reservations.get(rid)
        if facts is None:
            return
        if isinstance(event, (Reservation.Accepted, Reservation.CounterOffered)):
            terms = event.offer.terms
            facts.state = State.ACCEPTED if isinstance(event, Reservation.Accepted) else State.COUNTERED
            facts.auto_start, facts.start, facts.end = terms.auto_start, terms.start, terms.end
        elif isinstance(event, Reservation.Confirmed):
            facts.state, facts.instance_ids = State.CONFIRMED, tuple(event.instance_ids)
        elif isinstance(event, Reservation.Activated):
            facts.state = State.ACTIVATED
        elif isinstance(event, (Reservation.Expired, Reservation.Cancelled, Reservation.Rejected,
                                Reservation.Declined, Reservation.OfferExpired)):
            # Over, or never agreed: an instance whose reservation is unknown is over (see _runs_over).
            del self.reservations[rid]

    # --- queries -------------------------------------------------------------------------

    def due(self, now: datetime) -> list[tuple[UUID, str]]:
        """(instance, action) for every instance whose replica says an action is due."""
        with self.lock:
            due = []
            for iid, instance in self.instances.items():
                action = instance.due_action(now, *self._runs_over(instance, now))
                if action is not None:
                    due.append((iid, action))
            return due

    def _runs_over(self, instance: Instance, now: datetime) -> tuple[bool, bool]:
        facts = self.reservations.get(instance.reservation_id)
        if facts is None:
            return False, True
        runs = reservation_runs(facts.state, facts.auto_start, instance.start, instance.end, now)
        return runs, reservation_over(facts.state, instance.end, now)

    def instances_on(self, node: str) -> list[UUID]:
        with self.lock:
            return [iid for iid, i in self.instances.items() if i.node == node and not i.is_over]

    def displaced(self, now: datetime, grace: timedelta) -> list[UUID]:
        """Instances to re-place: on a node lost for at least `grace`, or stranded, and not
        over. Their reservation must still be running or to come."""
        with self.lock:
            lost = {n.name for n in self.nodes.values() if not n.available and n.lost_at is not None and n.lost_at + grace <= now}
            return [
                iid
                for iid, i in self.instances.items()
                if not i.is_over and i.end > now
                and (i.status == Status.STRANDED or (i.node in lost and i.status not in (Status.RUNNING, Status.PAUSED)))
            ]

    def running_without_ip(self) -> list[tuple[UUID, Instance]]:
        with self.lock:
            return [(iid, i) for iid, i in self.instances.items() if i.status == Status.RUNNING and i.ip_address is None]

    def to_expire(self, now: datetime) -> list[UUID]:
        """Reservations past their end whose instances are all over and cleaned up."""
        with self.lock:
            return [
                rid
                for rid, facts in self.reservations.items()
                if facts.state in (State.CONFIRMED, State.ACTIVATED)
                and facts.end is not None
                and facts.end <= now
                and all(i in self.finished for i in facts.instance_ids)
            ]

    def instance(self, instance_id: UUID) -> Instance | None:
        with self.lock:
            return self.instances.get(instance_id)

    def node_available(self, name: str) -> bool | None:
        with self.lock:
            node = self.nodes.get(name)
            return None if node is None else node.available
