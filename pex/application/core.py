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
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, Cache, LRUCache, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, InterfaceError, JSONTranscoder, OperationalError

from pex.application.errors import Contention, NotFound, VersionConflict
from pex.application.many import stored_events_of
from pex.application.views import InstanceView, ReservationView
from pex.domain.catalogue import CATALOGUE_ID, Catalogue
from pex.domain.errors import CapacityExceeded, NodeUnavailable
from pex.domain.instance import Instance
from pex.domain.negotiation import NegotiationPolicy, Negotiator
from pex.domain.node import Node, node_id
from pex.domain.pricing import PricingPolicy, used_part
from pex.domain.quotas import QuotaAccount, Quotas, quota_account_id
from pex.domain.reservation import Reservation
from pex.domain.user import InsufficientCredit, User, is_valid_username, legacy_user_id, user_id
from pex.domain.values import State
from pex.projections import capacity, reservations
from pex.projections.capacity import CapacityTimeline, PoolTimeline
from pex.projections.checkpoints import Checkpoints
from pex.projections.follower import Follower, Recorded, after
from pex.projections.readmodels import store_for
from pex.projections.reservations import ReservationIndex
from pex.transcodings import register_pex_transcodings

log = logging.getLogger(__name__)

T = TypeVar("T")


def mutated(aggregate: Any, events: Iterable[Any]) -> Any:
    """The aggregate after the events: eventsourcing's `project_aggregate` without its check of
    each event against a runtime-checkable Protocol, which costs some 30 µs an event on Python
    3.11, more than the mutation itself (a tenth of a cold claim, profiled). Every event PEX
    stores is one of its aggregates' events, which mutate."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class ConsistentCopies(Repository):
    """The repository with its aggregate cache, handing each caller a consistent copy.

    A cached aggregate is brought up to date in place (fast-forward: one query for the events
    after its version, since other processes write too) and copied for the caller, who may
    change it. The library copies after it lets go of the aggregate, so a thread could copy one
    half-way through another's fast-forward; here the fast-forward and the copy are one step
    under a lock per aggregate (striped: a fixed number, whatever the number of aggregates).

    A load of an aggregate that is never snapshotted (`snapshots=False`: reservations and
    instances; `Core._save` snapshots the rest) is `get_many` of one: one query for its events,
    where a cold load asked for a snapshot first. It is only a shortcut: every event stays in
    the store, so without a snapshot the same aggregate is built from all of them.

    The process's follower also brings cached aggregates forward (`bring_forward`, from
    `Decisions.fold`), so a thread whose reads are `current` (it followed the log since its
    reads began: `Core.begin_reads`) takes a cached aggregate as it stands, with no query:
    it reflects every event up to the follower's position. The store's version check still
    guards every save, so a decision on an aggregate that another process changed since loses
    and runs again, on fresh state."""

    STRIPES = 64

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._stripes = tuple(threading.Lock() for _ in range(self.STRIPES))
        # Per lock, how many followed events of uncached aggregates `bring_forward` passed over.
        self._passed = [0] * self.STRIPES
        # Whether the calling thread may take cached aggregates as they stand (set by Core).
        self.current: Callable[[], bool] = lambda: False

    def _stripe_index(self, aggregate_id: Any) -> int:
        return zlib.crc32(str(aggregate_id).encode()) % self.STRIPES

    def _stripe(self, aggregate_id: Any) -> threading.Lock:
        return self._stripes[self._stripe_index(aggregate_id)]

    def _copy(self, aggregate: Any, copy: bool) -> Any:
        return deepcopy(aggregate) if copy and self.deepcopy_from_cache else aggregate

    def forget_cached(self) -> None:
        """Empty the cache, between loads (under every aggregate's lock): what the follower folds
        next may start past what a cached aggregate was loaded with."""
        if not self.cache:
            return
        for lock in self._stripes:
            lock.acquire()
        try:
            self.cache = LRUCache(self.cache.maxsize) if isinstance(self.cache, LRUCache) else Cache()
            self._passed = [n + 1 for n in self._passed]  # a query already under way is not cached
        finally:
            for lock in self._stripes:
                lock.release()

    def bring_forward(self, event: Any) -> None:
        """Apply a followed event to its aggregate if it is cached and the event is its next;
        one it already has is skipped, and one after a gap drops it from the cache (to be
        loaded afresh). Under the aggregate's lock, which a cold load holds while it reads the
        store: an event either is in what the load read, or is applied after it is cached."""
        if not self.cache:
            return
        aggregate_id = event.originator_id
        stripe = self._stripe_index(aggregate_id)
        with self._stripes[stripe]:
            try:
                aggregate = self.cache.get(aggregate_id)
            except KeyError:
                self._passed[stripe] += 1
                return
            if aggregate is None or event.originator_version <= aggregate.version:
                return
            if event.originator_version == aggregate.version + 1:
                try:
                    event.mutate(aggregate)
                    return
                except Exception:  # it is not this copy's to judge: load it afresh when asked
                    log.warning("cached %s could not apply version %s", aggregate_id, event.originator_version, exc_info=True)
            self.cache.get(aggregate_id, evict=True)

    def passed_marks(self, aggregates: Iterable[Any]) -> dict[Any, int]:
        """For `remember_saved`: how many followed events `bring_forward` has passed over so far
        in the lock of each of `aggregates` (taken before they are saved)."""
        return {a.id: self._passed[self._stripe_index(a.id)] for a in aggregates if isinstance(a, Aggregate)}

    def remember_saved(self, aggregates: Iterable[Any], marks: dict[Any, int]) -> None:
        """Cache a copy of each of `aggregates` that was just saved and is not cached yet, as the
        store now has it, so that the next command to load it (the PUT after a POST) asks no
        query; under the same rule as `get_many`'s: only if the follower passed over no event
        of its lock's aggregates since `marks` (a newer version by another process, perhaps).
        One already cached is brought forward by the follower, as every other."""
        if not self.cache:
            return
        for aggregate in aggregates:
            if not isinstance(aggregate, Aggregate) or aggregate.id not in marks:
                continue
            stripe = self._stripe_index(aggregate.id)
            with self._stripes[stripe]:
                try:
                    self.cache.get(aggregate.id)
                    continue
                except KeyError:
                    pass
                if self._passed[stripe] == marks[aggregate.id]:
                    self.cache.put(aggregate.id, deepcopy(aggregate))

    def get(
        self, aggregate_id: Any, *, version: int | None = None, deepcopy_from_cache: bool = True,
        snapshots: bool = True, **kwargs: Any,
    ) -> Any:
        if not snapshots and version is None:
            found = self.get_many([aggregate_id], copies=deepcopy_from_cache)
            if aggregate_id not in found:
                raise AggregateNotFoundError(aggregate_id)
            return found[aggregate_id]
        kwargs.setdefault("projector_func", mutated)
        if not self.cache or version is not None:
            return super().get(aggregate_id, version=version, deepcopy_from_cache=deepcopy_from_cache, **kwargs)
        current = self.current()  # before the lock: it may follow the log, which takes locks
        with self._stripe(aggregate_id):
            if current:
                try:
                    aggregate = self.cache.get(aggregate_id)
                except KeyError:
                    aggregate = None
                if aggregate is not None:
                    return self._copy(aggregate, deepcopy_from_cache)
            aggregate = super().get(aggregate_id, deepcopy_from_cache=False, **kwargs)
            return self._copy(aggregate, deepcopy_from_cache)

    def get_many(self, aggregate_ids: Collection[Any], *, copies: bool = True) -> dict[Any, Any]:
        """Aggregates that are never snapshotted, with one query for the events of them all
        (pex.application.many): built from them when not cached yet, else brought up to date by
        those after the cached version; a copy of each (without `copies`, the cached one, only
        to read). Those not found are left out. When the caller's reads are `current`, the
        cached ones are taken as they stand and only the others are asked for.

        The query runs outside the aggregates' locks: one built from it is cached only if the
        follower passed over no event of its lock's aggregates meanwhile (it might have been
        one of this aggregate's, newer than the query read)."""
        cache = self.cache
        found: dict[Any, Any] = {}
        wanted = list(aggregate_ids)
        if cache and self.current():
            for aggregate_id in aggregate_ids:
                with self._stripe(aggregate_id):
                    try:
                        cached: Any = cache.get(aggregate_id)
                    except KeyError:
                        continue
                    if cached is not None:
                        found[aggregate_id] = self._copy(cached, copies)
            wanted = [i for i in aggregate_ids if i not in found]
            if not wanted:
                return found
        passed = {i: self._passed[self._stripe_index(i)] for i in wanted}
        stored = stored_events_of(self.event_store.recorder, wanted)
        to_event = self.event_store.mapper.to_domain_event
        for aggregate_id in wanted:
            events = stored.get(aggregate_id, [])
            with self._stripe(aggregate_id):
                try:
                    aggregate = cache.get(aggregate_id) if cache else None
                except KeyError:
                    aggregate = None
                if aggregate is None:
                    if not events:
                        continue
                    aggregate = mutated(None, map(to_event, events))
                    if cache and self._passed[self._stripe_index(aggregate_id)] == passed[aggregate_id]:
                        cache.put(aggregate_id, aggregate)
                else:  # in place, as a fast-forward does; only what it has not applied yet
                    aggregate = mutated(aggregate, (to_event(e) for e in events if e.originator_version > aggregate.version))
                found[aggregate_id] = self._copy(aggregate, copies) if cache else aggregate
        return found


# A thread's reads (Core.begin_reads): the next load follows the log first; the cached
# aggregates are as current as the log at the request's start, or later.
STALE, CURRENT = "stale", "current"

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
            repository = self.app.repository
            for recorded in after(batch, timeline.position):
                timeline.apply(recorded.event)
                index.apply(recorded.event)
                repository.bring_forward(recorded.event)
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
    # The aggregate cache: a command loads a node, an account, the catalogue and a reservation
    # with one query for what is newer than the cached version, instead of a snapshot and up to
    # `node_snapshot_interval` events (fast-forward, since several processes write).
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "5000", "AGGREGATE_CACHE_FASTFORWARD": "y"}
    node_snapshot_interval = 50
    # A lost race is run again this many times before Contention (503). Best fit sends racers to
    # the same node, so they queue on its version: with 12, a race of 24 clients on 3 workers
    # got a 503 in 4 runs of 9; with 20, in none of 6 (docs/reliability.md, section 1).
    max_attempts = 20
    # The start-up checkpoint of the timeline and the index (pex.projections.checkpoints): its
    # name, and how many events a process folds before it saves one of its own.
    checkpoint_name = "pex.application"
    checkpoint_every = 5000


    # How long before its start an instance's VM is made (cloned, sized, provisioned, halted),
    # so that the start only boots it; 0 makes it at the start. Set from PEX_PREPARE_LEAD_SECONDS.
    prepare_lead: timedelta = timedelta(minutes=10)

    clock: Callable[[], datetime]
    pricing: PricingPolicy
    currency: str  # PEX_CURRENCY: what every price and credit is in
    # PEX_CREDIT: whether a CONFIRM is charged to its user's credit (pex.domain.user), and
    # refused beyond it. Refunds of what was charged are made whatever it says now.
    credit_enforced: bool
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
    # Held by the command attempt that loaded a node, until its end (see `_retrying`).
    _placement_lock: threading.Lock
    _attempt: threading.local  # this thread's attempt: whether it holds the lock, waited for it
    _follows_begun: int  # how many reads of the log `follow` began (under the follow lock)
    _reads: threading.local  # this thread's request: `state`, None (outside one), STALE or CURRENT

    @property
    def repository(self) -> ConsistentCopies:
        return self._repository  # type: ignore[return-value]  # construct_repository's

    def construct_repository(self) -> Repository:
        plain = super().construct_repository()
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return ConsistentCopies(
            event_store=plain.event_store, snapshot_store=plain.snapshot_store,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=plain.fastforward, fastforward_skipping=plain.fastforward_skipping,
            deepcopy_from_cache=plain.deepcopy_from_cache,
        )

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_pex_transcodings(transcoder)

    def begin_reads(self) -> None:
        """What this thread reads from now on (a request, a worker's pass over the log)
        reflects the log as it stood now or later. Its first load of an aggregate (or `follow`)
        follows the log once, which brings the cached aggregates forward too, and every load
        after it takes them as they stand, with no query of its own; a save, or a lost race,
        makes the next load follow again. Until `end_reads`, which every caller of this calls."""
        self._reads.state = STALE

    def end_reads(self) -> None:
        self._reads.state = None

    @contextmanager
    def current_reads(self) -> Iterator[None]:
        """`begin_reads` … `end_reads` around a block (inside another such block, that one's)."""
        outer = getattr(self._reads, "state", None)
        if outer is None:
            self.begin_reads()
        try:
            yield
        finally:
            if outer is None:
                self.end_reads()

    def _reads_are_current(self) -> bool:
        """Whether this thread may take cached aggregates as they stand (see `begin_reads`);
        outside a request, never: each load asks the store for what is newer."""
        state = getattr(self._reads, "state", None)
        if state == STALE:
            self.follow()
        return state is not None

    def _reads_go_stale(self) -> None:
        if getattr(self._reads, "state", None) is not None:
            self._reads.state = STALE

    def follow(self) -> None:
        """Bring the in-process read models the commands decide on (the capacity timeline, the
        pending index, the cached aggregates) up to the head of the log, through the process's
        one follower. In a request that followed since it began, or since its last save, nothing
        more (see `begin_reads`).

        The first call in a process starts from the checkpoint, if one can be trusted, and
        folds only what came after it; a process that folded `checkpoint_every` events since
        the last checkpoint it knows saves one.

        Threads that ask at once share one read of the log: a follow that began after this
        call did reads everything committed before it, so it is not read again."""
        state = getattr(self._reads, "state", None)
        if state == CURRENT:
            return
        asked = self._follows_begun
        with self._follow_lock:
            if self._follows_begun == asked:
                self._follows_begun += 1
                self.follower.follow(self.decisions)
                self.timeline.forget_before(self.clock())
                if self.timeline.position - self._saved_position >= self.checkpoint_every:
                    self.save_checkpoint()
        if state is not None:
            self._reads.state = CURRENT

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
        # The follower goes on from the checkpoint's position, which may be past what an
        # aggregate cached before was loaded with: it would never be brought forward.
        self.repository.forget_cached()
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
            reservation: Reservation = self.repository.get(reservation_id, snapshots=False)
        except AggregateNotFoundError:
            raise NotFound("no such reservation") from None
        if not isinstance(reservation, Reservation):
            raise NotFound("no such reservation")
        if expected_version is not None and reservation.version != expected_version:
            raise VersionConflict(expected_version, reservation.version)
        return reservation

    def _user(self, username: str, *, to_change: bool = True) -> User | None:
        """The user of that name, or None. Without `to_change` the caller is given the cached
        aggregate itself, not a copy: only for reading one attribute, which a fast-forward in
        another thread replaces whole (several could be read from two versions)."""
        if not is_valid_username(username):
            return None
        ids = [user_id(username)]
        if username != username.lower():
            ids.append(legacy_user_id(username))  # registered, with capitals, before names ignored case
        for id in ids:
            try:
                user: User = self.repository.get(id, deepcopy_from_cache=to_change)
            except AggregateNotFoundError:
                continue
            if isinstance(user, User):
                return user
        return None

    def ssh_keys_of(self, username: str) -> tuple[str, ...]:
        """The SSH public keys of the user (none for an unknown one): what their new VMs let in."""
        user = self._user(username, to_change=False)
        return tuple(getattr(user, "ssh_keys", ())) if user is not None else ()

    def _charge(self, reservation: Reservation, at: datetime) -> list[User]:
        """With credit enforced, the user charged the price of the offer being confirmed (to
        be saved with the booking); InsufficientCredit beyond their balance. An unknown user
        has no credit."""
        offer = reservation.offer
        if not self.credit_enforced or offer is None or offer.terms.price is None:
            return []
        user = self._user(reservation.user_id)
        if user is None:
            raise InsufficientCredit(offer.terms.price, Decimal("0.00"))
        user.charge(reservation.id, offer.terms.price, at)
        return [user]

    def _charge_extension(self, reservation: Reservation, price: Decimal | None, at: datetime) -> list[User]:
        """With credit enforced, the user charged an extension's price (to be saved with its
        booking), if the reservation's own booking was charged; InsufficientCredit beyond the balance."""
        if not self.credit_enforced or not price:
            return []
        user = self._user(reservation.user_id)
        if user is None:
            return []
        user.charge_extension(reservation.id, price, at)
        return [user] if user.pending_events else []

    def _refund(self, reservation: Reservation, at: datetime) -> list[User]:
        """The user given back the unused part of what the booking of `reservation` took, if
        it took anything (to be saved with the end); call before the reservation records it."""
        offer = reservation.offer
        if offer is None or not reservation.instance_ids or reservation.state not in (State.CONFIRMED, State.ACTIVATED):
            return []
        user = self._user(reservation.user_id)
        charged = user.charged_for(reservation.id) if user is not None else None
        if user is None or charged is None:
            return []
        terms = offer.terms
        user.refund(reservation.id, charged - used_part(charged, terms.start, terms.end, at), at)
        return [user]

    def _quota_account(self, user_id: str, at: datetime) -> QuotaAccount:
        try:
            return self.repository.get(quota_account_id(user_id))
        except AggregateNotFoundError:
            return QuotaAccount.open(user_id, at)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        self._reads_go_stale()  # the cached aggregates have not followed this save yet
        marks = self.repository.passed_marks(objs)
        recordings = super().save(*objs, **kwargs)
        self.repository.remember_saved(objs, marks)
        return recordings

    def _save(self, *aggregates: Aggregate) -> None:
        # Only nodes, quota accounts and the catalogue (loaded by every negotiation) that
        # recorded something now reach a new version worth a snapshot; one that was merely
        # loaded may sit at a multiple of the interval, already snapshotted. Loading one then
        # costs at most the interval's events, however long its history.
        changed = [a for a in aggregates if isinstance(a, (Node, QuotaAccount, Catalogue, User)) and a.pending_events]
        self.save(*aggregates)
        for aggregate in changed:
            if aggregate.version % self.node_snapshot_interval == 0:
                try:
                    self.snapshot_as_saved(aggregate)
                except (OperationalError, InterfaceError) as error:
                    # A snapshot is an optimisation, and the events are committed: the store
                    # going away just then (an outage, a failover) is no error of PEX's, and
                    # its traceback would say otherwise in the log.
                    log.warning("snapshot of %s at version %s failed: %s", aggregate.id, aggregate.version, error)
                except Exception:
                    log.warning("snapshot of %s at version %s failed", aggregate.id, aggregate.version, exc_info=True)

    def snapshot_as_saved(self, aggregate: Aggregate) -> None:
        """Snapshot `aggregate` as it stands, just saved: its state is what its events made it
        (a command changes an aggregate only through them). The library's `take_snapshot`
        loads it again from the store and replays up to an interval of events (on a busy node,
        11 ms in process, most of a negotiation's CPU at the saves that snapshot)."""
        snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
        assert self.snapshots is not None and snapshot_class is not None  # is_snapshotting_enabled
        self.snapshots.put([snapshot_class.take(aggregate)])

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a command; on a lost race (IntegrityError) or a node refusing a stale placement,
        run it again on fresh state, with jittered exponential backoff.

        The store's optimistic concurrency (every save names the versions it decided on) is
        what keeps the promises, across threads and processes alike. In a process, threads
        would also race each other for the same best-fit node and mostly lose; so an attempt
        takes the process's placement lock before it decides where instances go
        (`_follow_to_place`), or else when it loads its first node (`_node`), and keeps it to
        its end. Loading the reservation, the catalogue and the account, and every step that
        touches no node (an ACCEPT of a counter-offer, a read, a password check) run side by
        side with it.

        An attempt that waited for the lock may have read a node before a thread of its own
        process changed it; if it then loses, it runs again at once, keeping the lock, so that
        this time it decides on what that thread did (not a loss to another process: it does
        not count against `max_attempts`)."""
        if getattr(self._attempt, "holding", None) is not None:
            return attempt()  # a command inside a command's attempt: the outer one holds the lock
        losses, keep = 0, False
        while losses < self.max_attempts:
            self._attempt.holding, self._attempt.waited = keep, False
            keep = False
            try:
                return attempt()
            except (IntegrityError, CapacityExceeded, NodeUnavailable):
                keep = self._attempt.holding and self._attempt.waited
            finally:
                if self._attempt.holding and not keep:
                    self._placement_lock.release()
                self._attempt.holding = None
            self._reads_go_stale()  # what this attempt decided on was stale: follow before the next
            if not keep:
                losses += 1
                time.sleep(random.uniform(0, 0.002 * 2 ** min(losses, 7)))
        raise Contention("too many concurrent changes; retry later")

    def _hold_nodes(self) -> None:
        """In a command's attempt, take the placement lock for the rest of it (see `_retrying`)."""
        if getattr(self._attempt, "holding", None) is not False:
            return  # outside an attempt, or held already
        if not self._placement_lock.acquire(blocking=False):
            self._placement_lock.acquire()
            self._attempt.waited = True
            # The thread it waited for has likely changed a node: load them as they are now.
            self._reads_go_stale()
        self._attempt.holding = True

    def _follow_to_place(self) -> None:
        """Follow the log for a decision of where instances go, holding the placement lock
        (`_hold_nodes`) from here to the attempt's end. Taken only at the first node's load, a
        thread that decided while another held it decided on what that one was changing, and
        lost (in a run of the HTTP bench, 110 lost decisions in 1,800 requests); under the GIL,
        deciding side by side saved no time."""
        self._hold_nodes()
        self.follow()

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
            extension=r.extension,
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
        self._hold_nodes()
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

    def _home_pool(self, reservation: Reservation) -> str | None:
        """The pool `reservation` lives in: that of the nodes of its offer, its first offer's
        pool (a reservation is never offered another); None before its first offer. Under
        the follow lock."""
        offer = reservation.offer
        for name in offer.nodes if offer is not None else ():
            pool = self.timeline.pool_of(name)
            if pool is not None:
                return pool
        return None

    def _view_in(self, pool: str | None) -> CapacityTimeline | PoolTimeline:
        """The timeline of `pool`'s nodes; the whole timeline for None. Under the follow lock."""
        return self.timeline if pool is None else self.timeline.of_pool(pool)

    def _placing_view(self, reservation: Reservation) -> CapacityTimeline | PoolTimeline:
        """Where `reservation`'s instances may be placed: its pool's nodes (the whole timeline
        when it has none yet, or when there is one pool). Under the follow lock."""
        return self._view_in(self._home_pool(reservation))
