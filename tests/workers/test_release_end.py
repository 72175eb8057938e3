"""A user releases an activated reservation early: at the next tick the worker ends its VMs
as at a natural end (shut down, destroyed), against the simulated pool through the real
XenAPI client, and the audit finds every run inside the interval that was used."""

from __future__ import annotations

import pytest

from pex.domain.values import State
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from tests.support.world import HOUR

pytestmark = pytest.mark.xen


def test_a_release_ends_the_running_vms_at_the_next_tick_and_the_audit_agrees(world):
    rid = world.reserve(size="XLARGE", fixed=2, hours=6)
    world.advance(HOUR)
    assert sorted(world.tick().dispatched) == ["start", "start"]
    world.wait_for_ips(rid)
    world.advance(HOUR)

    world.app.release(rid, by="alice", user_id="alice")
    assert sorted(world.tick().dispatched) == ["end", "end"]

    assert world.vms() == [] and world.control.state()["vdis"] == 0
    assert [v.status for v in world.instances(rid)] == ["ENDED", "ENDED"]
    assert world.app.get_reservation(rid).state == State.EXPIRED
    world.advance(HOUR)
    assert world.tick().idle
    read_models = ReadModels(world.app)
    read_models.catch_up()
    report = Auditor(world.app, read_models).run()
    assert report.ok, report.violations


def test_the_audit_finds_vms_left_running_after_a_release(world):
    rid = world.reserve(size="XLARGE", fixed=1, hours=6)
    world.advance(HOUR)
    assert world.tick().dispatched == ["start"]
    world.wait_for_ips(rid)
    world.app.release(rid, by="alice", user_id="alice")
    world.advance(HOUR)  # no worker ticked: the VM still runs an hour after the release
    world.app.initiate_reservation("bob")  # the log goes on
    read_models = ReadModels(world.app)
    read_models.catch_up()
    report = Auditor(world.app, read_models).run()
    assert [v.promise for v in report.violations] == ["instances"]
    assert "after its reservation's end" in report.violations[0].message
