"""The enactment on Xen: the dispatch actions the worker claimed, carried out with the XenDispatcher.

`XenEnactment.carry_out(job)` turns one claimed action (pex.application.ports) into XenAPI
calls. Every action is safe to repeat, because a worker killed mid-way is followed by another
that does it again: `create_vm` finds the VM tagged with the instance id and carries on where
the first attempt stopped; power operations do nothing in their target state; `destroy` of a
VM that is gone succeeds.
"""

from __future__ import annotations

import logging

from pex.adapters.xen.dispatcher import XenDispatcher
from pex.adapters.xen.errors import (
    XenError,
    XenHostDownError,
    XenNotFoundError,
    XenPowerStateError,
    XenTaskTimeout,
)
from pex.application.ports import DispatchJob, Enacted, PoolInventory

log = logging.getLogger(__name__)


def guest_vm_data(job: DispatchJob) -> dict[str, str]:
    """What the guest finds under `vm-data/` in XenStore: its owner's SSH public keys, one per
    entry (`ssh-authorized-keys/0`, `/1`, ...), since a XenStore value holds at most 4096 bytes,
    and its password (`password`) if PEX gives VMs one.
    docs/operations.md ("A way into the VM") shows a guest reading them."""
    data = {f"ssh-authorized-keys/{n}": key for n, key in enumerate(job.ssh_authorized_keys)}
    if job.vm_password:
        data["password"] = job.vm_password
    return data

# A destroy that keeps finding a VM means duplicates (two creates raced): remove them all.
MAX_DESTROYS = 5


class XenEnactment:
    def __init__(self, dispatcher: XenDispatcher):
        self.dispatcher = dispatcher

    def carry_out(self, job: DispatchJob) -> Enacted:
        if job.action == "prepare":
            return self.prepare(job)
        if job.action == "start":
            return self.start(job)
        if job.action == "migrate":
            return self.migrate(job)
        if job.action == "stop":
            self.stop(job)
        elif job.action == "reboot":
            self.reboot(job)
        elif job.action in ("end", "delete", "cleanup"):
            self.remove(job)
        else:
            raise ValueError(f"unknown dispatch action {job.action!r}")
        return Enacted()

    def inventory(self) -> PoolInventory:
        return self.dispatcher.inventory()

    def prepare(self, job: DispatchJob) -> Enacted:
        """Make the VM ahead of its start (clone, size, provision), halted: the start boots it."""
        r = job.per_instance
        vm = self.dispatcher.create_vm(job.instance_id, job.name, job.template, job.node, r.cpus, r.memory_mb,
                                       r.disk_gb, start=False, vm_data=guest_vm_data(job), fresh=not job.vm_may_exist)
        return Enacted(vm_uuid=vm.uuid, node=job.node)

    def start(self, job: DispatchJob) -> Enacted:
        """Make the VM run on the instance's node: create it the first time, start (or resume)
        it later, after a power_state_reset if its host was lost (XAPI still says Running)."""
        d = self.dispatcher
        if job.needs_reset:
            try:
                d.power_state_reset(job.instance_id)
            except XenNotFoundError:
                pass  # no VM yet: create_vm makes one
            except XenPowerStateError:
                # The host is live again and still runs the domain: it is not lost after all.
                log.warning("instance %s: its VM still runs; not resetting it", job.instance_id)
        r = job.per_instance
        vm = d.create_vm(job.instance_id, job.name, job.template, job.node, r.cpus, r.memory_mb, r.disk_gb,
                         vm_data=guest_vm_data(job), fresh=not (job.vm_may_exist or job.needs_reset))
        if vm.host_name and vm.host_name != job.node:
            log.warning("instance %s runs on %s, booked on %s", job.instance_id, vm.host_name, job.node)
        return Enacted(vm_uuid=vm.uuid, node=vm.host_name or job.node, ip_address=vm.ip)

    def migrate(self, job: DispatchJob) -> Enacted:
        """Live-migrate the running VM to the node booked for it (VM.pool_migrate); a VM that
        is there already stays. A refusal or a failure on the way leaves it running where it
        was, and is raised: the worker tries again with backoff."""
        if not job.to_node:
            raise ValueError(f"instance {job.instance_id}: a migration names no node to move to")
        vm = self.dispatcher.migrate(job.instance_id, job.to_node)
        return Enacted(vm_uuid=vm.uuid, node=vm.host_name or job.to_node, ip_address=vm.ip)

    def stop(self, job: DispatchJob) -> None:
        """A clean shutdown, or a hard one if the guest cannot cooperate in time."""
        try:
            self.dispatcher.clean_shutdown(job.instance_id)
        except XenNotFoundError:
            return  # nothing left to stop
        except XenHostDownError:
            raise  # the Node Monitor will notice; the Scheduler moves it
        except (XenTaskTimeout, XenError) as error:
            if isinstance(error, XenPowerStateError) and error.retryable:
                raise  # another operation holds the VM: tried again later
            # Paused or suspended (clean shutdown needs Running), or a guest without PV tools.
            log.info("instance %s: clean shutdown failed (%s); forcing it", job.instance_id, error)
            self.dispatcher.hard_shutdown(job.instance_id)

    def reboot(self, job: DispatchJob) -> None:
        try:
            self.dispatcher.reboot(job.instance_id)
        except XenPowerStateError:
            raise  # busy, or not running: tried again later
        except (XenTaskTimeout, XenHostDownError):
            raise
        except XenError as error:  # e.g. VM_LACKS_FEATURE: no PV tools for a clean reboot
            log.info("instance %s: clean reboot failed (%s); forcing it", job.instance_id, error)
            self.dispatcher.reboot(job.instance_id, hard=True)

    def remove(self, job: DispatchJob) -> None:
        """Shut down and destroy the VM and its disks. The end is a deadline, and the disks go
        too, so a guest that is still up is powered off hard."""
        # Even with no VM known: a worker killed midway may have left disks (tagged) behind.
        for _ in range(MAX_DESTROYS):
            if not self.dispatcher.destroy(job.instance_id, reset_if_host_down=True):
                return
        raise XenError(["PEX_DESTROY_INCOMPLETE", str(job.instance_id)])
