"""Every fault the simulator can inject reaches PEX as the right adapter exception or change."""

from __future__ import annotations

import time

import pytest

from pex.adapters.xen.changes import GuestIpReported, HostLivenessChanged, VmPowerStateChanged
from pex.adapters.xen.errors import (
    XenAuthError,
    XenCapacityError,
    XenError,
    XenHostDownError,
    XenNotFoundError,
    XenPowerStateError,
    XenTaskTimeout,
    XenTransportError,
)
from pex.adapters.xen.records import PowerState

pytestmark = pytest.mark.xen

TEMPLATE = "PEX Debian Etch 4.0 Template"


def create(dispatcher, instance_id, host="node1", memory_mb=768):
    return dispatcher.create_vm(instance_id, f"pex-{instance_id}", TEMPLATE, host, 1, memory_mb, 10)


class TestHostDown:
    def test_operations_on_its_vms_are_host_down_errors(self, simulator, dispatcher):
        create(dispatcher, "on-dead-host", host="node3")
        simulator.control.fail_host("node3")

        with pytest.raises(XenHostDownError) as error:
            dispatcher.clean_shutdown("on-dead-host")

        assert error.value.code == "HOST_OFFLINE"
        assert error.value.params == [simulator.control.host_ref("node3")]
        assert dispatcher.power_state("on-dead-host") == PowerState.RUNNING  # as xapi believes

    def test_starting_on_it_is_a_host_down_error(self, simulator, dispatcher):
        simulator.control.fail_host("node2")
        with pytest.raises(XenHostDownError) as error:
            create(dispatcher, "nowhere", host="node2")
        assert error.value.code == "HOST_NOT_LIVE"
        assert [h.live for h in dispatcher.hosts()] == [True, False, True, True, True]

    def test_the_watcher_reports_the_host_lost(self, simulator, watcher, watch_for):
        watcher.poll()  # initial sync
        simulator.control.fail_host("node4")
        changes = watch_for(watcher, lambda c: isinstance(c, HostLivenessChanged))
        (lost,) = [c for c in changes if isinstance(c, HostLivenessChanged)]
        assert (lost.host_name, lost.live, lost.lost, lost.available) == ("node4", False, True, False)

        simulator.control.recover_host("node4")
        changes = watch_for(watcher, lambda c: isinstance(c, HostLivenessChanged))
        assert [c.live for c in changes if isinstance(c, HostLivenessChanged)] == [True]

    def test_its_vms_can_be_reset_and_restarted_elsewhere_or_destroyed(self, simulator, dispatcher):
        create(dispatcher, "rescued", host="node1")
        create(dispatcher, "abandoned", host="node1", memory_mb=256)
        simulator.control.fail_host("node1")

        dispatcher.power_state_reset("rescued")
        dispatcher.start("rescued", "node2")
        assert dispatcher.find_vm("rescued").host_name == "node2"

        with pytest.raises(XenHostDownError):
            dispatcher.destroy("abandoned")
        assert dispatcher.destroy("abandoned", reset_if_host_down=True) is True


class TestInjectedFailures:
    @pytest.mark.parametrize(("error", "expected"), [
        (["HOST_NOT_ENOUGH_FREE_MEMORY", "1", "0"], XenCapacityError),
        (["NO_HOSTS_AVAILABLE"], XenCapacityError),
        (["OTHER_OPERATION_IN_PROGRESS", "VM", "OpaqueRef:x", "clean_shutdown", "OpaqueRef:t"], XenPowerStateError),
        (["CANNOT_CONTACT_HOST", "OpaqueRef:h"], XenHostDownError),
        (["HANDLE_INVALID", "VM", "OpaqueRef:x"], XenNotFoundError),
        (["BOOTLOADER_FAILED", "OpaqueRef:x", "no kernel"], XenError),
    ])
    def test_a_failed_start_is_mapped_by_its_code(self, simulator, dispatcher, error, expected):
        simulator.control.fail_next("VM.start_on", error)
        with pytest.raises(expected) as raised:
            create(dispatcher, "injected")
        assert raised.value.details == error
        # The fault was one-shot: retrying the same create finishes the job.
        assert create(dispatcher, "injected").power_state == PowerState.RUNNING

    def test_busy_vms_are_retryable(self, simulator, dispatcher):
        create(dispatcher, "busy")
        simulator.control.fail_next("VM.clean_shutdown", ["OTHER_OPERATION_IN_PROGRESS", "VM", "r", "suspend", "t"])
        with pytest.raises(XenPowerStateError) as error:
            dispatcher.clean_shutdown("busy")
        assert error.value.retryable
        dispatcher.clean_shutdown("busy")

    def test_a_genuinely_busy_vm(self, simulator, dispatcher, xenapi, eventually):
        create(dispatcher, "really-busy")
        vm = xenapi.VM.get_by_uuid(dispatcher.find_vm("really-busy").uuid)
        simulator.control.set_latency("VM.clean_reboot", 0.5)
        task = xenapi.Async.VM.clean_reboot(vm)
        eventually(lambda: xenapi.VM.get_current_operations(vm))
        with pytest.raises(XenPowerStateError) as error:
            dispatcher.suspend("really-busy")
        assert error.value.code == "OTHER_OPERATION_IN_PROGRESS" and error.value.retryable
        eventually(lambda: xenapi.task.get_status(task) == "success")

    def test_synchronous_calls_fail_too(self, simulator, dispatcher):
        simulator.control.fail_next("host.get_all_records", ["INTERNAL_ERROR", "db locked"], times=2)
        for _ in range(2):
            with pytest.raises(XenError) as error:
                dispatcher.hosts()
            assert type(error.value) is XenError and error.value.params == ["db locked"]
        assert len(dispatcher.hosts()) == 5


