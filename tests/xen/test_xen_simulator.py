"""The simulator keeps xapi's semantics: templates and provisioning, power-state rules,
memory admission, busy VMs, dead hosts, guest agents and event.from."""

from __future__ import annotations

import re
import threading
import time

import pytest
import XenAPI

from pex.adapters.xen.simulator import HostSpec, ManualClock, run_simulator, serve

pytestmark = pytest.mark.xen

GiB = 1024**3
MiB = 1024**2
TEMPLATE = "PEX Debian Etch 4.0 Template"


def login(simulator):
    session = XenAPI.Session(simulator.url)
    session.xenapi.login_with_password("root", "xenroot", "1.2", "pex-tests")
    return session.xenapi


def new_vm(xenapi, name="vm", memory_mb=512, vcpus=1):
    vm = xenapi.VM.clone(xenapi.VM.get_by_name_label(TEMPLATE)[0], name)
    memory = str(memory_mb * MiB)
    xenapi.VM.set_memory_limits(vm, memory, memory, memory, memory)
    xenapi.VM.set_VCPUs_max(vm, str(vcpus))
    xenapi.VM.set_VCPUs_at_startup(vm, str(vcpus))
    xenapi.VM.provision(vm)
    return vm


def host_named(xenapi, name):
    return xenapi.host.get_by_name_label(name)[0]


def test_the_default_pool_is_the_papers_testbed(xenapi):
    hosts = xenapi.host.get_all_records()
    assert sorted(h["name_label"] for h in hosts.values()) == [f"node{i}" for i in range(1, 6)]
    for ref, host in hosts.items():
        assert host["cpu_info"]["cpu_count"] == "4"
        assert int(xenapi.host.compute_free_memory(ref)) == 4 * GiB
    pool = xenapi.pool.get_all()[0]
    assert xenapi.pool.get_master(pool) in hosts
    templates = {r["name_label"] for r in xenapi.VM.get_all_records().values() if r["is_a_template"]}
    assert TEMPLATE in templates and len(templates) >= 3
    dom0s = [r for r in xenapi.VM.get_all_records().values() if r["is_control_domain"]]
    assert len(dom0s) == 5 and all(r["power_state"] == "Running" for r in dom0s)


def test_clone_keeps_a_template_and_provision_makes_it_a_vm_with_disks(xenapi):
    template = xenapi.VM.get_by_name_label(TEMPLATE)[0]
    vm = xenapi.VM.clone(template, "fresh")
    assert xenapi.VM.get_is_a_template(vm) is True
    assert xenapi.VM.get_other_config(vm)["base_template_name"] == TEMPLATE
    assert xenapi.VM.get_VBDs(vm) == []
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.start(vm, False, False)
    assert failure.value.details == ["VM_IS_TEMPLATE", vm, "start"]

    xenapi.VM.provision(vm)

    assert xenapi.VM.get_is_a_template(vm) is False
    (vbd,) = xenapi.VM.get_VBDs(vm)
    vdi = xenapi.VBD.get_VDI(vbd)
    assert xenapi.VBD.get_record(vbd)["type"] == "Disk"
    assert int(xenapi.VDI.get_virtual_size(vdi)) == 4 * GiB


def test_destroy_keeps_the_disks_until_they_are_destroyed_explicitly(xenapi):
    vm = new_vm(xenapi)
    vdi = xenapi.VBD.get_VDI(xenapi.VM.get_VBDs(vm)[0])
    xenapi.VM.destroy(vm)
    assert xenapi.VDI.get_record(vdi)["VBDs"] == []
    xenapi.VDI.destroy(vdi)
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VDI.get_record(vdi)
    assert failure.value.details == ["HANDLE_INVALID", "VDI", vdi]


def test_a_host_takes_one_xlarge_and_refuses_a_second(xenapi):
    host = host_named(xenapi, "node1")
    first, second = new_vm(xenapi, "x1", memory_mb=3584, vcpus=4), new_vm(xenapi, "x2", memory_mb=3584, vcpus=4)
    xenapi.VM.start_on(first, host, False, False)
    assert int(xenapi.host.compute_free_memory(host)) == 512 * MiB

    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.start_on(second, host, False, False)

    assert failure.value.details == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(3584 * MiB), str(512 * MiB)]
    with pytest.raises(XenAPI.Failure) as check:
        xenapi.VM.assert_can_boot_here(second, host)
    assert check.value.details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"


