"""The Instance aggregate: one virtual machine of a confirmed reservation, and its life.

Instances are created together with the reservation's Confirmed event, one per granted
instance, each on the node its booking is on. What then happens to the VM is recorded here:
the workers' claims on dispatch work, what the dispatcher did (Provisioned, Started, Stopped,
Rebooted, Destroyed), what the monitors saw (PowerStateObserved, IpAddressReported,
Unresponsive, Vanished, Lost), the user's requests (StartRequested, StopRequested,
RebootRequested, DeleteRequested), the Scheduler's answer to a lost node (Moved, Stranded)
and a re-pack that made room for another reservation before the VM was made (Repacked).

Two ideas carry the design:

* **Desired state.** The aggregate keeps what should be true (the VM wanted running or not,
  deleted or not, a reboot owed) beside what was last known to be true (status, power state,
  VM uuid). `due_action(now, runs, over)` compares them and names the one dispatch action
  that would close the gap, or None. A worker that died anywhere just asks again.
* **Claims with a lease.** A worker records DispatchClaimed(worker, action, lease_until)
  before it touches Xen. Two workers that claim the same instance write the same aggregate
  version, so exactly one claim is stored; the other worker moves on. Every outcome event
  clears the claim; a worker that died leaves a claim that lapses at `lease_until`, and the
  work is claimed again (the dispatcher's operations are safe to repeat).

Statuses are those of the paper's instances screen (HALTED, RUNNING, PAUSED, SUSPENDED) and
PEX's own: SCHEDULED (no VM yet), FAILED (no VM yet, and its start keeps failing: the error
and the time are kept, to the end), LOST (its node stopped answering), STRANDED (the node was
lost and no other node had room), and the ends ENDED, DELETED, CANCELLED. LEGAL_MOVES says
which move each status allows. Every time is an event attribute `at`; nothing here reads a
clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from pex.domain.errors import DomainError, IllegalMove
from pex.domain.values import CopiedByContainers, Resources, State, time_text


class Status(StrEnum):
    SCHEDULED = "SCHEDULED"
    HALTED = "HALTED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    LOST = "LOST"
    FAILED = "FAILED"
    STRANDED = "STRANDED"
    ENDED = "ENDED"
    DELETED = "DELETED"
    CANCELLED = "CANCELLED"


TERMINAL = frozenset({Status.ENDED, Status.DELETED, Status.CANCELLED})

# Xen's power states (XenAPI vm_power_state) as statuses.
POWER_STATUS = {"Halted": Status.HALTED, "Running": Status.RUNNING, "Paused": Status.PAUSED, "Suspended": Status.SUSPENDED}

# Dispatch actions a worker claims: make the VM ahead of its start (cloned, sized, provisioned,
# halted on its node: `prepare`, PEX_PREPARE_LEAD_SECONDS before the start), make the VM run on its node, shut it down, reboot it,
# destroy it because the user deleted it, because the reservation is over, or because an
# instance that ended while a start was in flight may have left a VM behind.
# A running VM whose node is drained is live-migrated to the node booked for it (`migrate`).
ACTIONS = ("prepare", "start", "stop", "reboot", "delete", "end", "cleanup", "migrate")
# A planned migration that failed this many times in a row is given up (MigrationAbandoned).
MIGRATION_ATTEMPTS = 4

# Causes of a PowerStateObserved: the guest halted without anyone asking (it crashed or was
# shut down from inside; XAPI's power state does not tell which), the instance's host was
# lost (the domain died with it), or someone changed it through Xen, not through PEX.
CAUSE_GUEST, CAUSE_HOST_LOST, CAUSE_OUTSIDE = "guest", "host_lost", "outside"

_LIVE_VM = {"request_stop", "request_reboot", "request_delete", "request_start", "claim", "fail", "start", "stop",
            "reboot", "destroy", "end", "observe", "report_ip", "unresponsive", "vanish", "lose", "move", "strand",
            "relocate"}
# Which move each status allows. User requests that a status does not allow are refused
# (IllegalInstanceAction); reports from monitors that no longer apply are ignored.
LEGAL_MOVES: dict[Status, frozenset[str]] = {
    # A SCHEDULED instance's VM, if any, is one an interrupted start left: the start finishes it,
    # so the monitors' reports about it are ignored.
    Status.SCHEDULED: frozenset({"request_start", "request_delete", "cancel", "claim", "fail", "prepare", "start", "end",
                                 "move", "strand", "destroy"}),
    Status.RUNNING: frozenset(_LIVE_VM),
    Status.PAUSED: frozenset(_LIVE_VM - {"request_reboot", "report_ip", "unresponsive"}),
    Status.SUSPENDED: frozenset(_LIVE_VM - {"request_reboot", "report_ip", "unresponsive", "lose"}),
    Status.HALTED: frozenset(_LIVE_VM - {"request_reboot", "stop", "reboot", "report_ip", "unresponsive", "lose"}),
    # A start that kept failing: still tried (with backoff) until the end, as a SCHEDULED one is.
    Status.FAILED: frozenset({"request_start", "request_delete", "cancel", "claim", "fail", "start", "end", "move",
                              "strand", "destroy"}),
    Status.LOST: frozenset({"request_delete", "request_stop", "request_start", "claim", "fail", "end", "destroy",
                            "observe", "vanish", "move", "strand"}),
    # What Xen says of a stranded instance's VM (on a lost host) changes nothing: it has no booking.
    Status.STRANDED: frozenset({"request_delete", "request_stop", "request_start", "cancel", "end", "destroy", "move",
                                "claim", "fail"}),
    # An instance that ended while a start was in flight may have left a VM: it is cleaned up.
    Status.ENDED: frozenset({"claim", "fail", "destroy"}),
    Status.DELETED: frozenset({"claim", "fail", "destroy"}),
    Status.CANCELLED: frozenset({"claim", "fail", "destroy"}),
}

RETRY_BASE = timedelta(seconds=5)
# A start that failed this many times in a row marks a VM that never ran FAILED (with the error).
FAILED_AFTER = 3
RETRY_MAX = timedelta(minutes=5)


class IllegalInstanceAction(IllegalMove):
    """The instance's status does not allow what the user asked (e.g. reboot a halted VM)."""

    def __init__(self, move: str, status: str, detail: str = ""):
        DomainError.__init__(self, f"cannot {move} an instance that is {status}{': ' + detail if detail else ''}")
        self.move, self.state = move, status


