"""Where reservations become running VMs: the instance commands of PexApplication (a mixin).

Three kinds of command live here, all recorded on the Instance aggregate:

* **The user's** (paper §3.1 and Table 2): `start_instance`, `stop_instance`,
  `reboot_instance`, `delete_instance`. Each records the request; the dispatch that carries it
  out follows at once when this process has an enactment attached (a worker does), otherwise
  the next worker tick does it (the API's processes never talk to Xen).
* **The dispatcher's**: `dispatch_instance` claims the one action an instance needs now
  (`Instance.due_action`), carries it out through the attached `Enactment`, and records the
  outcome. The claim is an event with a lease, so two workers never dispatch the same
  instance at once; a worker killed mid-way leaves a claim that lapses, and the next one
  repeats the (idempotent) action. While an action runs, the claim is renewed.
* **The monitors' and the Scheduler's**: observations of power state, IP address, silent
  guests, vanished VMs, VMs lost with their node; and `replace_instances`, which re-places the
  instances of lost nodes (and stranded ones) on nodes with room: booking on the new node,
  releasing the old, moving the instances and correcting the reservation's placement in one
  atomic save.

Expects to be mixed into PexApplication (repository, clock, save, _retrying, follow, ...).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from pex.domain.errors import IllegalMove
from pex.domain.instance import (
    IllegalInstanceAction,
    Instance,
    InstanceBusy,
    Status,
    reservation_over,
    reservation_runs,
)
from pex.domain.placement import fitting_counts
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, Resources, State

if TYPE_CHECKING:
    from pex.application import InstanceView

log = logging.getLogger(__name__)

REMOVAL_REASONS = {
    "end": "the reservation ended",
    "delete": "deleted by the user",
    "cleanup": "removed what an interrupted start left",
}


@dataclass(frozen=True)
class DispatchJob:
    """What an enactment needs to know to carry out one action for one instance."""

    instance_id: UUID
    action: str
    name: str
    template: str
    node: str
    per_instance: Resources
    vm_uuid: str | None
    vm_may_exist: bool
    needs_reset: bool
    reason: str = ""  # why a VM is removed (end, delete, cleanup)


@dataclass(frozen=True)
class Enacted:
    """What a start left running: the VM, the host it runs on, and its IP if already known."""

    vm_uuid: str | None = None
    node: str | None = None
    ip_address: str | None = None


class Enactment(Protocol):
    """Carries out dispatch actions on a hypervisor (pex.workers.dispatch.XenEnactment).

    Every action must be safe to repeat: a worker that died may have done it already."""

    def carry_out(self, job: DispatchJob) -> Enacted: ...


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class VmLifecycle:
    """Instance commands. Expects the host to be PexApplication."""

    enactment: Enactment | None = None
    worker_id: str = ""
    dispatch_lease: timedelta = timedelta(minutes=2)

    def attach_enactment(self, enactment: Enactment, worker_id: str | None = None, lease: timedelta | None = None) -> None:
        """Let this process act on the hypervisor: dispatch work is claimed as `worker_id`
        for `lease` at a time (renewed while an action runs)."""
        self.enactment = enactment
        self.worker_id = worker_id or default_worker_id()
        if lease is not None:
            self.dispatch_lease = lease

    # --- the user's commands -------------------------------------------------------------

    def start_instance(self, instance_id: UUID, user_id: str | None = None) -> InstanceView:
        """Run the instance's VM again, within its reservation's interval (paper §3.1)."""

        def check(instance: Instance, at: datetime) -> None:
            reservation = self._reservation(instance.reservation_id)  # type: ignore[attr-defined]
            state = State(reservation.state)
            auto_start = bool(reservation.offer and reservation.offer.terms.auto_start)
            if not (state == State.ACTIVATED or (state == State.CONFIRMED and auto_start)):
                detail = "activate its reservation first" if state == State.CONFIRMED else f"its reservation is {state.value}"
                raise IllegalInstanceAction("start", instance.status.value, detail)
            instance.request_start(user_id or instance.user_id, at)

        return self._request(instance_id, user_id, check)

    def stop_instance(self, instance_id: UUID, user_id: str | None = None) -> InstanceView:
        """Shut the VM down; it stays (halted) until the user starts or deletes it, or the end."""
        return self._request(instance_id, user_id, lambda i, at: i.request_stop(user_id or i.user_id, at))

    def reboot_instance(self, instance_id: UUID, user_id: str | None = None) -> InstanceView:
        return self._request(instance_id, user_id, lambda i, at: i.request_reboot(user_id or i.user_id, at))

    def delete_instance(self, instance_id: UUID, user_id: str | None = None) -> InstanceView:
        """Destroy the VM and its disks now. Its booking stays until the reservation ends."""
        return self._request(instance_id, user_id, lambda i, at: i.request_delete(user_id or i.user_id, at))

    def _request(self, instance_id: UUID, user_id: str | None, change: Callable[[Instance, datetime], None]) -> InstanceView:
        def attempt() -> None:
            instance = self._instance(instance_id, user_id)
            change(instance, self.clock())  # type: ignore[attr-defined]
            if instance.pending_events:
                self.save(instance)  # type: ignore[attr-defined]

        self._retrying(attempt)  # type: ignore[attr-defined]
        if self.enactment is not None:
            for _ in range(3):  # e.g. a start owed before a reboot
                if self.dispatch_instance(instance_id) is None:
                    break
        return self.get_instance(instance_id)  # type: ignore[attr-defined]

    # --- dispatch ------------------------------------------------------------------------

    def dispatch_instance(self, instance_id: UUID) -> str | None:
        """Carry out the action the instance needs now, if any and if no other worker has it.

        Returns what was done ("start", "stop failed", ...) or None. Needs an enactment."""
        if self.enactment is None:
            raise RuntimeError("dispatch needs an enactment (attach_enactment)")
        worker = self.worker_id
        job = self._retrying(lambda: self._claim(instance_id, worker))  # type: ignore[attr-defined]
        if job is None:
            return None
        try:
            with self._renewing_claim(instance_id, job.action):
                enacted = self.enactment.carry_out(job)
        except Exception as error:  # any failure: recorded, retried later with backoff
            if not _expected(error):
                log.exception("dispatch %s of instance %s failed", job.action, instance_id)
            else:
                log.warning("dispatch %s of instance %s failed: %s", job.action, instance_id, error)
            message = f"{type(error).__name__}: {error}"
            self._change_instance(instance_id, lambda i, at: i.fail_dispatch(worker, job.action, message, at))
            return f"{job.action} failed"
        self._change_instance(instance_id, lambda i, at: self._record_outcome(i, job, enacted, worker, at))
        return job.action

    def _claim(self, instance_id: UUID, worker: str) -> DispatchJob | None:
        at = self.clock()  # type: ignore[attr-defined]
        instance = self._instance(instance_id)
        action, reason = self._due_action(instance, at)
        if action is None:
            return None
        try:
            instance.claim_dispatch(worker, action, at + self.dispatch_lease, at)
        except InstanceBusy:
            return None
        self.save(instance)  # type: ignore[attr-defined]
        return DispatchJob(
            instance_id=instance.id,
            action=action,
            name=instance.name,
            template=instance.template,
            node=instance.node,
            per_instance=instance.per_instance,
            vm_uuid=instance.vm_uuid,
            vm_may_exist=instance.vm_may_exist,
            needs_reset=instance.needs_reset,
            reason=reason,
        )

    def _due_action(self, instance: Instance, at: datetime) -> tuple[str | None, str]:
        """The action due now and, for a removal, why."""
        try:
            reservation = self.repository.get(instance.reservation_id)  # type: ignore[attr-defined]
        except AggregateNotFoundError:
            return instance.due_action(at, runs=False, over=True), REMOVAL_REASONS["end"]
        state = State(reservation.state)
        auto_start = bool(reservation.offer and reservation.offer.terms.auto_start)
        runs = reservation_runs(state, auto_start, instance.start, instance.end, at)
        action = instance.due_action(at, runs=runs, over=reservation_over(state, instance.end, at))
        reason = REMOVAL_REASONS.get(action or "", "")
        if action == "end" and state == State.CANCELLED:
            reason = "the reservation was deleted"
        return action, reason

    @staticmethod
    def _record_outcome(instance: Instance, job: DispatchJob, enacted: Enacted, worker: str, at: datetime) -> None:
        if job.action == "start":
            if enacted.vm_uuid is None:
                instance.fail_dispatch(worker, "start", "the enactment reported no VM", at)
                return
            instance.record_started(worker, enacted.node or job.node, enacted.vm_uuid, at)
            if enacted.ip_address:
                instance.report_ip(enacted.ip_address, at)
        elif job.action == "stop":
            instance.record_stopped(worker, at)
        elif job.action == "reboot":
            instance.record_rebooted(worker, at)
        else:
            instance.record_removed(worker, job.action, job.reason or REMOVAL_REASONS[job.action], at)

    @contextmanager
    def _renewing_claim(self, instance_id: UUID, action: str) -> Iterator[None]:
        """Keep our claim alive while a long action runs, so no other worker takes it over."""
        stop = threading.Event()
        period = max(self.dispatch_lease.total_seconds() / 3, 0.05)
        worker = self.worker_id

        def renew(i: Instance, at: datetime) -> None:
            if i.holds_claim(worker, action):
                i.claim_dispatch(worker, action, at + self.dispatch_lease, at)
            else:
                log.warning("lost the claim on %s of instance %s to %s", action, instance_id, i.claim)

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self._change_instance(instance_id, renew)
                except Exception:
                    log.warning("could not renew the claim on instance %s", instance_id, exc_info=True)

        thread = threading.Thread(target=loop, name=f"lease-{instance_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    # --- what the monitors saw -------------------------------------------------------------

    def observe_power_state(self, instance_id: UUID, power_state: str) -> None:
        self._change_instance(instance_id, lambda i, at: i.observe_power_state(power_state, at), missing_ok=True)

    def report_ip_address(self, instance_id: UUID, ip_address: str) -> None:
        self._change_instance(instance_id, lambda i, at: i.report_ip(ip_address, at), missing_ok=True)

    def report_vm_vanished(self, instance_id: UUID) -> None:
        self._change_instance(instance_id, lambda i, at: i.vanish(at), missing_ok=True)

    def check_guest_responsive(self, instance_id: UUID, timeout: timedelta) -> None:
        self._change_instance(instance_id, lambda i, at: i.check_responsive(timeout, at), missing_ok=True)

    def lose_instances(self, node: str, instance_ids: Iterable[UUID]) -> None:
        """The node was lost: the VMs that ran on it are lost with it."""
        for instance_id in instance_ids:
            self._change_instance(instance_id, lambda i, at: i.lose(node, at), missing_ok=True)

    # --- the Scheduler: re-placing what a lost node held ---------------------------------

    def replace_instances(self, instance_ids: Iterable[UUID], reason: str = "") -> tuple[int, int]:
        """Re-place the given instances that sit on lost nodes, or are stranded, on nodes with
        room for the rest of their reservation; strand those that fit nowhere. Returns
        (moved, stranded now). One atomic save per reservation: the new node's booking, the
        release on the old, the instances' Moved/Stranded and the reservation's new placement."""
        from pex.application import NotFound

        reservations: dict[UUID, None] = {}
        for instance_id in instance_ids:
            try:
                reservations[self._instance(instance_id).reservation_id] = None
            except NotFound:
                continue
        moved = stranded = 0
        for reservation_id in reservations:
            m, s = self._retrying(lambda: self._replace(reservation_id, reason))  # type: ignore[attr-defined]
            moved, stranded = moved + m, stranded + s
        return moved, stranded

    def _replace(self, reservation_id: UUID, reason: str) -> tuple[int, int]:
        at = self.clock()  # type: ignore[attr-defined]
        reservation: Reservation = self._reservation(reservation_id)  # type: ignore[attr-defined]
        offer = reservation.offer
        if offer is None or not reservation.can("replace") or offer.terms.end <= at:
            return 0, 0
        self.follow()  # type: ignore[attr-defined]
        with self._follow_lock:  # type: ignore[attr-defined]
            available = set(self.timeline.node_names())  # type: ignore[attr-defined]
        # Every instance of the reservation, not only `ids`: its whole booking leaves a lost node.
        instances = [self._instance(i) for i in reservation.instance_ids]
        # A VM still running on an unavailable node (disabled for maintenance, not dead) stays:
        # the Node Monitor marks the VMs of a dead host LOST, and those move.
        movers = sorted(
            (
                i for i in instances
                if not i.is_over and not i.claim_live(at) and i.can("move")
                and (i.status == Status.STRANDED
                     or (i.node not in available and i.status not in (Status.RUNNING, Status.PAUSED)))
            ),
            key=lambda i: i.index,
        )
        if not movers:
            return 0, 0
        terms = offer.terms
        counts = {a.node: a.instances for a in offer.placement}
        nodes: dict[str, Any] = {}
        for name in sorted({i.node for i in movers if i.status != Status.STRANDED and i.node in counts}):
            # The whole booking leaves the lost node; what stays is booked again where it goes.
            nodes[name] = self._node(name)  # type: ignore[attr-defined]
            nodes[name].release(reservation.id, f"node {name} lost" + (f": {reason}" if reason else ""), at)
            counts.pop(name)
        with self._follow_lock:  # type: ignore[attr-defined]
            fits = fitting_counts(self.timeline, offer.per_instance, max(terms.start, at), terms.end, at, None)  # type: ignore[attr-defined]
        # Most loaded first, as placement does: free capacity stays in large pieces.
        fits.sort(key=lambda f: (-f[2], f[1], f[0]))
        room = {name: n for name, n, _ in fits}
        order = [name for name, _, _ in fits]
        moved = stranded = 0
        changed: list[Instance] = []
        for instance in movers:
            target = next((name for name in order if room[name] > 0), None)
            if target is None:
                if instance.status != Status.STRANDED:
                    instance.strand(f"no node has room for it until {terms.end.isoformat()}", at)
                    changed.append(instance)
                    stranded += 1
                continue
            room[target] -= 1
            counts[target] = counts.get(target, 0) + 1
            if target not in nodes:
                nodes[target] = self._node(target)  # type: ignore[attr-defined]
            instance.move(target, at)
            changed.append(instance)
            moved += 1
        for name, node in nodes.items():
            if name in counts:  # books the reservation's new total there (replacing its old booking)
                node.book(reservation.id, terms.start, terms.end, counts[name], offer.per_instance, at)
        placement = tuple(Allocation(name, n) for name, n in sorted(counts.items()) if n > 0)
        if placement != tuple(sorted(offer.placement, key=lambda a: a.node)):
            reservation.replace_placement(placement, reason or "instances re-placed after a node was lost", at)
        self._save(reservation, *nodes.values(), *changed)  # type: ignore[attr-defined]
        if moved or stranded:
            log.info("reservation %s: %d instance(s) re-placed, %d stranded", reservation.id, moved, stranded)
        return moved, stranded

    # --- plumbing ----------------------------------------------------------------------

    def _instance(self, instance_id: UUID, user_id: str | None = None) -> Instance:
        from pex.application import NotFound

        try:
            instance = self.repository.get(instance_id)  # type: ignore[attr-defined]
        except AggregateNotFoundError:
            raise NotFound("no such instance") from None
        if not isinstance(instance, Instance) or (user_id is not None and instance.user_id != user_id):
            raise NotFound("no such instance")
        return instance

    def _change_instance(
        self, instance_id: UUID, change: Callable[[Instance, datetime], None], missing_ok: bool = False
    ) -> None:
        from pex.application import NotFound

        def attempt() -> None:
            try:
                instance = self._instance(instance_id)
            except NotFound:
                if missing_ok:
                    return
                raise
            change(instance, self.clock())  # type: ignore[attr-defined]
            if instance.pending_events:
                self.save(instance)  # type: ignore[attr-defined]

        self._retrying(attempt)  # type: ignore[attr-defined]


def _expected(error: Exception) -> bool:
    """Failures of the hypervisor (reported briefly) as opposed to bugs (with a traceback)."""
    return any(cls.__module__.startswith("pex.adapters.") for cls in type(error).__mro__) or isinstance(
        error, (IllegalMove, OSError, TimeoutError)
    )
