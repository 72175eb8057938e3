"""Early release through the service layer: a user ends a confirmed or activated reservation
now, its capacity is free from then for others, it pays for the used part, and `pex audit`
finds the history honest."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from pex.application import NotFound
from pex.domain import IllegalMove, Reservation
from pex.domain.values import Reply, State, Terms
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from tests.support import T0

H = timedelta(hours=1)
ETCH = "PEX Debian Etch 4.0 Template"


def booked(app, fixed=5, start=T0 + H, hours=4, user="alice"):
    rid = app.initiate_reservation(user)
    assert app.submit_proposal(rid, Terms("XLARGE", ETCH, fixed, 0, start, start + hours * H)).reply == Reply.ACCEPT
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    return rid


def audited(app):
    read_models = ReadModels(app)
    read_models.catch_up()
    return read_models, Auditor(app, read_models).run()


def test_a_release_frees_the_capacity_from_now_and_charges_the_used_part_pro_rata(app, clock):
    rid = booked(app)  # the whole pool, 09:00-13:00, at 0.20 an XLARGE-hour: 4 × 5 × 0.20 = 4.00
    assert app.get_reservation(rid).offer.terms.price == Decimal("4.00")
    clock.advance(2 * H)  # 10:00: one of its four hours used
    app.activate(rid)
    released = app.release(rid, by="alice", user_id="alice")

    assert released.state == State.EXPIRED
    assert (released.offer.terms.start, released.offer.terms.end) == (T0 + H, T0 + 2 * H)
    assert released.offer.terms.price == Decimal("1.00")
    assert released.history[-1].reply == "RELEASE"
    # Free from now for others: a proposal for the rest of its hours is accepted as asked.
    other = app.initiate_reservation("bob")
    asked = Terms("XLARGE", ETCH, 5, 0, T0 + 2 * H, T0 + 5 * H)
    assert app.submit_proposal(other, asked).reply == Reply.ACCEPT
    read_models, report = audited(app)
    assert report.ok, report.violations
    [row] = [r for r in read_models.reservations("alice", State.EXPIRED)]
    assert (row.terms.end, row.terms.price) == (T0 + 2 * H, Decimal("1.00"))


def test_a_confirmed_reservation_released_before_its_start_costs_nothing_and_its_instances_are_cancelled(memory_app, clock):
    app = memory_app
    rid = booked(app, fixed=2)
    released = app.release(rid, by="alice", user_id="alice")
    assert released.offer.terms.price == Decimal("0.00")
    assert released.offer.terms.end == released.offer.terms.start
    assert {app.get_instance(i).status for i in released.instance_ids} == {"CANCELLED"}
    assert [w.start for w in app.availability("bob", "XLARGE", 5, 4 * H, None, T0 + 2 * H)] == [T0]
    assert audited(app)[1].ok


def test_only_the_owner_or_an_administrator_releases(memory_app):
    rid = booked(memory_app)
    with pytest.raises(NotFound):
        memory_app.release(rid, by="mallory", user_id="mallory")
    assert memory_app.get_reservation(rid).state == State.CONFIRMED
    assert memory_app.release(rid, by="root").state == State.EXPIRED  # an administrator: no user_id


def test_a_reservation_not_confirmed_or_already_over_cannot_be_released(memory_app, clock):
    app = memory_app
    offered = app.initiate_reservation("alice")
    app.submit_proposal(offered, Terms("SMALL", ETCH, 1, 0, T0 + H, T0 + 2 * H))
    with pytest.raises(IllegalMove):
        app.release(offered, by="alice")
    rid = booked(app, fixed=4)
    app.release(rid, by="alice")
    with pytest.raises(IllegalMove):
        app.release(rid, by="alice")  # released already: EXPIRED
    ended = booked(app, fixed=4, start=T0 + 6 * H, hours=1)
    clock.advance(8 * H)
    with pytest.raises(IllegalMove):
        app.release(ended, by="alice")  # its interval is over
    assert app.get_reservation(offered).state == State.ACCEPTED


def test_the_audit_catches_a_release_after_the_end_and_one_that_kept_its_bookings(memory_app, clock):
    app = memory_app
    late = booked(app, fixed=2, start=T0 + H, hours=1)
    kept = booked(app, fixed=2, start=T0 + 3 * H, hours=2)
    clock.advance(3 * H)  # late's interval is over; kept's begins
    for rid in (late, kept):  # written past the aggregate's own checks, as a bug or a hand would
        reservation = app.repository.get(rid)
        terms = reservation.offer.terms
        reservation.trigger_event(
            Reservation.Released, by="alice", agreed_end=terms.end, agreed_price=terms.price, price=terms.price, at=clock()
        )
        app.save(reservation)  # no node gives its booking back
    clock.advance(H)
    app.initiate_reservation("bob")  # the log goes on past the release
    report = audited(app)[1]
    protocol = [v.message for v in report.violations if v.promise == "protocol"]
    assert any("released after its end" in m for m in protocol), report.violations
    assert not any(str(kept).upper()[:8] in m for m in protocol)
    kept_bookings = [v.message for v in report.violations if v.promise == "bookings"]
    assert kept_bookings and all("was released, but node" in m and "kept its booking" in m for m in kept_bookings)
    assert any(str(kept).upper()[:8] in m for m in kept_bookings)
