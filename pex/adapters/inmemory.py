"""An enactment in memory: the Enactment port (pex.application.ports) kept faithfully, for the
tests of the service layer and the workers that are not about the Xen protocol (those run the
unmodified xenapi client against pex.adapters.xen.simulator).

It keeps what Xen would: a VM record per instance (uuid, name, node, power state, IP), and
it honours what the port promises: every action is safe to repeat (a start finds the VM it
made before, a stop of a halted VM and a destroy of a missing one do nothing). Failures are
injected: `fail(action)` makes the next such actions raise, `host_down(node)` refuses starts
there, as a dead host would. (Xen's reset of a VM whose host
was lost, `needs_reset`, has no counterpart here: no host is lost under a VM.)
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field, replace
from uuid import UUID

from pex.application.ports import DispatchJob, Enacted, EnactmentError, PoolHost, PoolInventory, PoolTemplate
from pex.domain.values import Resources

REMOVALS = ("end", "delete", "cleanup")


class InMemoryEnactmentError(EnactmentError):
    """A failure injected into the in-memory enactment."""


@dataclass(frozen=True)
class VmRecord:
    uuid: str
    name: str
    instance_id: UUID
    node: str
    power_state: str  # Running or Halted, as xapi says
    ip_address: str | None = None
    # What the guest was handed at its last boot by PEX (Xen: vm-data/ssh-authorized-keys/N).
    ssh_authorized_keys: tuple[str, ...] = ()
    vm_password: str | None = field(default=None, repr=False)  # Xen: vm-data/password


@dataclass
class InMemoryEnactment:
    """VMs by instance id; `actions` lists every action carried out (or attempted), in order."""

    guest_ips: bool = True  # whether a started guest reports its IP at once
    # The pool's hosts (name -> what each gives guests) and templates, as `inventory()` reports them.
    hosts: dict[str, Resources] = field(default_factory=dict)
    templates: tuple[PoolTemplate, ...] = ()
    vms: dict[UUID, VmRecord] = field(default_factory=dict)
    actions: list[tuple[str, UUID]] = field(default_factory=list)
    _failures: dict[str, list[Exception]] = field(default_factory=dict)
    _down: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- failures a test injects ---------------------------------------------------------

    def fail(self, action: str, times: int = 1, error: Exception | None = None) -> None:
        """The next `times` attempts of `action` ("start", "stop", "reboot", "migrate" or a removal) raise."""
        with self._lock:
            self._failures.setdefault(action, []).extend(
                [error or InMemoryEnactmentError(f"injected failure of {action}")] * times
            )

    def host_down(self, node: str) -> None:
        with self._lock:
            self._down.add(node)

    def host_up(self, node: str) -> None:
        with self._lock:
            self._down.discard(node)

    def remove_host(self, node: str) -> None:
        """The host leaves the pool."""
        with self._lock:
            self.hosts.pop(node, None)

    # --- the port ------------------------------------------------------------------------

    def carry_out(self, job: DispatchJob) -> Enacted:
        with self._lock:
            self.actions.append((job.action, job.instance_id))
            failures = self._failures.get(job.action)
            if failures:
                raise failures.pop(0)
            vm = self.vms.get(job.instance_id)
            if job.action == "start":
                return self._start(job, vm)
            if job.action == "prepare":
                vm = vm or VmRecord(str(uuid.uuid4()), job.name, job.instance_id, job.node, "Halted")
                if vm.power_state != "Running":
                    vm = replace(vm, ssh_authorized_keys=job.ssh_authorized_keys, vm_password=job.vm_password)
                self.vms[job.instance_id] = vm
                return Enacted(vm_uuid=vm.uuid, node=job.node)
            if job.action == "migrate":
                if vm is None or vm.power_state != "Running" or not job.to_node:
                    raise InMemoryEnactmentError(f"instance {job.instance_id} has no running VM to migrate")
                if job.to_node in self._down or (self.hosts and job.to_node not in self.hosts):
                    raise InMemoryEnactmentError(f"host {job.to_node} cannot take a migration")
                vm = self.vms[job.instance_id] = replace(vm, node=job.to_node)
                return Enacted(vm_uuid=vm.uuid, node=vm.node, ip_address=vm.ip_address)
            if vm is None and job.action == "reboot":
                raise InMemoryEnactmentError(f"no VM for instance {job.instance_id}")
            if vm is not None and job.action == "stop":
                self.vms[job.instance_id] = replace(vm, power_state="Halted")
            elif vm is not None and job.action == "reboot":
                self.vms[job.instance_id] = replace(vm, power_state="Running")
            elif job.action in REMOVALS:
                self.vms.pop(job.instance_id, None)
            elif job.action not in ("stop", "reboot"):
                raise InMemoryEnactmentError(f"unknown action {job.action!r}")
            return Enacted()

    def inventory(self) -> PoolInventory:
        with self._lock:
            hosts = tuple(PoolHost(name, f"host-{name}", capacity, name not in self._down)
                          for name, capacity in sorted(self.hosts.items()))
            return PoolInventory(hosts, self.templates)

    def _start(self, job: DispatchJob, vm: VmRecord | None) -> Enacted:
        if job.node in self._down:
            raise InMemoryEnactmentError(f"host {job.node} is down")
        if self.hosts and job.node not in self.hosts:  # Xen's PEX_HOST_NOT_FOUND
            raise InMemoryEnactmentError(f"the pool has no host {job.node}")
        if vm is None:  # the first start; a later one (after a reset too) finds the VM it made
            vm = VmRecord(str(uuid.uuid4()), job.name, job.instance_id, job.node, "Halted")
        elif vm.power_state != "Running":
            vm = replace(vm, node=job.node)  # a halted VM starts where it is booked now
        if vm.power_state != "Running":  # the guest data is read at boot, as Xen's xenstore_data is
            vm = replace(vm, ssh_authorized_keys=job.ssh_authorized_keys, vm_password=job.vm_password)
        ip = vm.ip_address or (f"10.0.{len(self.vms) // 250}.{len(self.vms) % 250 + 2}" if self.guest_ips else None)
        vm = replace(vm, power_state="Running", ip_address=ip)
        self.vms[job.instance_id] = vm
        return Enacted(vm_uuid=vm.uuid, node=vm.node, ip_address=vm.ip_address)
