"""One dispatcher used from several worker threads at once, with a watcher alongside."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pex.adapters.xen.changes import GuestIpReported, VmPowerStateChanged
from pex.adapters.xen.records import PowerState

pytestmark = pytest.mark.xen

TEMPLATE = "PEX Debian Etch 4.0 Template"


def test_parallel_creates_and_destroys_on_every_host(simulator, dispatcher):
    hosts = [f"node{i}" for i in range(1, 6)]

    def life(index: int) -> str:
        instance = f"parallel-{index}"
        vm = dispatcher.create_vm(instance, instance, TEMPLATE, hosts[index % 5], 4, 1792, 10)
        assert vm.power_state == PowerState.RUNNING
        dispatcher.reboot(instance)
        return vm.host_name

    with ThreadPoolExecutor(max_workers=5) as pool:
        placed = list(pool.map(life, range(10)))  # two 1.75 GiB VMs per 4 GiB host

    assert sorted(placed) == sorted(hosts * 2)
    assert all(h.memory_free_mb == 4096 - 2 * 1792 for h in dispatcher.hosts())

    with ThreadPoolExecutor(max_workers=5) as pool:
        assert all(pool.map(lambda i: dispatcher.destroy(f"parallel-{i}"), range(10)))
    state = simulator.control.state()
    assert [vm for vm in state["vms"] if vm["pex_instance"]] == [] and state["vdis"] == 0


def test_racing_creates_of_one_instance_make_one_vm(simulator, dispatcher):
    start = threading.Barrier(4)

    def create(_: int) -> str:
        start.wait()
        return dispatcher.create_vm("contested", "contested", TEMPLATE, "node1", 1, 512, 4).uuid

    with ThreadPoolExecutor(max_workers=4) as pool:
        uuids = set(pool.map(create, range(4)))

    assert len(uuids) == 1
    assert len([vm for vm in simulator.control.state()["vms"] if vm["pex_instance"]]) == 1


def test_a_watcher_thread_sees_what_worker_threads_do(dispatcher):
    watcher = dispatcher.watcher(timeout=0.2)
    stop = threading.Event()
    running, ips = set(), set()

    def watch() -> None:
        for change in watcher.changes(stop):
            if isinstance(change, VmPowerStateChanged) and change.power_state == PowerState.RUNNING:
                running.add(change.instance_id)
            if isinstance(change, GuestIpReported):
                ips.add(change.instance_id)
            if len(ips) == 5:
                stop.set()

    thread = threading.Thread(target=watch)
    thread.start()
    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda i: dispatcher.create_vm(f"seen-{i}", f"seen-{i}", TEMPLATE, f"node{i + 1}", 1, 512, 4),
                      range(5)))
    thread.join(timeout=10)
    watcher.close()
    assert not thread.is_alive()
    assert running == ips == {f"seen-{i}" for i in range(5)}
