"""The dispatcher: PEX's only way to act on Xen VMs.

It talks to a XAPI pool master through the `XenAPI` client, one session per calling thread,
and works in PEX's terms: a VM is found by the PEX instance id it carries in
`other_config["pex_instance"]`, hosts and templates by name (or uuid), sizes in MiB/GiB.

Every command but `reboot` is safe to repeat, because workers retry after crashes and timeouts:
`create_vm` reuses a VM already tagged with the instance id and carries on from whatever
step the earlier attempt reached; power commands other than `reboot` do nothing when the VM
already is in their target state; `destroy` of a VM that is gone succeeds. (Two *processes*
creating the same instance at the same moment can still race; within one dispatcher a
per-instance lock serialises them.) Long operations run as xapi tasks (`Async.*`) that are
polled, so no HTTP request outlives the socket timeout.

Everything raised is a `pex.adapters.xen.errors.XenAdapterError`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from xml.etree import ElementTree

import XenAPI

from pex.adapters.xen.errors import XenHostDownError, XenNotFoundError, translated_errors
from pex.adapters.xen.records import (
    INSTANCE_KEY,
    GiB,
    MiB,
    PowerState,
    XenHost,
    XenTemplate,
    XenVm,
    guest_ip,
)
from pex.adapters.xen.session import ThreadSessions, XenConnection
from pex.adapters.xen.tasks import wait_for_task
from pex.adapters.xen.transport import TlsPolicy
from pex.adapters.xen.watcher import XenEventWatcher
from pex.application.ports import PoolHost, PoolInventory, PoolTemplate
from pex.domain.pool import DEFAULT_POOL, host_name, node_name
from pex.domain.values import Resources

log = logging.getLogger(__name__)

NULL_REF = "OpaqueRef:NULL"
URL_VARIABLE, USERNAME_VARIABLE, PASSWORD_VARIABLE = "PEX_XEN_URL", "PEX_XEN_USERNAME", "PEX_XEN_PASSWORD"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_NOT_FOUND_CODES = ("HANDLE_INVALID", "UUID_INVALID")
# The guest's part of XenStore that xapi fills from VM.xenstore_data, and the subtrees of it PEX writes.
VM_DATA = "vm-data/"
VM_DATA_OWNED = ("vm-data/ssh-authorized-keys/", "vm-data/password")


class XenDispatcher:
    def __init__(self, url: str, username: str, password: str, *, timeout: float = 30.0,
                 task_timeout: float = 600.0, poll_interval: float = 0.5, ignore_ssl: bool = False,
                 network: str | None = None, sleep: Callable[[float], None] = time.sleep,
                 tls: TlsPolicy | None = None, members: Sequence[str] = (), pool: str = DEFAULT_POOL):
        """`timeout` bounds every HTTP request; `task_timeout` every asynchronous operation.
        `network` names the network new VMs are plugged into (default: the first one).
        `tls` checks an https pool's certificates (see `TlsPolicy`; `ignore_ssl` is its opt-out).
        `members`: addresses of the pool's hosts, to find the master by when `url` is down at start.
        `pool`: the name PEX knows the pool by; its hosts are named as PEX names their nodes
        (pex.domain.pool.node_name), in what this answers and what it is asked."""
        self.pool = pool
        self.connection = XenConnection(url, username, password, timeout=timeout, ignore_ssl=ignore_ssl, tls=tls,
                                        members=members)
        self.task_timeout = task_timeout
        self.poll_interval = poll_interval
        self.network = network
        self._sleep = sleep
        self._sessions = ThreadSessions(self.connection)
        self._vm_uuids: dict[str, str] = {}  # instance id -> VM uuid; saves scanning the pool
        self._instance_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **options: Any) -> XenDispatcher:
        """A dispatcher for PEX_XEN_URL, PEX_XEN_USERNAME and PEX_XEN_PASSWORD."""
        environ = os.environ if environ is None else environ
        missing = [name for name in (URL_VARIABLE, USERNAME_VARIABLE) if not environ.get(name)]
        if missing:
            raise ValueError(f"set {' and '.join(missing)} to reach the Xen pool")
        return cls(environ[URL_VARIABLE], environ[USERNAME_VARIABLE], environ.get(PASSWORD_VARIABLE, ""), **options)

    @property
    def url(self) -> str:
        """The pool master's URL (it follows HOST_IS_SLAVE redirects)."""
        return self.connection.url

    def close(self) -> None:
        """Log out every thread's session."""
        self._sessions.close()

    def __enter__(self) -> XenDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def watcher(self, **options: Any) -> XenEventWatcher:
        """An event watcher on its own session (see `XenEventWatcher` for the options)."""
        return XenEventWatcher(self.connection, pool=self.pool, **options)

    # -- discovery ------------------------------------------------------------------------------

    def hosts(self) -> list[XenHost]:
        with translated_errors():
            api = self._api()
            metrics = api.host_metrics.get_all_records()
            hosts = []
            for ref, record in api.host.get_all_records().items():
                host_metrics = metrics.get(record["metrics"], {})
                hosts.append(XenHost(
                    uuid=record["uuid"], name=node_name(self.pool, record["name_label"]), address=record["address"],
                    cpus=int(record["cpu_info"].get("cpu_count", 0)),
                    memory_total_mb=int(host_metrics.get("memory_total", 0)) // MiB,
                    memory_free_mb=int(api.host.compute_free_memory(ref)) // MiB,
                    live=bool(host_metrics.get("live", False)), enabled=bool(record["enabled"])))
            return sorted(hosts, key=lambda h: h.name)

    def templates(self) -> list[XenTemplate]:
        with translated_errors():
            records = self._api().VM.get_all_records().values()
            return sorted((
                XenTemplate(uuid=r["uuid"], name=r["name_label"], description=r["name_description"],
                            vcpus=int(r["VCPUs_at_startup"]), memory_mb=int(r["memory_static_max"]) // MiB)
                for r in records
                # A half-created PEX VM is still a template until provisioned: not one to offer.
                if r["is_a_template"] and not r["is_a_snapshot"] and INSTANCE_KEY not in r["other_config"]
            ), key=lambda t: t.name)

    def inventory(self) -> PoolInventory:
        """The pool's hosts with what each can give guests, and its templates.

        A host's guest memory is its total (host_metrics.memory_total) less what Xen keeps
        (host.memory_overhead) and what its control domain has (dom0's memory_target); its
        CPUs are cpu_info's cpu_count; its disk is the pool's default SR, split evenly among
        the hosts when the SR is shared (each would otherwise offer the whole of it)."""
        with translated_errors():
            api = self._api()
            metrics = api.host_metrics.get_all_records()
            records = api.host.get_all_records()
            disk_gb = self._default_sr_gb(api, len(records))
            hosts = []
            for record in records.values():
                host_metrics = metrics.get(record["metrics"], {})
                dom0 = self._control_domain_memory(api, record)
                memory = int(host_metrics.get("memory_total", 0)) - int(record["memory_overhead"]) - dom0
                capacity = Resources(int(record["cpu_info"].get("cpu_count", 0)), max(0, memory // MiB), disk_gb)
                available = bool(host_metrics.get("live", False)) and bool(record["enabled"])
                hosts.append(PoolHost(node_name(self.pool, record["name_label"]), record["uuid"], capacity, available))
            templates = tuple(PoolTemplate(t.uuid, t.name, t.description) for t in self.templates())
            return PoolInventory(tuple(sorted(hosts, key=lambda h: h.name)), templates)

    @staticmethod
    def _control_domain_memory(api: Any, host: dict) -> int:
        dom0 = host["control_domain"]
        if dom0 == NULL_REF:
            return 0
        record = api.VM.get_record(dom0)
        return int(record["memory_target"]) or int(record["memory_dynamic_max"])

    @staticmethod
    def _default_sr_gb(api: Any, hosts: int) -> int:
        pool = next(iter(api.pool.get_all_records().values()), None)
        if pool is None or pool["default_SR"] == NULL_REF:
            return 0
        sr = api.SR.get_record(pool["default_SR"])
        size = int(sr["physical_size"]) // GiB
        return size // max(1, hosts) if sr["shared"] else size

    # -- creating ----------------------------------------------------------------------------------

    def create_vm(self, instance_id: object, name: str, template: str, host: str, vcpus: int, memory_mb: int,
                  disk_gb: int, *, start: bool = True, vm_data: Mapping[str, str] | None = None,
                  fresh: bool = False) -> XenVm:
        """Clone `template` into a VM for the instance, size it, provision its disk and start it on
        `host`; returns it running (or, without `start`, made and halted: a later call boots it). Repeating the call resumes where an earlier one stopped and
        never creates a second VM for the same instance; a VM that already runs (wherever it
        runs) is returned as it is. `template` and `host` are names or UUIDs.

        `vm_data` is what the guest reads from XenStore under `vm-data/` (keys relative to it):
        written into the VM's `xenstore_data` while it is halted, since xapi copies that into
        the domain's XenStore when it boots. Entries under VM_DATA_OWNED that it does not name
        are removed; the template's other vm-data is left alone.

        `fresh`: the caller knows that no VM was ever made for the instance (no attempt was made
        before this one), so the pool is not searched for one: the search reads every VM record
        of the pool, which on a pool of a thousand VMs costs more than the rest of the call."""
        instance_id = str(instance_id)
        with self._locked(instance_id), translated_errors():
            api = self._api()
            host_ref = self._host_ref(api, host)
            found = None if fresh else self._find(api, instance_id)
            if found is None:
                template_ref = self._template_ref(api, template)
                # A clone that an attempt killed before it could tag it is adopted, not repeated.
                vm = (None if fresh else self._untagged_clone(api, name, template_ref)) or api.VM.clone(template_ref, name)
                # Tag at once: from here on a retry finds this VM instead of cloning another.
                api.VM.add_to_other_config(vm, INSTANCE_KEY, instance_id)
                record = api.VM.get_record(vm)
                self._vm_uuids[instance_id] = record["uuid"]
            else:
                vm, record = found
            if record["is_a_template"]:  # not provisioned yet
                self._configure(api, vm, record, vcpus, memory_mb, disk_gb)
                self._ensure_vif(api, vm)
                self._await(api, api.Async.VM.provision(vm))
            self._tag_disks(api, vm, instance_id)
            if vm_data is not None and record["power_state"] != PowerState.RUNNING:
                self._put_vm_data(api, vm, vm_data)
            if start:
                self._bring_up(api, vm, host_ref)
            return self._describe(api, instance_id, vm)

    def _configure(self, api: Any, vm: str, record: dict, vcpus: int, memory_mb: int, disk_gb: int) -> None:
        # xapi keeps VCPUs_at_startup <= VCPUs_max at every step, so the order depends on the direction.
        if vcpus > int(record["VCPUs_max"]):
            api.VM.set_VCPUs_max(vm, str(vcpus))
            api.VM.set_VCPUs_at_startup(vm, str(vcpus))
        else:
            api.VM.set_VCPUs_at_startup(vm, str(vcpus))
            api.VM.set_VCPUs_max(vm, str(vcpus))
        # static = dynamic pins the VM's memory, so xapi's admission matches PEX's accounting.
        memory = str(memory_mb * MiB)
        api.VM.set_memory_limits(vm, memory, memory, memory, memory)
        disks = record["other_config"].get("disks", "")
        resized = resized_disks(disks, disk_gb)
        if resized != disks:
            api.VM.remove_from_other_config(vm, "disks")
            api.VM.add_to_other_config(vm, "disks", resized)

    def _ensure_vif(self, api: Any, vm: str) -> None:
        if api.VM.get_VIFs(vm):
            return
        network = self._network_ref(api)
        if network is None:
            log.warning("no network to plug VM %s into", vm)
            return
        api.VIF.create({"device": "0", "network": network, "VM": vm, "MAC": "", "MTU": "1500", "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})

    def _network_ref(self, api: Any) -> str | None:
        networks = api.network.get_all_records()
        candidates = sorted(
            (record["name_label"], ref) for ref, record in networks.items()
            if record["other_config"].get("is_host_internal_management_network") != "true"
            and (self.network is None or self.network in (record["name_label"], record["uuid"])))
        return candidates[0][1] if candidates else None

    def _tag_disks(self, api: Any, vm: str, instance_id: str) -> None:
        # Tagged disks can still be found and removed if a crash strands them without their VM.
        for vdi in self._disks(api, vm):
            other_config = api.VDI.get_other_config(vdi)
            if other_config.get(INSTANCE_KEY) != instance_id:
                api.VDI.remove_from_other_config(vdi, INSTANCE_KEY)
                api.VDI.add_to_other_config(vdi, INSTANCE_KEY, instance_id)

    def _put_vm_data(self, api: Any, vm: str, vm_data: Mapping[str, str]) -> None:
        # add_to_ refuses a key that is there (MAP_DUPLICATE_KEY): a changed value goes out first.
        current = api.VM.get_xenstore_data(vm)
        wanted = {f"{VM_DATA}{key}": value for key, value in vm_data.items()}
        for key in current:
            if key.startswith(VM_DATA_OWNED) and key not in wanted:
                api.VM.remove_from_xenstore_data(vm, key)
        for key, value in wanted.items():
            if current.get(key) != value:
                api.VM.remove_from_xenstore_data(vm, key)
                api.VM.add_to_xenstore_data(vm, key, value)

    def _bring_up(self, api: Any, vm: str, host_ref: str) -> None:
        state = api.VM.get_power_state(vm)
        if state == PowerState.HALTED:
            self._await(api, api.Async.VM.start_on(vm, host_ref, False, False))
        elif state == PowerState.SUSPENDED:
            self._await(api, api.Async.VM.resume_on(vm, host_ref, False, False))
        elif state == PowerState.PAUSED:
            self._await(api, api.Async.VM.unpause(vm))

    # -- queries ------------------------------------------------------------------------------------

    def find_vm(self, instance_id: object) -> XenVm | None:
        instance_id = str(instance_id)
        with translated_errors():
            api = self._api()
            found = self._find(api, instance_id)
            return None if found is None else self._describe(api, instance_id, found[0])

    def power_state(self, instance_id: object) -> PowerState:
        with translated_errors():
            _, record = self._require(self._api(), str(instance_id))
            return PowerState(record["power_state"])

    def ip_address(self, instance_id: object) -> str | None:
        """The guest's IPv4 address once its agent has reported it, else None."""
        with translated_errors():
            api = self._api()
            vm, _ = self._require(api, str(instance_id))
            return self._ip(api, vm)

    # -- power ----------------------------------------------------------------------------------------

    def start(self, instance_id: object, host: str) -> None:
        """Run the VM on `host` (resuming it there if it is suspended)."""
        with self._operation(instance_id) as (api, vm, record):
            if record["power_state"] in (PowerState.RUNNING, PowerState.PAUSED):
                return
            self._bring_up(api, vm, self._host_ref(api, host))

    def clean_shutdown(self, instance_id: object) -> None:
        with self._operation(instance_id) as (api, vm, record):
            if record["power_state"] != PowerState.HALTED:
                self._await(api, api.Async.VM.clean_shutdown(vm))

    def hard_shutdown(self, instance_id: object) -> None:
        with self._operation(instance_id) as (api, vm, record):
            if record["power_state"] != PowerState.HALTED:
                self._await(api, api.Async.VM.hard_shutdown(vm))

    def reboot(self, instance_id: object, *, hard: bool = False) -> None:
        with self._operation(instance_id) as (api, vm, _):
            self._await(api, api.Async.VM.hard_reboot(vm) if hard else api.Async.VM.clean_reboot(vm))

    def suspend(self, instance_id: object) -> None:
        with self._operation(instance_id) as (api, vm, record):
            if record["power_state"] != PowerState.SUSPENDED:
                self._await(api, api.Async.VM.suspend(vm))

    def resume(self, instance_id: object, host: str | None = None) -> None:
        """Resume a suspended VM, on `host` if given, else wherever xapi finds room."""
        with self._operation(instance_id) as (api, vm, record):
            if record["power_state"] in (PowerState.RUNNING, PowerState.PAUSED):
                return
            if host is None:
                self._await(api, api.Async.VM.resume(vm, False, False))
            else:
                self._await(api, api.Async.VM.resume_on(vm, self._host_ref(api, host), False, False))

    def migrate(self, instance_id: object, host: str) -> XenVm:
        """Live-migrate a running VM to `host` (planned moves only; a dead host cannot migrate)
        and return it as it is then; a VM already on `host` stays. xapi checks the destination
        as for a start: XenCapacityError (HOST_NOT_ENOUGH_FREE_MEMORY [needed, available],
        HOST_NOT_ENOUGH_PCPUS [vcpus, pcpus]), XenHostDownError (not live, disabled),
        XenPowerStateError (not running, or busy); a migration that fails on the way is
        XenMigrationError (VM_MIGRATE_FAILED [vm, source, destination, message]) and leaves the
        VM running where it was. A migration slower than `task_timeout` is XenTaskTimeout, and
        may still complete."""
        instance_id = str(instance_id)
        with self._operation(instance_id) as (api, vm, record):
            host_ref = self._host_ref(api, host)
            if record["resident_on"] != host_ref:
                self._await(api, api.Async.VM.pool_migrate(vm, host_ref, {"live": "true"}))
            return self._describe(api, instance_id, vm)

    def power_state_reset(self, instance_id: object) -> None:
        """Tell xapi a VM on a dead host is Halted, so it can be started elsewhere (dangerous if
        the host is merely unreachable: the domain may still run)."""
        with self._operation(instance_id) as (api, vm, _):
            api.VM.power_state_reset(vm)

    def destroy(self, instance_id: object, *, reset_if_host_down: bool = False) -> bool:
        """Remove the instance's VM and its disks; False if there was no VM (already destroyed).

        A VM that still runs is hard-shut-down first. If its host is down that fails with
        XenHostDownError, unless `reset_if_host_down` allows a power_state_reset instead.
        """
        instance_id = str(instance_id)
        with self._locked(instance_id), translated_errors():
            api = self._api()
            found = self._find(api, instance_id)
            disks: list[str] = []
            if found is not None:
                vm, record = found
                if record["power_state"] != PowerState.HALTED:
                    try:
                        self._await(api, api.Async.VM.hard_shutdown(vm))
                    except XenHostDownError:
                        if not reset_if_host_down:
                            raise
                        api.VM.power_state_reset(vm)
                disks = self._disks(api, vm)
                self._ignoring_missing(api.VM.destroy, vm)
            # Also disks a crashed earlier attempt left behind without their VM.
            stranded = [ref for ref, r in api.VDI.get_all_records().items()
                        if r["other_config"].get(INSTANCE_KEY) == instance_id]
            for vdi in dict.fromkeys(disks + stranded):
                self._ignoring_missing(api.VDI.destroy, vdi)
            self._vm_uuids.pop(instance_id, None)
            return found is not None

    # -- helpers -------------------------------------------------------------------------------------

    def _api(self) -> Any:
        return self._sessions.api()

    @contextmanager
    def _locked(self, instance_id: str) -> Iterator[None]:
        # Two threads of one worker must not both create (or destroy) the same instance.
        with self._locks_lock:
            lock = self._instance_locks[instance_id]
        with lock:
            yield

    @contextmanager
    def _operation(self, instance_id: object) -> Iterator[tuple[Any, str, dict]]:
        instance_id = str(instance_id)
        with self._locked(instance_id), translated_errors():
            api = self._api()
            vm, record = self._require(api, instance_id)
            yield api, vm, record

    def _await(self, api: Any, task: str) -> object:
        with translated_errors():
            return wait_for_task(api, task, timeout=self.task_timeout, poll_interval=self.poll_interval,
                                 sleep=self._sleep)

    def _find(self, api: Any, instance_id: str) -> tuple[str, dict] | None:
        known = self._vm_uuids.get(instance_id)
        if known is not None:
            try:
                vm = api.VM.get_by_uuid(known)
                record = api.VM.get_record(vm)
                if record["other_config"].get(INSTANCE_KEY) == instance_id:
                    return vm, record
            except XenAPI.Failure as failure:
                if failure.details[:1] and failure.details[0] not in _NOT_FOUND_CODES:
                    raise
            self._vm_uuids.pop(instance_id, None)
        matches = [(ref, r) for ref, r in api.VM.get_all_records().items()
                   if r["other_config"].get(INSTANCE_KEY) == instance_id
                   and not r["is_a_snapshot"] and not r["is_control_domain"]]
        if not matches:
            return None
        if len(matches) > 1:
            log.warning("%d VMs carry instance %s; using the most advanced", len(matches), instance_id)
        matches.sort(key=lambda m: (m[1]["is_a_template"], m[1]["power_state"] == PowerState.HALTED, m[1]["uuid"]))
        vm, record = matches[0]
        self._vm_uuids[instance_id] = record["uuid"]
        return vm, record

    def _untagged_clone(self, api: Any, name: str, template_ref: str) -> str | None:
        """A not yet tagged clone of `template_ref` named `name`: what create_vm leaves if it is
        interrupted between VM.clone and tagging (xapi's clone takes no other_config)."""
        template_name = api.VM.get_name_label(template_ref)
        for ref in api.VM.get_by_name_label(name):
            record = api.VM.get_record(ref)
            other_config = record["other_config"]
            if (record["is_a_template"] and not record["is_default_template"] and INSTANCE_KEY not in other_config
                    and other_config.get("base_template_name") == template_name and ref != template_ref):
                return ref
        return None

    def _require(self, api: Any, instance_id: str) -> tuple[str, dict]:
        found = self._find(api, instance_id)
        if found is None:
            raise XenNotFoundError(["PEX_VM_NOT_FOUND", instance_id])
        return found

    def _describe(self, api: Any, instance_id: str, vm: str) -> XenVm:
        record = api.VM.get_record(vm)
        host = record["resident_on"]
        host_uuid = node = None
        if host != NULL_REF:
            host_record = api.host.get_record(host)
            host_uuid, node = host_record["uuid"], node_name(self.pool, host_record["name_label"])
        return XenVm(instance_id=instance_id, uuid=record["uuid"], name=record["name_label"],
                     power_state=PowerState(record["power_state"]), host_uuid=host_uuid, host_name=node,
                     vcpus=int(record["VCPUs_at_startup"]), memory_mb=int(record["memory_static_max"]) // MiB,
                     ip=self._ip(api, vm, record["guest_metrics"]))

    def _ip(self, api: Any, vm: str, metrics: str | None = None) -> str | None:
        metrics = api.VM.get_guest_metrics(vm) if metrics is None else metrics
        if metrics == NULL_REF:
            return None
        try:
            return guest_ip(api.VM_guest_metrics.get_networks(metrics))
        except XenAPI.Failure as failure:
            if failure.details[:1] == ["HANDLE_INVALID"]:  # the VM halted meanwhile
                return None
            raise

    def _disks(self, api: Any, vm: str) -> list[str]:
        disks = []
        for vbd in api.VM.get_VBDs(vm):
            record = api.VBD.get_record(vbd)
            if record["type"] == "Disk" and record["VDI"] != NULL_REF:
                disks.append(record["VDI"])
        return disks

    def _host_ref(self, api: Any, host: str) -> str:
        if _UUID.fullmatch(host):
            try:
                return api.host.get_by_uuid(host)
            except XenAPI.Failure as failure:
                if failure.details[:1] != ["UUID_INVALID"]:
                    raise
        refs = api.host.get_by_name_label(host_name(self.pool, host))
        if not refs:
            raise XenNotFoundError(["PEX_HOST_NOT_FOUND", host])
        return refs[0]

    def _template_ref(self, api: Any, template: str) -> str:
        candidates = []
        if _UUID.fullmatch(template):
            try:
                candidates.append(api.VM.get_by_uuid(template))
            except XenAPI.Failure as failure:
                if failure.details[:1] != ["UUID_INVALID"]:
                    raise
        candidates += api.VM.get_by_name_label(template)
        for ref in candidates:
            record = api.VM.get_record(ref)
            if record["is_a_template"] and INSTANCE_KEY not in record["other_config"]:
                return ref
        raise XenNotFoundError(["PEX_TEMPLATE_NOT_FOUND", template])

    @staticmethod
    def _ignoring_missing(call: Callable[[str], object], ref: str) -> None:
        try:
            call(ref)
        except XenAPI.Failure as failure:
            if failure.details[:1] != ["HANDLE_INVALID"]:
                raise


def resized_disks(disks: str, disk_gb: int) -> str:
    """other_config["disks"] with the system (bootable, else first) disk set to `disk_gb` GiB."""
    size = str(disk_gb * GiB)
    if not disks:
        return f'<provision><disk device="0" size="{size}" sr="" bootable="true" type="system"/></provision>'
    root = ElementTree.fromstring(disks)
    entries = root.findall("disk")
    if not entries:
        ElementTree.SubElement(root, "disk", device="0", size=size, sr="", bootable="true", type="system")
    else:
        system = next((d for d in entries if d.get("bootable") == "true"), entries[0])
        if system.get("size") == size:
            return disks
        system.set("size", size)
    return ElementTree.tostring(root, encoding="unicode")


__all__ = ["XenDispatcher", "resized_disks"]
