"""Nothing fails silently (issue 13, item 2): a start that keeps failing marks its instance
FAILED with the error and the time (API, history), is tried again with backoff only until its
end, the reservation expires at its end whatever its instances did, and the audit reports the
instance that should have run and never did. Against the simulator, through the real client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.domain.instance import FAILED_AFTER
from pex.domain.values import State
from pex.projections.audit import Auditor
from pex.projections.history import render_history
from pex.wire import instance_json
from pex.workers.index import EXPIRY_GRACE
from tests.support.world import HOUR, build_world

pytestmark = pytest.mark.xen

NO_MEMORY = ["HOST_NOT_ENOUGH_FREE_MEMORY", "805306368", "0"]


@pytest.fixture
def pool_world(simulator):
    world = build_world(simulator, pool=True)
    yield world
    for close in world.closers:
        close()


def fail_starts(world, rid, times: int) -> None:
    """Tick through `times` failed starts, each once its backoff is over."""
    for _ in range(times):
        world.tick()
        world.advance(timedelta(minutes=5))  # RETRY_MAX: every backoff is over by then


def test_a_start_that_keeps_failing_marks_the_instance_failed_with_the_error_and_the_time(pool_world):
    world = pool_world
    rid = world.reserve(size="SMALL", fixed=1, start_in=HOUR, hours=1)
    world.control.fail_next("VM.start_on", NO_MEMORY, times=1000)
    world.advance(HOUR)
    fail_starts(world, rid, FAILED_AFTER - 1)
    assert world.instance(rid).status == "SCHEDULED"  # a failure or two is not yet "keeps failing"
    fail_starts(world, rid, 1)
    view = world.instance(rid)
    assert view.status == "FAILED"
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in view.error
    wire = instance_json(world.app.get_instance(view.id))
    assert wire["status"] == "FAILED" and "HOST_NOT_ENOUGH_FREE_MEMORY" in wire["error"] and wire["failedAt"]
    assert "Failed" in render_history(world.app, rid)
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in render_history(world.app, rid)

    world.advance(HOUR)  # past its end: no more starts, the reservation expires
    report = world.tick()
    assert "start" not in report.dispatched
    assert world.app.get_reservation(rid).state == State.EXPIRED
    ended = world.instance(rid)
    assert ended.status == "ENDED" and "HOST_NOT_ENOUGH_FREE_MEMORY" in ended.error
    assert [vm for vm in world.vms() if vm["power_state"] == "Running"] == []
    claims = world.events(ended.id).count("DispatchClaimed")
    world.advance(HOUR)
    world.tick()
    assert world.events(ended.id).count("DispatchClaimed") == claims  # nothing tried after the end

    audit = Auditor(world.app).run()
    [violation] = audit.by_promise()["instances"]
    assert "should have run" in violation.message and "never did" in violation.message
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in violation.message


def test_a_failed_instance_runs_once_its_start_can_succeed_and_its_error_is_gone(pool_world):
    world = pool_world
    rid = world.reserve(size="SMALL", fixed=1, start_in=HOUR, hours=2)
    world.control.fail_next("VM.start_on", NO_MEMORY, times=FAILED_AFTER)
    world.advance(HOUR)
    fail_starts(world, rid, FAILED_AFTER)
    assert world.instance(rid).status == "FAILED"
    world.tick()  # the fault is spent: the retry starts it
    [view] = world.wait_for_ips(rid)
    assert view.status == "RUNNING" and view.error is None and view.failed_at is None
    world.advance(2 * HOUR)
    world.tick()
    assert Auditor(world.app).run().ok


def test_the_audit_reports_a_vm_that_ran_where_no_booking_was(pool_world):
    world = pool_world
    rid = world.reserve(size="SMALL", fixed=1, start_in=HOUR, hours=1)
    world.advance(HOUR)
    world.tick()
    [view] = world.wait_for_ips(rid)
    other = next(n.name for n in world.app.nodes() if n.name != view.node)
    world.dispatcher.migrate(view.id, other)  # moved behind PEX's back
    world.settle()
    assert "Relocated" in world.events(view.id), world.events(view.id)
    world.advance(HOUR)
    world.tick()
    report = Auditor(world.app).run()
    assert any(f"ran on {other}, where its reservation had no booking" in v.message
               for v in report.by_promise().get("instances", [])), report.render()


def test_a_reservation_expires_after_its_end_even_while_its_vms_removal_keeps_failing(pool_world):
    world = pool_world
    rid = world.reserve(size="SMALL", fixed=1, start_in=HOUR, hours=1)
    world.advance(HOUR)
    world.tick()
    world.wait_for_ips(rid)
    world.control.fail_next("VM.destroy", ["INTERNAL_ERROR", "disk busy"], times=1000)
    world.advance(HOUR)
    assert world.tick().dispatched == ["end failed"]
    assert world.app.get_reservation(rid).state == State.ACTIVATED  # its removal has a chance first
    world.advance(EXPIRY_GRACE)
    report = world.tick()
    assert report.expired == 1 and world.app.get_reservation(rid).state == State.EXPIRED
    world.control.clear_faults()
    world.advance(timedelta(minutes=5))
    assert world.tick().dispatched == ["end"]  # the removal goes on after the expiry
    assert world.vms() == [] and world.instance(rid).status == "ENDED"
