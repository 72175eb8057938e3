"""The negotiation (paper §3, Table 2): proposals, the provider's answers, the user's replies,
confirmation and activation, cancellation and expiry."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from pex.application.errors import NotFound, ProposalInProgress, ProposalReused
from pex.application.extension import Extensions
from pex.application.quotas import QuotaCommands
from pex.application.views import Outcome, Proposed, ReservationView
from pex.domain.errors import CapacityExceeded, DomainError, IllegalMove, InvalidProposal, NodeUnavailable
from pex.domain.instance import Instance, instance_name
from pex.domain.negotiation import Decision, NegotiationPolicy, answer_within_quotas, best_of_pools, check_terms
from pex.domain.node import Node
from pex.domain.placement import Movable, Move, Rearranged, place, repack
from pex.domain.quotas import cpu_seconds
from pex.domain.reservation import USER_REPLIES, Reservation, extension_hold_id
from pex.domain.values import Allocation, Reply, Size, State, Terms

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many pools a first proposal is evaluated in, at most (`_pools_to_search`): what one costs
# grows with this, not with the number of pools (docs/scaling.md).
POOLS_SEARCHED = 3

class Negotiation(Extensions, QuotaCommands):
    """The negotiation (paper §3, Table 2): proposals, the provider's answers, the user's replies,"""

    # Re-packing (PEX_REPACK): a request that does not fit as asked may move bookings of other
    # reservations to other nodes, if they start more than the prepare lead and this margin
    # (PEX_REPACK_MARGIN_SECONDS) after the decision (see `_repack`).
    repack: bool = True
    repack_margin: timedelta = timedelta(minutes=10)

    def propose(
        self, user_id: str, terms: Terms, reservation_id: UUID | None = None, *, keep_on_failure: bool = False
    ) -> Proposed:
        """A user's first proposal, as one command: initiateReservation and requestReservation,
        recorded in one save with the answer and what it holds.

        Malformed terms, and terms over a quota, are refused before anything is recorded, so a
        refused proposal changes nothing. A caller-chosen `reservation_id` (from an
        Idempotency-Key, or a form's nonce) makes it idempotent: proposing again under the same
        id answers what was answered then (`replayed`), or raises ProposalReused for other
        terms (ProposalInProgress if no answer to a first proposal is recorded under it). A
        reservation initiated on its own before (initiateReservation) is proposed to as
        `submit_proposal` does; one that fails then is cancelled, unless `keep_on_failure` (the
        same id may then be proposed again)."""
        rid = reservation_id or uuid4()
        if reservation_id is None or not self._exists(reservation_id):
            tries = 0

            def first_proposal() -> Outcome | None:
                nonlocal tries
                tries += 1
                # A save lost to a proposal under the same id (a client's retry racing its
                # first try) finds it recorded: answered as that one was.
                if reservation_id is not None and tries > 1 and self._exists(reservation_id):
                    return None
                return self._answer(Reservation.initiate(user_id, self.clock(), rid), terms, counter=False)

            outcome = self._retrying(first_proposal)
            if outcome is not None:
                return Proposed(outcome)
        existing = self._reservation(rid)
        if existing.user_id != user_id:
            raise NotFound("no such reservation")
        if existing.state != State.INITIATED:
            # Proposed before under this id: answered as then. (Submitting again would make a
            # COUNTER answered then a user's counter-proposal now.)
            return self._first_answer(rid, terms)
        try:
            return Proposed(self.submit_proposal(rid, terms))
        except IllegalMove:
            return self._first_answer(rid, terms)  # proposed before under this id
        except DomainError:
            if not keep_on_failure:
                self._abandon(rid)
            raise

    def _exists(self, reservation_id: UUID) -> bool:
        try:
            self.repository.get(reservation_id, snapshots=False, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return False
        return True

    def check_proposal(self, user_id: str, terms: Terms) -> None:
        """Refuse terms no negotiation can take (an unknown size or template, times outside the
        policy: InvalidProposal) before anything is recorded; the quotas are checked apart."""
        catalogue = self._catalogue()
        catalogue.size(terms.size)
        catalogue.check_template(terms.template)
        check_terms(terms, self.clock(), self.policy_in_force(user_id))

    def _first_answer(self, reservation_id: UUID, terms: Terms) -> Proposed:
        """The answer recorded to the reservation's first proposal, if it is `terms`."""
        view = self._view(self._reservation(reservation_id))
        proposed, answer, note = None, None, ""
        for step in view.history:
            if step.party == "user" and step.reply == "PROPOSE":
                proposed = step.terms
            elif proposed is not None and step.party == "provider" and step.reply in ("ACCEPT", "COUNTER", "REJECT"):
                answer, note = Reply(step.reply), step.note
                break
        if proposed is None or answer is None:
            raise ProposalInProgress("a proposal with this id is still being answered")
        if proposed != terms:
            raise ProposalReused("this id was used for another proposal")
        return Proposed(Outcome(answer, view, note), replayed=True)

    def _abandon(self, reservation_id: UUID) -> None:
        """Best effort: a proposal that failed after initiating leaves no open reservation behind."""
        try:
            self.cancel(reservation_id, "the proposal was refused")
        except Exception:
            log.debug("could not abandon reservation %s", reservation_id, exc_info=True)

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
        return self._answer(self._reservation(reservation_id, expected_version), terms, counter)

    def _answer(self, reservation: Reservation, terms: Terms, counter: bool) -> Outcome:
        """The provider's answer to `terms` proposed to `reservation`, saved with the holds
        it places and the usage it charges to the user's quota account."""
        at = self.clock()
        reservation.check("counter" if counter or reservation.state == State.COUNTERED else "submit")
        catalogue = self._catalogue()
        size = catalogue.size(terms.size)
        catalogue.check_template(terms.template)
        quotas = catalogue.quotas_for(reservation.user_id)
        policy = self._policy_under(quotas)
        check_terms(terms, at, policy)
        # Loaded before the usage is read: a process that charged this user since then has
        # moved the account on, and this attempt's save loses and runs again on fresh usage.
        account = self._quota_account(reservation.user_id, at)
        self._follow_to_place()
        with self._follow_lock:
            usage = self.index.usage(reservation.user_id, at, excluding=reservation.id)
            limited = quotas.limit(terms, size.cpus, usage, self._pool_cpus(), at, policy.horizon)
            pools = self._pools_to_search(reservation, limited, size, at, catalogue.unreachable_pools)
            decision = best_of_pools([
                self.negotiator(limited, size, self._view_in(pool), at, self.pricing, policy, reservation.round + 1,
                                reservation.id)
                for pool in pools
            ], limited)
        moved: list[Aggregate] = []
        nodes: dict[str, Node] = {}
        if self.repack and decision.reply != Reply.ACCEPT:
            for pool in pools:  # the first pool that re-packing makes room in
                repacked = self._repack(pool, reservation.id, limited, size, at, policy, reservation.round + 1, nodes, moved)
                if repacked is not None:
                    decision = repacked
                    break
        decision = answer_within_quotas(terms, limited, decision)
        previous = reservation.offer if reservation.state in (State.ACCEPTED, State.COUNTERED) else None
        reservation.submit(terms, size.resources, at)
        held: set[str] = set()
        if decision.offer is not None:
            valid_until = at + self.policy.offer_ttl
            offered = decision.offer.terms
            for allocation in decision.offer.placement:
                if allocation.node not in nodes:
                    nodes[allocation.node] = self._node(allocation.node)
                node = nodes[allocation.node]
                held.add(allocation.node)
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
                if name not in held:
                    if name not in nodes:
                        nodes[name] = self._node(name)
                    nodes[name].release(reservation.id, "superseded by a new offer", at)
        charged = [account] if decision.offer is not None else []
        self._save(reservation, *nodes.values(), *charged, *moved)
        if decision.offer is not None:
            self.policy.placement.placed(decision.offer.placement)  # a policy with a turn moves it
        return Outcome(decision.reply, self._view(reservation), decision.reason)

    def _pools_to_search(
        self, reservation: Reservation, terms: Terms, size: Size, at: datetime, unreachable: Sequence[str] = ()
    ) -> Sequence[str | None]:
        """Where to look for room for `reservation` (`_view_in` each): its pool, once it has
        an offer; before that, up to POOLS_SEARCHED pools, each on its own (its instances will
        all live in one), none of the `unreachable` ones unless every pool is: first those
        where `terms` fit as asked, the one with the least room first (best fit, as among
        nodes: large pieces stay free), then the others, the most room first. None for the
        whole timeline, when there is one pool. Under the follow lock."""
        home, pools = self._home_pool(reservation), self.timeline.pools()
        if home is not None:
            return [home]
        if len(pools) <= 1:
            return [None]
        pools = [p for p in pools if p not in unreachable] or pools
        # One pass over every node; each pool searched then costs its own nodes only.
        room = self.timeline.room_by_pool(size.resources, terms.start, terms.start + terms.shortest, at, reservation.id)
        fitting = sorted((p for p in pools if room.get(p, 0) >= terms.instances), key=lambda p: (room[p], p))
        others = sorted((p for p in pools if room.get(p, 0) < terms.instances), key=lambda p: (-room.get(p, 0), p))
        return [*fitting, *others][:POOLS_SEARCHED]

    def _repack(
        self, in_pool: str | None, reservation_id: UUID, terms: Terms, size: Size, at: datetime,
        policy: NegotiationPolicy, round: int, nodes: dict[str, Node], moved: list[Aggregate],
    ) -> Decision | None:
        """Re-packing in one pool (`in_pool`, as `_view_in` takes it): when `terms` do not
        fit as asked, move bookings of other reservations
        that have not started (none starting before `at` + prepare lead + `repack_margin`, no
        VM made for any of their instances) to other nodes, over the same interval with the
        same resources, if that makes room for all the instances asked for (or else the fixed
        ones) at the asked start; and answer on the pool so re-packed. The moves
        are made on `nodes` (loaded into it) and on the moved reservations and instances
        (appended to `moved`), saved by the caller with the new hold, in one atomic save: a
        race with another process loses on some version and runs again. None (nothing
        changed) if re-packing makes no room, or the answer on it does not use the room at the
        asked start."""
        after = at + self.prepare_lead + self.repack_margin
        refused: set[UUID] = set()
        per_instance, counts = size.resources, sorted({terms.instances, max(terms.instances_fixed, 1)}, reverse=True)
        for _ in range(3):  # a chosen booking found not movable after all is left out, and the search runs again
            with self._follow_lock:
                pool = self._view_in(in_pool)
                if place(pool, per_instance, terms.instances, terms.start, terms.end, at, reservation_id):
                    return None  # it fits as asked: not a matter of room
                movable = [
                    Movable(a.reservation_id, name, a.start, a.end, a.instances, a.per_instance)
                    for name, a in pool.bookings_overlapping(terms.start, terms.end)
                    if a.start > after and a.reservation_id != reservation_id and a.reservation_id not in refused
                ]
                # All the instances asked for, or else the fixed ones, at the asked start.
                for count in counts:
                    found = repack(pool, per_instance, count, terms.start, terms.end, at, movable, reservation_id)
                    if found is not None:
                        break
                if found is None or not found.moves:
                    return None
                view = Rearranged(pool)
                for move in found.moves:
                    view.move(move)
                decision = self.negotiator(terms, size, view, at, self.pricing, policy, round, reservation_id)
            offer = decision.offer
            if offer is None or offer.terms.start != terms.start or offer.terms.instances < count:
                return None  # the room made is not what the answer uses
            plans = self._plan_moves(found.moves, after, at)
            if isinstance(plans, UUID):
                refused.add(plans)
                continue
            self._make_moves(reservation_id, found.moves, plans, nodes, at)
            moved.extend(a for reservation, instances in plans.values() for a in (reservation, *instances))
            return decision
        return None

    def _plan_moves(
        self, moves: tuple[Move, ...], after: datetime, at: datetime
    ) -> dict[UUID, tuple[Reservation, list[Instance]]] | UUID:
        """The moved reservations, and the instances of each that move (as many as the moves
        take off each node, lowest index first); or the id of a reservation that cannot move
        as planned (not confirmed any more, an extension offered, or its instances on that node
        started or have a VM)."""
        plans: dict[UUID, tuple[Reservation, list[Instance]]] = {}
        taken: set[UUID] = set()
        for move in moves:
            rid = move.reservation_id
            if rid not in plans:
                reservation = self._reservation(rid)
                offer = reservation.offer
                # Nor one with an extension offered: its hold was placed on the nodes it is on now,
                # and confirming it books [start, new end) there.
                if (offer is None or not reservation.can("replace") or offer.terms.start <= after
                        or reservation.extension is not None):
                    return rid
                plans[rid] = (reservation, [])
            reservation, instances = plans[rid]
            loaded: list[Instance] = [self.repository.get(iid, snapshots=False) for iid in reservation.instance_ids]
            here = sorted((i for i in loaded if i.node == move.from_node and i.id not in taken), key=lambda i: i.index)
            chosen = here[: move.instances]
            if len(chosen) < move.instances or not all(i.can_repack(at) for i in chosen):
                return rid
            for instance in chosen:
                instance.repack(move.to_node, move.reservation_id, at)
                taken.add(instance.id)
            instances.extend(chosen)
        return plans

    def _make_moves(
        self, for_reservation: UUID, moves: tuple[Move, ...], plans: dict[UUID, tuple[Reservation, list[Instance]]],
        nodes: dict[str, Node], at: datetime,
    ) -> None:
        """Book the moves on the nodes (every node's shrinking first, so that a node that one
        booking leaves and another enters never holds both) and record the new placements."""
        reason = f"re-packed to make room for reservation {str(for_reservation)[:8]}"
        for rid, (reservation, _) in plans.items():
            offer = reservation.offer
            assert offer is not None  # checked by _plan_moves
            counts = {a.node: a.instances for a in offer.placement}
            for move in moves:
                if move.reservation_id == rid:
                    counts[move.from_node] = counts.get(move.from_node, 0) - move.instances
                    counts[move.to_node] = counts.get(move.to_node, 0) + move.instances
            placement = tuple(Allocation(name, n) for name, n in sorted(counts.items()) if n > 0)
            reservation.replace_placement(placement, reason, at)
        for growing in (False, True):
            for rid, (reservation, _) in plans.items():
                offer = reservation.offer
                assert offer is not None
                now = {a.node: a.instances for a in offer.placement}
                touched = {m.from_node for m in moves if m.reservation_id == rid} | {m.to_node for m in moves if m.reservation_id == rid}
                for name in sorted(touched):
                    node = nodes.setdefault(name, self._node(name))
                    booked = node.allocation_of(rid)
                    before = booked.instances if booked is not None and not booked.is_hold else 0
                    after = now.get(name, 0)
                    if (after > before) != growing or after == before:
                        continue
                    if after == 0:
                        node.release(rid, reason, at)
                    else:
                        node.book(rid, offer.terms.start, offer.terms.end, after, offer.per_instance, at)

    def respond(
        self, reservation_id: UUID, reply: Reply | str, terms: Terms | None = None, expected_version: int | None = None,
        *, admit: Callable[[ReservationView], None] | None = None,
    ) -> Outcome:
        """One negotiation step of the wire protocol: the user's CONFIRM, ACCEPT, REJECT or COUNTER
        (a CONFIRM or REJECT of a reservation with an extension offered is the extension's).
        With `expected_version`, the step is refused (VersionConflict) unless the reservation
        is still at that version when it is saved. `admit`, given the reservation as the step
        finds it, raises to refuse the step (the edge's checks: whose it is, its ETag); it is
        asked again of every attempt, so what it admitted is what the step saves against."""
        reply = Reply(reply)
        move = USER_REPLIES.get(reply)
        if move is None:
            raise InvalidProposal("reply", f"a user replies CONFIRM, ACCEPT, REJECT or COUNTER, not {reply.value}")
        if reply == Reply.COUNTER and terms is None:
            raise InvalidProposal("proposal", "a COUNTER carries the user's proposal")

        def attempt() -> Outcome:
            reservation = self._reservation(reservation_id, expected_version)
            if admit is not None:
                admit(self._view(reservation))
            extending = reservation.extension is not None and reservation.state in (State.CONFIRMED, State.ACTIVATED)
            if reply == Reply.CONFIRM:
                return self._confirm_extension(reservation) if extending else self._confirm(reservation)
            if reply == Reply.REJECT:
                return self._decline_extension(reservation) if extending else self._decline(reservation)
            if reply == Reply.ACCEPT:
                return self._accept_counter(reservation)
            assert terms is not None
            return self._answer(reservation, terms, counter=True)

        return self._retrying(attempt)

    def accept_counter(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        return self._retrying(lambda: self._accept_counter(self._reservation(reservation_id, expected_version)))

    def _accept_counter(self, reservation: Reservation) -> Outcome:
        reservation.accept_counter(self.clock())
        self._save(reservation)
        return Outcome(Reply.CONFIRM_REQUEST, self._view(reservation))

    def decline(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        return self._retrying(lambda: self._decline(self._reservation(reservation_id, expected_version)))

    def _decline(self, reservation: Reservation) -> Outcome:
        at = self.clock()
        reservation.decline(at)
        nodes = self._release_all(reservation, "offer declined", at)
        self._save(reservation, *nodes)
        return Outcome(Reply.REJECT, self._view(reservation))

    def confirm(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        """The user's CONFIRM: the provider books the held capacity and schedules the instances."""
        return self._retrying(lambda: self._confirm(self._reservation(reservation_id, expected_version)))

    def _confirm(self, reservation: Reservation) -> Outcome:
        at = self.clock()
        reservation.check("confirm", "only an accepted offer can be confirmed")
        reservation.check_offer_valid(at)
        offer = reservation.offer
        assert offer is not None
        nodes: list[Node] = []
        instances: list[Instance] = []
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
        charged = self._charge(reservation, at)  # InsufficientCredit: nothing is recorded
        reservation.confirm(tuple(i.id for i in instances), at)
        self._save(reservation, *nodes, *instances, *charged)
        return Outcome(Reply.REQUEST_SUCCESS, self._view(reservation))

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
            reservation.check("cancel", "an activated reservation cannot be deleted" if reservation.state == State.ACTIVATED else "")
            refunded = self._refund(reservation, at)
            nodes = self._release_all(reservation, reason, at)  # before: the cancel forgets the extension offered
            reservation.cancel(reason, at)
            instances: list[Instance] = [self.repository.get(i, snapshots=False) for i in reservation.instance_ids]
            for instance in instances:
                instance.cancel(at)
            self._save(reservation, *nodes, *instances, *refunded)
            return self._view(reservation)

        return self._retrying(attempt)

    def terminate(self, reservation_id: UUID, by: str, reason: str, expected_version: int | None = None) -> ReservationView:
        """An administrator ends a reservation in any live state, an activated one too: what
        it holds or booked is released now, instances not yet started are cancelled, and the
        timer worker ends the running ones at its next tick (as at a reservation's end)."""

        def attempt() -> ReservationView:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            reservation.check("terminate")
            refunded = self._refund(reservation, at)
            nodes = self._release_all(reservation, f"ended by {by}: {reason}", at)  # before, as for a cancel
            reservation.terminate(by, reason, at)
            instances: list[Instance] = [self.repository.get(i, snapshots=False) for i in reservation.instance_ids]
            for instance in instances:
                instance.cancel(at)
            self._save(reservation, *nodes, *instances, *refunded)
            return self._view(reservation)

        return self._retrying(attempt)

    def expire_offer(self, reservation_id: UUID) -> bool:
        """Record that an offer lapsed and release its holds. False if it is not due (any more)."""

        def attempt() -> bool:
            at = self.clock()
            reservation = self._reservation(reservation_id)
            if reservation.extension is not None and reservation.state in (State.CONFIRMED, State.ACTIVATED):
                return self.lapse_extension(reservation_id)  # an offer for an extension lapses like any other
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
            nodes = self._release_extension(reservation, "the reservation is over", at)
            reservation.expire(at)
            self._save(reservation, *nodes)
            return True

        return self._retrying(attempt)

    def _release_all(self, reservation: Reservation, reason: str, at: datetime) -> list[Node]:
        """Give back what the reservation holds or booked, and what its extension offer holds."""
        nodes: dict[str, Node] = {}
        if reservation.offer is not None:
            for name in reservation.offer.nodes:
                nodes[name] = nodes.get(name) or self._node(name)
                nodes[name].release(reservation.id, reason, at)
        if reservation.extension is not None:
            for name in (a.node for a in reservation.extension.placement):
                nodes[name] = nodes.get(name) or self._node(name)
                nodes[name].release(extension_hold_id(reservation.id), reason, at)
        return list(nodes.values())
