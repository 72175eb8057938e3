"""VM.*: creating VMs from templates, configuring them, and every power-state operation.

Operations that change a running domain return an `Operation`, so the pool can hold the VM
busy while injected latency runs; everything else changes the database at once.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from pex.adapters.xen.simulator import lifecycle
from pex.adapters.xen.simulator.lifecycle import PAUSED, RUNNING, Operation
from pex.adapters.xen.simulator.wire import NULL_REF, XapiError, as_bool, as_int

if TYPE_CHECKING:
    from pex.adapters.xen.simulator.pool import SimulatedPool


class VmCalls:
    xapi_class = "VM"

    def __init__(self, pool: SimulatedPool):
        self.pool = pool
        self.db = pool.db

    def _checked(self, vm: str, operation: str) -> dict:
        record = self.db.get("VM", vm)
        lifecycle.check_operation(vm, record, operation)
        return record

    # -- creation and configuration --------------------------------------------------------------

    def clone(self, session: str, vm: str, new_name: str) -> str:
        source = self._checked(vm, "clone")
        record = copy.deepcopy(source)
        other_config = {k: v for k, v in record["other_config"].items() if k != "default_template"}
        if source["is_a_template"]:
            other_config.setdefault("base_template_name", source["name_label"])
        record.update(uuid=self.pool.new_uuid(), name_label=str(new_name), is_default_template=False,
                      current_operations={}, other_config=other_config, guest_metrics=NULL_REF, domid=-1,
                      resident_on=NULL_REF, scheduled_to_be_resident_on=NULL_REF, suspend_VDI=NULL_REF)
        clone = self.db.create("VM", record)
        for _, vbd in list(self.db.find("VBD", VM=vm)):
            vdi = vbd["VDI"]
            if self.db.exists("VDI", vdi):
                original = self.db.get("VDI", vdi)
                vdi = self.pool.create_vdi(f"{new_name} {vbd['userdevice']}", original["virtual_size"],
                                           original["type"], sr=original["SR"])
            self.db.create("VBD", {**copy.deepcopy(vbd), "uuid": self.pool.new_uuid(), "VM": clone, "VDI": vdi,
                                   "currently_attached": False})
        for _, vif in list(self.db.find("VIF", VM=vm)):
            self.db.create("VIF", {**copy.deepcopy(vif), "uuid": self.pool.new_uuid(), "VM": clone,
                                   "MAC": self.pool.new_mac(), "currently_attached": False})
        self.pool.refresh_allowed_operations(clone)
        return clone

    def provision(self, session: str, vm: str) -> None:
        self._checked(vm, "provision")
        self.pool.provision_disks(vm)
        self.db.update("VM", vm, is_a_template=False)
        self.pool.refresh_allowed_operations(vm)

    def set_VCPUs_max(self, session: str, vm: str, value: object) -> None:
        record = self._checked(vm, "set_VCPUs_max")
        count = as_int(value)
        if count < 1 or count < record["VCPUs_at_startup"]:
            raise XapiError("INVALID_VALUE", "VCPUs_max", count)
        self.db.update("VM", vm, VCPUs_max=count)

    def set_VCPUs_at_startup(self, session: str, vm: str, value: object) -> None:
        record = self._checked(vm, "set_VCPUs_at_startup")
        count = as_int(value)
        if count < 1 or count > record["VCPUs_max"]:
            raise XapiError("INVALID_VALUE", "VCPUs_at_startup", count)
        self.db.update("VM", vm, VCPUs_at_startup=count)

    def set_memory_limits(self, session: str, vm: str, static_min: object, static_max: object,
                          dynamic_min: object, dynamic_max: object) -> None:
        self._checked(vm, "set_memory_limits")
        smin, smax = as_int(static_min, "static_min"), as_int(static_max, "static_max")
        dmin, dmax = as_int(dynamic_min, "dynamic_min"), as_int(dynamic_max, "dynamic_max")
        if not 0 < smin <= dmin <= dmax <= smax:
            raise XapiError("MEMORY_CONSTRAINT_VIOLATION",
                            "Memory limits must satisfy: static_min <= dynamic_min <= dynamic_max <= static_max")
        self.db.update("VM", vm, memory_static_min=smin, memory_static_max=smax, memory_dynamic_min=dmin,
                       memory_dynamic_max=dmax, memory_target=dmax)

    def set_affinity(self, session: str, vm: str, host: str) -> None:
        self.db.get("VM", vm)
        if host != NULL_REF:
            self.db.get("host", host)
        self.db.update("VM", vm, affinity=host)

    def destroy(self, session: str, vm: str) -> None:
        record = self._checked(vm, "destroy")
        # xapi removes the VM's VBDs, VIFs and metrics, never its VDIs.
        for vbd, _ in list(self.db.find("VBD", VM=vm)):
            self.db.delete("VBD", vbd)
        for vif, _ in list(self.db.find("VIF", VM=vm)):
            self.db.delete("VIF", vif)
        if self.db.exists("VM_guest_metrics", record["guest_metrics"]):
            self.db.delete("VM_guest_metrics", record["guest_metrics"])
        self.db.delete("VM", vm)

    # -- placement ------------------------------------------------------------------------------------

    def assert_can_boot_here(self, session: str, vm: str, host: str) -> None:
        self.db.get("VM", vm)
        self.db.get("host", host)
        self.pool.assert_can_boot(vm, host)

    def get_possible_hosts(self, session: str, vm: str) -> list[str]:
        self.db.get("VM", vm)
        possible = []
        for host in self.db.tables["host"]:
            try:
                self.pool.assert_can_boot(vm, host)
                possible.append(host)
            except XapiError:
                pass
        return possible

    # -- power ------------------------------------------------------------------------------------------

    def start(self, session: str, vm: str, start_paused: object, force: object) -> Operation:
        self._checked(vm, "start")
        paused = as_bool(start_paused, "start_paused")
        host = self.pool.pick_host(vm)
        return Operation(vm, "start", lambda: self.pool.boot(vm, host, paused), destination=host)

    def start_on(self, session: str, vm: str, host: str, start_paused: object, force: object) -> Operation:
        self._checked(vm, "start_on")
        paused = as_bool(start_paused, "start_paused")
        self.db.get("host", host)
        self.pool.assert_can_boot(vm, host)
        return Operation(vm, "start_on", lambda: self.pool.boot(vm, host, paused), destination=host)

    def clean_shutdown(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "clean_shutdown", lambda: self.pool.halt(vm))

    def hard_shutdown(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "hard_shutdown", lambda: self.pool.halt(vm))

    def shutdown(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "shutdown", lambda: self.pool.halt(vm))

    def clean_reboot(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "clean_reboot", lambda: self._reboot(vm))

    def hard_reboot(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "hard_reboot", lambda: self._reboot(vm))

    def pause(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "pause", lambda: self._set_power(vm, PAUSED))

    def unpause(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "unpause", lambda: self._set_power(vm, RUNNING))

    def suspend(self, session: str, vm: str) -> Operation:
        return self._on_domain(vm, "suspend", lambda: self.pool.suspend(vm))

    def resume(self, session: str, vm: str, start_paused: object, force: object) -> Operation:
        self._checked(vm, "resume")
        paused = as_bool(start_paused, "start_paused")
        host = self.pool.pick_host(vm)
        return Operation(vm, "resume", lambda: self.pool.resume(vm, host, paused), destination=host)

    def resume_on(self, session: str, vm: str, host: str, start_paused: object, force: object) -> Operation:
        self._checked(vm, "resume_on")
        paused = as_bool(start_paused, "start_paused")
        self.db.get("host", host)
        self.pool.assert_can_boot(vm, host)
        return Operation(vm, "resume_on", lambda: self.pool.resume(vm, host, paused), destination=host)

    def pool_migrate(self, session: str, vm: str, host: str, options: dict) -> Operation:
        record = self._checked(vm, "pool_migrate")
        self.pool.assert_host_reachable(vm)
        self.db.get("host", host)
        source = record["resident_on"]
        self.pool.assert_can_boot(vm, host, already_there=source == host)

        def migrate() -> None:
            current = self.db.get("VM", vm)
            identities = (vm, current["uuid"], current["name_label"], current["other_config"].get("pex_instance", ""))
            message = self.pool.faults.take_migration_failure(*identities)
            if message is None and not self.pool.host_is_live(host):
                message = "the destination host went offline"
            if message is not None:  # it failed while copying: the domain still runs at the source
                raise XapiError("VM_MIGRATE_FAILED", vm, source, host, message)
            self.db.update("VM", vm, resident_on=host, domid=self.pool.new_domid())
            self.pool.refresh_host_metrics(source)
            self.pool.refresh_host_metrics(host)

        return Operation(vm, "pool_migrate", migrate, destination=host if source != host else NULL_REF,
                         duration=self.pool.migration_seconds)

    def power_state_reset(self, session: str, vm: str) -> None:
        record = self.db.get("VM", vm)
        if record["is_control_domain"]:
            raise XapiError("OPERATION_NOT_ALLOWED", "power_state_reset is not allowed on a control domain")
        host = record["resident_on"]
        # xapi refuses to forget a domain that a live host may really be running.
        if record["power_state"] in (RUNNING, PAUSED) and self.db.exists("host", host) and self.pool.host_is_live(host):
            raise XapiError("VM_BAD_POWER_STATE", vm, "halted", record["power_state"].lower())
        self.db.update("VM", vm, current_operations={})
        self.pool.halt(vm)

    # -- helpers ----------------------------------------------------------------------------------------

    def _on_domain(self, vm: str, operation: str, apply) -> Operation:
        self._checked(vm, operation)
        self.pool.assert_host_reachable(vm)
        return Operation(vm, operation, apply)

    def _reboot(self, vm: str) -> None:
        self.db.update("VM", vm, domid=self.pool.new_domid(), power_state=RUNNING)
        self.pool.refresh_allowed_operations(vm)

    def _set_power(self, vm: str, power_state: str) -> None:
        self.db.update("VM", vm, power_state=power_state)
        self.pool.refresh_allowed_operations(vm)

