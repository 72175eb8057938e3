"""Where reservations become running VMs: the instance commands of PexApplication.

Three kinds of command live here, all recorded on the Instance aggregate:

* **The user's** (paper §3.1 and Table 2): `start_instance`, `stop_instance`,
  `reboot_instance`, `delete_instance`. Each records the request; in a worker process
  (`dispatch_now` set by pex.bootstrap) the dispatch follows at once, otherwise the next
  worker tick does it (the API's processes never talk to Xen).
* **The dispatcher's**: `claim_dispatch` claims the one action an instance needs now
  (`Instance.due_action`) for a lease; the worker (pex.workers.dispatch) carries it out
  through its enactment (pex.application.ports.Enactment), renews the claim while the action
  runs (`renew_dispatch`) and records the outcome (`record_dispatch`,
  `record_dispatch_failure`). The claim is an event with a lease, so two workers never
  dispatch the same instance at once; a worker killed mid-way leaves a claim that lapses, and
  the next one repeats the (idempotent) action.
* **The monitors' and the Scheduler's**: observations of power state, IP address, silent
  guests, vanished VMs, VMs lost with their node; and `replace_instances`, which re-places the
  instances of lost nodes (and stranded ones) on nodes with room: booking on the new node,
  releasing the old, moving the instances and correcting the reservation's placement in one
  atomic save.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from pex.application.core import Core
from pex.application.errors import NotFound
from pex.application.ports import DispatchJob, Enacted
from pex.application.views import InstanceView, ReservationView
from pex.domain.instance import (
    IllegalInstanceAction,
    Instance,
    InstanceBusy,
    Status,
    reservation_over,
    reservation_prepares,
    reservation_runs,
)
from pex.domain.lifecycle import Phase, phase_of
from pex.domain.placement import re_place
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, State, time_text

log = logging.getLogger(__name__)

# The actions that may make the instance's VM, and so hand the guest its owner's SSH keys.
CREATING_ACTIONS = ("prepare", "start")


def vm_password(key: bytes, instance_id: UUID) -> str:
    """The instance's VM password (the original's vmPassword): derived, never stored, so it is
    in no event, no table and no log; whoever holds PEX_VM_PASSWORD_KEY can derive it again.
    26 characters of base32 (130 bits)."""
    digest = hmac.new(key, b"pex-vm-password:" + instance_id.bytes, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()[:26]

REMOVAL_REASONS = {
    "end": "the reservation ended",
    "delete": "deleted by the user",
    "cleanup": "removed what an interrupted start left",
}


class Instances(Core):
    """Instance commands: the user's requests, the dispatcher's claims and records, the
    monitors' observations, and the Scheduler's re-placement."""

    # Set by a worker process (pex.bootstrap): carries out what a user's request made due at
    # once, through the worker's dispatch (claim → enactment → record), instead of at the next tick.
    dispatch_now: Callable[[UUID], str | None] | None = None
    # PEX_VM_PASSWORD_KEY: with it, each VM gets a password of its own (vm_password).
    vm_password_key: bytes | None = None

    # --- the user's commands -------------------------------------------------------------

    def start_instance(self, instance_id: UUID, user_id: str | None = None) -> InstanceView:
        """Run the instance's VM again, within its reservation's interval (paper §3.1)."""

        def check(instance: Instance, at: datetime) -> None:
            reservation = self._reservation(instance.reservation_id)
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
            change(instance, self.clock())
            if instance.pending_events:
                self.save(instance)

        self._retrying(attempt)
        if self.dispatch_now is not None:
            for _ in range(3):  # e.g. a start owed before a reboot
                if self.dispatch_now(instance_id) is None:
                    break
        return self.get_instance(instance_id)

    def get_instance(self, instance_id_: UUID, user_id: str | None = None) -> InstanceView:
        try:
            instance: Instance = self.repository.get(instance_id_, snapshots=False)
        except AggregateNotFoundError:
            raise NotFound("no such instance") from None
        if not isinstance(instance, Instance) or (user_id is not None and instance.user_id != user_id):
            raise NotFound("no such instance")
        return self._instance_view(instance)

    def vm_password(self, instance_id: UUID) -> str | None:
        """The VM's password, if PEX gives VMs one (PEX_VM_PASSWORD_KEY): for its owner's eyes
        only (the edges show it to the owner alone)."""
        return vm_password(self.vm_password_key, instance_id) if self.vm_password_key else None

    def reservation_phase(self, view: ReservationView, at: datetime | None = None) -> Phase:
        """What the reservation means to its user at `at` (now): booked, running, ended...
        (pex.domain.lifecycle), from its instances as they stand."""
        statuses: list[str] = [self.repository.get(i, snapshots=False).status.value for i in view.instance_ids]
        terms = view.terms
        return phase_of(
            view.state, bool(terms and terms.auto_start), terms.start if terms else None, terms.end if terms else None,
            at or self.clock(), statuses,
        )

    def list_instances(self, user_id: str | None = None) -> list[InstanceView]:
        """Every instance (of `user_id`); like list_reservations, folds the log once."""
        with self._listing.lock:
            self._follow_listing()
            if user_id is None:
                ids = [i for ids in self._listing.index.instances_by_user.values() for i in ids]
            else:
                ids = list(self._listing.index.instances_by_user.get(user_id, []))
        return [self._instance_view(self.repository.get(i, snapshots=False)) for i in ids]

    # --- dispatch: the worker claims, carries out through its enactment, and records -----

    def claim_dispatch(self, instance_id: UUID, worker: str, lease: timedelta) -> DispatchJob | None:
        """Claim the action the instance needs now, if any and if no other worker holds it, for
        `lease`: what the worker's enactment is to carry out."""
        return self._retrying(lambda: self._claim(instance_id, worker, lease))

    def renew_dispatch(self, instance_id: UUID, worker: str, action: str, lease: timedelta) -> None:
        """Keep `worker`'s claim alive while a long action runs, so no other worker takes it over."""

        def renew(i: Instance, at: datetime) -> None:
            if i.holds_claim(worker, action):
                i.claim_dispatch(worker, action, at + lease, at)
            else:
                log.warning("lost the claim on %s of instance %s to %s", action, instance_id, i.claim)

        self._change_instance(instance_id, renew)

    def record_dispatch(self, job: DispatchJob, enacted: Enacted, worker: str) -> None:
        """The enactment carried the claimed action out: record what it left."""
        self._change_instance(job.instance_id, lambda i, at: self._record_outcome(i, job, enacted, worker, at))

    def record_dispatch_failure(self, job: DispatchJob, message: str, worker: str) -> None:
        """The enactment failed: recorded, and tried again later with backoff."""
        self._change_instance(job.instance_id, lambda i, at: i.fail_dispatch(worker, job.action, message, at))

    def claim_dispatches(self, instance_ids: Sequence[UUID], worker: str, lease: timedelta) -> list[DispatchJob]:
        """Claim, for `lease`, the actions the given instances need now, of those no other
        worker holds, in one atomic save: the jobs claimed, in the order given. A worker ticking
        at the same time that claims some of the same instances collides on their versions; the
        loser claims again, on fresh state, what is left."""
        return self._retrying(lambda: self._claim_many(instance_ids, worker, lease))

    def renew_dispatches(self, claims: Sequence[tuple[UUID, str]], worker: str, lease: timedelta) -> list[UUID]:
        """Renew `worker`'s claims, (instance, action) pairs, for `lease` from now, in one atomic
        save; the instances whose claim it no longer holds (another worker took it over, or
        the action's outcome is recorded)."""

        def attempt() -> list[UUID]:
            at = self.clock()
            renewed, lost = [], []
            instances = self.repository.get_many([instance_id for instance_id, _ in claims])  # one query
            for instance_id, action in claims:
                instance = instances.get(instance_id)
                if not isinstance(instance, Instance):
                    lost.append(instance_id)
                    continue
                if instance.holds_claim(worker, action):
                    instance.claim_dispatch(worker, action, at + lease, at)
                    renewed.append(instance)
                else:
                    lost.append(instance_id)
            if renewed:
                self.save(*renewed)
            return lost

        return self._retrying(attempt)

    def _claim(self, instance_id: UUID, worker: str, lease: timedelta) -> DispatchJob | None:
        at = self.clock()
        instance = self._instance(instance_id)
        job = self._claim_job(instance, worker, lease, at)
        if job is not None:
            self.save(instance)
        return job

    def _claim_many(self, instance_ids: Sequence[UUID], worker: str, lease: timedelta) -> list[DispatchJob]:
        at = self.clock()
        claimed: list[Instance] = []
        jobs: list[DispatchJob] = []
        keys: dict[str, tuple[str, ...]] = {}  # each user's SSH keys, read once a batch
        # The batch's instances, then their reservations: two queries, not two an instance.
        instances = self.repository.get_many(instance_ids)
        reservations = self.repository.get_many({i.reservation_id for i in instances.values() if isinstance(i, Instance)})
        for instance_id in instance_ids:
            instance = instances.get(instance_id)
            if not isinstance(instance, Instance):
                continue
            job = self._claim_job(instance, worker, lease, at, keys, reservations)
            if job is not None:
                claimed.append(instance)
                jobs.append(job)
        if claimed:
            self.save(*claimed)
        return jobs

    def _claim_job(
        self, instance: Instance, worker: str, lease: timedelta, at: datetime, keys: dict[str, tuple[str, ...]] | None = None,
        reservations: Mapping[UUID, Any] | None = None,
    ) -> DispatchJob | None:
        """Claim (unsaved) the action the instance needs at `at`: its job, or None. `keys`
        keeps the SSH keys of the users read so far, for the next claims of a batch;
        `reservations`, the reservations a batch loaded (else the instance's is loaded)."""
        action, reason = self._due_action(instance, at, reservations)
        if action is None:
            return None
        # Before this claim: whether an earlier attempt may have left a VM in the pool.
        vm_may_exist = instance.vm_may_exist or instance.vm_uuid is not None
        try:
            instance.claim_dispatch(worker, action, at + lease, at)
        except InstanceBusy:
            return None
        return DispatchJob(
            instance_id=instance.id,
            action=action,
            name=instance.name,
            template=instance.template,
            node=instance.node,
            per_instance=instance.per_instance,
            vm_uuid=instance.vm_uuid,
            vm_may_exist=vm_may_exist,
            needs_reset=instance.needs_reset,
            reason=reason,
            ssh_authorized_keys=self._ssh_keys(instance.user_id, keys) if action in CREATING_ACTIONS else (),
            vm_password=self.vm_password(instance.id) if action in CREATING_ACTIONS else None,
            to_node=instance.migrating_to if action == "migrate" else None,
        )

    def _ssh_keys(self, user_id: str, known: dict[str, tuple[str, ...]] | None) -> tuple[str, ...]:
        if known is None:
            return self.ssh_keys_of(user_id)
        if user_id not in known:
            known[user_id] = self.ssh_keys_of(user_id)
        return known[user_id]

    def _due_action(
        self, instance: Instance, at: datetime, reservations: Mapping[UUID, Any] | None = None
    ) -> tuple[str | None, str]:
        """The action due now and, for a removal, why; the instance's reservation is taken
        from `reservations` when given (loaded with the instance)."""
        try:
            if reservations is None:
                reservation = self.repository.get(instance.reservation_id, snapshots=False)
            else:
                reservation = reservations[instance.reservation_id]
        except (AggregateNotFoundError, KeyError):
            return instance.due_action(at, runs=False, over=True), REMOVAL_REASONS["end"]
        state = State(reservation.state)
        auto_start = bool(reservation.offer and reservation.offer.terms.auto_start)
        runs = reservation_runs(state, auto_start, instance.start, instance.end, at)
        prepares = reservation_prepares(state, auto_start, instance.start, at, self.prepare_lead)
        action = instance.due_action(at, runs=runs, over=reservation_over(state, instance.end, at), prepares=prepares)
        reason = REMOVAL_REASONS.get(action or "", "")
        if action == "end" and state == State.CANCELLED:
            reason = "the reservation was deleted"
        return action, reason

    @staticmethod
    def _record_outcome(instance: Instance, job: DispatchJob, enacted: Enacted, worker: str, at: datetime) -> None:
        if job.action == "prepare":
            if enacted.vm_uuid is None:
                instance.fail_dispatch(worker, "prepare", "the enactment reported no VM", at)
                return
            instance.record_prepared(worker, enacted.node or job.node, enacted.vm_uuid, at)
        elif job.action == "start":
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

    # --- what the monitors saw -------------------------------------------------------------

    def observe_power_state(self, instance_id: UUID, power_state: str) -> None:
        self._change_instance(instance_id, lambda i, at: i.observe_power_state(power_state, at), missing_ok=True)

    def report_ip_address(self, instance_id: UUID, ip_address: str) -> None:
        self._change_instance(instance_id, lambda i, at: i.report_ip(ip_address, at), missing_ok=True)

    def report_vm_relocated(self, instance_id: UUID, node: str) -> None:
        """Xen runs the instance's VM on `node`, where PEX did not put it."""
        self._change_instance(instance_id, lambda i, at: i.relocate(node, at), missing_ok=True)

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
        reservations: dict[UUID, None] = {}
        for instance_id in instance_ids:
            try:
                reservations[self._instance(instance_id).reservation_id] = None
            except NotFound:
                continue
        moved = stranded = 0
        for reservation_id in reservations:
            m, s = self._retrying(partial(self._replace, reservation_id, reason))
            moved, stranded = moved + m, stranded + s
        return moved, stranded

    def _replace(self, reservation_id: UUID, reason: str) -> tuple[int, int]:
        at = self.clock()
        reservation: Reservation = self._reservation(reservation_id)
        offer = reservation.offer
        if offer is None or not reservation.can("replace") or offer.terms.end <= at:
            return 0, 0
        self.follow()
        with self._follow_lock:
            available = set(self.timeline.node_names())
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
            nodes[name] = self._node(name)
            nodes[name].release(reservation.id, f"node {name} lost" + (f": {reason}" if reason else ""), at)
            counts.pop(name)
        with self._follow_lock:
            # In its own pool: a reservation's instances all live in one (pex.domain.pool).
            targets = re_place(self._placing_view(reservation), offer.per_instance, len(movers), max(terms.start, at),
                               terms.end, at)
        moved = stranded = 0
        changed: list[Instance] = []
        for instance, target in zip(movers, targets, strict=True):
            if target is None:
                if instance.status != Status.STRANDED:
                    instance.strand(f"no node has room for it until {time_text(terms.end)}", at)
                    changed.append(instance)
                    stranded += 1
                continue
            counts[target] = counts.get(target, 0) + 1
            if target not in nodes:
                nodes[target] = self._node(target)
            instance.move(target, at)
            changed.append(instance)
            moved += 1
        for name, node in nodes.items():
            if name in counts:  # books the reservation's new total there (replacing its old booking)
                node.book(reservation.id, terms.start, terms.end, counts[name], offer.per_instance, at)
        placement = tuple(Allocation(name, n) for name, n in sorted(counts.items()) if n > 0)
        if placement != tuple(sorted(offer.placement, key=lambda a: a.node)):
            reservation.replace_placement(placement, reason or "instances re-placed after a node was lost", at)
        self._save(reservation, *nodes.values(), *changed)
        if moved or stranded:
            log.info("reservation %s: %d instance(s) re-placed, %d stranded", reservation.id, moved, stranded)
        return moved, stranded

    # --- plumbing ----------------------------------------------------------------------

    def pool_of_instance(self, instance_id: UUID) -> str | None:
        """The pool of the node the instance is on (None for no such instance or node)."""
        try:
            return self._node(self._instance(instance_id).node).pool
        except NotFound:
            return None

    def _instance(self, instance_id: UUID, user_id: str | None = None) -> Instance:
        try:
            instance: Instance = self.repository.get(instance_id, snapshots=False)
        except AggregateNotFoundError:
            raise NotFound("no such instance") from None
        if not isinstance(instance, Instance) or (user_id is not None and instance.user_id != user_id):
            raise NotFound("no such instance")
        return instance

    def _change_instance(
        self, instance_id: UUID, change: Callable[[Instance, datetime], None], missing_ok: bool = False
    ) -> None:
        def attempt() -> None:
            try:
                instance = self._instance(instance_id)
            except NotFound:
                if missing_ok:
                    return
                raise
            change(instance, self.clock())
            if instance.pending_events:
                self.save(instance)

        self._retrying(attempt)
