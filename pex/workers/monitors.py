"""The Node Monitor and the VM Monitor of the paper, on one XAPI `event.from` feed.

`Monitors` keeps the latest picture Xen gave (per PEX VM: power state, host, IP; per host:
live and enabled) from the event watcher, and records in PEX whatever differs from what PEX
knows:

* Node Monitor: a host that dies, or is disabled for maintenance, marks its Node lost (it
  takes no new bookings) and, if it died, the instances that ran there LOST; the Scheduler
  re-places them after a grace period (pex.workers.timer). A host that comes back marks its
  Node returned, and its instances are checked against what Xen now says.
* VM Monitor: a VM that halted without PEX asking (crashed, or shut down from inside: Xen
  does not say which), that was started, paused or suspended outside PEX, that disappeared,
  and every IP address its guest agent reports, become events on the Instance; a guest that
  has reported nothing `guest_timeout` after its start is recorded as unresponsive.

Changes are handled as they arrive; every `resync_interval` seconds (and after the watcher
itself had to start over) everything is compared again, which also repairs anything a
failed write or a restart missed. All recording goes through idempotent application
commands, so two monitors on one pool record each fact once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from pex.adapters.xen.changes import (
    GuestIpReported,
    HostLivenessChanged,
    HostRemoved,
    VmMigrated,
    VmPowerStateChanged,
    VmRemoved,
    WatcherResynced,
    XenChange,
)
from pex.adapters.xen.errors import XenAdapterError, XenTransportError
from pex.domain.instance import Status
from pex.workers.index import DispatchIndex

log = logging.getLogger(__name__)

_VM_STATUSES = (Status.RUNNING, Status.HALTED, Status.PAUSED, Status.SUSPENDED)


@dataclass
class VmSeen:
    power_state: str
    host_name: str | None
    ip: str | None


@dataclass
class HostSeen:
    live: bool
    enabled: bool

    @property
    def available(self) -> bool:
        return self.live and self.enabled


def _changes_pool(change: XenChange) -> bool:
    """Whether a change is one of the pool's hosts joining, leaving, or enabled or disabled."""
    if isinstance(change, HostRemoved):
        return True
    return isinstance(change, HostLivenessChanged) and (change.previous_enabled is None or change.enabled != change.previous_enabled)


