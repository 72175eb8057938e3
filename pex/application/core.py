"""The core every command shares: the retry on a lost race, the save (with snapshots of the
aggregates every negotiation loads), the loaders of aggregates, and the in-process read models
(`Decisions`: the capacity timeline and the pending reservation index, with their start-up
checkpoint; `Listing`: the listings' index), which the process's one follower
(pex.projections.follower) feeds.

A command loads the aggregates it needs, calls them (they check their invariants and raise
before recording anything), and saves them together in one atomic `save(...)`. Two processes
that decide on stale state collide on an aggregate version; the loser's save raises
IntegrityError, and the command runs again on fresh state (bounded, with jittered backoff)."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from pex.application.errors import Contention, NotFound, VersionConflict
from pex.application.views import InstanceView, ReservationView
from pex.domain.catalogue import CATALOGUE_ID, Catalogue
from pex.domain.errors import CapacityExceeded, NodeUnavailable
from pex.domain.instance import Instance
from pex.domain.negotiation import NegotiationPolicy, Negotiator
from pex.domain.node import Node, node_id
from pex.domain.pricing import PricingPolicy
from pex.domain.quotas import QuotaAccount, Quotas, quota_account_id
from pex.domain.reservation import Reservation
from pex.domain.values import State
from pex.projections import capacity, reservations
from pex.projections.capacity import CapacityTimeline
from pex.projections.checkpoints import Checkpoints
from pex.projections.follower import Follower, Recorded, after
from pex.projections.readmodels import store_for
from pex.projections.reservations import ReservationIndex
from pex.transcodings import register_pex_transcodings

log = logging.getLogger(__name__)

T = TypeVar("T")

# The shape of the application's checkpoint: both projections' own schemas.
CHECKPOINT_SCHEMA = capacity.STATE_SCHEMA * 1000 + reservations.STATE_SCHEMA


class Decisions:
    """What the commands decide on, as one read model of the follower: the capacity timeline
    and the pending reservation index, at one position (the timeline's), saved together in the
    application's start-up checkpoint, which the first `position()` loads."""

    name = "pex.application"

    def __init__(self, app: Core):
        self.app = app

    def position(self) -> int:
        with self.app._follow_lock:
            if not self.app._resumed:
                self.app._resume()
            return self.app.timeline.position

    def fold(self, batch: Sequence[Recorded]) -> bool:
        with self.app._follow_lock:
            timeline, index = self.app.timeline, self.app.index
            for recorded in after(batch, timeline.position):
                timeline.apply(recorded.event)
                index.apply(recorded.event)
                timeline.position = recorded.id
            return True


class Listing:
    """The listings' read model: an index of every reservation and instance ever made (it
    grows with the history, so only the list queries fold it, and no checkpoint keeps it)."""

    name = "pex.application.listing"

    def __init__(self) -> None:
        self.index = ReservationIndex()
        self.at = 0
        self.lock = threading.RLock()

    def position(self) -> int:
        return self.at

    def fold(self, batch: Sequence[Recorded]) -> bool:
        with self.lock:
            for recorded in after(batch, self.at):
                self.index.apply(recorded.event)
                self.at = recorded.id
            return True


class Core(Application):
    """The host of PEX's commands and queries: what every group of them builds on.

    PexApplication (pex.application.service) sets these attributes; the groups of commands
    (negotiation, pool, quotas, instances, accounts, queries) subclass Core, so each reads the
    shared state through a declared interface."""

    is_snapshotting_enabled = True
    node_snapshot_interval = 50
    # A lost race is run again this many times before Contention (503). Best fit sends racers to
    # the same node, so they queue on its version: with 12, a race of 24 clients on 3 workers
    # got a 503 in 4 runs of 9; with 20, in none of 6 (docs/reliability.md, section 1).
    max_attempts = 20
    # The start-up checkpoint of the timeline and the index (pex.projections.checkpoints): its
    # name, and how many events a process folds before it saves one of its own.
    checkpoint_name = "pex.application"
    checkpoint_every = 5000


    clock: Callable[[], datetime]
    pricing: PricingPolicy
    policy: NegotiationPolicy
    negotiator: Negotiator
    timeline: CapacityTimeline
    index: ReservationIndex
    follower: Follower
    decisions: Decisions
    _listing: Listing
    _checkpoints: Checkpoints | None
    _resumed: bool
    _saved_position: int
    _follow_lock: threading.RLock
    _command_lock: threading.RLock

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_pex_transcodings(transcoder)

    def follow(self) -> None:
        """Bring the in-process read models the commands decide on (the capacity timeline and
        the pending index) up to the head of the log, through the process's one follower.

        The first call in a process starts from the checkpoint, if one can be trusted, and
        folds only what came after it; a process that folded `checkpoint_every` events since
        the last checkpoint it knows saves one."""
        with self._follow_lock:
            self.follower.follow(self.decisions)
            self.timeline.forget_before(self.clock())
            if self.timeline.position - self._saved_position >= self.checkpoint_every:
                self.save_checkpoint()

    def _follow_listing(self) -> None:
        self.follower.follow(self._listing)

    @property
    def checkpoints(self) -> Checkpoints:
        """Where this process finds and saves the start-up checkpoint: the read-model store of
        the application's own database (memory for the `memory:` store)."""
        if self._checkpoints is None:
            self._checkpoints = Checkpoints(store_for(self))
        return self._checkpoints

    def _resume(self) -> None:
        loaded = self.checkpoints.load(self.checkpoint_name, CHECKPOINT_SCHEMA, self.recorder)
        self._resumed = True
        if loaded is None:
            return
        position, state = loaded
        try:
            timeline = CapacityTimeline.from_state(state["timeline"], position)
            index = ReservationIndex.from_state(state["index"])
        except (KeyError, TypeError, ValueError) as error:
            log.warning("checkpoint %s cannot be loaded (%s): folding the log from the start", self.checkpoint_name, error)
            return
        self.timeline, self.index, self._saved_position = timeline, index, position

    def save_checkpoint(self) -> bool:
        """Save what the timeline and the index reflect, with their position, unless nothing was
        folded since the last one or a checkpoint at or after it is stored; whether it was
        saved. A failure is logged: a checkpoint only saves time."""
        with self._follow_lock:
            if not self._resumed:
                self._resume()
            position = self.timeline.position
            if position == 0 or position == self._saved_position:
                return False
            state = {"timeline": self.timeline.to_state(), "index": self.index.to_state()}
            self._saved_position = position
        try:
            return self.checkpoints.save(self.checkpoint_name, CHECKPOINT_SCHEMA, position, state, self.recorder)
        except Exception as error:
            log.warning("checkpoint %s at #%s could not be saved: %s", self.checkpoint_name, position, error)
            return False

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        super().close()

    def _reservation(self, reservation_id: UUID, expected_version: int | None = None) -> Reservation:
        try:
            reservation: Reservation = self.repository.get(reservation_id)
        except AggregateNotFoundError:
            raise NotFound("no such reservation") from None
        if not isinstance(reservation, Reservation):
            raise NotFound("no such reservation")
        if expected_version is not None and reservation.version != expected_version:
            raise VersionConflict(expected_version, reservation.version)
        return reservation

    def _quota_account(self, user_id: str, at: datetime) -> QuotaAccount:
        try:
            return self.repository.get(quota_account_id(user_id))
        except AggregateNotFoundError:
            return QuotaAccount.open(user_id, at)

    def _save(self, *aggregates: Aggregate) -> None:
        # Only nodes, quota accounts and the catalogue (loaded by every negotiation) that
        # recorded something now reach a new version worth a snapshot; one that was merely
        # loaded may sit at a multiple of the interval, already snapshotted. Loading one then
        # costs at most the interval's events, however long its history.
        changed = [a for a in aggregates if isinstance(a, (Node, QuotaAccount, Catalogue)) and a.pending_events]
        self.save(*aggregates)
        for aggregate in changed:
            if aggregate.version % self.node_snapshot_interval == 0:
                try:
                    self.take_snapshot(aggregate.id, version=aggregate.version)
                except Exception:  # a snapshot is an optimisation; the events are committed
                    log.warning("snapshot of %s at version %s failed", aggregate.id, aggregate.version, exc_info=True)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a command; on a lost race (IntegrityError) or a node refusing a stale placement,
        run it again on fresh state, with jittered exponential backoff."""
        for n in range(1, self.max_attempts + 1):
            try:
                # One attempt at a time per process: threads of one worker would otherwise race
                # each other for the same (best-fit) node; across processes the store decides.
                with self._command_lock:
                    return attempt()
            except (IntegrityError, CapacityExceeded, NodeUnavailable):
                pass
            time.sleep(random.uniform(0, 0.002 * 2 ** min(n, 7)))
        raise Contention("too many concurrent changes; retry later")

    def _view(self, r: Reservation) -> ReservationView:
        return ReservationView(
            id=r.id,
            user_id=r.user_id,
            state=State(r.state),
            round=r.round,
            proposal=r.proposal,
            offer=r.offer,
            alternatives=tuple(r.alternatives),
            valid_until=r.valid_until,
            instance_ids=tuple(r.instance_ids),
            history=tuple(r.history),
            version=r.version,
            created_on=r.created_on,
            modified_on=r.modified_on,
        )

    def _instance_view(self, i: Instance) -> InstanceView:
        return InstanceView(
            id=i.id,
            reservation_id=i.reservation_id,
            user_id=i.user_id,
            name=i.name,
            size=i.size,
            template=i.template,
            node=i.node,
            start=i.start,
            end=i.end,
            status=i.status,
            ip_address=getattr(i, "ip_address", None),
            version=i.version,
            index=i.index,
            note=getattr(i, "ended_reason", None),
            error=i.last_error if i.failed_at is not None else None,
            failed_at=i.failed_at,
        )

    def _node(self, name: str) -> Node:
        try:
            return self.repository.get(node_id(name))
        except AggregateNotFoundError:
            raise NotFound(f"no node {name!r}") from None

    def _catalogue(self) -> Catalogue:
        try:
            return self.repository.get(CATALOGUE_ID)
        except AggregateNotFoundError:
            return Catalogue(at=self.clock())  # empty until an operator defines something

    def _change_catalogue(self, change: Callable[[Catalogue, datetime], None]) -> None:
        def attempt() -> None:
            at = self.clock()
            catalogue = self._catalogue()
            change(catalogue, at)
            self._save(catalogue)

        self._retrying(attempt)


    def _policy_under(self, quotas: Quotas) -> NegotiationPolicy:
        return replace(self.policy, horizon=quotas.horizon_in_force(self.policy.horizon))

    def _pool_cpus(self) -> int:
        return sum(self.timeline.capacity(name).cpus for name in self.timeline.node_names())
