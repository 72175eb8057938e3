"""An activated reservation is extended while its VMs run: they keep running past the agreed
end, and the timer worker ends them at the new end, not the old one (in-memory enactment)."""

from __future__ import annotations

from datetime import timedelta

from pex.domain.values import Reply, State
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from tests.support.world import HOUR


def test_the_vms_of_an_extended_reservation_run_on_and_end_at_the_new_end(memory_world):
    world = memory_world
    rid = world.reserve(size="XLARGE", fixed=2, hours=2)  # from 09:00 to 11:00
    world.advance(HOUR)
    assert sorted(world.tick().dispatched) == ["start", "start"]
    old_end = world.app.get_reservation(rid).offer.terms.end
    world.advance(old_end - world.clock() - timedelta(minutes=10))  # 10:50
    assert world.app.extend(rid, old_end + 2 * HOUR, user_id="alice").reply == Reply.ACCEPT
    world.tick()  # the index follows the offer: nothing to do
    assert world.app.respond(rid, Reply.CONFIRM).reply == Reply.REQUEST_SUCCESS

    world.advance(timedelta(minutes=20))  # past the old end
    assert world.tick().dispatched == []
    assert [v["power_state"] for v in world.vms()] == ["Running", "Running"]
    assert world.app.get_reservation(rid).state == State.ACTIVATED
    assert {v.end for v in world.instances(rid)} == {old_end + 2 * HOUR}

    world.advance(old_end + 2 * HOUR - world.clock() - timedelta(minutes=1))
    assert world.tick().dispatched == []  # a minute before the new end
    world.advance(timedelta(minutes=1))  # the new end
    assert sorted(world.tick().dispatched) == ["end", "end"]
    assert world.vms() == []
    assert [v.status for v in world.instances(rid)] == ["ENDED", "ENDED"]
    world.tick()
    assert world.app.get_reservation(rid).state == State.EXPIRED
    read_models = ReadModels(world.app)
    read_models.catch_up()
    report = Auditor(world.app, read_models).run()
    assert report.ok, report.violations