def test_more_vcpus_than_pcpus_is_refused(xenapi):
    vm = new_vm(xenapi, vcpus=8)
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.start_on(vm, host_named(xenapi, "node1"), False, False)
    assert failure.value.details == ["HOST_NOT_ENOUGH_PCPUS", "8", "4"]


def test_vm_start_places_and_reports_no_hosts_when_the_pool_is_full():
    with run_simulator(hosts=2, guest_ip_delay=0.0) as sim:
        xenapi = login(sim)
        vms = [new_vm(xenapi, f"big{i}", memory_mb=3000) for i in range(3)]
        xenapi.VM.start(vms[0], False, False)
        xenapi.VM.start(vms[1], False, False)
        assert {xenapi.VM.get_resident_on(v) for v in vms[:2]} == set(xenapi.host.get_all())
        with pytest.raises(XenAPI.Failure) as failure:
            xenapi.VM.start(vms[2], False, False)
        assert failure.value.details == ["NO_HOSTS_AVAILABLE"]


def test_power_state_rules(xenapi):
    vm = new_vm(xenapi)
    host = host_named(xenapi, "node2")
    xenapi.VM.start_on(vm, host, False, False)
    assert xenapi.VM.get_power_state(vm) == "Running" and xenapi.VM.get_resident_on(vm) == host
    with pytest.raises(XenAPI.Failure) as destroy_running:
        xenapi.VM.destroy(vm)
    assert destroy_running.value.details == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]

    xenapi.VM.suspend(vm)
    record = xenapi.VM.get_record(vm)
    assert record["power_state"] == "Suspended" and record["resident_on"] == "OpaqueRef:NULL"
    assert record["suspend_VDI"] != "OpaqueRef:NULL"
    assert int(xenapi.host.compute_free_memory(host)) == 4 * GiB
    xenapi.VM.resume_on(vm, host, False, False)
    assert xenapi.VM.get_power_state(vm) == "Running"
    assert xenapi.VM.get_suspend_VDI(vm) == "OpaqueRef:NULL"

    xenapi.VM.pause(vm)
    with pytest.raises(XenAPI.Failure) as reboot_paused:
        xenapi.VM.clean_reboot(vm)
    assert reboot_paused.value.details[0] == "VM_BAD_POWER_STATE"
    xenapi.VM.unpause(vm)
    xenapi.VM.clean_shutdown(vm)
    assert xenapi.VM.get_power_state(vm) == "Halted"
    assert "start_on" in xenapi.VM.get_allowed_operations(vm)


def test_pool_migrate_moves_the_domain_and_its_memory(xenapi):
    vm = new_vm(xenapi, memory_mb=1024)
    source, target = host_named(xenapi, "node1"), host_named(xenapi, "node5")
    xenapi.VM.start_on(vm, source, False, False)
    xenapi.VM.pool_migrate(vm, target, {"live": "true"})
    assert xenapi.VM.get_resident_on(vm) == target
    assert int(xenapi.host.compute_free_memory(source)) == 4 * GiB
    assert int(xenapi.host.compute_free_memory(target)) == 3 * GiB


def test_a_vm_busy_with_an_async_operation_refuses_others(simulator, xenapi, eventually):
    vm = new_vm(xenapi)
    simulator.control.set_latency("VM.start_on", 0.3)
    task = xenapi.Async.VM.start_on(vm, host_named(xenapi, "node1"), False, False)
    eventually(lambda: xenapi.VM.get_current_operations(vm))

    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.hard_shutdown(vm)

    assert failure.value.details == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "start_on", task]
    assert xenapi.VM.get_allowed_operations(vm) == []
    eventually(lambda: xenapi.task.get_status(task) == "success")
    assert xenapi.VM.get_power_state(vm) == "Running"


def test_memory_of_a_vm_on_its_way_in_is_already_taken(simulator, xenapi, eventually):
    host = host_named(xenapi, "node1")
    first, second = new_vm(xenapi, "a", memory_mb=3000), new_vm(xenapi, "b", memory_mb=3000)
    simulator.control.set_latency("VM.start_on", 0.3)
    task = xenapi.Async.VM.start_on(first, host, False, False)
    eventually(lambda: xenapi.VM.get_scheduled_to_be_resident_on(first) == host)
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.start_on(second, host, False, False)
    assert failure.value.details[0] == "HOST_NOT_ENOUGH_FREE_MEMORY"
    eventually(lambda: xenapi.task.get_status(task) == "success")


