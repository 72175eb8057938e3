"""The life of a reservation's VMs, from the start of its interval to its end (paper §3.1): once
against the simulated pool through the real XenAPI client, with the monitors reporting the
guests' addresses; every other rule at the service layer, with the in-memory enactment."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.bootstrap import build_application
from pex.domain.instance import IllegalInstanceAction
from pex.domain.values import State
from pex.settings import Settings
from tests.support.world import HOUR


@pytest.mark.xen
def test_a_reservation_runs_its_vms_on_the_booked_hosts_from_start_to_end(world):
    rid = world.reserve(size="XLARGE", fixed=2, hours=2)
    booked = sorted(a.node for a in world.app.get_reservation(rid).offer.placement)

    assert world.tick().dispatched == []  # not yet
    assert [v.status for v in world.instances(rid)] == ["SCHEDULED", "SCHEDULED"]
    assert world.vms() == []

    world.advance(HOUR)
    assert sorted(world.tick().dispatched) == ["start", "start"]
    views = world.wait_for_ips(rid)
    assert [v.status for v in views] == ["RUNNING", "RUNNING"]
    assert sorted(v.node for v in views) == booked
    assert sorted((vm["host"], vm["power_state"]) for vm in world.vms()) == [(n, "Running") for n in booked]
    assert all(v.ip_address.startswith("10.10.") for v in views)

    world.advance(2 * HOUR)
    report = world.tick()
    assert sorted(report.dispatched) == ["end", "end"] and report.expired == 1
    assert world.app.get_reservation(rid).state == State.EXPIRED
    assert [v.status for v in world.instances(rid)] == ["ENDED", "ENDED"]
    assert world.vms() == [] and world.control.state()["vdis"] == 0
    assert world.events(views[0].id) == [
        "Scheduled", "DispatchClaimed", "Provisioned", "Started", "IpAddressReported", "DispatchClaimed", "Destroyed",
    ]


def test_ticking_again_does_nothing_twice(memory_world):
    rid = memory_world.reserve(fixed=2)
    memory_world.advance(HOUR)
    assert len(memory_world.tick().dispatched) == 2
    assert memory_world.tick().idle and memory_world.tick().idle
    assert len(memory_world.vms()) == 2
    memory_world.advance(3 * HOUR)
    memory_world.tick()
    assert memory_world.tick().idle
    assert memory_world.app.get_reservation(rid).state == State.EXPIRED


def test_auto_start_needs_no_activation(memory_world):
    rid = memory_world.reserve(auto_start=True, activate=False)
    memory_world.advance(HOUR)
    assert memory_world.tick().dispatched == ["start"]
    assert memory_world.app.get_reservation(rid).state == State.CONFIRMED
    assert memory_world.instance(rid).status == "RUNNING"


def test_a_reservation_never_activated_never_runs_and_expires_at_its_end(memory_world):
    rid = memory_world.reserve(activate=False)
    memory_world.advance(HOUR)
    assert memory_world.tick().dispatched == []
    memory_world.advance(2 * HOUR)
    assert memory_world.tick().expired == 1
    assert memory_world.app.get_reservation(rid).state == State.EXPIRED
    view = memory_world.instance(rid)
    assert view.status == "ENDED" and "Provisioned" not in memory_world.events(view.id)
    assert memory_world.vms() == []


def test_a_late_activation_starts_the_vms_at_once(memory_world):
    rid = memory_world.reserve(activate=False)
    memory_world.advance(90 * timedelta(minutes=1))
    memory_world.tick()
    memory_world.app.activate(rid)
    assert memory_world.tick().dispatched == ["start"]


def test_a_start_missed_while_no_worker_ran_happens_at_the_first_tick(memory_world):
    rid = memory_world.reserve(hours=2)
    memory_world.advance(2 * HOUR + timedelta(minutes=30))  # the worker was down for the whole start
    assert memory_world.tick().dispatched == ["start"]
    assert memory_world.instance(rid).status == "RUNNING"


def test_a_worker_down_for_the_whole_interval_starts_nothing_and_ends_it(memory_world):
    memory_world.reserve(hours=2)
    memory_world.advance(4 * HOUR)
    report = memory_world.tick()
    assert report.dispatched == ["end"] and report.expired == 1
    assert memory_world.vms() == []


def test_the_user_stops_starts_reboots_and_deletes_an_instance(memory_world):
    rid = memory_world.reserve(fixed=2)
    memory_world.advance(HOUR)
    memory_world.tick()
    first, second = memory_world.instances(rid)

    stopped = memory_world.app.stop_instance(first.id, "alice")
    assert (stopped.status, stopped.ip_address) == ("HALTED", None)
    assert memory_world.tick().idle  # a stopped VM is not started again
    assert {vm["pex_instance"]: vm["power_state"] for vm in memory_world.vms()}[str(first.id)] == "Halted"

    assert memory_world.app.start_instance(first.id, "alice").status == "RUNNING"
    rebooted = memory_world.app.reboot_instance(first.id, "alice")
    assert rebooted.status == "RUNNING" and "Rebooted" in memory_world.events(first.id)

    deleted = memory_world.app.delete_instance(second.id, "alice")
    assert deleted.status == "DELETED"
    assert [vm["pex_instance"] for vm in memory_world.vms()] == [str(first.id)]
    assert memory_world.tick().idle

    memory_world.advance(2 * HOUR)
    assert memory_world.tick().expired == 1
    assert memory_world.vms() == []


def test_instance_actions_are_refused_when_they_make_no_sense(memory_world):
    rid = memory_world.reserve()
    view = memory_world.instance(rid)
    with pytest.raises(IllegalInstanceAction):
        memory_world.app.stop_instance(view.id)  # not started yet
    with pytest.raises(IllegalInstanceAction):
        memory_world.app.start_instance(view.id)  # before the interval
    memory_world.advance(HOUR)
    memory_world.tick()
    memory_world.app.stop_instance(view.id)
    with pytest.raises(IllegalInstanceAction):
        memory_world.app.reboot_instance(view.id)  # halted
    memory_world.advance(2 * HOUR)
    memory_world.tick()
    with pytest.raises(IllegalInstanceAction):
        memory_world.app.start_instance(view.id)  # over


def test_start_waits_for_activation(memory_world):
    rid = memory_world.reserve(activate=False)
    memory_world.advance(HOUR)
    with pytest.raises(IllegalInstanceAction, match="activate"):
        memory_world.app.start_instance(memory_world.instance(rid).id)


def test_users_touch_only_their_own_instances(memory_world):
    from pex.application import NotFound

    rid = memory_world.reserve(user="alice")
    memory_world.advance(HOUR)
    memory_world.tick()
    with pytest.raises(NotFound):
        memory_world.app.stop_instance(memory_world.instance(rid).id, "bob")


def test_deleting_an_auto_started_reservation_destroys_its_vms(memory_world):
    rid = memory_world.reserve(auto_start=True, activate=False, fixed=2)
    memory_world.advance(HOUR)
    memory_world.tick()
    assert len(memory_world.vms()) == 2
    memory_world.app.cancel(rid)  # confirmed, not activated: the user may still delete it
    report = memory_world.tick()
    assert sorted(report.dispatched) == ["end", "end"]
    assert memory_world.vms() == []
    assert {v.status for v in memory_world.instances(rid)} == {"ENDED"}


def test_requests_recorded_by_a_process_without_xen_are_carried_out_by_the_worker(make_memory_world, tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    worker = make_memory_world(database_url=url)
    rid = worker.reserve()
    worker.advance(HOUR)
    worker.tick()
    api = build_application(Settings(database_url=url), clock=worker.clock)  # like a gunicorn worker: no enactment
    try:
        view = api.stop_instance(worker.instance(rid).id, "alice")
        assert view.status == "RUNNING"  # recorded, not yet done
        assert worker.tick().dispatched == ["stop"]
        assert api.get_instance(view.id).status == "HALTED"
    finally:
        api.close()
