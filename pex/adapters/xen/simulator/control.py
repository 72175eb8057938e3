"""The operator's hand on the simulated pool: faults and happenings no XAPI call can cause.

Tests use `SimulatorControl` directly; out-of-process users reach the methods named in
`ADMIN_ACTIONS` through the admin endpoint (`POST /sim/<action>` with JSON keyword
arguments). None of this is reachable through XenAPI method names.

Hosts are named by name_label, uuid or ref; VMs by ref, uuid, name_label or the
`pex_instance` tag PEX puts in other_config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pex.adapters.xen.simulator.clock import ManualClock
from pex.adapters.xen.simulator.lifecycle import PAUSED, RUNNING
from pex.adapters.xen.simulator.pool import SimulatedPool
from pex.adapters.xen.simulator.testbed import HostSpec


class Listeners(Protocol):
    """The simulator's network side, as far as the control needs it (server.XapiSimulator)."""

    def silence_host(self, host_ref: str) -> None: ...

ADMIN_ACTIONS = frozenset({
    "fail_host", "recover_host", "fail_next", "set_latency", "drop_connection", "http_error", "crash_vm",
    "shutdown_vm_from_inside", "silence_guest", "unsilence_guest", "redirect_next_login", "expire_sessions",
    "switch_master", "restart_xapi", "set_migration_time", "fail_next_migration", "clear_faults", "advance_clock", "state",
    "add_host", "remove_host",
})


