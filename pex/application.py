"""The service layer: PexApplication, an eventsourcing Application whose methods are PEX's
commands and queries. Everything that changes state goes through here.

A command loads the aggregates it needs, calls them (they check their invariants and raise
before recording anything), and saves them together in one atomic `save(...)`. Two processes
that decide on stale state collide on an aggregate version; the loser's save raises
IntegrityError, and the command runs again on fresh state (bounded, with jittered backoff).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder

from pex.accounts import Accounts
from pex.clock import system_clock
from pex.domain.catalogue import CATALOGUE_ID, DEMO_NODES, DEMO_TEMPLATES, TABLE_1_SIZES, Catalogue
from pex.domain.errors import CapacityExceeded, CatalogueError, InvalidProposal, NodeUnavailable
from pex.domain.instance import Instance, instance_id, instance_name
from pex.domain.negotiation import NegotiationPolicy, Negotiator, answer_within_quotas, check_terms, evaluate
from pex.domain.node import Node, node_id
from pex.domain.pricing import FlatRatePricing, PricingPolicy
from pex.domain.quotas import QuotaAccount, Quotas, Usage, cpu_seconds, quota_account_id
from pex.domain.reservation import USER_REPLIES, Reservation, Step
from pex.domain.values import Offer, Reply, Resources, Size, State, Terms
from pex.projections import capacity, reservations
from pex.projections.capacity import CapacityTimeline
from pex.projections.checkpoints import Checkpoints
from pex.projections.readmodels import store_for
from pex.projections.reservations import ReservationIndex
from pex.transcodings import register_pex_transcodings
from pex.vm_lifecycle import VmLifecycle

log = logging.getLogger(__name__)

T = TypeVar("T")

# The shape of the application's checkpoint: both projections' own schemas.
CHECKPOINT_SCHEMA = capacity.STATE_SCHEMA * 1000 + reservations.STATE_SCHEMA


class NotFound(Exception):
    """No such reservation, instance or node (or not the caller's)."""


class VersionConflict(Exception):
    """The caller acted on a version of the reservation that is no longer the current one
    (HTTP If-Match); checked on the version the command saves against, so it is atomic."""

    def __init__(self, expected: int, actual: int):
        self.expected, self.actual = expected, actual
        super().__init__(f"expected version {expected}, the reservation is at version {actual}")


class Contention(Exception):
    """Too many concurrent writers on the same aggregates; the caller may retry later."""


@dataclass(frozen=True)
class ReservationView:
    """A reservation as a query returns it: plain values, never the aggregate."""

    id: UUID
    user_id: str
    state: State
    round: int
    proposal: Terms | None
    offer: Offer | None
    alternatives: tuple[Offer, ...]
    valid_until: datetime | None
    instance_ids: tuple[UUID, ...]
    history: tuple[Step, ...]
    version: int
    created_on: datetime
    modified_on: datetime

    @property
    def terms(self) -> Terms | None:
        """The terms that stand: the offer once the provider answered, else the proposal."""
        return self.offer.terms if self.offer else self.proposal


@dataclass(frozen=True)
class Outcome:
    """The provider's answer to one negotiation step."""

    reply: Reply
    reservation: ReservationView
    reason: str = ""


@dataclass(frozen=True)
class InstanceView:
    id: UUID
    reservation_id: UUID
    user_id: str
    name: str
    size: str
    template: str
    node: str
    start: datetime
    end: datetime
    status: str
    ip_address: str | None
    version: int


@dataclass(frozen=True)
class NodeView:
    name: str
    capacity: Resources
    available: bool
    version: int


class PexApplication(Accounts, VmLifecycle, Application):
    name = "pex"  # pinned: it names the tables and the env prefix
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

    def __init__(
        self,
        env: dict[str, str] | None = None,
        clock: Callable[[], datetime] = system_clock,
        pricing: PricingPolicy | None = None,
        policy: NegotiationPolicy | None = None,
        negotiator: Negotiator = evaluate,
    ):
        super().__init__(env)
        self.clock = clock
        self.pricing = pricing or FlatRatePricing()
        self.policy = policy or NegotiationPolicy()
        self.negotiator = negotiator  # the provider's strategy; pex.simulation compares others
        self.timeline = CapacityTimeline()
        self.index = ReservationIndex(pending_only=True)
        self._listing = ReservationIndex()  # every reservation ever: only the listings fold it
        self._listing_position = 0
        self._checkpoints: Checkpoints | None = None
        self._resumed = False
        self._saved_position = 0
        self._follow_lock = threading.RLock()
        self._command_lock = threading.RLock()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_pex_transcodings(transcoder)

    # --- catalogue and pool (operators) ------------------------------------------------

    def install_demo_pool(self, at: datetime | None = None) -> bool:
        """Set up the paper's sizes, templates and testbed if the store has no catalogue yet."""
        at = at or self.clock()
        if CATALOGUE_ID in self.repository:
            return False
        catalogue = Catalogue(at=at)
        for size in TABLE_1_SIZES:
            catalogue.define_size(size, at)
        for name, description in DEMO_TEMPLATES:
            catalogue.register_template(name, description, at)
        nodes = [Node(name=name, capacity=capacity, at=at) for name, capacity in DEMO_NODES if node_id(name) not in self.repository]
        try:
            self.save(catalogue, *nodes)
        except IntegrityError:
            return False  # another process installed it first
        return True

    def catalogue(self) -> Catalogue:
        try:
            return self.repository.get(CATALOGUE_ID)
        except AggregateNotFoundError:
            return Catalogue(at=self.clock())  # empty until an operator defines something

    def _change_catalogue(self, change: Callable[[Catalogue, datetime], None]) -> None:
        def attempt() -> None:
            at = self.clock()
            catalogue = self.catalogue()
            change(catalogue, at)
            self._save(catalogue)

        self._retrying(attempt)

    def define_size(self, size: Size) -> None:
        self._change_catalogue(lambda c, at: c.define_size(size, at))

    def withdraw_size(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_size(name, at))

    def register_template(self, name: str, description: str = "") -> None:
        self._change_catalogue(lambda c, at: c.register_template(name, description, at))

    def withdraw_template(self, name: str) -> None:
        self._change_catalogue(lambda c, at: c.withdraw_template(name, at))

    def quotas(self, user_id: str | None = None) -> Quotas:
        """The quotas in force (the defaults until an administrator sets them); with
        `user_id`, that user's (their own, if an administrator gave them some)."""
        catalogue = self.catalogue()
        return catalogue.quotas if user_id is None else catalogue.quotas_for(user_id)

    def has_own_quotas(self, user_id: str) -> bool:
        return user_id in self.catalogue().user_quotas

    def set_quotas(self, quotas: Quotas, by: str) -> Quotas:
        """Put `quotas` in force from now, for every proposal from now on; what was agreed or
        offered before stands. `by` is the administrator, recorded with the change."""
        self._change_catalogue(lambda c, at: c.set_quotas(quotas, by, at))
        return quotas

    def set_user_quotas(self, user_id: str, quotas: Quotas | None, by: str) -> Quotas:
        """Give one user quotas of their own, or (None) put them back under everyone's."""
        self._change_catalogue(lambda c, at: c.set_user_quotas(user_id, quotas, by, at))
        return self.quotas(user_id)

    def policy_in_force(self, user_id: str | None = None) -> NegotiationPolicy:
        """The negotiation policy with the quotas' horizon (`user_id`'s, if given): what
        proposals are checked against."""
        return self._policy_under(self.quotas(user_id))

    def _policy_under(self, quotas: Quotas) -> NegotiationPolicy:
        return replace(self.policy, horizon=quotas.horizon_in_force(self.policy.horizon))

    def pool_cpus(self) -> int:
        """The CPUs of the nodes that take reservations now: the default CPU-hour quota's base."""
        self.follow()
        with self._follow_lock:
            return self._pool_cpus()

    def _pool_cpus(self) -> int:
        return sum(self.timeline.capacity(name).cpus for name in self.timeline.node_names())

    def check_quotas(self, user_id: str, terms: Terms, reservation_id: UUID | None = None) -> None:
        """Refuse terms over a quota that no counter can honour (QuotaExceeded) before a
        reservation is made for them; the command that holds checks again, authoritatively."""
        at = self.clock()
        catalogue = self.catalogue()
        size = catalogue.size(terms.size)
        quotas = catalogue.quotas_for(user_id)
        self.follow()
        with self._follow_lock:
            usage = self.index.usage(user_id, at, excluding=reservation_id)
            quotas.limit(terms, size.cpus, usage, self._pool_cpus(), at, self._policy_under(quotas).horizon)

    def usage(self, user_id: str, excluding: UUID | None = None) -> Usage:
        """What `user_id` holds or booked from now on, as the quotas count it."""
        self.follow()
        with self._follow_lock:
            return self.index.usage(user_id, self.clock(), excluding)

    def register_node(self, name: str, capacity: Resources) -> UUID:
        if not name or capacity.cpus <= 0 or capacity.memory_mb <= 0 or capacity.disk_gb < 0:
            raise CatalogueError("a node needs a name and positive CPUs and memory")
        node = Node(name=name, capacity=capacity, at=self.clock())
        try:
            self.save(node)
        except IntegrityError:
            raise CatalogueError(f"node {name!r} is already registered") from None
        return node.id

    def resize_node(self, name: str, capacity: Resources) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.resize(capacity, at)))

    def mark_node_lost(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_lost(at)))

    def mark_node_returned(self, name: str) -> None:
        self._retrying(lambda: self._save_nodes(self._node(name), lambda n, at: n.mark_returned(at)))

    def _save_nodes(self, node: Node, change: Callable[[Node, datetime], None]) -> None:
        change(node, self.clock())
        self._save(node)

    def _node(self, name: str) -> Node:
        try:
            return self.repository.get(node_id(name))
        except AggregateNotFoundError:
            raise NotFound(f"no node {name!r}") from None

    def nodes(self) -> list[NodeView]:
        self.follow()
        with self._follow_lock:
            names = list(self.timeline.nodes)
        views = []
        for name in names:
            node = self._node(name)
            views.append(NodeView(node.name, node.capacity, node.available, node.version))
        return views

    # --- negotiation (users) -----------------------------------------------------------

    def initiate_reservation(self, user_id: str, reservation_id: UUID | None = None) -> UUID:
        """initiateReservation: open a negotiation and return its id.

        A caller-chosen `reservation_id` (e.g. derived from an Idempotency-Key) makes the call
        idempotent: initiating the same id twice gives the same reservation."""
        reservation = Reservation.initiate(user_id, self.clock(), reservation_id or uuid4())
        try:
            self.save(reservation)
        except IntegrityError:
            existing = self._reservation(reservation.id)
            if existing.user_id != user_id:
                raise NotFound("no such reservation") from None
        return reservation.id

    def submit_proposal(self, reservation_id: UUID, terms: Terms) -> Outcome:
        """requestReservation, and a user's COUNTER: the provider evaluates and answers."""
        return self._retrying(lambda: self._evaluate(reservation_id, terms, counter=False))

    def counter(self, reservation_id: UUID, terms: Terms, expected_version: int | None = None) -> Outcome:
        """The user's COUNTER to the provider's COUNTER: their own proposal, evaluated again."""
        return self._retrying(lambda: self._evaluate(reservation_id, terms, counter=True, expected_version=expected_version))

    def _evaluate(self, reservation_id: UUID, terms: Terms, counter: bool, expected_version: int | None = None) -> Outcome:
        at = self.clock()
        reservation = self._reservation(reservation_id, expected_version)
        reservation.check("counter" if counter or reservation.state == State.COUNTERED else "submit")
        catalogue = self.catalogue()
        size = catalogue.size(terms.size)
        catalogue.check_template(terms.template)
        quotas = catalogue.quotas_for(reservation.user_id)
        policy = self._policy_under(quotas)
        check_terms(terms, at, policy)
        # Loaded before the usage is read: a process that charged this user since then has
        # moved the account on, and this attempt's save loses and runs again on fresh usage.
        account = self._quota_account(reservation.user_id, at)
        self.follow()
        with self._follow_lock:
            usage = self.index.usage(reservation.user_id, at, excluding=reservation.id)
            limited = quotas.limit(terms, size.cpus, usage, self._pool_cpus(), at, policy.horizon)
            decision = self.negotiator(
                limited, size, self.timeline, at, self.pricing, policy, reservation.round + 1, reservation.id
            )
        decision = answer_within_quotas(terms, limited, decision)
        previous = reservation.offer if reservation.state in (State.ACCEPTED, State.COUNTERED) else None
        reservation.submit(terms, size.resources, at)
        nodes: dict[str, Node] = {}
        if decision.offer is not None:
            valid_until = at + self.policy.offer_ttl
            offered = decision.offer.terms
            for allocation in decision.offer.placement:
                node = nodes.setdefault(allocation.node, self._node(allocation.node))
                node.hold(
                    reservation.id, offered.start, offered.end, allocation.instances, size.resources, valid_until, at
                )
            if decision.reply == Reply.ACCEPT:
                reservation.accept(decision.offer, valid_until, at)
            else:
                reservation.counter_offer(decision.offer, decision.alternatives, valid_until, at)
            taken = cpu_seconds(size.cpus, offered.instances, offered.start, offered.end, at)
            account.charge(reservation.id, taken, usage, at)
        else:
            reservation.reject(decision.reason, at)
        if previous is not None:
            for name in previous.nodes:
                if name not in nodes:
                    nodes[name] = self._node(name)
                    nodes[name].release(reservation.id, "superseded by a new offer", at)
        charged = [account] if decision.offer is not None else []
        self._save(reservation, *nodes.values(), *charged)
        return Outcome(decision.reply, self._view(reservation), decision.reason)

    def respond(
        self, reservation_id: UUID, reply: Reply | str, terms: Terms | None = None, expected_version: int | None = None
    ) -> Outcome:
        """One negotiation step of the wire protocol: the user's CONFIRM, ACCEPT, REJECT or COUNTER.
        With `expected_version`, the step is refused (VersionConflict) unless the reservation
        is still at that version when it is saved."""
        reply = Reply(reply)
        move = USER_REPLIES.get(reply)
        if move is None:
            raise InvalidProposal("reply", f"a user replies CONFIRM, ACCEPT, REJECT or COUNTER, not {reply.value}")
        if reply == Reply.CONFIRM:
            return self.confirm(reservation_id, expected_version)
        if reply == Reply.ACCEPT:
            return self.accept_counter(reservation_id, expected_version)
        if reply == Reply.REJECT:
            return self.decline(reservation_id, expected_version)
        if terms is None:
            raise InvalidProposal("proposal", "a COUNTER carries the user's proposal")
        return self.counter(reservation_id, terms, expected_version)

    def accept_counter(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        def attempt() -> Outcome:
            reservation = self._reservation(reservation_id, expected_version)
            reservation.accept_counter(self.clock())
            self._save(reservation)
            return Outcome(Reply.CONFIRM_REQUEST, self._view(reservation))

        return self._retrying(attempt)

    def decline(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        def attempt() -> Outcome:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            reservation.decline(at)
            nodes = self._release_all(reservation, "offer declined", at)
            self._save(reservation, *nodes)
            return Outcome(Reply.REJECT, self._view(reservation))

        return self._retrying(attempt)

    def confirm(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        """The user's CONFIRM: the provider books the held capacity and schedules the instances."""

        def attempt() -> Outcome:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            reservation.check("confirm", "only an accepted offer can be confirmed")
            reservation.check_offer_valid(at)
            offer = reservation.offer
            assert offer is not None
            nodes, instances = [], []
            try:
                for allocation in offer.placement:
                    node = self._node(allocation.node)
                    node.book(reservation.id, offer.terms.start, offer.terms.end, allocation.instances, offer.per_instance, at)
                    nodes.append(node)
                    for _ in range(allocation.instances):
                        index = len(instances)
                        instances.append(
                            Instance(
                                reservation_id=reservation.id,
                                user_id=reservation.user_id,
                                index=index,
                                name=instance_name(reservation.id, index),
                                size=offer.terms.size,
                                template=offer.terms.template,
                                per_instance=offer.per_instance,
                                node=allocation.node,
                                start=offer.terms.start,
                                end=offer.terms.end,
                                at=at,
                            )
                        )
            except (CapacityExceeded, NodeUnavailable) as refused:
                # Only when a hold was judged lapsed by another process's clock and given away.
                return Outcome(Reply.REQUEST_FAILED, self._view(reservation), str(refused))
            reservation.confirm(tuple(i.id for i in instances), at)
            self._save(reservation, *nodes, *instances)
            return Outcome(Reply.REQUEST_SUCCESS, self._view(reservation))

        return self._retrying(attempt)

    def activate(self, reservation_id: UUID, expected_version: int | None = None) -> ReservationView:
        def attempt() -> ReservationView:
            reservation = self._reservation(reservation_id, expected_version)
            reservation.activate(self.clock())
            self._save(reservation)
            return self._view(reservation)

        return self._retrying(attempt)

    def cancel(
        self, reservation_id: UUID, reason: str = "deleted by the user", expected_version: int | None = None
    ) -> ReservationView:
        """Delete a reservation that is not activated, releasing what it holds or booked."""

        def attempt() -> ReservationView:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            reservation.cancel(reason, at)
            nodes = self._release_all(reservation, reason, at)
            instances = [self.repository.get(i) for i in reservation.instance_ids]
            for instance in instances:
                instance.cancel(at)
            self._save(reservation, *nodes, *instances)
            return self._view(reservation)

        return self._retrying(attempt)

    def terminate(self, reservation_id: UUID, by: str, reason: str, expected_version: int | None = None) -> ReservationView:
        """An administrator ends a reservation in any live state, an activated one too: what
        it holds or booked is released now, instances not yet started are cancelled, and the
        timer worker ends the running ones at its next tick (as at a reservation's end)."""

        def attempt() -> ReservationView:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            reservation.terminate(by, reason, at)
            nodes = self._release_all(reservation, f"ended by {by}: {reason}", at)
            instances = [self.repository.get(i) for i in reservation.instance_ids]
            for instance in instances:
                instance.cancel(at)
            self._save(reservation, *nodes, *instances)
            return self._view(reservation)

        return self._retrying(attempt)

    def expire_offer(self, reservation_id: UUID) -> bool:
        """Record that an offer lapsed and release its holds. False if it is not due (any more)."""

        def attempt() -> bool:
            at = self.clock()
            reservation = self._reservation(reservation_id)
            if not reservation.can("expire_offer") or (reservation.valid_until and reservation.valid_until > at):
                return False
            reservation.expire_offer(at)
            nodes = self._release_all(reservation, "offer lapsed", at)
            self._save(reservation, *nodes)
            return True

        return self._retrying(attempt)

    def expire_offers(self) -> int:
        """Expire every lapsed offer. Safe to run in several processes at once."""
        self.follow()
        with self._follow_lock:
            due = self.index.lapsed_offers(self.clock())
        return sum(self.expire_offer(rid) for rid in due)

    def expire_reservation(self, reservation_id: UUID) -> bool:
        """Mark a confirmed or activated reservation EXPIRED once its interval is over."""

        def attempt() -> bool:
            at = self.clock()
            reservation = self._reservation(reservation_id)
            offer = reservation.offer
            if not reservation.can("expire") or offer is None or offer.terms.end > at:
                return False
            reservation.expire(at)
            self._save(reservation)
            return True

        return self._retrying(attempt)

    def _release_all(self, reservation: Reservation, reason: str, at: datetime) -> list[Node]:
        nodes = []
        if reservation.offer is not None:
            for name in reservation.offer.nodes:
                node = self._node(name)
                node.release(reservation.id, reason, at)
                nodes.append(node)
        return nodes

    # --- queries -----------------------------------------------------------------------

    def get_reservation(self, reservation_id: UUID, user_id: str | None = None) -> ReservationView:
        """One reservation; `user_id` restricts it to that user's (others answer NotFound)."""
        reservation = self._reservation(reservation_id)
        if user_id is not None and reservation.user_id != user_id:
            raise NotFound("no such reservation")
        return self._view(reservation)

    def list_reservations(self, user_id: str | None = None, state: State | None = None) -> list[ReservationView]:
        """Every reservation (of `user_id`), oldest first. Folds the whole log the first time in a
        process: the API's lists are served from the read models instead."""
        with self._follow_lock:
            self._follow_listing()
            entries = [e for e in self._listing.of_user(user_id) if state is None or e.state == state]
        return [self._view(self._reservation(e.id)) for e in entries]

    def get_instance(self, instance_id_: UUID, user_id: str | None = None) -> InstanceView:
        try:
            instance = self.repository.get(instance_id_)
        except AggregateNotFoundError:
            raise NotFound("no such instance") from None
        if not isinstance(instance, Instance) or (user_id is not None and instance.user_id != user_id):
            raise NotFound("no such instance")
        return self._instance_view(instance)

    def list_instances(self, user_id: str | None = None) -> list[InstanceView]:
        """Every instance (of `user_id`); like list_reservations, folds the log once."""
        with self._follow_lock:
            self._follow_listing()
            if user_id is None:
                ids = [i for ids in self._listing.instances_by_user.values() for i in ids]
            else:
                ids = list(self._listing.instances_by_user.get(user_id, []))
        return [self._instance_view(self.repository.get(i)) for i in ids]

    def reservation_events(self, reservation_id: UUID) -> list[Any]:
        """The stored events of one reservation, oldest first: its history as recorded."""
        self._reservation(reservation_id)
        return list(self.events.get(reservation_id))

    def node_allocations(self, name: str) -> list[Any]:
        self.follow()
        with self._follow_lock:
            if name not in self.timeline.nodes:
                raise NotFound(f"no node {name!r}")
            return self.timeline.allocations(name, self.clock())

    # --- following the log -------------------------------------------------------------

    def follow(self) -> None:
        """Bring the in-process read models up to the head of the log.

        The first call in a process starts from the checkpoint, if one can be trusted, and
        folds only what came after it; a process that folded `checkpoint_every` events since
        the last checkpoint it knows saves one."""
        with self._follow_lock:
            if not self._resumed:
                self._resume()
            while True:
                batch = self.recorder.select_notifications(
                    start=self.timeline.position, limit=1000, inclusive_of_start=False
                )
                for notification in batch:
                    event = self.mapper.to_domain_event(notification)
                    self.timeline.apply(event)
                    self.index.apply(event)
                    self.timeline.position = notification.id
                if len(batch) < 1000:
                    break
            self.timeline.forget_before(self.clock())
            if self.timeline.position - self._saved_position >= self.checkpoint_every:
                self.save_checkpoint()

    def _follow_listing(self) -> None:
        while True:
            batch = self.recorder.select_notifications(start=self._listing_position, limit=1000, inclusive_of_start=False)
            for notification in batch:
                self._listing.apply(self.mapper.to_domain_event(notification))
                self._listing_position = notification.id
            if len(batch) < 1000:
                return

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

    # --- plumbing ----------------------------------------------------------------------

    def _reservation(self, reservation_id: UUID, expected_version: int | None = None) -> Reservation:
        try:
            reservation = self.repository.get(reservation_id)
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
        )