def test_a_dead_host_keeps_its_vms_running_in_the_database(simulator, xenapi):
    vm = new_vm(xenapi)
    host = host_named(xenapi, "node3")
    xenapi.VM.start_on(vm, host, False, False)

    simulator.control.fail_host("node3")

    assert xenapi.host_metrics.get_live(xenapi.host.get_metrics(host)) is False
    assert xenapi.VM.get_power_state(vm) == "Running"
    with pytest.raises(XenAPI.Failure) as offline:
        xenapi.VM.clean_shutdown(vm)
    assert offline.value.details == ["HOST_OFFLINE", host]
    other = new_vm(xenapi, "other")
    with pytest.raises(XenAPI.Failure) as not_live:
        xenapi.VM.start_on(other, host, False, False)
    assert not_live.value.details == ["HOST_NOT_LIVE"]

    xenapi.VM.power_state_reset(vm)
    assert xenapi.VM.get_power_state(vm) == "Halted"
    xenapi.VM.start_on(vm, host_named(xenapi, "node4"), False, False)


def test_power_state_reset_refuses_a_vm_on_a_live_host(xenapi):
    vm = new_vm(xenapi)
    xenapi.VM.start_on(vm, host_named(xenapi, "node1"), False, False)
    with pytest.raises(XenAPI.Failure) as failure:
        xenapi.VM.power_state_reset(vm)
    assert failure.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]


def test_a_host_that_comes_back_after_a_reboot_has_lost_its_vms(simulator, xenapi):
    vm = new_vm(xenapi)
    xenapi.VM.start_on(vm, host_named(xenapi, "node2"), False, False)
    simulator.control.fail_host("node2")
    simulator.control.recover_host("node2")
    assert xenapi.VM.get_power_state(vm) == "Halted"


def test_the_guest_ip_appears_a_delay_after_boot_on_the_simulators_clock():
    clock = ManualClock()
    with run_simulator(hosts=1, clock=clock, guest_ip_delay=30.0) as sim:
        xenapi = login(sim)
        vm = new_vm(xenapi)
        xenapi.VM.start_on(vm, xenapi.host.get_all()[0], False, False)
        clock.advance(29.0)
        assert xenapi.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
        clock.advance(1.0)
        metrics = xenapi.VM.get_guest_metrics(vm)
        assert xenapi.VM_guest_metrics.get_networks(metrics) == {"0/ip": "10.10.0.10", "0/ipv4/0": "10.10.0.10"}
        xenapi.VM.hard_shutdown(vm)
        assert xenapi.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"


def test_a_silenced_guest_never_reports_an_ip():
    clock = ManualClock()
    with run_simulator(hosts=1, clock=clock, guest_ip_delay=1.0) as sim:
        xenapi = login(sim)
        vm = new_vm(xenapi, "quiet")
        sim.control.silence_guest("quiet")
        xenapi.VM.start_on(vm, xenapi.host.get_all()[0], False, False)
        clock.advance(3600)
        assert xenapi.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"


def test_same_seed_same_pool():
    def snapshot():
        with run_simulator(hosts=2, seed=42) as sim:
            xenapi = login(sim)
            return sorted((r["name_label"], r["uuid"]) for r in xenapi.host.get_all_records().values())

    assert snapshot() == snapshot()


def test_custom_hosts():
    with run_simulator(hosts=[HostSpec("big", cpus=16, guest_memory_mb=65536)]) as sim:
        xenapi = login(sim)
        (host,) = xenapi.host.get_all()
        assert int(xenapi.host.compute_free_memory(host)) == 64 * GiB


def test_serve_runs_a_simulator_until_stopped(eventually):
    stop, announced = threading.Event(), []
    server = threading.Thread(target=serve, kwargs={"bind": "127.0.0.1:0", "hosts": 2, "announce": announced.append,
                                                    "stop": stop, "password": "secret"})
    server.start()
    eventually(lambda: announced)
    session = XenAPI.Session(re.search(r"http://\S+/", announced[0])[0])
    session.xenapi.login_with_password("root", "secret", "1.2", "pex-tests")
    assert len(session.xenapi.host.get_all()) == 2
    stop.set()
    server.join(5)
    assert not server.is_alive()