class SimulatorControl:
    def __init__(self, pool: SimulatedPool, simulator: Listeners | None = None):
        self.pool = pool
        self.faults = pool.faults
        self._simulator = simulator

    # -- hosts ------------------------------------------------------------------------------

    def fail_host(self, host: str) -> None:
        """The host dies: host_metrics.live goes false, its VMs stay "Running" in the database."""
        with self.pool.lock:
            ref = self._host(host)
            self.pool.db.update("host_metrics", self.pool.db.get("host", ref)["metrics"], live=False,
                                last_updated=self.pool.now())

    def recover_host(self, host: str, vms_survive: bool = False) -> None:
        """The host is back. Unless it was only unreachable (`vms_survive`), it rebooted, so the
        domains the database still shows on it are gone."""
        with self.pool.lock:
            ref = self._host(host)
            if not vms_survive:
                for vm, record in list(self.pool.db.find("VM", resident_on=ref)):
                    if not record["is_control_domain"] and record["power_state"] in (RUNNING, PAUSED):
                        self.pool.halt(vm)
            self.pool.db.update("host_metrics", self.pool.db.get("host", ref)["metrics"], live=True,
                                last_updated=self.pool.now())

    def add_host(self, name: str, cpus: int = 4, guest_memory_mb: int = 4096) -> None:
        """A host joins the pool (pool.join on a real one)."""
        with self.pool.lock:
            address = f"127.0.1.{len(self.pool.db.tables['host']) + 1}"
            self.pool.add_host(HostSpec(name, cpus=cpus, guest_memory_mb=guest_memory_mb, address=address))

    def remove_host(self, host: str) -> None:
        """The host leaves the pool (pool.eject); refused while guests run on it."""
        with self.pool.lock:
            self.pool.remove_host(self._host(host))

    # -- call faults ----------------------------------------------------------------------------

    def fail_next(self, method: str, error: Sequence[str], times: int = 1) -> None:
        """The next `times` calls of `method` ("VM.start_on", "*") fail with ErrorDescription `error`."""
        self.faults.fail_next(method, list(error), times)

    def set_latency(self, method: str, seconds: float) -> None:
        """Every call of `method` takes `seconds` longer (0 removes it)."""
        self.faults.set_latency(method, float(seconds))

    def drop_connection(self, method: str = "*", times: int = 1) -> None:
        """Close the connection without answering. The stdlib client silently retries a request
        once on a reused connection, so use times=2 to make one call fail."""
        self.faults.drop_next(method, times)

    def http_error(self, method: str = "*", times: int = 1) -> None:
        """Answer HTTP 500 with an HTML page, as xapi does for requests it cannot parse."""
        self.faults.http_error_next(method, times)

    def redirect_next_login(self, master_address: str | None = None, times: int = 1) -> None:
        """The next logins answer HOST_IS_SLAVE [master_address] (default: the master's address)."""
        if master_address is None:
            with self.pool.lock:
                master_address = self.pool.db.get("host", self.pool.master)["address"]
        self.faults.redirect_next_login(master_address, times)

    def expire_sessions(self) -> None:
        """Forget every session, as xapi's idle-session expiry would (calls then answer
        SESSION_INVALID [session]); event tokens stay valid."""
        with self.pool.lock:
            self.pool.sessions.clear()

    def restart_xapi(self) -> None:
        """The master's toolstack restarts (xe-toolstack-restart): sessions and tasks are
        forgotten and event tokens issued before no longer mean what they meant."""
        with self.pool.lock:
            self.pool.restart_xapi()

    def switch_master(self, host: str, old_master_gone: bool = False) -> None:
        """`host` becomes the pool master, and the old master a member that answers
        HOST_IS_SLAVE naming it (pool.designate_new_master). With `old_master_gone`, the old
        master died instead and a member took over (pool.emergency_transition_to_master): its
        host is not live and, on a simulator with `members`, its address refuses connections."""
        with self.pool.lock:
            new, old = self._host(host), self.pool.master
            if new == old:
                raise ValueError(f"{host!r} already is the master")
            self.pool.switch_master(new)
        if old_master_gone:
            self.fail_host(old)
            if self._simulator is not None:
                self._simulator.silence_host(old)

    def set_migration_time(self, seconds: float) -> None:
        """Every VM.pool_migrate takes `seconds` (real time): the VM is busy
        (OTHER_OPERATION_IN_PROGRESS) and its memory held on the destination meanwhile."""
        with self.pool.lock:
            self.pool.migration_seconds = max(0.0, float(seconds))

    def fail_next_migration(self, vm: str = "*", message: str = "the destination stopped answering",
                            times: int = 1) -> None:
        """The next `times` migrations of `vm` ("*": any) run their whole time, then fail with
        VM_MIGRATE_FAILED [vm, source, destination, message]; the VM keeps running at the source."""
        self.faults.fail_next_migration(vm, message, times)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- guests ---------------------------------------------------------------------------------

    def crash_vm(self, vm: str) -> None:
        """The domain crashes and is not restarted: Halted without anyone asking."""
        self._halt_unasked(vm)

    def shutdown_vm_from_inside(self, vm: str) -> None:
        """The user ran `poweroff` inside the guest."""
        self._halt_unasked(vm)

    def silence_guest(self, vm: str = "*") -> None:
        """The guest agent of `vm` ("*": of every VM, also future ones) never reports an IP."""
        self.faults.silence_guest(vm)

    def unsilence_guest(self, vm: str = "*") -> None:
        self.faults.unsilence_guest(vm)

    # -- time and inspection --------------------------------------------------------------------

    def advance_clock(self, seconds: float) -> None:
        if not isinstance(self.pool.clock, ManualClock):
            raise TypeError("advance_clock needs a simulator started with a ManualClock")
        self.pool.clock.advance(float(seconds))

    def state(self) -> dict:
        """A plain summary for humans and admin clients: hosts, guest VMs, disks, sessions."""
        with self.pool.lock:
            db = self.pool.db
            name = {ref: rec["name_label"] for ref, rec in db.tables["host"].items()}
            hosts = [{"name": rec["name_label"], "uuid": rec["uuid"], "enabled": rec["enabled"],
                      "live": self.pool.host_is_live(ref), "free_memory": self.pool.free_memory(ref)}
                     for ref, rec in db.tables["host"].items()]
            vms = [{"name": rec["name_label"], "uuid": rec["uuid"], "power_state": rec["power_state"],
                    "host": name.get(rec["resident_on"]), "pex_instance": rec["other_config"].get("pex_instance"),
                    "is_a_template": rec["is_a_template"],
                    # What the guest reads from XenStore (vm-data/...) once it boots.
                    "xenstore_data": dict(rec["xenstore_data"])}
                   for rec in db.tables["VM"].values() if not rec["is_control_domain"] and not
                   (rec["is_a_template"] and "pex_instance" not in rec["other_config"])]
            return {"hosts": hosts, "vms": vms, "vdis": len(db.tables["VDI"]), "sessions": len(self.pool.sessions),
                    "tasks": len(db.tables["task"]), "waiting_event_calls": self.pool.waiting_event_calls}

    def vm_ref(self, vm: str) -> str:
        with self.pool.lock:
            return self._vm(vm)

    def host_ref(self, host: str) -> str:
        with self.pool.lock:
            return self._host(host)

    # -- helpers ----------------------------------------------------------------------------------

    def _halt_unasked(self, vm: str) -> None:
        with self.pool.lock:
            ref = self._vm(vm)
            if self.pool.db.get("VM", ref)["power_state"] in (RUNNING, PAUSED):
                self.pool.halt(ref)

    def _host(self, host: str) -> str:
        for ref, record in self.pool.db.tables["host"].items():
            if host in (ref, record["uuid"], record["name_label"]):
                return ref
        raise KeyError(f"no host {host!r}")

    def _vm(self, vm: str) -> str:
        for ref, record in self.pool.db.tables["VM"].items():
            if record["is_control_domain"] or record["is_a_template"]:
                continue
            if vm in (ref, record["uuid"], record["name_label"], record["other_config"].get("pex_instance")):
                return ref
        raise KeyError(f"no VM {vm!r}")


__all__ = ["ADMIN_ACTIONS", "SimulatorControl"]
