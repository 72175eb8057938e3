"""The workers' view of the log: what may need dispatching, and when.

`DispatchIndex` follows the event log (through the process's one follower,
pex.projections.follower: `follow(app)`, or the worker's tick that feeds every model) and keeps a replica of every Instance that is not over,
plus what the timer needs of reservations (those with an offer or more, until they are over)
and nodes. It only *selects* candidates: every decision is taken again on the aggregates,
freshly loaded, by the application's commands (a claim that lost a race records nothing).

What it keeps is what is pending, not the history, and a worker that starts does not fold
the log from its beginning: the first `follow` loads the checkpoint the workers save
(`save_checkpoint`, pex.projections.checkpoints) and folds the tail after it. A checkpoint
names each replica by its version, and the replica is loaded from the store at exactly that
version, so the tail applies to it as it would to a replica folded from the start.

Thread-safe: the timer and the monitors of one worker process share one index.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from pex.domain.instance import Instance, Status, reservation_over, reservation_prepares, reservation_runs
from pex.domain.node import Node
from pex.domain.pool import DEFAULT_POOL
from pex.domain.reservation import Reservation
from pex.domain.values import State
from pex.projections.follower import Recorded, after

CHECKPOINT = "pex.workers.dispatch"
# How long past its end a reservation waits for its instances' removal before it expires anyway.
EXPIRY_GRACE = timedelta(minutes=5)
STATE_SCHEMA = 1  # of to_state/from_state; change it with the shape, and old checkpoints are ignored

log = logging.getLogger(__name__)


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
    drain_from: datetime | None = None
    pool: str = DEFAULT_POOL


@dataclass
class DispatchIndex:
    position: int = 0
    reservations: dict[UUID, ReservationFacts] = field(default_factory=dict)
    instances: dict[UUID, Instance] = field(default_factory=dict)
    finished: set[UUID] = field(default_factory=set)
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    node_names: dict[UUID, str] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    resumed: bool = field(default=False, repr=False, compare=False)
    saved_position: int = field(default=0, repr=False, compare=False)
    # The application's prepare_lead (PEX_PREPARE_LEAD_SECONDS): how early a VM is made.
    prepare_lead: timedelta = field(default=timedelta(minutes=10), repr=False, compare=False)
    model: DispatchModel | None = field(default=None, repr=False, compare=False)
    # The pool whose instances this worker dispatches and watches (`pex worker --pool`);
    # None for every pool's. The index keeps every pool's (one checkpoint for all workers);
    # its queries answer of this pool's nodes only.
    pool: str | None = field(default=None, repr=False, compare=False)

    # --- following the log -------------------------------------------------------------

    def follow(self, app: Any) -> None:
        """Apply what was recorded since the last call, through `app`'s one follower (the first
        call starts from the checkpoint, if one can be trusted)."""
        app.follower.follow(self.read_model(app))

    def read_model(self, app: Any) -> DispatchModel:
        """This index as a read model of `app`'s follower (pex.projections.follower)."""
        with self.lock:
            if self.model is None or self.model.app is not app:
                self.model = DispatchModel(self, app)
            return self.model

    def resume(self, app: Any) -> None:
        """Start from the workers' checkpoint (`app.checkpoints`), or from the start of the log."""
        with self.lock:
            loaded = app.checkpoints.load(CHECKPOINT, STATE_SCHEMA, app.recorder)
            self.resumed = True
            if loaded is None:
                return
            position, state = loaded
            try:
                self._load(state, lambda iid, version: app.repository.get(iid, version=version))
            except (AggregateNotFoundError, KeyError, TypeError, ValueError) as error:
                # A replica not at its version, a state of another shape: start over.
                log.warning("checkpoint %s cannot be loaded (%s): folding the log from the start", CHECKPOINT, error)
                self._clear()
                return
            except Exception:
                self._clear()  # the store failed: the next follow tries the checkpoint again
                self.resumed = False
                raise
            self.position = self.saved_position = position

    @staticmethod
    def lag(app: Any) -> int:
        """How many notifications the stored checkpoint is behind the head of the log."""
        try:
            stored = app.checkpoints.store.read_checkpoint(CHECKPOINT)
        except Exception:
            stored = None
        return (app.recorder.max_notification_id() or 0) - (stored.position if stored is not None else 0)

    def save_checkpoint(self, app: Any) -> bool:
        """Save what the index reflects, with its position, unless a later one is stored."""
        with self.lock:
            if self.position == 0 or self.position == self.saved_position:
                return False
            position, state = self.position, self.to_state()
            self.saved_position = position
        try:
            return app.checkpoints.save(CHECKPOINT, STATE_SCHEMA, position, state, app.recorder)
        except Exception as error:
            log.warning("checkpoint %s at #%s could not be saved: %s", CHECKPOINT, position, error)
            return False

    def to_state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "reservations": [
                    [str(rid), f.state.value, f.auto_start, _time(f.start), _time(f.end), [str(i) for i in f.instance_ids]]
                    for rid, f in self.reservations.items()
                ],
                "instances": [[str(iid), i.version] for iid, i in self.instances.items()],
                "finished": [str(i) for i in self.finished],
                "nodes": [
                    [str(nid), name, self.nodes[name].available, _time(self.nodes[name].lost_at),
                     _time(self.nodes[name].drain_from), self.nodes[name].pool]
                    for nid, name in self.node_names.items()
                    if name in self.nodes
                ],
            }

    def _load(self, state: dict[str, Any], load_instance: Any) -> None:
        for rid, value, auto_start, start, end, instance_ids in state["reservations"]:
            self.reservations[UUID(rid)] = ReservationFacts(
                State(value), auto_start, _from_time(start), _from_time(end), tuple(UUID(i) for i in instance_ids)
            )
        for iid, version in state["instances"]:
            replica = load_instance(UUID(iid), version)
            if replica.version != version:
                raise ValueError(f"instance {iid} is at version {replica.version}, the checkpoint has {version}")
            self.instances[replica.id] = replica
        self.finished = {UUID(i) for i in state["finished"]}
        # No drain: saved before drains; no pool: saved before pools were named.
        for nid, name, available, lost_at, *later in state["nodes"]:
            drain = later[0] if later else None
            pool = later[1] if len(later) > 1 else DEFAULT_POOL
            self.nodes[name] = NodeFacts(name, available, _from_time(lost_at), _from_time(drain), pool)
            self.node_names[UUID(nid)] = name

    def _clear(self) -> None:
        self.position = 0
        self.reservations, self.instances, self.finished = {}, {}, set()
        self.nodes, self.node_names = {}, {}

    def apply(self, event: Any) -> None:
        if isinstance(event, Instance.Event) or isinstance(event, Instance.Scheduled):
            self._apply_instance(event)
        elif isinstance(event, (Reservation.Event, Reservation.Initiated)):
            self._apply_reservation(event)
        elif isinstance(event, Node.Registered):
            self.nodes[event.name] = NodeFacts(event.name, pool=event.pool)
            self.node_names[event.originator_id] = event.name
        elif isinstance(event, Node.Lost):
            node = self.nodes.get(self.node_names.get(event.originator_id, ""))
            if node is not None:
                node.available, node.lost_at = False, event.at
        elif isinstance(event, Node.Returned):
            node = self.nodes.get(self.node_names.get(event.originator_id, ""))
            if node is not None:
                node.available, node.lost_at = True, None
        elif isinstance(event, (Node.DrainScheduled, Node.DrainCancelled)):
            node = self.nodes.get(self.node_names.get(event.originator_id, ""))
            if node is not None:
                node.drain_from = event.drain_from if isinstance(event, Node.DrainScheduled) else None

    def _apply_instance(self, event: Any) -> None:
        iid = event.originator_id
        if isinstance(event, Instance.Scheduled):
            instance = event.mutate(None)
            assert instance is not None  # a creation event always makes its aggregate
            self.instances[iid] = instance
            return
        replica = self.instances.get(iid)
        if replica is None:
            return  # over, and nothing left to clean up
        event.mutate(replica)
        if replica.is_over and not replica.vm_may_exist:
            del self.instances[iid]
            # Only to_expire asks, of reservations still standing: the set stays that small.
            if replica.reservation_id in self.reservations:
                self.finished.add(iid)

    def _apply_reservation(self, event: Any) -> None:
        rid = event.originator_id
        if isinstance(event, (Reservation.Accepted, Reservation.CounterOffered)):
            # Before an offer a reservation has nothing to dispatch: it is not kept (a
            # negotiation that never got one, or never went on, costs nothing here).
            facts: ReservationFacts | None = self.reservations.setdefault(rid, ReservationFacts())
        else:
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
        elif isinstance(event, Reservation.ExtensionConfirmed):
            facts.end = event.end  # its instances' ends move in the same save (Instance.Extended)
        elif isinstance(event, (Reservation.Expired, Reservation.Cancelled, Reservation.Rejected,
                                Reservation.Declined, Reservation.OfferExpired)):
            # Over, or never agreed: an instance whose reservation is unknown is over (see _runs_over).
            del self.reservations[rid]
            self.finished.difference_update(facts.instance_ids)

    # --- queries -------------------------------------------------------------------------

    def _ours(self) -> dict[UUID, Instance]:
        """The replicas of the instances on this worker's pool's nodes (all, with no pool)."""
        if self.pool is None:
            return self.instances
        nodes = self.nodes
        return {
            iid: i for iid, i in self.instances.items()
            if (facts := nodes.get(i.node or "")) is not None and facts.pool == self.pool
        }

    def instance_ids(self) -> list[UUID]:
        """The instances this worker watches (its pool's), not over and cleaned up yet."""
        with self.lock:
            return list(self._ours())

    def due(self, now: datetime) -> list[tuple[UUID, str]]:
        """(instance, action) for every instance of the pool whose replica says an action is due."""
        with self.lock:
            due = []
            for iid, instance in self._ours().items():
                action = instance.due_action(now, *self._runs_over(instance, now), prepares=self._prepares(instance, now))
                if action is not None:
                    due.append((iid, action))
            return due

    def _runs_over(self, instance: Instance, now: datetime) -> tuple[bool, bool]:
        facts = self.reservations.get(instance.reservation_id)
        if facts is None:
            return False, True
        runs = reservation_runs(facts.state, facts.auto_start, instance.start, instance.end, now)
        return runs, reservation_over(facts.state, instance.end, now)

    def _prepares(self, instance: Instance, now: datetime) -> bool:
        facts = self.reservations.get(instance.reservation_id)
        if facts is None:
            return False
        return reservation_prepares(facts.state, facts.auto_start, instance.start, now, self.prepare_lead)

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
                for iid, i in self._ours().items()
                if not i.is_over and i.end > now
                and (i.status == Status.STRANDED or (i.node in lost and i.status not in (Status.RUNNING, Status.PAUSED)))
            ]

    def undecided_drains(self, now: datetime) -> list[str]:
        """Drained nodes with an instance that has to leave and has no way out decided yet
        (none planned, or one planned for a VM that stopped running): the Scheduler's
        `move_off` decides it. What could not move waits for the operator."""
        with self.lock:
            drains = {n.name: n.drain_from for n in self.nodes.values()
                      if n.drain_from is not None and self.pool in (None, n.pool)}
            if not drains:
                return []
            found = {
                i.node
                for i in self.instances.values()
                if i.node in drains and not i.is_over and i.end > (drains[i.node] or now) and i.end > now
                and i.reservation_id in self.reservations and not i.claim_live(now)
                and ((i.migrating_to is not None and i.status != Status.RUNNING)
                     or (i.migrating_to is None and i.not_moved is None))
            }
            return sorted(found)

    def running_without_ip(self) -> list[tuple[UUID, Instance]]:
        with self.lock:
            return [(iid, i) for iid, i in self._ours().items() if i.status == Status.RUNNING and i.ip_address is None]

    def to_expire(self, now: datetime) -> list[UUID]:
        """Reservations past their end whose instances are all over and cleaned up, and,
        whatever their instances did, those past it by EXPIRY_GRACE: an instance whose removal
        keeps failing must not hold its reservation open forever (the removal goes on: an
        expired reservation's instances are still due their end)."""
        with self.lock:
            return [
                rid
                for rid, facts in self.reservations.items()
                if facts.state in (State.CONFIRMED, State.ACTIVATED)
                and facts.end is not None
                and facts.end <= now
                and (facts.end + EXPIRY_GRACE <= now or all(i in self.finished for i in facts.instance_ids))
            ]

    def instance(self, instance_id: UUID) -> Instance | None:
        with self.lock:
            return self.instances.get(instance_id)

    def node_available(self, name: str) -> bool | None:
        with self.lock:
            node = self.nodes.get(name)
            return None if node is None else node.available


class DispatchModel:
    """A DispatchIndex as a read model of the follower: its position, loading the workers'
    checkpoint the first time it is asked; a batch folded under the index's lock."""

    name = CHECKPOINT

    def __init__(self, index: DispatchIndex, app: Any):
        self.index, self.app = index, app

    def position(self) -> int:
        with self.index.lock:
            if not self.index.resumed:
                self.index.resume(self.app)
            return self.index.position

    def fold(self, batch: Sequence[Recorded]) -> bool:
        index = self.index
        with index.lock:
            for recorded in after(batch, index.position):
                index.apply(recorded.event)
                index.position = recorded.id
            return True


def _time(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _from_time(t: str | None) -> datetime | None:
    return datetime.fromisoformat(t) if t is not None else None
