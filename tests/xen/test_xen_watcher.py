"""The event watcher turns event.from into PEX-level changes, and resyncs when it loses its place."""

from __future__ import annotations

import threading

import pytest

from pex.adapters.xen.changes import (
    GuestIpReported,
    HostLivenessChanged,
    VmMigrated,
    VmPowerStateChanged,
    VmRemoved,
    WatcherResynced,
)
from pex.adapters.xen.errors import XenTransportError
from pex.adapters.xen.records import PowerState

pytestmark = pytest.mark.xen

TEMPLATE = "PEX Debian Etch 4.0 Template"


def create(dispatcher, instance_id, host="node1"):
    return dispatcher.create_vm(instance_id, f"pex-{instance_id}", TEMPLATE, host, 1, 512, 4)


def of_type(changes, cls):
    return [c for c in changes if isinstance(c, cls)]


def test_the_first_poll_describes_the_current_state(dispatcher, watcher, eventually):
    create(dispatcher, "existing", host="node2")
    eventually(lambda: dispatcher.ip_address("existing"))

    changes = watcher.poll()

    hosts = of_type(changes, HostLivenessChanged)
    assert [h.host_name for h in hosts] == ["node1", "node2", "node3", "node4", "node5"]
    assert all(h.live and h.previous_live is None and not h.lost for h in hosts)
    (vm,) = of_type(changes, VmPowerStateChanged)
    assert (vm.instance_id, vm.power_state, vm.previous, vm.host_name) == ("existing", "Running", None, "node2")
    (ip,) = of_type(changes, GuestIpReported)
    assert ip.instance_id == "existing" and ip.ip == dispatcher.ip_address("existing")


def test_a_vms_life_as_changes(dispatcher, watcher, watch_for):
    watcher.poll()
    create(dispatcher, "watched")
    changes = watch_for(watcher, lambda c: isinstance(c, GuestIpReported))
    assert [(c.power_state, c.previous) for c in of_type(changes, VmPowerStateChanged)] == [("Running", None)]

    dispatcher.migrate("watched", "node5")
    changes = watch_for(watcher, lambda c: isinstance(c, VmMigrated))
    (moved,) = of_type(changes, VmMigrated)
    assert moved.host_name == "node5"

    dispatcher.suspend("watched")
    watch_for(watcher, lambda c: isinstance(c, VmPowerStateChanged) and c.power_state == PowerState.SUSPENDED)

    vm_uuid = moved.vm_uuid
    dispatcher.destroy("watched")
    changes = watch_for(watcher, lambda c: isinstance(c, VmRemoved))
    assert of_type(changes, VmRemoved) == [VmRemoved("watched", vm_uuid)]


def test_vms_without_a_pex_tag_are_ignored(xenapi, watcher):
    watcher.poll()
    vm = xenapi.VM.clone(xenapi.VM.get_by_name_label(TEMPLATE)[0], "not-ours")
    xenapi.VM.provision(vm)
    xenapi.VM.start(vm, False, False)
    assert not [c for c in watcher.poll() + watcher.poll() if not isinstance(c, HostLivenessChanged)]


def test_a_disabled_host_is_reported_unavailable(xenapi, watcher, watch_for):
    watcher.poll()
    xenapi.host.disable(xenapi.host.get_by_name_label("node2")[0])
    changes = watch_for(watcher, lambda c: isinstance(c, HostLivenessChanged))
    (change,) = of_type(changes, HostLivenessChanged)
    assert (change.live, change.enabled, change.available, change.lost) == (True, False, False, False)


def test_a_rejected_token_resyncs_and_reports_what_changed_meanwhile(simulator, dispatcher, watcher):
    create(dispatcher, "meanwhile")
    watcher.poll()
    simulator.control.fail_next("event.from", ["EVENT_FROM_TOKEN_PARSE_FAILURE", "whatever"])
    assert watcher.poll() == []
    assert watcher.token == ""
    simulator.control.crash_vm("meanwhile")

    changes = watcher.poll()

    assert changes[0] == WatcherResynced("xapi answered EVENT_FROM_TOKEN_PARSE_FAILURE")
    (crash,) = of_type(changes, VmPowerStateChanged)
    assert (crash.previous, crash.power_state) == ("Running", "Halted")
    assert not of_type(changes, HostLivenessChanged)  # unchanged hosts are not repeated


def test_a_lost_connection_resyncs(simulator, dispatcher, watcher):
    create(dispatcher, "reconnect")
    watcher.poll()
    simulator.control.drop_connection("event.from", times=2)
    with pytest.raises(XenTransportError):
        watcher.poll()
    simulator.control.crash_vm("reconnect")
    changes = watcher.poll()
    assert isinstance(changes[0], WatcherResynced)
    assert [c.power_state for c in of_type(changes, VmPowerStateChanged)] == [PowerState.HALTED]


def test_changes_rides_out_transport_errors_until_stopped(simulator, dispatcher, watcher):
    watcher.poll()
    simulator.control.http_error("event.from", times=3)
    stop = threading.Event()
    seen = []
    for change in watcher.changes(stop):
        seen.append(change)
        if isinstance(change, WatcherResynced):
            create(dispatcher, "after-outage")
        if isinstance(change, VmPowerStateChanged):
            stop.set()
    assert isinstance(seen[0], WatcherResynced)
    assert seen[-1].instance_id == "after-outage"


def test_the_watcher_has_its_own_session(simulator, dispatcher, watcher):
    dispatcher.hosts()
    before = simulator.control.state()["sessions"]
    watcher.poll()
    assert simulator.control.state()["sessions"] == before + 1
    watcher.close()
    assert simulator.control.state()["sessions"] == before
