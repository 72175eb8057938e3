"""Extension by negotiation: a user asks to end a confirmed or activated reservation later.

The provider answers as to a proposal (pex.domain.extension): ACCEPT (the end asked), COUNTER
(the longest extension the reservation's nodes can take, or other nodes for instances not
started yet, with its price) or REJECT. An offer holds [agreed end, new end) on the nodes that
keep their instances, and [start, new end) on those that instances would move to, under the
reservation's extension hold id (pex.domain.reservation.extension_hold_id), and is charged to
the user's quota account in the same save, as any offer is. Until the user's CONFIRM the
reservation keeps its terms; a REJECT or a lapse leaves it as it was. The CONFIRM books
[start, new end) on each node of the offer (the hold given back in the same save), gives back
the booking of a node its instances leave (which move, still not started: Instance.Moved, and
Reservation.PlacementChanged), moves the end of every instance that is not over (so the timer
ends the VMs at the new end; running ones keep running) and adds the extension's price.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.views import Outcome
from pex.domain.errors import CapacityExceeded, IllegalMove, NodeUnavailable
from pex.domain.extension import evaluate_extension
from pex.domain.instance import Instance
from pex.domain.node import Node
from pex.domain.quotas import cpu_seconds
from pex.domain.reservation import Extension, Reservation, extension_hold_id
from pex.domain.values import Reply


class Extensions(Core):
    def extend(
        self, reservation_id: UUID, end: datetime, user_id: str | None = None, expected_version: int | None = None
    ) -> Outcome:
        """Ask for the reservation to end at `end` instead; `user_id` restricts it to that user's
        reservation (others answer NotFound). A new request replaces an extension offered before."""

        def attempt() -> Outcome:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            if user_id is not None and reservation.user_id != user_id:
                raise NotFound("no such reservation")
            reservation.check_extendable(end, at)
            agreed = reservation.offer
            assert agreed is not None
            terms = agreed.terms
            catalogue = self._catalogue()
            size = catalogue.size(terms.size)
            quotas = catalogue.quotas_for(reservation.user_id)
            hold_id = extension_hold_id(reservation.id)
            # Loaded before the usage is read, as for a proposal (pex.application.negotiation).
            account = self._quota_account(reservation.user_id, at)
            self._follow_to_place()
            with self._follow_lock:
                usage = self.index.usage(reservation.user_id, at, excluding=reservation.id)
                longest = min(end, terms.start + self.policy.max_duration)
                asked, cut = quotas.limit_extension(terms, longest, size.cpus, usage, self._pool_cpus(), at)
                decision = evaluate_extension(agreed, size, asked, self._placing_view(reservation), at, self.pricing,
                                              hold_id, cut,
                                              movable=self._movable_nodes(reservation, at))
            previous = reservation.extension
            nodes: dict[str, Node] = {}
            charged = []
            if decision.reply == Reply.REJECT or decision.end is None:
                reservation.reject_extension(end, decision.reason, at)
            else:
                valid_until = at + self.policy.offer_ttl
                staying = {a.node for a in agreed.placement}
                for allocation in decision.placement:
                    node = nodes.setdefault(allocation.node, self._node(allocation.node))
                    # A node that instances would move to holds them from the start.
                    held_from = terms.end if allocation.node in staying else terms.start
                    node.hold(hold_id, held_from, decision.end, allocation.instances, agreed.per_instance, valid_until, at)
                reservation.offer_extension(
                    end, decision.end, decision.price, decision.placement, valid_until, decision.changes, at,
                    moved_from=decision.moved_from,
                )
                taken = cpu_seconds(size.cpus, terms.instances, terms.end, decision.end, at)
                account.charge(reservation.id, taken, usage, at)
                charged.append(account)
            if previous is not None:
                for allocation in previous.placement:
                    if allocation.node not in nodes:
                        nodes[allocation.node] = self._node(allocation.node)
                        nodes[allocation.node].release(hold_id, "superseded by a new extension offer", at)
            self._save(reservation, *nodes.values(), *charged)
            reply = reservation.extension.reply if reservation.extension is not None else Reply.REJECT
            return Outcome(reply, self._view(reservation), decision.reason)

        return self._retrying(attempt)

    def confirm_extension(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        """The user's CONFIRM of the extension offered: booked on the nodes, the end moved."""
        return self._retrying(lambda: self._confirm_extension(self._reservation(reservation_id, expected_version)))

    def _confirm_extension(self, reservation: Reservation) -> Outcome:
        at = self.clock()
        reservation.check("confirm_extension")
        extension, agreed = reservation.extension, reservation.offer
        if extension is None or agreed is None:
            raise IllegalMove("confirm", reservation.state.value, "no extension is offered")
        reservation.confirm_extension(at)  # refuses a lapsed offer (OfferExpired)
        if (extension.moved_from or extension.placement) != agreed.placement:
            # Re-placed (a node was lost) since the offer: what was held is not where it runs.
            return Outcome(Reply.REQUEST_FAILED, self._view(self._reservation(reservation.id)),
                           "the reservation was moved to other nodes since the offer; ask again")
        instances: list[Instance] = [self.repository.get(i, snapshots=False) for i in reservation.instance_ids]
        movers = self._movers(extension, instances, at)
        if movers is None:
            return Outcome(Reply.REQUEST_FAILED, self._view(self._reservation(reservation.id)),
                           "an instance that the extension moves to another node has started, or has its VM "
                           "made, since the offer; ask again")
        terms = agreed.terms
        hold_id = extension_hold_id(reservation.id)
        nodes: list[Node] = []
        reason = "moved by its extension"
        try:
            for allocation in extension.placement:
                node = self._node(allocation.node)
                node.release(hold_id, "extension confirmed", at)
                node.book(reservation.id, terms.start, extension.end, allocation.instances, agreed.per_instance, at)
                nodes.append(node)
        except (CapacityExceeded, NodeUnavailable) as refused:
            # Only when the hold was judged lapsed by another process's clock and given away.
            return Outcome(Reply.REQUEST_FAILED, self._view(self._reservation(reservation.id)), str(refused))
        kept = {a.node for a in extension.placement}
        for allocation in extension.moved_from:
            if allocation.node not in kept:
                node = self._node(allocation.node)
                node.release(reservation.id, reason, at)
                nodes.append(node)
        for instance, to_node in movers:
            instance.move(to_node, at)  # not started: its VM is made there
        if extension.moves:
            reservation.replace_placement(extension.placement, reason, at)
        for instance in instances:
            instance.extend(extension.end, at)  # running VMs keep running, to the new end
        charged = self._charge_extension(reservation, extension.price, at)  # InsufficientCredit: nothing is recorded
        self._save(reservation, *nodes, *instances, *charged)
        return Outcome(Reply.REQUEST_SUCCESS, self._view(reservation))

    def decline_extension(self, reservation_id: UUID, expected_version: int | None = None) -> Outcome:
        """The user's REJECT of the extension offered: its holds go, the reservation stays."""
        return self._retrying(lambda: self._decline_extension(self._reservation(reservation_id, expected_version)))

    def _decline_extension(self, reservation: Reservation) -> Outcome:
        at = self.clock()
        reservation.check("decline_extension")
        nodes = self._release_extension(reservation, "extension declined", at)
        reservation.decline_extension(at)
        self._save(reservation, *nodes)
        return Outcome(Reply.REJECT, self._view(reservation))

    def lapse_extension(self, reservation_id: UUID) -> bool:
        """Record that an extension offer lapsed and release its holds. False if it is not due."""

        def attempt() -> bool:
            at = self.clock()
            reservation = self._reservation(reservation_id)
            extension = reservation.extension
            if extension is None or not reservation.can("expire_extension") or extension.valid_until > at:
                return False
            nodes = self._release_extension(reservation, "extension offer lapsed", at)
            reservation.expire_extension(at)
            self._save(reservation, *nodes)
            return True

        return self._retrying(attempt)

    def _movable_nodes(self, reservation: Reservation, at: datetime) -> frozenset[str]:
        """The reservation's nodes none of whose instances has started (or has a VM, or a
        worker at it): an extension may move those instances elsewhere."""
        if reservation.offer is None or reservation.offer.terms.start <= at:
            return frozenset()
        fixed: set[str] = set()
        nodes: set[str] = set()
        for instance_id in reservation.instance_ids:
            instance: Instance = self.repository.get(instance_id, snapshots=False)
            nodes.add(instance.node)
            if not instance.can_repack(at):
                fixed.add(instance.node)
        return frozenset(nodes - fixed)

    @staticmethod
    def _movers(extension: Extension, instances: list[Instance], at: datetime) -> list[tuple[Instance, str]] | None:
        """Which instance moves to which node at the CONFIRM of an extension that moves some:
        those of the nodes its placement no longer has, in name order, to the nodes it adds.
        None if one of them can no longer move (it started, or a worker is at it)."""
        if not extension.moves:
            return []
        before = {a.node for a in extension.moved_from}
        targets = [a.node for a in extension.placement if a.node not in before for _ in range(a.instances)]
        after = {a.node for a in extension.placement}
        leaving = sorted((i for i in instances if i.node not in after and not i.is_over), key=lambda i: i.name)
        if len(leaving) != len(targets) or not all(i.can_repack(at) for i in leaving):
            return None
        return list(zip(leaving, targets, strict=True))

    def _release_extension(self, reservation: Reservation, reason: str, at: datetime) -> list[Node]:
        """Give back what the nodes hold for the reservation's extension offer, if any."""
        nodes = []
        if reservation.extension is not None:
            hold_id = extension_hold_id(reservation.id)
            for allocation in reservation.extension.placement:
                node = self._node(allocation.node)
                node.release(hold_id, reason, at)
                nodes.append(node)
        return nodes