class TestEventFrom:
    def test_the_empty_token_dumps_every_object_as_add(self, xenapi):
        batch = xenapi.event_from(["host", "host_metrics"], "", 5.0)
        assert {e["operation"] for e in batch["events"]} == {"add"}
        assert {e["class"] for e in batch["events"]} == {"host", "host_metrics"}
        assert batch["valid_ref_counts"] == {"host": 5, "host_metrics": 5}
        assert all("snapshot" in e and e["ref"].startswith("OpaqueRef:") for e in batch["events"])
        assert len(batch["token"]) == 41 and batch["token"][20] == ","

    def test_blocks_until_timeout_when_nothing_changes(self, xenapi):
        token = xenapi.event_from(["vm"], "", 1.0)["token"]
        started = time.monotonic()
        batch = xenapi.event_from(["vm"], token, 0.3)
        assert batch["events"] == [] and time.monotonic() - started >= 0.29
        assert batch["token"] >= token

    def test_wakes_up_on_a_change_and_coalesces_per_object(self, simulator, xenapi):
        vm = new_vm(xenapi)
        token = xenapi.event_from(["vm"], "", 1.0)["token"]
        other = login(simulator)
        results = []
        waiter = threading.Thread(target=lambda: results.append(xenapi.event_from(["vm"], token, 5.0)))
        waiter.start()
        time.sleep(0.1)
        other.VM.set_name_label(vm, "renamed")
        waiter.join(5)
        (event,) = [e for e in results[0]["events"] if e["ref"] == vm]
        assert event["operation"] == "mod" and event["snapshot"]["name_label"] == "renamed"

        other.VM.set_name_label(vm, "again")
        other.VM.set_name_label(vm, "and again")
        batch = xenapi.event_from(["vm"], results[0]["token"], 1.0)
        assert [(e["ref"], e["snapshot"]["name_label"]) for e in batch["events"]] == [(vm, "and again")]

    def test_deletions_and_short_lived_objects(self, xenapi):
        vm = new_vm(xenapi)
        token = xenapi.event_from(["vm"], "", 1.0)["token"]
        xenapi.VM.destroy(vm)
        temporary = xenapi.VM.clone(xenapi.VM.get_by_name_label(TEMPLATE)[0], "temporary")
        xenapi.VM.destroy(temporary)
        batch = xenapi.event_from(["vm"], token, 1.0)
        assert [(e["ref"], e["operation"]) for e in batch["events"]] == [(vm, "del")]
        assert "snapshot" not in batch["events"][0]

    def test_single_object_subscriptions(self, xenapi):
        first, second = new_vm(xenapi, "first"), new_vm(xenapi, "second")
        token = xenapi.event_from([f"vm/{second}"], "", 1.0)["token"]
        xenapi.VM.set_name_label(first, "x")
        xenapi.VM.set_name_label(second, "y")
        batch = xenapi.event_from([f"vm/{second}"], token, 1.0)
        assert [e["ref"] for e in batch["events"]] == [second]

    def test_bad_tokens_and_subscriptions(self, xenapi):
        with pytest.raises(XenAPI.Failure) as token:
            xenapi.event_from(["vm"], "not-a-token", 1.0)
        assert token.value.details == ["EVENT_FROM_TOKEN_PARSE_FAILURE", "not-a-token"]
        with pytest.raises(XenAPI.Failure) as subscription:
            xenapi.event_from(["spaceship"], "", 1.0)
        assert subscription.value.details == ["EVENT_SUBSCRIPTION_PARSE_FAILURE", "spaceship"]

    def test_a_guest_ip_report_wakes_a_waiting_call(self, xenapi):
        vm = new_vm(xenapi)
        token = xenapi.event_from(["vm_guest_metrics"], "", 1.0)["token"]
        xenapi.VM.start_on(vm, host_named(xenapi, "node1"), False, False)
        batch = xenapi.event_from(["vm_guest_metrics"], token, 5.0)
        assert batch["events"][0]["snapshot"]["networks"]["0/ip"].startswith("10.10.")
