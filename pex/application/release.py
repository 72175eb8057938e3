"""Early release: a user ends a confirmed or activated reservation now.

One command, one atomic save: the Reservation records Released (the used part of the price,
pex.domain.pricing.used_part), every node gives its booking back (free from now for others),
the instances that never started are cancelled, and a user whose booking was charged to their
credit gets the unused part back (User.CreditRefunded). Running VMs are ended by the timer
worker at its next tick, exactly as at a natural end: the reservation is over, so each of
its instances is due the dispatch action "end" (pex.domain.instance)."""

from __future__ import annotations

from uuid import UUID

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.views import ReservationView
from pex.domain.instance import Instance
from pex.domain.node import Node
from pex.domain.reservation import extension_hold_id


class EarlyRelease(Core):
    def release(
        self, reservation_id: UUID, by: str, user_id: str | None = None, expected_version: int | None = None
    ) -> ReservationView:
        """End the reservation now, released `by` someone; `user_id` restricts it to that
        user's reservation (others answer NotFound), None lets an administrator end any.
        A state that cannot be released (not CONFIRMED or ACTIVATED, or over) is IllegalMove."""

        def attempt() -> ReservationView:
            at = self.clock()
            reservation = self._reservation(reservation_id, expected_version)
            if user_id is not None and reservation.user_id != user_id:
                raise NotFound("no such reservation")
            reservation.check("release")
            refunded = self._refund(reservation, at) if reservation.offer and reservation.offer.terms.end > at else []
            extension = reservation.extension
            reservation.release(by, at)
            nodes: dict[str, Node] = {}
            assert reservation.offer is not None
            for name in reservation.offer.nodes:
                nodes[name] = nodes.get(name) or self._node(name)
                nodes[name].release(reservation.id, f"released by {by}", at)
            for name in (a.node for a in extension.placement) if extension is not None else ():
                # An extension offered and not confirmed goes with it.
                nodes[name] = nodes.get(name) or self._node(name)
                nodes[name].release(extension_hold_id(reservation.id), f"released by {by}", at)
            instances: list[Instance] = [self.repository.get(i, snapshots=False) for i in reservation.instance_ids]
            for instance in instances:
                instance.cancel(at)  # only one that never started; the worker ends the others
            self._save(reservation, *nodes.values(), *instances, *refunded)
            return self._view(reservation)

        return self._retrying(attempt)