class Monitors:
    def __init__(
        self,
        app: Any,
        watcher: Any,
        index: DispatchIndex | None = None,
        *,
        guest_timeout: timedelta = timedelta(minutes=5),
        resync_interval: float = 60.0,
        retry_delay: float = 1.0,
        dispatcher: Any = None,
        sync_pool: Callable[[], None] | None = None,
        pool: str | None = None,
        unreachable_after: float = 30.0,
    ):
        """`dispatcher`, if given, is asked for a VM's power state before PEX records one
        it did not expect: a batch read just before a worker's start may be stale by then.
        `sync_pool`, if given (a pool is configured), is called whenever a host joins, leaves,
        or is enabled or disabled, so that the nodes follow the pool. `pool`, if given, is
        recorded unreachable once its master has not answered for `unreachable_after` seconds,
        and reachable at the first answer after that (or after this process started)."""
        self.app = app
        self.pool = pool
        self.unreachable_after = unreachable_after
        self._unanswered_since: float | None = None
        self._recorded: bool | None = None  # whether this process last recorded it reachable (None: not yet)
        self.sync_pool = sync_pool
        self.watcher = watcher
        self.dispatcher = dispatcher
        self.index = index or DispatchIndex()
        self.guest_timeout = guest_timeout
        self.resync_interval = resync_interval
        self.retry_delay = retry_delay
        self.vms: dict[str, VmSeen] = {}
        self.hosts: dict[str, HostSeen] = {}
        self.synced = False  # the watcher's first, complete picture has arrived
        self._last_resync = 0.0

    # --- the loop ------------------------------------------------------------------------

    def poll(self) -> list[XenChange]:
        """One round-trip to the pool (blocking up to the watcher's timeout), recorded.

        The whole batch updates the picture first, then hosts and VMs are compared: a host
        that comes back and the VMs that died with it arrive together, in either order."""
        changes = self.watcher.poll()
        if self.sync_pool is not None and any(_changes_pool(c) for c in changes):
            self.sync_pool()
        self.index.follow(self.app)
        hosts, vms = self._see(changes)
        for name in hosts:
            self._guarded(self._reconcile_host, name)
        for instance_id in vms:
            self._guarded(self._reconcile_instance, instance_id)
        self.synced = True
        if time.monotonic() - self._last_resync >= self.resync_interval:
            self.resync()
        return changes

    def step(self) -> list[XenChange]:
        """One `poll`, and what it says of whether the pool's master answers."""
        try:
            changes = self.poll()
        except XenTransportError:
            self.unanswered()
            raise
        self.answered()
        return changes

    def answered(self) -> None:
        """The pool's master answered: it is reachable (recorded if the store says otherwise)."""
        self._unanswered_since = None
        if self.pool is not None and self._recorded is not True:
            self._record_reachability(True)

    def unanswered(self, now: float | None = None) -> None:
        """The pool's master did not answer: once that has lasted `unreachable_after`, the
        pool is recorded unreachable (once)."""
        now = time.monotonic() if now is None else now
        if self._unanswered_since is None:
            self._unanswered_since = now
        if self.pool is not None and self._recorded is not False and now - self._unanswered_since >= self.unreachable_after:
            self._record_reachability(False)

    def _record_reachability(self, reachable: bool) -> None:
        assert self.pool is not None
        try:
            self.app.record_pool_reachability(self.pool, reachable)
        except Exception as error:  # the store may be down too: the next poll tries again
            log.warning("could not record whether pool %s is reachable: %s", self.pool, error)
            return
        self._recorded = reachable
        if not reachable:
            log.warning("pool %s unreachable for %.0f s: first offers go to the other pools", self.pool,
                        self.unreachable_after)

    def _guarded(self, reconcile: Any, key: str) -> None:
        try:
            reconcile(key)
        except Exception:
            log.exception("monitor could not record what it saw of %s", key)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step()
            except Exception as error:
                if stop.is_set():
                    return  # stopping: the application may already be closed
                if isinstance(error, XenTransportError):
                    log.warning("monitor cannot reach the pool: %s", error)
                elif isinstance(error, XenAdapterError):
                    log.error("monitor: the pool refused event.from: %s", error)
                else:
                    log.exception("monitor poll failed")
                stop.wait(self.retry_delay)

    # --- one change ------------------------------------------------------------------------

    def handle(self, change: XenChange) -> None:
        """See one change and record what it means."""
        hosts, vms = self._see([change])
        for name in hosts:
            self._reconcile_host(name)
        for instance_id in vms:
            self._reconcile_instance(instance_id)

    def _see(self, changes: list[XenChange]) -> tuple[list[str], list[str]]:
        """Update the picture; return the hosts and the instances whose picture changed."""
        hosts: dict[str, None] = {}
        vms: dict[str, None] = {}
        for change in changes:
            if isinstance(change, HostLivenessChanged):
                self.hosts[change.host_name] = HostSeen(change.live, change.enabled)
                hosts[change.host_name] = None
            elif isinstance(change, VmPowerStateChanged):
                ip = self.vms[change.instance_id].ip if change.instance_id in self.vms else None
                running = change.power_state.value in ("Running", "Paused")
                self.vms[change.instance_id] = VmSeen(change.power_state.value, change.host_name, ip if running else None)
                vms[change.instance_id] = None
            elif isinstance(change, VmMigrated):
                seen = self.vms.get(change.instance_id)
                if seen is not None:
                    seen.host_name = change.host_name
                    vms[change.instance_id] = None  # compared below: PEX records where it runs
            elif isinstance(change, GuestIpReported):
                seen = self.vms.get(change.instance_id)
                if seen is not None:
                    seen.ip = change.ip
                    vms[change.instance_id] = None
            elif isinstance(change, VmRemoved):
                self.vms.pop(change.instance_id, None)
                vms[change.instance_id] = None
            elif isinstance(change, HostRemoved):
                self.hosts.pop(change.host_name, None)
            elif isinstance(change, WatcherResynced):
                log.warning("event watcher resynced (%s); comparing everything again", change.reason)
                self._last_resync = 0.0
        return list(hosts), list(vms)

    # --- comparing Xen's picture with PEX's --------------------------------------------------

    def resync(self) -> None:
        """Compare every host and every instance that is not over; check silent guests."""
        self._last_resync = time.monotonic()
        self.index.follow(self.app)
        for name in list(self.hosts):
            self._reconcile_host(name)
        for iid in self.index.instance_ids():  # of this worker's pool: the others' VMs are not in view
            self._reconcile_instance(str(iid))
        for iid, _ in self.index.running_without_ip():
            if str(iid) in self.vms and self._host_up(self.vms[str(iid)].host_name):
                self.app.check_guest_responsive(iid, self.guest_timeout)

    def _reconcile_host(self, name: str) -> None:
        seen = self.hosts.get(name)
        known = self.index.node_available(name)
        if seen is None or known is None:
            return  # not a PEX node
        if not seen.available and known:
            log.warning("node %s lost (live=%s, enabled=%s)", name, seen.live, seen.enabled)
            self.app.mark_node_lost(name)
            if not seen.live:
                self.app.lose_instances(name, self.index.instances_on(name))
            self.index.follow(self.app)
        elif not seen.live and not known:
            # Lost already; VMs that were running there may not all be marked yet (idempotent).
            self.app.lose_instances(name, self.index.instances_on(name))
        elif seen.available and not known:
            log.warning("node %s returned", name)
            self.app.mark_node_returned(name)
            self.index.follow(self.app)
            for iid in self.index.instances_on(name):
                self._reconcile_instance(str(iid))

    def _reconcile_instance(self, instance_id: str) -> None:
        try:
            iid = UUID(instance_id)
        except ValueError:
            return  # a VM tagged by something else
        replica = self.index.instance(iid)
        if replica is None or replica.is_over:
            return
        seen = self.vms.get(instance_id)
        if seen is None:
            if self.synced and replica.vm_uuid is not None and replica.status in _VM_STATUSES:
                self.app.report_vm_vanished(iid)
            return
        # XAPI keeps saying "Running" for the VMs of a dead host: believe nothing about them.
        if not self._host_up(seen.host_name) or not self._host_up(replica.node if replica.status == Status.LOST else None):
            return
        if replica.power_state != seen.power_state and self._confirmed(instance_id, seen) != replica.power_state:
            self.app.observe_power_state(iid, seen.power_state)
        if seen.host_name and seen.host_name != replica.node and replica.status in (Status.RUNNING, Status.PAUSED) \
                and seen.power_state in ("Running", "Paused"):
            log.warning("instance %s runs on %s, not on %s where PEX put it", instance_id, seen.host_name, replica.node)
            self.app.report_vm_relocated(iid, seen.host_name)
        if seen.ip and seen.ip != replica.ip_address and seen.power_state == "Running":
            self.app.report_ip_address(iid, seen.ip)

    def _confirmed(self, instance_id: str, seen: VmSeen) -> str:
        """The VM's power state as XAPI has it now (updating the picture), or as seen."""
        if self.dispatcher is None:
            return seen.power_state
        try:
            seen.power_state = str(self.dispatcher.power_state(instance_id))
        except XenAdapterError as error:
            log.debug("could not confirm the power state of %s: %s", instance_id, error)
        return seen.power_state

    def _host_up(self, name: str | None) -> bool:
        """Whether what Xen says about VMs on host `name` can be believed (None: no host)."""
        if name is None:
            return True
        seen = self.hosts.get(name)
        if seen is not None:
            return seen.live  # a disabled host still runs its VMs
        return self.index.node_available(name) is not False
