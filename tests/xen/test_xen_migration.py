"""Live migration between the hosts of a pool (`VM.pool_migrate`): what the simulator checks
on the destination, how long it takes and how it fails, and how the dispatcher reports it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pex.adapters.xen.changes import VmMigrated
from pex.adapters.xen.errors import (
    XenCapacityError,
    XenHostDownError,
    XenMigrationError,
    XenNotFoundError,
    XenPowerStateError,
    XenTaskTimeout,
)
from pex.adapters.xen.records import MiB, PowerState
from pex.adapters.xen.simulator import HostSpec, run_simulator
from tests.support.xen import TEMPLATE
from tests.support.xen import make_dispatcher as dispatcher_for

pytestmark = pytest.mark.xen


def create(dispatcher, instance_id, host="node1", memory_mb=768, vcpus=1):
    return dispatcher.create_vm(instance_id, f"pex-{instance_id}", TEMPLATE, host, vcpus, memory_mb, 10)


def free_mb(dispatcher):
    return {h.name: h.memory_free_mb for h in dispatcher.hosts()}


def test_a_running_vm_moves_with_its_memory_and_the_watcher_sees_it(dispatcher, watcher, watch_for):
    create(dispatcher, "mover", memory_mb=1024)
    watcher.poll()
    before = free_mb(dispatcher)

    moved = dispatcher.migrate("mover", "node3")

    assert (moved.host_name, moved.power_state) == ("node3", PowerState.RUNNING)
    after = free_mb(dispatcher)
    assert (after["node1"] - before["node1"], after["node3"] - before["node3"]) == (1024, -1024)
    changes = watch_for(watcher, lambda c: isinstance(c, VmMigrated))
    (migrated,) = [c for c in changes if isinstance(c, VmMigrated)]
    assert (migrated.instance_id, migrated.host_name) == ("mover", "node3")


def test_a_vm_already_on_the_destination_stays(dispatcher):
    create(dispatcher, "stays", host="node2")
    assert dispatcher.migrate("stays", "node2").host_name == "node2"


def test_a_destination_without_the_memory_refuses_and_the_vm_stays(dispatcher):
    create(dispatcher, "big", memory_mb=3072)
    create(dispatcher, "filler", host="node2", memory_mb=2048)
    with pytest.raises(XenCapacityError) as refused:
        dispatcher.migrate("big", "node2")
    needed, available = (int(p) for p in refused.value.params)
    assert refused.value.code == "HOST_NOT_ENOUGH_FREE_MEMORY"
    assert (needed, available) == (3072 * MiB, (4096 - 2048) * MiB)
    assert dispatcher.find_vm("big").host_name == "node1"


def test_a_destination_with_fewer_cpus_than_the_vm_has_vcpus_refuses():
    hosts = [HostSpec("wide", cpus=8), HostSpec("narrow", cpus=2)]
    with run_simulator(hosts, guest_ip_delay=0.05) as simulator:
        dispatcher = dispatcher_for(simulator.url)
        try:
            create(dispatcher, "four", host="wide", vcpus=4)
            with pytest.raises(XenCapacityError) as refused:
                dispatcher.migrate("four", "narrow")
            assert refused.value.details == ["HOST_NOT_ENOUGH_PCPUS", "4", "2"]
        finally:
            dispatcher.close()


def test_a_dead_or_disabled_destination_refuses(simulator, dispatcher, xenapi):
    create(dispatcher, "nowhere")
    simulator.control.fail_host("node4")
    with pytest.raises(XenHostDownError) as dead:
        dispatcher.migrate("nowhere", "node4")
    xenapi.host.disable(dispatcher_host(xenapi, "node5"))
    with pytest.raises(XenHostDownError) as disabled:
        dispatcher.migrate("nowhere", "node5")
    assert (dead.value.code, disabled.value.code) == ("HOST_NOT_LIVE", "HOST_DISABLED")


def test_only_a_running_vm_migrates_and_only_to_a_host_of_the_pool(dispatcher):
    create(dispatcher, "halted")
    dispatcher.hard_shutdown("halted")
    with pytest.raises(XenPowerStateError) as halted:
        dispatcher.migrate("halted", "node2")
    assert halted.value.params[1:] == ["running", "halted"]
    with pytest.raises(XenNotFoundError) as unknown:
        dispatcher.migrate("halted", "node9")
    assert unknown.value.details == ["PEX_HOST_NOT_FOUND", "node9"]


def test_a_migration_takes_its_time_holding_the_vm_and_the_destinations_memory(simulator, dispatcher, xenapi,
                                                                               eventually):
    create(dispatcher, "slow", memory_mb=1024)
    simulator.control.set_migration_time(0.5)
    vm = xenapi.VM.get_by_uuid(dispatcher.find_vm("slow").uuid)
    task = xenapi.Async.VM.pool_migrate(vm, dispatcher_host(xenapi, "node2"), {"live": "true"})
    eventually(lambda: xenapi.VM.get_current_operations(vm))

    assert free_mb(dispatcher)["node2"] == 4096 - 1024  # reserved while the memory is copied
    assert free_mb(dispatcher)["node1"] == 4096 - 1024  # and still in use at the source
    with pytest.raises(XenPowerStateError) as busy:
        dispatcher.hard_shutdown("slow")
    assert busy.value.code == "OTHER_OPERATION_IN_PROGRESS" and busy.value.params[2] == "pool_migrate"
    eventually(lambda: xenapi.task.get_status(task) == "success")
    assert dispatcher.find_vm("slow").host_name == "node2"
    assert free_mb(dispatcher)["node1"] == 4096


def test_a_migration_slower_than_the_task_timeout_is_a_task_timeout(simulator, make_dispatcher):
    dispatcher = make_dispatcher(task_timeout=0.2)
    create(dispatcher, "glacial")
    simulator.control.set_migration_time(1.0)
    with pytest.raises(XenTaskTimeout):
        dispatcher.migrate("glacial", "node2")


def test_a_migration_that_fails_on_the_way_leaves_the_vm_running_at_the_source(simulator, dispatcher, xenapi):
    create(dispatcher, "unlucky")
    simulator.control.fail_next_migration("unlucky", "connection to the destination lost")
    with pytest.raises(XenMigrationError) as failed:
        dispatcher.migrate("unlucky", "node3")
    vm, source, destination, message = failed.value.params
    assert failed.value.code == "VM_MIGRATE_FAILED" and message == "connection to the destination lost"
    assert (source, destination) == (dispatcher_host(xenapi, "node1"), dispatcher_host(xenapi, "node3"))
    still = dispatcher.find_vm("unlucky")
    assert (still.host_name, still.power_state) == ("node1", PowerState.RUNNING)
    assert dispatcher.migrate("unlucky", "node3").host_name == "node3"  # the fault was for one attempt


def test_a_destination_that_dies_during_the_migration_fails_it(simulator, dispatcher, xenapi, eventually):
    create(dispatcher, "caught")
    simulator.control.set_migration_time(0.5)
    vm = xenapi.VM.get_by_uuid(dispatcher.find_vm("caught").uuid)
    task = xenapi.Async.VM.pool_migrate(vm, dispatcher_host(xenapi, "node2"), {"live": "true"})
    eventually(lambda: xenapi.VM.get_current_operations(vm))
    simulator.control.fail_host("node2")
    eventually(lambda: xenapi.task.get_status(task) == "failure")
    assert xenapi.task.get_error_info(task)[0] == "VM_MIGRATE_FAILED"
    assert dispatcher.find_vm("caught").host_name == "node1"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(moves=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["node1", "node2", "node3"])),
                      max_size=6))
def test_migrations_never_lose_or_duplicate_memory(dispatcher, moves):
    """Whatever moves succeed or are refused, every host's free memory is its guest memory less
    the VMs that run on it (the pool never counts a VM twice or not at all)."""
    for name, home in zip("abc", ["node1", "node2", "node3"], strict=True):
        if dispatcher.find_vm(name) is None:  # made once; later examples start where the last left them
            create(dispatcher, name, host=home, memory_mb=1536)
    for name, host in moves:
        try:
            dispatcher.migrate(name, host)
        except XenCapacityError:
            pass
    where = {name: dispatcher.find_vm(name).host_name for name in "abc"}
    for host, free in free_mb(dispatcher).items():
        assert free == 4096 - 1536 * sum(1 for h in where.values() if h == host)


def dispatcher_host(xenapi, name):
    (ref,) = xenapi.host.get_by_name_label(name)
    return ref
