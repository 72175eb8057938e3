"""Re-packing: a request that does not fit as asked may move bookings of other reservations
that have not started to other nodes, in the same atomic decision as its hold, recorded on
the moved reservations and instances, never over capacity, never a VM that was made."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from pex.application.ports import Enacted
from pex.bootstrap import build_application
from pex.domain import Reply, State, Terms
from pex.domain.instance import Instance, Status
from pex.domain.node import Node, node_id, peak_demand
from pex.domain.placement import Movable, Rearranged, repack
from pex.domain.values import Resources
from pex.projections.audit import Auditor
from pex.projections.capacity import CapacityTimeline
from pex.projections.readmodels import ReadModels
from pex.settings import Settings
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
H, DAY = timedelta(hours=1), timedelta(days=1)
START = T0 + DAY  # far beyond the prepare lead and the margin


def terms(size: str, fixed: int, start=START, duration=4 * H) -> Terms:
    return Terms(size, ETCH, fixed, 0, start, start + duration)


def book(app, t: Terms, user: str = "filler"):
    rid = app.initiate_reservation(user)
    outcome = app.submit_proposal(rid, t)
    assert outcome.reply == Reply.ACCEPT, outcome
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    return rid


def fragment(app) -> tuple:
    """Three nodes full, and two nodes with one MEDIUM each: 2 CPUs free on each of them, room
    for no XLARGE anywhere, though one MEDIUM moving over makes room for one."""
    book(app, terms("XLARGE", 3))
    first = book(app, terms("MEDIUM", 1), "bob")
    gone = book(app, terms("MEDIUM", 1), "carol")  # beside bob's, on the same node
    second = book(app, terms("MEDIUM", 1), "dave")
    app.cancel(gone)
    return first, second


def placement(app, rid):
    return {a.node: a.instances for a in app.get_reservation(rid).offer.placement}


def events(app, aggregate_id) -> list[str]:
    return [type(e).__name__ for e in app.events.get(aggregate_id)]


def audit(app):
    read_models = ReadModels(app)
    read_models.catch_up()
    return Auditor(app, read_models).run()


def test_a_request_that_fits_only_after_a_move_is_accepted_and_the_move_is_recorded(app):
    bob, dave = fragment(app)
    assert placement(app, bob).keys() != placement(app, dave).keys()

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1))

    assert outcome.reply == Reply.ACCEPT
    assert outcome.reservation.offer.terms.start == START
    moved = [r for r in (bob, dave) if events(app, r)[-1] == "PlacementChanged"]
    assert len(moved) == 1
    (mover,) = moved
    stayed = dave if mover == bob else bob
    assert placement(app, mover) == placement(app, stayed)  # both MEDIUMs on one node now
    instance = app.repository.get(app.get_reservation(mover).instance_ids[0])
    assert isinstance(instance, Instance) and instance.node == next(iter(placement(app, stayed)))
    assert events(app, instance.id)[-1] == "Repacked"
    assert instance.node not in placement(app, rid)  # it left the node the new request holds
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    for view in app.nodes():
        node = app.repository.get(node_id(view.name))
        assert peak_demand(node.live_allocations(T0), START, START + 4 * H).fits_in(node.capacity)
    report = audit(app)
    assert report.ok, report.render()


def test_without_re_packing_the_same_request_is_countered(app):
    fragment(app)
    app.repack = False

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1))

    assert outcome.reply == Reply.COUNTER
    assert outcome.reservation.offer.terms.start != START


def test_a_booking_whose_vm_was_prepared_stays_where_it_is(app, clock):
    bob, dave = fragment(app)
    clock.set(START - app.prepare_lead + timedelta(minutes=1))
    for rid in (bob, dave):  # a worker made both VMs ahead of their start, on their booked hosts
        for iid in app.get_reservation(rid).instance_ids:
            job = app.claim_dispatch(iid, "worker-1", timedelta(minutes=5))
            assert job is not None and job.action == "prepare"
            app.record_dispatch(job, Enacted(f"vm-{iid}", job.node), "worker-1")
            assert app.repository.get(iid).vm_uuid == f"vm-{iid}"
    app.prepare_lead = app.repack_margin = timedelta(0)  # as a process configured otherwise would

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1))

    assert outcome.reply == Reply.COUNTER
    assert all(events(app, r)[-1] != "PlacementChanged" for r in (bob, dave))


def test_a_booking_with_an_extension_offered_stays_where_it_is(app):
    # Its extension holds [end, new end) on the nodes it is on now, and confirming it books
    # [start, new end) there: moved elsewhere, that booking would land where nothing was checked.
    bob, dave = fragment(app)
    for rid, user in ((bob, "bob"), (dave, "dave")):
        assert app.extend(rid, START + 5 * H, user_id=user).reply == Reply.ACCEPT

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1))

    assert outcome.reply == Reply.COUNTER
    assert all(events(app, r)[-1] != "PlacementChanged" for r in (bob, dave))
    for r in (bob, dave):
        assert app.respond(r, Reply.CONFIRM).reply == Reply.REQUEST_SUCCESS
    report = audit(app)
    assert report.ok, report.render()


def test_a_booking_that_starts_within_the_prepare_lead_and_margin_stays(app, clock):
    soon = T0 + app.prepare_lead + app.repack_margin  # not after it: too close to move
    book(app, terms("XLARGE", 3, start=soon))
    book(app, terms("MEDIUM", 1, start=soon), "bob")
    gone = book(app, terms("MEDIUM", 1, start=soon), "carol")
    book(app, terms("MEDIUM", 1, start=soon), "dave")
    app.cancel(gone)

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1, start=soon))

    assert outcome.reply == Reply.COUNTER


def test_an_activated_reservation_not_started_yet_may_move_and_keeps_its_interval(app):
    bob, dave = fragment(app)
    app.activate(bob)
    app.activate(dave)
    before = {r: app.get_reservation(r).offer.terms for r in (bob, dave)}

    rid = app.initiate_reservation("alice")
    assert app.submit_proposal(rid, terms("XLARGE", 1)).reply == Reply.ACCEPT

    for r in (bob, dave):
        view = app.get_reservation(r)
        assert view.state == State.ACTIVATED and view.offer.terms == before[r]
        for iid in view.instance_ids:
            i = app.repository.get(iid)
            assert i.status == Status.SCHEDULED and (i.start, i.end) == (before[r].start, before[r].end)
    assert audit(app).ok


def test_the_pure_search_moves_a_booking_to_the_node_that_fills_up():
    timeline = CapacityTimeline()
    medium = Resources(2, 1536, 20)
    nodes = {name: Node(name=name, capacity=Resources(4, 4096, 200), at=T0) for name in ("a", "b")}
    bookings = {}
    for name, node in nodes.items():
        rid = node_id(f"booking-{name}")
        node.book(rid, START, START + 4 * H, 1, medium, T0)
        bookings[name] = rid
    for node in nodes.values():
        for event in node.collect_events():
            timeline.apply(event)
    movable = [Movable(bookings[n], n, START, START + 4 * H, 1, medium) for n in nodes]
    xlarge = Resources(4, 3584, 60)

    found = repack(timeline, xlarge, 1, START, START + 4 * H, T0, movable)

    assert found is not None and len(found.moves) == 1
    move = found.moves[0]
    assert (move.instances, move.start, move.end, move.per_instance) == (1, START, START + 4 * H, medium)
    assert [(a.node, a.instances) for a in found.placement] == [(move.from_node, 1)]
    view = Rearranged(timeline)
    view.move(move)
    assert view.free(move.to_node, START, START + 4 * H, T0) == Resources(0, 4096 - 2 * 1536, 160)
    assert repack(timeline, xlarge, 2, START, START + 4 * H, T0, movable) is None  # only one node can be emptied


def test_the_audit_tells_a_re_pack_of_an_instance_whose_vm_was_made(app, clock):
    bob, _ = fragment(app)
    clock.set(START - app.prepare_lead + timedelta(minutes=1))
    (iid,) = app.get_reservation(bob).instance_ids
    job = app.claim_dispatch(iid, "worker-1", timedelta(minutes=5))
    app.record_dispatch(job, Enacted(f"vm-{iid}", job.node), "worker-1")
    assert audit(app).ok
    instance = app.repository.get(iid)  # written past Instance.repack, which refuses it
    instance.trigger_event(Instance.Repacked, from_node=instance.node, to_node="node1", for_reservation=uuid4(), at=clock())
    app.save(instance)

    report = audit(app)

    assert any(
        v.promise == "instances" and "was re-packed" in v.message and "a VM had been made for it" in v.message
        for v in report.violations
    ), report.render()


def test_a_re_pack_that_races_a_change_to_the_instance_it_moves_loses_and_decides_again(tmp_path, clock, monkeypatch):
    """Another process changes the instance a re-pack is about to move (its user deletes it)
    between the decision and the save: the save loses on the instance's version, the decision
    runs again on what is stored now, and moves nothing that is not movable any more."""
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(Settings(database_url=url), clock=clock)
    other = build_application(Settings(database_url=url, create_tables=False, install_demo_pool=False), clock=clock)
    bob, dave = fragment(app)
    plan = type(app)._plan_moves
    raced: list = []

    def plan_then_race(self, moves, after, at):
        plans = plan(self, moves, after, at)
        if not raced and isinstance(plans, dict):
            for reservation, instances in plans.values():
                for instance in instances:  # the user deletes it, through another process
                    other.delete_instance(instance.id, reservation.user_id)
                    raced.append(instance.id)
        return plans

    monkeypatch.setattr(type(app), "_plan_moves", plan_then_race)

    rid = app.initiate_reservation("alice")
    outcome = app.submit_proposal(rid, terms("XLARGE", 1))

    assert raced
    (deleted,) = raced
    instance = app.repository.get(deleted)
    assert "Repacked" not in events(app, deleted) and instance.delete_requested
    if outcome.reply == Reply.ACCEPT:  # the other MEDIUM moved instead
        assert events(app, instance.reservation_id)[-1] != "PlacementChanged"
    report = audit(app)
    assert report.ok, report.render()
    other.close()
    app.close()
