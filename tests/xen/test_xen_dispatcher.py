"""The dispatcher drives the simulated pool through the real XenAPI client: a VM's whole life,
idempotent creation and destruction, discovery."""

from __future__ import annotations

import pytest
import XenAPI

from pex.adapters.xen.dispatcher import XenDispatcher, resized_disks
from pex.adapters.xen.errors import XenCapacityError, XenNotFoundError, XenPowerStateError
from pex.adapters.xen.records import PowerState

pytestmark = pytest.mark.xen

TEMPLATE = "PEX Debian Etch 4.0 Template"
GiB = 1024**3


def create(dispatcher, instance_id="instance-1", host="node1", vcpus=1, memory_mb=768, disk_gb=10, name=None):
    return dispatcher.create_vm(instance_id, name or f"pex-{instance_id}", TEMPLATE, host, vcpus, memory_mb, disk_gb)


def guest_vms(simulator):
    return [vm for vm in simulator.control.state()["vms"] if vm["pex_instance"]]


def test_discovers_the_pools_hosts_and_templates(dispatcher):
    hosts = dispatcher.hosts()
    assert [h.name for h in hosts] == ["node1", "node2", "node3", "node4", "node5"]
    assert all(h.cpus == 4 and h.memory_free_mb == 4096 and h.live and h.enabled and h.available for h in hosts)
    assert all(h.memory_total_mb > 4096 for h in hosts)  # dom0 and Xen take the rest
    assert TEMPLATE in [t.name for t in dispatcher.templates()]


def test_a_vms_whole_life(simulator, dispatcher, xenapi, eventually):
    vm = create(dispatcher, "life", host="node2", vcpus=4, memory_mb=3584, disk_gb=60)
    assert (vm.power_state, vm.host_name, vm.vcpus, vm.memory_mb) == (PowerState.RUNNING, "node2", 4, 3584)
    record = xenapi.VM.get_record(xenapi.VM.get_by_uuid(vm.uuid))
    assert record["other_config"]["pex_instance"] == "life"
    assert record["memory_static_min"] == record["memory_dynamic_max"] == str(3584 * 1024**2)
    (vbd,) = record["VBDs"]
    assert int(xenapi.VDI.get_virtual_size(xenapi.VBD.get_VDI(vbd))) == 60 * GiB
    assert len(record["VIFs"]) == 1

    ip = eventually(lambda: dispatcher.ip_address("life"))
    assert ip.startswith("10.10.")

    dispatcher.reboot("life")
    assert dispatcher.power_state("life") == PowerState.RUNNING
    dispatcher.suspend("life")
    assert dispatcher.power_state("life") == PowerState.SUSPENDED
    dispatcher.resume("life", "node3")
    assert dispatcher.find_vm("life").host_name == "node3"
    dispatcher.migrate("life", "node4")
    assert dispatcher.find_vm("life").host_name == "node4"
    dispatcher.clean_shutdown("life")
    assert dispatcher.power_state("life") == PowerState.HALTED
    dispatcher.start("life", "node5")
    assert dispatcher.find_vm("life").host_name == "node5"

    assert dispatcher.destroy("life") is True

    assert dispatcher.find_vm("life") is None
    assert guest_vms(simulator) == []
    assert simulator.control.state()["vdis"] == 0
    assert simulator.control.state()["tasks"] == 0  # every task was cleaned up


def test_creating_twice_reuses_the_vm(simulator, dispatcher):
    first = create(dispatcher, "twice")
    second = create(dispatcher, "twice")
    assert first.uuid == second.uuid
    assert len(guest_vms(simulator)) == 1


def test_a_restarted_worker_finds_the_vm_without_its_cache(simulator, make_dispatcher):
    first = create(make_dispatcher(), "restart")
    fresh = make_dispatcher()
    assert create(fresh, "restart").uuid == first.uuid
    assert len(guest_vms(simulator)) == 1


def test_creation_resumes_after_a_crash_between_clone_and_provision(simulator, dispatcher, xenapi):
    # What a worker that died right after tagging its clone leaves behind.
    half = xenapi.VM.clone(xenapi.VM.get_by_name_label(TEMPLATE)[0], "pex-half")
    xenapi.VM.add_to_other_config(half, "pex_instance", "half")

    vm = create(dispatcher, "half", memory_mb=1536, vcpus=2)

    assert vm.uuid == xenapi.VM.get_uuid(half)
    assert (vm.power_state, vm.vcpus, vm.memory_mb) == (PowerState.RUNNING, 2, 1536)
    assert len(guest_vms(simulator)) == 1


def test_creation_resumes_after_a_crash_between_provision_and_start(simulator, dispatcher, xenapi):
    create(dispatcher, "halted")
    dispatcher.hard_shutdown("halted")
    assert create(dispatcher, "halted", host="node3").host_name == "node3"
    assert len(guest_vms(simulator)) == 1


