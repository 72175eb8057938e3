"""Draining a host (the paper's "making room by migrating"): an operator puts a node into
maintenance from a time, and PEX moves off it everything that would still be there then.

`drain_node(name, drain_from, by)` records Node.DrainScheduled: from then on the node takes no
hold or booking that lasts until `drain_from` (the capacity timeline offers it for nothing
that does, so negotiations place elsewhere). Then, reservation by reservation, one atomic save
each (`move_off`):

* an instance whose VM does not run (not started yet, prepared, halted) is re-placed on a
  node with room for the rest of its reservation: Instance.Moved, its booking moving with it
  (booked on the new node, given back on the drained one, the reservation's placement
  corrected), as after a lost node;
* an instance whose VM runs is booked on a node with room (Instance.MigrationPlanned) and
  keeps its booking on the drained node until it arrives: it is booked on both while it moves,
  so no node is ever overbooked. The worker then claims `migrate` and live-migrates the VM
  (VM.pool_migrate on Xen); `record_dispatch` records Instance.Migrated and gives back the
  drained node's booking in one save. A failed migration is tried again with the dispatch's
  backoff; after MIGRATION_ATTEMPTS failures it is given up (Instance.MigrationAbandoned, the
  booking on the other node given back);
* an instance that fits nowhere stays, booked where it is, and Instance.NotMoved records why.

What still has to leave a node, and why what cannot, is `drain(name)`: the API shows it on the
node and `pex admin node NAME` prints it. Draining again retries what could not move;
`undrain_node` ends the maintenance (what moved stays where it went).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from pex.application.errors import NotFound
from pex.application.instances import Instances
from pex.application.ports import DispatchJob, Enacted
from pex.application.views import DrainView, Leaving
from pex.domain.instance import MIGRATION_ATTEMPTS, Instance, Status
from pex.domain.node import Node
from pex.domain.placement import re_place
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, time_text

log = logging.getLogger(__name__)


class Drains(Instances):
    """The operators' drain of a node, and the live migrations it makes the workers do."""

    # --- the operator's commands ---------------------------------------------------------

    def drain_node(self, name: str, drain_from: datetime, by: str) -> DrainView:
        """Put the node into maintenance from `drain_from` (now, if earlier) and move off it
        what would still be there then; again on a drained node, retry what could not move.
        Returns the drain: what moved at once, what still has to leave and why it cannot."""
        self._retrying(lambda: self._save_node_change(name, lambda n, at: n.schedule_drain(drain_from, by, at)))
        moved = self.move_off(name, retry=True)
        view = self.drain(name)
        assert view is not None
        log.info("node %s drained from %s by %s: %d moved, %d leaving, %d cannot move", name,
                 time_text(view.drain_from), by, len(moved), len(view.leaving), len(view.stuck))
        return DrainView(view.node, view.drain_from, view.by, view.leaving, tuple(moved))

    def undrain_node(self, name: str, by: str) -> None:
        """End the node's maintenance: it takes bookings again. What moved stays where it went;
        a migration under way goes on."""
        self._retrying(lambda: self._save_node_change(name, lambda n, at: n.cancel_drain(by, at)))

    def drain(self, name: str) -> DrainView | None:
        """The node's drain, with what still has to leave it; None if it is not drained."""
        node = self._load_node(name)
        if node.drain_from is None:
            return None
        leaving = [self._leaving(i) for i in self._instances_leaving(node)]
        return DrainView(name, node.drain_from, node.drain_by or "", tuple(sorted(leaving, key=lambda v: v.name)))

    def move_off(self, name: str, retry: bool = False) -> list[Leaving]:
        """Move off the drained node what would still be there at its drain (see the module);
        with `retry`, also what could not move before. Returns the instances re-placed now."""
        node = self._load_node(name)
        if node.drain_from is None:
            return []
        moved: list[Leaving] = []
        for reservation_id in dict.fromkeys(i.reservation_id for i in self._instances_leaving(node)):
            moved += self._retrying(partial(self._move_off, reservation_id, name, retry))
        return moved

    # --- the worker's migrations -----------------------------------------------------------

    def record_dispatch(self, job: DispatchJob, enacted: Enacted, worker: str) -> None:
        if job.action != "migrate":
            return super().record_dispatch(job, enacted, worker)
        if enacted.node and job.to_node and enacted.node != job.to_node:
            log.warning("instance %s migrated to %s, not %s", job.instance_id, enacted.node, job.to_node)
        self._retrying(partial(self._migrated, job.instance_id, worker))

    def record_dispatch_failure(self, job: DispatchJob, message: str, worker: str) -> None:
        if job.action != "migrate":
            return super().record_dispatch_failure(job, message, worker)
        self._retrying(partial(self._migration_failed, job.instance_id, message, worker))

    def _migrated(self, instance_id: UUID, worker: str) -> None:
        at = self.clock()
        instance = self._instance(instance_id)
        if not instance.holds_claim(worker, "migrate"):
            return
        source = instance.migrating_from or instance.node
        instance.record_migrated(worker, at)
        if not instance.pending_events:
            instance.release_claim(worker, "migrate", "no migration is planned any more", at)
            self.save(instance)
            return
        reservation, nodes = self._rebooked(instance, {source: -1}, f"instance {instance.name} migrated off", at)
        self._save(reservation, *nodes, instance)
        log.info("instance %s live-migrated from %s to %s", instance.name, source, instance.node)

    def _migration_failed(self, instance_id: UUID, message: str, worker: str) -> None:
        at = self.clock()
        instance = self._instance(instance_id)
        target = instance.migrating_to
        instance.fail_dispatch(worker, "migrate", message, at)
        nodes: list[Node] = []
        reservation: Reservation | None = None
        if target is not None and instance.pending_events and instance.failures >= MIGRATION_ATTEMPTS:
            instance.abandon_migration(f"the live migration to {target} failed {instance.failures} times: {message}", at)
            reservation, nodes = self._rebooked(instance, {target: -1}, f"the migration of {instance.name} failed", at)
            log.warning("instance %s: live migration to %s given up: %s", instance.name, target, message)
        if instance.pending_events:
            self._save(*([reservation] if reservation is not None else []), *nodes, instance)

    # --- moving one reservation's instances off a drained node -------------------------------

    def _move_off(self, reservation_id: UUID, name: str, retry: bool) -> list[Leaving]:
        at = self.clock()
        node = self._node(name)
        drain_from = node.drain_from
        reservation = self._reservation(reservation_id)
        offer = reservation.offer
        if drain_from is None or offer is None or not reservation.can("replace") or offer.terms.end <= at:
            return []
        terms = offer.terms
        reason = f"node {name} is drained from {time_text(drain_from)}"
        movers: list[Instance] = []
        changed: list[Instance] = []
        for instance in (self._instance(i) for i in reservation.instance_ids):
            if not self._must_leave(instance, name, drain_from) or instance.claim_live(at):
                continue  # a dispatch in flight: it waits for its turn (the timer comes back)
            if instance.migrating_to is not None:
                if instance.status == Status.RUNNING:
                    continue  # the worker is moving it
                instance.move(instance.migrating_to, at)  # it stopped running: its VM starts there
                changed.append(instance)
            elif instance.status == Status.PAUSED:
                instance.could_not_move("a paused VM does not migrate: unpause or stop it", at)
                changed.append(instance)
            elif retry or instance.not_moved is None:
                movers.append(instance)
        with self._follow_lock:
            self.follow()
            # In its own pool: a reservation's instances all live in one (pex.domain.pool).
            targets = re_place(self._placing_view(reservation), offer.per_instance, len(movers), max(terms.start, at),
                               terms.end, at)
        # What moved to where it was migrating to leaves its booking here (it is booked there).
        left = sum(1 for i in changed if i.node != name)
        delta: dict[str, int] = {name: -left} if left else {}
        for instance, target in zip(movers, targets, strict=True):
            if target is None:
                instance.could_not_move(f"no other node has room for it until {time_text(terms.end)}", at)
            elif instance.status == Status.RUNNING:
                instance.plan_migration(target, reason, at)
                delta[target] = delta.get(target, 0) + 1
            else:
                instance.move(target, at)
                delta[target] = delta.get(target, 0) + 1
                delta[name] = delta.get(name, 0) - 1
            changed.append(instance)
        if not changed:
            return []
        nodes: list[Node] = []
        if delta:
            _, nodes = self._rebooked(None, delta, reason, at, reservation=reservation, loaded={name: node})
        self._save(reservation, *nodes, *changed)
        return [self._leaving(i, moved=True) for i in changed if i.node != name]

    def _rebooked(
        self, instance: Instance | None, delta: dict[str, int], reason: str, at: datetime,
        reservation: Reservation | None = None, loaded: dict[str, Node] | None = None,
    ) -> tuple[Reservation, list[Node]]:
        """Book the reservation (of `instance`) `delta` more instances on each node (fewer, for
        a negative one: its booking shrinks, or is given back), and correct its placement."""
        if reservation is None:
            assert instance is not None
            reservation = self._reservation(instance.reservation_id)
        offer = reservation.offer
        nodes: list[Node] = []
        if offer is None or not reservation.can("replace"):
            return reservation, nodes  # over: its bookings went with it
        terms = offer.terms
        counts = {a.node: a.instances for a in offer.placement}
        for name, change in sorted(delta.items()):
            if change == 0:
                continue
            node = (loaded or {}).get(name) or self._node(name)
            counts[name] = counts.get(name, 0) + change
            if counts[name] > 0:
                node.book(reservation.id, terms.start, terms.end, counts[name], offer.per_instance, at)
            else:
                counts.pop(name)
                node.release(reservation.id, reason, at)
            nodes.append(node)
        placement = tuple(Allocation(name, n) for name, n in sorted(counts.items()))
        if placement != tuple(sorted(offer.placement, key=lambda a: a.node)):
            reservation.replace_placement(placement, reason, at)
        return reservation, nodes

    # --- what has to leave --------------------------------------------------------------------

    def _instances_leaving(self, node: Node) -> list[Instance]:
        """The instances on the drained node that would still be there at its drain."""
        assert node.drain_from is not None
        at = self.clock()
        found: list[Instance] = []
        for allocation in node.live_allocations(at):
            if allocation.is_hold or allocation.end <= node.drain_from:
                continue
            try:
                reservation = self._reservation(allocation.reservation_id)
            except NotFound:
                continue
            found += [i for i in self._instances_of(reservation) if self._must_leave(i, node.name, node.drain_from)]
        return found

    def _instances_of(self, reservation: Reservation) -> Iterable[Instance]:
        for instance_id in reservation.instance_ids:
            try:
                yield self._instance(instance_id)
            except NotFound:
                continue

    @staticmethod
    def _must_leave(instance: Instance, name: str, drain_from: datetime) -> bool:
        return instance.node == name and not instance.is_over and instance.end > drain_from

    @staticmethod
    def _leaving(instance: Instance, moved: bool = False) -> Leaving:
        return Leaving(
            instance.id, instance.reservation_id, instance.name, instance.status.value, instance.end,
            moved_to=instance.node if moved else None, migrating_to=instance.migrating_to, reason=instance.not_moved,
        )

    # --- plumbing ----------------------------------------------------------------------

    def _load_node(self, name: str) -> Node:
        """The node, outside a command (no placement lock)."""
        node: Any = self._retrying(lambda: self._node(name))
        return node

    def _save_node_change(self, name: str, change: Any) -> None:
        node = self._node(name)
        change(node, self.clock())
        self._save(node)
