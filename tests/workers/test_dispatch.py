"""The worker's dispatch (claim → carry out through the enactment port → record) at the
service layer, with the in-memory enactment: no simulator, no XenAPI."""

from __future__ import annotations

from datetime import timedelta

import pytest
from eventsourcing.persistence import OperationalError

from pex.domain.values import Reply, Terms
from tests.support.world import HOUR
from tests.support.xen import TEMPLATE


@pytest.fixture
def world(memory_world):
    # As the tests of the dispatch itself want it: a user's request waits for the tick.
    memory_world.app.dispatch_now = None
    return memory_world.app, memory_world.clock, memory_world.enactment, memory_world.dispatch, memory_world.timer


def reserve(app, clock, fixed: int = 1):
    start = clock() + HOUR
    proposed = app.propose("alice", Terms("SMALL", TEMPLATE, fixed, 0, start, start + 2 * HOUR))
    rid = proposed.outcome.reservation.id
    assert proposed.outcome.reply == Reply.ACCEPT
    app.confirm(rid)
    app.activate(rid)
    return rid


def test_at_the_start_the_tick_starts_each_vm_through_the_enactment_and_records_it(world):
    app, clock, enactment, _, timer = world
    rid = reserve(app, clock, fixed=2)

    clock.advance(HOUR)
    report = timer.tick()

    assert sorted(report.dispatched) == ["start", "start"]
    views = [v for v in app.list_instances() if v.reservation_id == rid]
    assert {v.status for v in views} == {"RUNNING"}
    assert {enactment.vms[v.id].power_state for v in views} == {"Running"}
    assert all(v.ip_address == enactment.vms[v.id].ip_address for v in views)


def test_a_dispatch_with_nothing_due_does_nothing(world):
    app, clock, enactment, dispatch, _ = world
    rid = reserve(app, clock)
    instance = next(v for v in app.list_instances() if v.reservation_id == rid)

    assert dispatch(instance.id) is None  # an hour before its start
    assert enactment.actions == []


def test_a_failed_start_is_recorded_and_done_again_on_a_later_tick(world):
    app, clock, enactment, dispatch, timer = world
    rid = reserve(app, clock)
    instance = next(v for v in app.list_instances() if v.reservation_id == rid)
    enactment.fail("start")

    clock.advance(HOUR)
    assert timer.tick().dispatched == ["start failed"]
    assert app.get_instance(instance.id).status != "RUNNING"
    assert "DispatchFailed" in [type(e).__name__ for e in app.events.get(instance.id)]

    clock.advance(timedelta(minutes=10))  # past the backoff
    assert timer.tick().dispatched == ["start"]
    assert app.get_instance(instance.id).status == "RUNNING"
    assert len(enactment.vms) == 1


def test_a_start_the_store_fails_to_record_once_is_recorded_all_the_same_and_run_once(world, monkeypatch):
    """The store refuses the record of a VM just started (SQLite busy, a failover): asked
    again, it records it; given up, the VM ran unknown to PEX until the claim's lease ended."""
    app, clock, enactment, _, timer = world
    rid = reserve(app, clock)
    instance = next(v for v in app.list_instances() if v.reservation_id == rid)
    started, insert_events = [], app.recorder.insert_events

    def store_fails_once_after_the_start(*args, **kwargs):
        if enactment.vms and not started:
            started.append(True)
            raise OperationalError("database is locked")
        return insert_events(*args, **kwargs)

    monkeypatch.setattr(app.recorder, "insert_events", store_fails_once_after_the_start)
    clock.advance(HOUR)
    assert timer.tick().dispatched == ["start"]
    assert started == [True]
    assert app.get_instance(instance.id).status == "RUNNING"
    assert enactment.actions.count(("start", instance.id)) == 1


def test_a_user_stop_in_a_worker_process_is_carried_out_at_once(world):
    app, clock, enactment, dispatch, timer = world
    app.dispatch_now = dispatch
    rid = reserve(app, clock)
    clock.advance(HOUR)
    timer.tick()
    instance = next(v for v in app.list_instances() if v.reservation_id == rid)

    stopped = app.stop_instance(instance.id, "alice")

    assert stopped.status == "HALTED"
    assert enactment.vms[instance.id].power_state == "Halted"


def test_at_the_end_the_vms_are_removed_and_the_reservation_expires(world):
    app, clock, enactment, _, timer = world
    rid = reserve(app, clock)
    clock.advance(HOUR)
    timer.tick()

    clock.advance(2 * HOUR)
    timer.tick()

    assert enactment.vms == {}
    assert app.get_reservation(rid).state.value == "EXPIRED"