def test_refused_capacity_is_a_capacity_error_and_leaves_a_restartable_vm(simulator, dispatcher):
    create(dispatcher, "big-1", vcpus=4, memory_mb=3584)
    with pytest.raises(XenCapacityError) as error:
        create(dispatcher, "big-2", vcpus=4, memory_mb=3584)
    assert error.value.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert dispatcher.power_state("big-2") == PowerState.HALTED
    assert create(dispatcher, "big-2", host="node2", vcpus=4, memory_mb=3584).power_state == PowerState.RUNNING


def test_power_commands_already_in_their_target_state_do_nothing(dispatcher):
    create(dispatcher, "steady")
    dispatcher.start("steady", "node1")
    dispatcher.migrate("steady", "node1")
    dispatcher.resume("steady")
    dispatcher.hard_shutdown("steady")
    dispatcher.clean_shutdown("steady")
    assert dispatcher.power_state("steady") == PowerState.HALTED


def test_a_command_the_state_forbids_is_a_power_state_error(dispatcher):
    create(dispatcher, "halted-vm")
    dispatcher.clean_shutdown("halted-vm")
    with pytest.raises(XenPowerStateError) as error:
        dispatcher.reboot("halted-vm")
    assert error.value.code == "VM_BAD_POWER_STATE"
    assert error.value.params[1:] == ["running", "halted"]
    assert not error.value.retryable


def test_destroying_what_is_gone_is_fine(dispatcher):
    assert dispatcher.destroy("never-existed") is False
    create(dispatcher, "once")
    assert dispatcher.destroy("once") is True
    assert dispatcher.destroy("once") is False


def test_destroy_removes_disks_stranded_by_an_earlier_crash(simulator, dispatcher, xenapi):
    create(dispatcher, "stranded")
    vm = xenapi.VM.get_by_uuid(dispatcher.find_vm("stranded").uuid)
    xenapi.VM.hard_shutdown(vm)
    xenapi.VM.destroy(vm)  # the VM went, its disk stayed (xapi never destroys VDIs)
    assert simulator.control.state()["vdis"] == 1

    assert dispatcher.destroy("stranded") is False
    assert simulator.control.state()["vdis"] == 0


def test_destroying_a_suspended_vm_leaves_no_suspend_image(simulator, dispatcher):
    create(dispatcher, "sleepy")
    dispatcher.suspend("sleepy")
    dispatcher.destroy("sleepy")
    assert simulator.control.state()["vdis"] == 0


def test_unknown_instances_hosts_and_templates_are_not_found(dispatcher):
    with pytest.raises(XenNotFoundError) as instance:
        dispatcher.power_state("nobody")
    assert instance.value.details == ["PEX_VM_NOT_FOUND", "nobody"]
    with pytest.raises(XenNotFoundError) as host:
        create(dispatcher, "lost", host="node99")
    assert host.value.code == "PEX_HOST_NOT_FOUND"
    with pytest.raises(XenNotFoundError) as template:
        dispatcher.create_vm("lost", "lost", "Windows 95", "node1", 1, 256, 1)
    assert template.value.code == "PEX_TEMPLATE_NOT_FOUND"


def test_hosts_and_templates_may_be_named_by_uuid(dispatcher):
    host = dispatcher.hosts()[2]
    template = next(t for t in dispatcher.templates() if t.name == TEMPLATE)
    vm = dispatcher.create_vm("by-uuid", "by-uuid", template.uuid, host.uuid, 1, 256, 4)
    assert vm.host_uuid == host.uuid


def test_instance_ids_may_be_uuids(dispatcher):
    from uuid import UUID

    instance = UUID("12345678-1234-5678-1234-567812345678")
    create(dispatcher, instance)
    assert dispatcher.find_vm(str(instance)).instance_id == str(instance)


def test_from_environment(simulator):
    environ = {"PEX_XEN_URL": simulator.url, "PEX_XEN_USERNAME": "root", "PEX_XEN_PASSWORD": "xenroot"}
    with XenDispatcher.from_environment(environ, timeout=5.0) as dispatcher:
        assert len(dispatcher.hosts()) == 5
    with pytest.raises(ValueError, match="PEX_XEN_URL"):
        XenDispatcher.from_environment({})


def test_close_logs_every_session_out(simulator, make_dispatcher):
    dispatcher = make_dispatcher()
    dispatcher.hosts()
    before = simulator.control.state()["sessions"]
    dispatcher.close()
    assert simulator.control.state()["sessions"] == before - 1


def test_resized_disks_rewrites_the_system_disk_only():
    spec = ('<provision><disk device="0" size="1" sr="" bootable="true" type="system"/>'
            '<disk device="1" size="2" sr="" bootable="false" type="data"/></provision>')
    resized = resized_disks(spec, 3)
    assert f'size="{3 * GiB}"' in resized and 'size="2"' in resized
    assert resized_disks(resized, 3) == resized
    assert 'bootable="true"' in resized_disks("", 1)


def test_the_session_is_per_thread(dispatcher):
    import threading

    sessions = []

    def grab():
        sessions.append(dispatcher._sessions.session())

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    grab()
    assert len({id(s) for s in sessions}) == 4
    assert all(isinstance(s, XenAPI.Session) for s in sessions)