class InstanceBusy(DomainError):
    """Another worker holds a live claim on the instance's dispatch work."""


@dataclass(frozen=True)
class Claim:
    worker: str
    action: str
    lease_until: datetime
    at: datetime


class Instance(CopiedByContainers, Aggregate):
    """A VM that PEX creates at the reservation's start and destroys at its end."""

    class Event(Aggregate.Event):
        at: datetime

    class Scheduled(Aggregate.Created):
        reservation_id: UUID
        user_id: str
        index: int
        name: str
        size: str
        template: str
        per_instance: Resources
        node: str
        start: datetime
        end: datetime
        at: datetime

    # Read by instances recorded before FAILED existed (their snapshots lack it).
    failed_at: datetime | None = None
    # Read by instances recorded before drains existed: a planned live migration (from, to),
    # and why the instance could not leave a drained node.
    migrating_from: str | None = None
    migrating_to: str | None = None
    not_moved: str | None = None

    class Cancelled(Event):
        """The reservation was deleted before the instance ran."""

        def apply(self, i: Instance) -> None:
            i.status = Status.CANCELLED

    # --- dispatch: claims and what the dispatcher did --------------------------------------

    class DispatchClaimed(Event):
        """A worker took (or renewed) the dispatch work `action` until `lease_until`."""

        worker: str
        action: str
        lease_until: datetime

        def apply(self, i: Instance) -> None:
            i.claim = Claim(self.worker, self.action, self.lease_until, self.at)
            if self.action in ("start", "prepare"):
                i.vm_may_exist = True  # from now on, a crash may leave a VM behind

    class DispatchFailed(Event):
        """The claimed action failed; it is tried again from `retry_at`."""

        worker: str
        action: str
        error: str
        retry_at: datetime

        def apply(self, i: Instance) -> None:
            i.claim, i.failures, i.last_error, i.retry_at = None, i.failures + 1, self.error, self.retry_at

    class Failed(Event):
        """The instance's VM never ran and its start keeps failing (FAILED_AFTER times in a
        row): the instance is FAILED, with the last error as `reason`. Starts are still tried,
        with backoff, until its end (the host may come back, or the booking move)."""

        action: str
        reason: str

        def apply(self, i: Instance) -> None:
            i.status, i.failed_at, i.last_error = Status.FAILED, self.at, self.reason

    class ClaimReleased(Event):
        """The claimed action's outcome no longer applies (the instance moved on meanwhile)."""

        worker: str
        action: str
        reason: str

        def apply(self, i: Instance) -> None:
            i.claim = None

    class Provisioned(Event):
        """The instance's VM was created (cloned from its template, sized, disks provisioned)."""

        node: str
        vm_uuid: str

        def apply(self, i: Instance) -> None:
            i.vm_uuid, i.vm_may_exist = self.vm_uuid, True

    class Prepared(Event):
        """The VM was made ahead of its start (cloned, sized, disks provisioned) and left
        halted, so the start only boots it. Clears the claim."""

        node: str
        vm_uuid: str

        def apply(self, i: Instance) -> None:
            i._settled()
            i.vm_uuid, i.vm_may_exist = self.vm_uuid, True

    class Started(Event):
        """The VM runs on `node`."""

        node: str
        vm_uuid: str

        def apply(self, i: Instance) -> None:
            i._settled()
            i.status, i.power_state, i.node, i.vm_uuid = Status.RUNNING, "Running", self.node, self.vm_uuid
            i.vm_may_exist, i.needs_reset, i.responsive = True, False, True
            i.started_at, i.failed_at = self.at, None

    class Stopped(Event):
        """PEX shut the VM down, as the user asked."""

        def apply(self, i: Instance) -> None:
            i._settled()
            i.status, i.power_state, i.ip_address = Status.HALTED, "Halted", None

    class Rebooted(Event):
        def apply(self, i: Instance) -> None:
            i._settled()
            i.reboots_done = i.reboots_requested
            i.started_at, i.responsive = self.at, True

    class Destroyed(Event):
        """The VM and its disks were removed (the reservation ended, the user deleted it, or a
        cleanup); the instance is over."""

        reason: str

        def apply(self, i: Instance) -> None:
            i._settled()
            i._finish(self.reason)
            i.vm_uuid, i.vm_may_exist, i.power_state, i.ip_address = None, False, None, None

    class Ended(Event):
        """The instance is over without a VM to remove (it never ran)."""

        reason: str

        def apply(self, i: Instance) -> None:
            i._settled()
            i._finish(self.reason)

    # --- what the monitors saw -------------------------------------------------------------

    class PowerStateObserved(Event):
        """Xen reports a power state PEX did not cause; `cause` is guest, host_lost or outside."""

        power_state: str
        cause: str

        def apply(self, i: Instance) -> None:
            i.power_state, i.status = self.power_state, POWER_STATUS[self.power_state]
            if self.power_state != "Running":
                i.ip_address = None
            if self.cause == CAUSE_GUEST:
                i.wants_running = False  # the guest chose to stop (or died): PEX does not insist
            elif self.cause == CAUSE_OUTSIDE:
                i.wants_running = self.power_state == "Running"
            i.needs_reset = False

    class Relocated(Event):
        """Xen runs the VM on `node` now, and PEX did not move it there (a migration outside
        PEX, or HA): the instance is where Xen says, booked there or not (the audit tells)."""

        node: str

        def apply(self, i: Instance) -> None:
            i.node = self.node

    class IpAddressReported(Event):
        ip_address: str

        def apply(self, i: Instance) -> None:
            i.ip_address, i.responsive = self.ip_address, True

    class Unresponsive(Event):
        """The VM runs, but its guest agent has reported nothing since `since`."""

        since: datetime

        def apply(self, i: Instance) -> None:
            i.responsive = False

    class Vanished(Event):
        """The VM is no longer in the pool, and PEX did not remove it."""

        def apply(self, i: Instance) -> None:
            i.status, i.power_state, i.ip_address = Status.HALTED, None, None
            i.vm_uuid, i.vm_may_exist, i.wants_running, i.needs_reset = None, False, False, False

    class Lost(Event):
        """The instance's node stopped answering while its VM ran there."""

        node: str

        def apply(self, i: Instance) -> None:
            i.status, i.power_state, i.ip_address, i.needs_reset = Status.LOST, None, None, True

    # --- the user's requests ---------------------------------------------------------------

    class StartRequested(Event):
        user_id: str

        def apply(self, i: Instance) -> None:
            i.wants_running, i.retry_at, i.failures = True, None, 0

    class StopRequested(Event):
        user_id: str

        def apply(self, i: Instance) -> None:
            i.wants_running, i.retry_at, i.failures = False, None, 0

    class RebootRequested(Event):
        user_id: str

        def apply(self, i: Instance) -> None:
            i.reboots_requested, i.retry_at, i.failures = i.reboots_requested + 1, None, 0

    class DeleteRequested(Event):
        user_id: str

        def apply(self, i: Instance) -> None:
            i.delete_requested, i.retry_at, i.failures = True, None, 0

    # --- the Scheduler's answer to a lost node ---------------------------------------------

    class Moved(Event):
        """Re-placed from `from_node` (lost, or drained; or by an extension, not started yet) to
        `to_node`, booked there in the same save."""

        from_node: str
        to_node: str

        def apply(self, i: Instance) -> None:
            i.node, i.retry_at, i.failures = self.to_node, None, 0
            i.migrating_from = i.migrating_to = i.not_moved = None
            if i.status in (Status.LOST, Status.STRANDED):
                i.status = Status.HALTED if i.vm_may_exist else Status.SCHEDULED
                i.power_state = "Halted" if i.vm_may_exist else None

    class Repacked(Event):
        """Moved from `from_node` to `to_node` before it ever ran (no VM made yet), to make
        room for reservation `for_reservation`; booked there in the same save, over the same
        interval with the same resources."""

        from_node: str
        to_node: str
        for_reservation: UUID

        def apply(self, i: Instance) -> None:
            i.node = self.to_node

    class Stranded(Event):
        """The node was lost and no other node had room: the instance has no booking now."""

        reason: str

        def apply(self, i: Instance) -> None:
            i.status, i.ip_address = Status.STRANDED, None
            if i.power_state is not None:
                i.power_state = None

    class Extended(Event):
        """Its reservation's extension was confirmed: the instance's interval now ends at `end`
        (a running VM keeps running; it is ended at the new end)."""

        end: datetime

        def apply(self, i: Instance) -> None:
            i.end = self.end

    # --- a drained node: its running VMs live-migrate --------------------------------------

    class MigrationPlanned(Event):
        """The VM runs on `from_node`, which is drained (`reason`): it is to live-migrate to
        `to_node`, booked for it there from now in the same save. While it moves it is booked
        on both nodes, so neither is ever overbooked; the worker's `migrate` does the move."""

        from_node: str
        to_node: str
        reason: str

        def apply(self, i: Instance) -> None:
            i.migrating_from, i.migrating_to, i.not_moved = self.from_node, self.to_node, None
            i.retry_at, i.failures = None, 0

    class Migrated(Event):
        """The VM live-migrated from `from_node` to `to_node` and runs there; its booking on
        `from_node` was given back in the same save. Clears the claim."""

        from_node: str
        to_node: str

        def apply(self, i: Instance) -> None:
            i._settled()
            i.node, i.migrating_from, i.migrating_to = self.to_node, None, None

    class MigrationAbandoned(Event):
        """The planned migration to `to_node` was given up (`reason`): it kept failing. Its
        booking there was given back in the same save; the VM stays where it runs."""

        to_node: str
        reason: str

        def apply(self, i: Instance) -> None:
            i.claim, i.retry_at, i.failures = None, None, 0
            i.migrating_from, i.migrating_to, i.not_moved = None, None, self.reason

    class NotMoved(Event):
        """The instance had to leave `node`, drained, and could not (`reason`: no other node
        has room for the rest of its reservation): it stays, booked there, and the operator is
        told (the node's drain lists it)."""

        node: str
        reason: str

        def apply(self, i: Instance) -> None:
            i.not_moved = self.reason

    def __init__(
        self,
        reservation_id: UUID,
        user_id: str,
        index: int,
        name: str,
        size: str,
        template: str,
        per_instance: Resources,
        node: str,
        start: datetime,
        end: datetime,
        at: datetime,
    ):
        self.reservation_id = reservation_id
        self.user_id = user_id
        self.index = index
        self.name = name
        self.size = size
        self.template = template
        self.per_instance = per_instance
        self.node = node
        self.start = start
        self.end = end
        self.status = Status.SCHEDULED
        # What was last known of the VM.
        self.vm_uuid: str | None = None
        self.power_state: str | None = None  # Xen's: Halted, Running, Paused, Suspended
        self.ip_address: str | None = None
        self.started_at: datetime | None = None
        self.responsive = True
        # A VM may exist in the pool for this instance (a start was claimed, not destroyed since).
        self.vm_may_exist = False
        # The VM's host was lost: XAPI still says Running until power_state_reset.
        self.needs_reset = False
        # What should be true.
        self.wants_running = True
        self.delete_requested = False
        self.reboots_requested = 0
        self.reboots_done = 0
        self.ended_reason: str | None = None
        # Dispatch bookkeeping.
        self.claim: Claim | None = None
        self.failed_at: datetime | None = None
        self.failures = 0
        self.last_error: str | None = None
        self.retry_at: datetime | None = None
        self.migrating_from: str | None = None
        self.migrating_to: str | None = None
        self.not_moved: str | None = None

    @staticmethod
    def create_id(reservation_id: UUID, index: int, **_: object) -> UUID:
        return instance_id(reservation_id, index)

    # --- queries -----------------------------------------------------------------------

    @property
    def is_over(self) -> bool:
        return self.status in TERMINAL

    def can(self, move: str) -> bool:
        return move in LEGAL_MOVES[self.status]

    def claim_live(self, at: datetime) -> bool:
        return self.claim is not None and self.claim.lease_until > at

    def due_action(self, now: datetime, runs: bool, over: bool, prepares: bool = False) -> str | None:
        """The dispatch action that would bring the VM to what it should be at `now`, or None.

        `runs`: the reservation lets its VMs run now (activated, or confirmed with auto-start,
        and inside its interval). `over`: the reservation ended or was deleted. `prepares`:
        its VMs will run at the start, which is near enough to make them now.
        """
        if self.claim_live(now) or (self.retry_at is not None and self.retry_at > now):
            return None
        if self.is_over:
            return "cleanup" if self.vm_may_exist else None
        if over or now >= self.end:
            return "end"
        if self.delete_requested:
            return "delete"
        if self.status in (Status.LOST, Status.STRANDED):
            return None  # the Scheduler's move, not a dispatch
        if self.migrating_to is not None and self.status == Status.RUNNING:
            return "migrate"  # its node is drained; it is booked on the other already
        if not runs:
            if prepares and self.status == Status.SCHEDULED and self.vm_uuid is None and self.wants_running:
                return "prepare"
            return None
        if self.wants_running:
            if self.status != Status.RUNNING:
                return "start"
            if self.reboots_requested > self.reboots_done:
                return "reboot"
            return None
        if self.status in (Status.RUNNING, Status.PAUSED, Status.SUSPENDED):
            return "stop"
        return None

    # --- commands: dispatch --------------------------------------------------------------

    def check(self, move: str, detail: str = "") -> None:
        if not self.can(move):
            raise IllegalInstanceAction(move.removeprefix("request_"), self.status.value, detail)

    def claim_dispatch(self, worker: str, action: str, lease_until: datetime, at: datetime) -> None:
        """Take the dispatch work `action` until `lease_until`, or renew one's own claim."""
        if action not in ACTIONS:
            raise ValueError(f"unknown dispatch action {action!r}")
        self.check("claim")
        if self.claim_live(at) and self.claim is not None and self.claim.worker != worker:
            raise InstanceBusy(f"{self.claim.worker} is {self.claim.action}ing it until {time_text(self.claim.lease_until)}")
        self.trigger_event(self.DispatchClaimed, worker=worker, action=action, lease_until=lease_until, at=at)

    def holds_claim(self, worker: str, action: str) -> bool:
        """Whether `worker`'s claim on `action` still stands (nobody claimed over it since)."""
        return self.claim is not None and self.claim.worker == worker and self.claim.action == action

    def fail_dispatch(self, worker: str, action: str, error: str, at: datetime) -> None:
        if not self.holds_claim(worker, action):
            return
        delay = min(RETRY_BASE * 2 ** min(self.failures, 10), RETRY_MAX)
        retry_at = at + delay
        if action == "prepare":  # a failed preparation never delays the start itself
            retry_at = min(retry_at, max(self.start, at))
        self.trigger_event(self.DispatchFailed, worker=worker, action=action, error=error[:500], retry_at=retry_at, at=at)
        if action == "start" and self.status == Status.SCHEDULED and self.failures >= FAILED_AFTER:
            self.trigger_event(self.Failed, action=action, reason=error[:500], at=at)

    def release_claim(self, worker: str, action: str, reason: str, at: datetime) -> None:
        if self.holds_claim(worker, action):
            self.trigger_event(self.ClaimReleased, worker=worker, action=action, reason=reason, at=at)

    def record_started(self, worker: str, node: str, vm_uuid: str, at: datetime) -> None:
        """The claimed start succeeded: the VM (created now, if it had none) runs on `node`."""
        if not self.holds_claim(worker, "start"):
            return
        if not self.can("start"):
            # Cancelled, or the reservation ended, while the VM was being made: it is cleaned up.
            self.release_claim(worker, "start", f"the instance is {self.status.value} now", at)
            return
        if self.vm_uuid != vm_uuid:
            self.trigger_event(self.Provisioned, node=node, vm_uuid=vm_uuid, at=at)
        self.trigger_event(self.Started, node=node, vm_uuid=vm_uuid, at=at)

    def record_prepared(self, worker: str, node: str, vm_uuid: str, at: datetime) -> None:
        """The claimed preparation made the VM, halted, on `node`."""
        if not self.holds_claim(worker, "prepare"):
            return
        if self.can("prepare") and self.status == Status.SCHEDULED:
            self.trigger_event(self.Prepared, node=node, vm_uuid=vm_uuid, at=at)
        else:  # cancelled or moved on meanwhile: the VM is cleaned up like any other
            self.release_claim(worker, "prepare", f"the instance is {self.status.value} now", at)

    def record_stopped(self, worker: str, at: datetime) -> None:
        if self.holds_claim(worker, "stop"):
            if self.can("stop"):
                self.trigger_event(self.Stopped, at=at)
            else:
                self.release_claim(worker, "stop", f"the instance is {self.status.value} now", at)

    def record_rebooted(self, worker: str, at: datetime) -> None:
        if self.holds_claim(worker, "reboot"):
            if self.can("reboot"):
                self.trigger_event(self.Rebooted, at=at)
            else:
                self.release_claim(worker, "reboot", f"the instance is {self.status.value} now", at)

    def record_removed(self, worker: str, action: str, reason: str, at: datetime) -> None:
        """The claimed end, delete or cleanup is done: the VM (if there was one) is gone."""
        if not self.holds_claim(worker, action):
            return
        if self.vm_may_exist or self.vm_uuid is not None:
            self.trigger_event(self.Destroyed, reason=reason, at=at)
        elif not self.is_over:
            self.trigger_event(self.Ended, reason=reason, at=at)
        else:
            self.release_claim(worker, action, "nothing left to remove", at)

    # --- commands: what the monitors saw -----------------------------------------------------

    def observe_power_state(self, power_state: str, at: datetime) -> None:
        """Record a power state Xen reports, if PEX did not already know it. Ignored while a
        worker's claim is live: its outcome event will say what happened."""
        if power_state not in POWER_STATUS:
            raise ValueError(f"unknown power state {power_state!r}")
        if not self.can("observe") or self.claim_live(at) or self.power_state == power_state or self._going(at):
            return
        if self.status == Status.SCHEDULED and power_state == "Halted":
            return  # a VM half-made by an interrupted start: the start will finish it
        if self.status == Status.LOST:
            cause = CAUSE_HOST_LOST
        elif power_state == "Halted" and self.status in (Status.RUNNING, Status.PAUSED, Status.SUSPENDED):
            cause = CAUSE_GUEST
        else:
            cause = CAUSE_OUTSIDE
        self.trigger_event(self.PowerStateObserved, power_state=power_state, cause=cause, at=at)

    def report_ip(self, ip_address: str, at: datetime) -> None:
        if self.can("report_ip") and ip_address and ip_address != self.ip_address:
            self.trigger_event(self.IpAddressReported, ip_address=ip_address, at=at)

    def relocate(self, node: str, at: datetime) -> None:
        """Xen says the running VM is on `node`, not where PEX put it."""
        if node == self.migrating_to:
            return  # PEX is moving it there: the migration's outcome says when it arrived
        if self.can("relocate") and self.status in (Status.RUNNING, Status.PAUSED) and node and node != self.node:
            self.trigger_event(self.Relocated, node=node, at=at)

    def check_responsive(self, timeout: timedelta, at: datetime) -> None:
        """Record that a running VM's guest agent stayed silent for `timeout` since it started."""
        if (
            self.can("unresponsive")
            and self.responsive
            and self.ip_address is None
            and self.started_at is not None
            and self.started_at + timeout <= at
            and not self.claim_live(at)
        ):
            self.trigger_event(self.Unresponsive, since=self.started_at, at=at)

    def vanish(self, at: datetime) -> None:
        if self.can("vanish") and self.vm_may_exist and not self.claim_live(at) and not self._going(at):
            self.trigger_event(self.Vanished, at=at)

    def lose(self, node: str, at: datetime) -> None:
        """The node `node` was lost: if the VM ran there, it is lost with it."""
        if self.node == node and self.can("lose") and self.status in (Status.RUNNING, Status.PAUSED):
            self.trigger_event(self.Lost, node=node, at=at)

    # --- commands: the user's requests -------------------------------------------------------

    def request_start(self, user_id: str, at: datetime) -> None:
        """Run the VM again (paper §3.1: the user may start VMs during the reservation)."""
        self.check("request_start")
        self._check_inside_interval("start", at)
        if not self.wants_running or self.retry_at is not None:
            self.trigger_event(self.StartRequested, user_id=user_id, at=at)

    def request_stop(self, user_id: str, at: datetime) -> None:
        self.check("request_stop", "it has not started" if self.status == Status.SCHEDULED else "")
        if self.wants_running or self.retry_at is not None:
            self.trigger_event(self.StopRequested, user_id=user_id, at=at)

    def request_reboot(self, user_id: str, at: datetime) -> None:
        self.check("request_reboot", "only a running VM reboots")
        if self.reboots_requested == self.reboots_done:
            self.trigger_event(self.RebootRequested, user_id=user_id, at=at)

    def request_delete(self, user_id: str, at: datetime) -> None:
        self.check("request_delete")
        if not self.delete_requested:
            self.trigger_event(self.DeleteRequested, user_id=user_id, at=at)

    def extend(self, end: datetime, at: datetime) -> None:
        """Move the end later (its reservation's extension was confirmed); an instance that is
        over stays over."""
        if not self.is_over and end > self.end:
            self.trigger_event(self.Extended, end=end, at=at)

    def cancel(self, at: datetime) -> None:
        if self.can("cancel"):
            self.trigger_event(self.Cancelled, at=at)

    # --- commands: the Scheduler ---------------------------------------------------------------

    def move(self, to_node: str, at: datetime) -> None:
        self.check("move")
        self.trigger_event(self.Moved, from_node=self.node, to_node=to_node, at=at)

    def can_repack(self, at: datetime) -> bool:
        """Whether the instance may still move to another node to make room: scheduled, its
        start still ahead, no VM made for it (none prepared) and no worker at it."""
        return (
            self.status == Status.SCHEDULED and self.start > at and self.vm_uuid is None and not self.vm_may_exist
            and self.claim is None and self.failures == 0 and not self.delete_requested
        )

    def repack(self, to_node: str, for_reservation: UUID, at: datetime) -> None:
        """Move to `to_node` to make room for `for_reservation` (see can_repack)."""
        if not self.can_repack(at) or to_node == self.node:
            raise IllegalInstanceAction("repack", self.status.value, "only a scheduled instance with no VM yet moves")
        self.trigger_event(self.Repacked, from_node=self.node, to_node=to_node, for_reservation=for_reservation, at=at)

    def strand(self, reason: str, at: datetime) -> None:
        self.check("strand")
        self.trigger_event(self.Stranded, reason=reason, at=at)

    # --- commands: a drained node --------------------------------------------------------------

    def plan_migration(self, to_node: str, reason: str, at: datetime) -> None:
        """Live-migrate the running VM to `to_node` (booked for it there in the same save)."""
        self.check("move")
        if self.status != Status.RUNNING or self.migrating_to is not None or to_node == self.node:
            raise IllegalInstanceAction("migrate", self.status.value, "only a running VM that is not moving migrates")
        self.trigger_event(self.MigrationPlanned, from_node=self.node, to_node=to_node, reason=reason, at=at)

    def record_migrated(self, worker: str, at: datetime) -> None:
        """The claimed migration is done: the VM runs on the node it was to move to."""
        if self.holds_claim(worker, "migrate") and self.migrating_to is not None:
            self.trigger_event(self.Migrated, from_node=self.migrating_from or self.node, to_node=self.migrating_to,
                               at=at)

    def abandon_migration(self, reason: str, at: datetime) -> None:
        if self.migrating_to is not None:
            self.trigger_event(self.MigrationAbandoned, to_node=self.migrating_to, reason=reason[:500], at=at)

    def could_not_move(self, reason: str, at: datetime) -> None:
        """It must leave its drained node and cannot: recorded once per reason."""
        if reason != self.not_moved:
            self.trigger_event(self.NotMoved, node=self.node, reason=reason, at=at)

    # --- helpers ---------------------------------------------------------------------------

    def _check_inside_interval(self, move: str, at: datetime) -> None:
        if not self.start <= at < self.end:
            raise IllegalInstanceAction(
                move, self.status.value, f"its reservation runs from {time_text(self.start)} to {time_text(self.end)}"
            )

    def _going(self, at: datetime) -> bool:
        """Its removal is due: what Xen reports of the VM now is the removal's doing (perhaps
        of a worker that died midway), not news."""
        return at >= self.end or self.delete_requested

    def _settled(self) -> None:
        self.claim, self.failures, self.retry_at = None, 0, None
        if self.failed_at is None:  # a start that failed for good keeps its error to the end
            self.last_error = None

    def _finish(self, reason: str) -> None:
        self.ended_reason = reason
        if self.status not in TERMINAL:
            self.status = Status.DELETED if self.delete_requested else Status.ENDED


def reservation_runs(state: State, auto_start: bool, start: datetime, end: datetime, now: datetime) -> bool:
    """Whether a reservation's VMs should be up at `now`: activated (or confirmed with
    auto-start) and inside its interval. A late activation still starts them at once."""
    live = state == State.ACTIVATED or (state == State.CONFIRMED and auto_start)
    return live and start <= now < end


def reservation_prepares(state: State, auto_start: bool, start: datetime, now: datetime, lead: timedelta) -> bool:
    """Whether the reservation's VMs will run at its start and that start is within `lead`."""
    will_run = state == State.ACTIVATED or (state == State.CONFIRMED and auto_start)
    return will_run and lead > timedelta(0) and start - lead <= now < start


def reservation_over(state: State, end: datetime, now: datetime) -> bool:
    return state in (State.EXPIRED, State.CANCELLED) or now >= end


def instance_id(reservation_id: UUID, index: int) -> UUID:
    return uuid5(NAMESPACE_URL, f"/pex/reservations/{reservation_id}/instances/{index}")


def instance_name(reservation_id: UUID, index: int) -> str:
    return f"pex-{str(reservation_id)[:8]}-{index}"