class TestTransport:
    def test_latency_beyond_the_socket_timeout_is_a_transport_error(self, simulator, make_dispatcher):
        dispatcher = make_dispatcher(timeout=0.2)
        dispatcher.hosts()  # logged in
        simulator.control.set_latency("host.get_all_records", 1.0)
        started = time.monotonic()
        with pytest.raises(XenTransportError):
            dispatcher.hosts()
        assert time.monotonic() - started < 0.9
        simulator.control.set_latency("host.get_all_records", 0)
        assert len(dispatcher.hosts()) == 5  # the same session carries on

    def test_a_slow_task_times_out_without_blocking_the_socket(self, simulator, make_dispatcher):
        dispatcher = make_dispatcher(timeout=0.5, task_timeout=0.2)
        create(dispatcher, "slow")
        simulator.control.set_latency("VM.clean_shutdown", 1.0)
        with pytest.raises(XenTaskTimeout):
            dispatcher.clean_shutdown("slow")

    def test_a_dropped_connection_is_a_transport_error(self, simulator, dispatcher):
        dispatcher.hosts()
        # The stdlib client retries once on a reused connection, so drop twice.
        simulator.control.drop_connection("host.get_all_records", times=2)
        with pytest.raises(XenTransportError):
            dispatcher.hosts()
        assert len(dispatcher.hosts()) == 5

    def test_an_http_500_is_a_transport_error(self, simulator, dispatcher):
        simulator.control.http_error("host.get_all_records")
        with pytest.raises(XenTransportError, match="ProtocolError"):
            dispatcher.hosts()

    def test_an_unreachable_pool_is_a_transport_error(self, simulator, make_dispatcher):
        dispatcher = make_dispatcher(url="http://127.0.0.1:9/", timeout=1.0)
        with pytest.raises(XenTransportError):
            dispatcher.hosts()


class TestLogin:
    def test_wrong_credentials_are_an_auth_error(self, make_dispatcher):
        with pytest.raises(XenAuthError) as error:
            make_dispatcher(password="wrong").hosts()
        assert error.value.params == ["root", "Authentication failure"]

    def test_a_pool_member_redirects_to_the_master(self, simulator, make_dispatcher):
        host, port = simulator.address
        simulator.control.redirect_next_login()  # answers HOST_IS_SLAVE with node1's 127.0.0.1
        dispatcher = make_dispatcher(url=f"http://localhost:{port}/")
        assert len(dispatcher.hosts()) == 5
        assert dispatcher.url == f"http://127.0.0.1:{port}/"

    def test_expired_sessions_are_renewed_without_the_caller_noticing(self, simulator, dispatcher, watcher):
        create(dispatcher, "renewed")
        watcher.poll()
        simulator.control.expire_sessions()
        dispatcher.hard_shutdown("renewed")
        changes = watcher.poll()
        assert [c.power_state for c in changes if isinstance(c, VmPowerStateChanged)] == [PowerState.HALTED]

    def test_endless_redirects_give_up(self, simulator, make_dispatcher):
        simulator.control.redirect_next_login(times=10)
        with pytest.raises(XenError) as error:
            make_dispatcher().hosts()
        assert error.value.code == "PEX_TOO_MANY_REDIRECTS"


class TestGuests:
    def test_a_crashed_vm_is_reported_halted(self, simulator, dispatcher, watcher, watch_for):
        create(dispatcher, "crashy")
        watcher.poll()
        simulator.control.crash_vm("crashy")
        changes = watch_for(watcher, lambda c: isinstance(c, VmPowerStateChanged))
        (crash,) = [c for c in changes if isinstance(c, VmPowerStateChanged)]
        assert (crash.instance_id, crash.previous, crash.power_state) == ("crashy", "Running", "Halted")
        assert dispatcher.power_state("crashy") == PowerState.HALTED

    def test_a_shutdown_from_inside_is_reported_halted(self, simulator, dispatcher, watcher, watch_for):
        create(dispatcher, "poweroff")
        watcher.poll()
        simulator.control.shutdown_vm_from_inside("poweroff")
        changes = watch_for(watcher, lambda c: isinstance(c, VmPowerStateChanged))
        assert [c.power_state for c in changes if isinstance(c, VmPowerStateChanged)] == [PowerState.HALTED]

    def test_a_guest_that_never_reports_has_no_ip(self, simulator, dispatcher, watcher):
        simulator.control.silence_guest("pex-mute")
        create(dispatcher, "mute")
        changes = []
        deadline = time.monotonic() + 0.5  # ten times the boot delay
        while time.monotonic() < deadline:
            changes += watcher.poll()
        assert dispatcher.ip_address("mute") is None
        assert not [c for c in changes if isinstance(c, GuestIpReported)]
        simulator.control.unsilence_guest("pex-mute")
        assert dispatcher.find_vm("mute").power_state == PowerState.RUNNING
