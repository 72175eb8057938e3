"""Flexible proposals (issue 14, item 2) through the application service, as stories: a
proposal may allow any start up to a latest one and a shorter duration down to a shortest
one; the provider ACCEPTs with the terms it chose inside that freedom (the earliest start,
then the longest duration that fits) and COUNTERs only outside it."""

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain import InvalidProposal, Reply, State, Terms
from pex.domain.quotas import Quotas
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from pex.settings import Settings
from pex.transcodings import DataclassAsDict
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
DAY, H, M = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
DAY_10 = T0 + DAY + 2 * H  # 10:00 tomorrow


def terms(size="SMALL", fixed=5, start=DAY_10, duration=H, latest=None, shortest=None, price=None, option=0) -> Terms:
    return Terms(
        size, ETCH, fixed, option, start, start + duration, Decimal(price) if price else None,
        latest_start=latest, min_duration=shortest,
    )


def negotiate(app, t: Terms, user="alice"):
    rid = app.initiate_reservation(user)
    return rid, app.submit_proposal(rid, t)


def fill(app, start, duration):
    """One XLARGE on each of the five demo nodes: the pool is full over [start, start + duration)."""
    rid, outcome = negotiate(app, terms("XLARGE", start=start, duration=duration), user="filler")
    assert outcome.reply == Reply.ACCEPT
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS


def audit(app):
    read_models = ReadModels(app)
    try:
        read_models.catch_up()
        return Auditor(app, read_models).run()
    finally:
        read_models.close()


def test_a_flexible_start_is_accepted_at_the_earliest_start_that_fits_and_booked_there(app):
    fill(app, DAY_10, 2 * H)
    rid, outcome = negotiate(app, terms(latest=DAY_10 + 3 * H))
    assert outcome.reply == Reply.ACCEPT
    chosen = outcome.reservation.offer.terms
    assert (chosen.start, chosen.duration, chosen.instances) == (DAY_10 + 2 * H, H, 5)
    assert not chosen.flexible  # an offer states the chosen terms, not the freedom
    assert outcome.reservation.proposal.latest_start == DAY_10 + 3 * H  # what was asked stays recorded
    assert any("chosen, within the starts up to" in c for c in outcome.reservation.offer.changes)
    booked = app.confirm(rid)
    assert booked.reply == Reply.REQUEST_SUCCESS
    instances = [app.get_instance(i) for i in booked.reservation.instance_ids]
    assert {(i.start, i.end) for i in instances} == {(DAY_10 + 2 * H, DAY_10 + 3 * H)}
    assert audit(app).ok


def test_a_flexible_duration_is_accepted_for_the_longest_that_fits(app):
    fill(app, DAY_10 + 3 * H, H)
    _, outcome = negotiate(app, terms(duration=6 * H, shortest=H))
    assert outcome.reply == Reply.ACCEPT
    chosen = outcome.reservation.offer.terms
    assert (chosen.start, chosen.end) == (DAY_10, DAY_10 + 3 * H)
    assert any("duration 3 hours chosen, within the 1 hour to 6 hours you allowed" == c for c in outcome.reservation.offer.changes)
    assert audit(app).ok


def test_the_earliest_start_comes_before_a_longer_duration(app):
    """At 10:00 one hour fits, at 12:00 six would: the earliest start wins (docs/api.md)."""
    fill(app, DAY_10 + H, H)
    _, outcome = negotiate(app, terms(duration=6 * H, shortest=H, latest=DAY_10 + 2 * H))
    chosen = outcome.reservation.offer.terms
    assert outcome.reply == Reply.ACCEPT
    assert (chosen.start, chosen.duration) == (DAY_10, H)


def test_terms_that_fit_as_asked_are_accepted_as_asked(app):
    _, outcome = negotiate(app, terms(duration=4 * H, shortest=H, latest=DAY_10 + 5 * H))
    chosen = outcome.reservation.offer.terms
    assert outcome.reply == Reply.ACCEPT and outcome.reservation.offer.changes == ()
    assert (chosen.start, chosen.duration) == (DAY_10, 4 * H)


def test_a_price_cap_shortens_a_flexible_duration_to_what_it_pays_for(app):
    """In whole minutes: the price is rounded to the cent, so it may pay for a minute or two
    beyond the exact share."""
    xlarge = app.catalogue().sizes["XLARGE"]
    cap = xlarge.hourly_price * 2
    _, outcome = negotiate(app, terms("XLARGE", fixed=1, duration=4 * H, shortest=H, price=str(cap)))
    chosen = outcome.reservation.offer.terms
    assert outcome.reply == Reply.ACCEPT
    assert 2 * H <= chosen.duration < 2 * H + 5 * M and chosen.duration % M == timedelta(0)
    assert chosen.price <= cap < app.pricing.quote(xlarge, 1, chosen.start, chosen.end + M)


def test_outside_the_freedom_the_provider_counters_and_offers_a_shorter_duration(app):
    fill(app, DAY_10 + 2 * H, 3 * H)
    # Two hours fit at 10:00; the user allows no less than three, and starts up to 11:00.
    _, outcome = negotiate(app, terms(duration=4 * H, shortest=3 * H, latest=DAY_10 + H))
    r = outcome.reservation
    assert outcome.reply == Reply.COUNTER and r.state == State.COUNTERED
    offers = [r.offer, *r.alternatives]
    assert all(not r.proposal.allows(o.terms) for o in offers)
    shorter = [o for o in offers if o.terms.start == DAY_10 and o.terms.duration < 3 * H]
    assert [(o.terms.duration, o.terms.instances) for o in shorter] == [(2 * H, 5)]
    assert "duration cut from 4 hours to 2 hours" in shorter[0].changes
    # The held offer keeps a duration the user allowed, at the nearest start outside the window.
    assert (r.offer.terms.start, r.offer.terms.duration) == (DAY_10 - H, 3 * H)
    assert any(c.startswith("why: the pool is full") for c in r.offer.changes)


def test_a_firm_proposal_is_countered_with_a_shorter_duration_among_the_alternatives(app):
    fill(app, DAY_10 + 2 * H, 3 * H)
    _, outcome = negotiate(app, terms(duration=4 * H))
    r = outcome.reservation
    assert outcome.reply == Reply.COUNTER
    assert (DAY_10, 2 * H, 5) in [(o.terms.start, o.terms.duration, o.terms.instances) for o in r.alternatives]


def test_the_asked_time_at_the_policys_price_is_always_among_the_alternatives(app):
    """When only the asked price stood in the way, the COUNTER leads with what is within it
    (fewer optional instances, other starts) and still shows the asked time at its price."""
    small = app.catalogue().sizes["SMALL"].hourly_price
    _, outcome = negotiate(app, terms(fixed=1, option=4, price=str(small * 2)))
    r = outcome.reservation
    assert outcome.reply == Reply.COUNTER
    asked_time = [a for a in r.alternatives if (a.terms.start, a.terms.end, a.terms.instances) == (DAY_10, DAY_10 + H, 5)]
    assert [a.terms.price for a in asked_time] == [small * 5]
    assert any(c.startswith("price") for c in asked_time[0].changes)
    assert r.offer.terms.price <= small * 2


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        (terms(latest=DAY_10 - M), "latestStart"),
        (terms(duration=H, shortest=2 * H), "minDuration"),
        (terms(shortest=timedelta(0)), "minDuration"),
        (terms(shortest=timedelta(microseconds=999)), "minDuration"),
    ],
)
def test_a_freedom_that_makes_no_sense_is_refused_and_records_nothing(app, asked, field):
    with pytest.raises(InvalidProposal) as refused:
        app.propose("alice", asked)
    assert refused.value.field == field
    assert app.list_reservations() == []


def test_quotas_apply_to_what_is_chosen(app):
    """The duration quota cuts the asked duration within the freedom (so the answer is still
    an ACCEPT), and the CPU-hours charged are those of the chosen terms."""
    app.set_quotas(Quotas(max_duration=2 * DAY), "admin")
    rid, outcome = negotiate(app, terms(fixed=1, duration=5 * DAY, shortest=DAY))
    chosen = outcome.reservation.offer.terms
    assert outcome.reply == Reply.ACCEPT and chosen.duration == 2 * DAY
    assert app.usage("alice").cpu_seconds == app.catalogue().sizes["SMALL"].cpus * int((2 * DAY).total_seconds())
    # Beyond the freedom the quota's cut is a COUNTER, as for a firm proposal.
    _, outcome = negotiate(app, terms(fixed=1, duration=5 * DAY, shortest=3 * DAY), user="bob")
    assert outcome.reply == Reply.COUNTER and outcome.reservation.offer.terms.duration == 2 * DAY


def test_a_cpu_hour_quota_shortens_a_flexible_duration_before_it_drops_optional_instances(app):
    cpus = app.catalogue().sizes["SMALL"].cpus
    app.set_user_quotas("alice", Quotas(max_cpu_hours=4 * cpus), "admin")  # 4 instances for 1 hour
    _, outcome = negotiate(app, terms(fixed=2, option=2, duration=3 * H, shortest=H))
    chosen = outcome.reservation.offer.terms
    assert outcome.reply == Reply.ACCEPT
    assert (chosen.instances, chosen.duration) == (4, H)
    assert app.usage("alice").cpu_seconds <= 4 * cpus * 3600


def test_the_events_record_the_asked_freedom_and_the_chosen_terms(app):
    fill(app, DAY_10, H)
    rid, _ = negotiate(app, terms(duration=3 * H, shortest=H, latest=DAY_10 + 2 * H))
    events = list(app.repository.event_store.get(rid))
    submitted = next(e for e in events if type(e).__name__ == "ProposalSubmitted")
    accepted = next(e for e in events if type(e).__name__ == "Accepted")
    assert (submitted.terms.latest_start, submitted.terms.min_duration) == (DAY_10 + 2 * H, H)
    assert (accepted.offer.terms.start, accepted.offer.terms.end) == (DAY_10 + H, DAY_10 + 4 * H)
    assert accepted.offer.terms.latest_start is None and accepted.offer.terms.min_duration is None


def test_terms_without_freedom_are_stored_as_before_and_old_ones_read_without_it():
    transcoding = DataclassAsDict(Terms, "pex_terms", optional_fields=("latest_start", "min_duration"))
    firm = terms()
    stored = transcoding.encode(firm)
    assert "latest_start" not in stored and "min_duration" not in stored
    assert transcoding.decode(stored) == firm
    flexible = terms(latest=DAY_10 + H, shortest=M)
    assert transcoding.decode(transcoding.encode(flexible)) == flexible


def test_the_audit_catches_an_accept_outside_the_freedom(memory_app):
    _, outcome = negotiate(memory_app, terms(latest=DAY_10 + H))
    offer = outcome.reservation.offer
    assert audit(memory_app).ok
    reservation = memory_app.repository.get(memory_app.initiate_reservation("alice"))
    reservation.submit(terms(latest=DAY_10 + H), offer.per_instance, T0)
    # An ACCEPT two hours after the latest start allowed
    reservation.accept(offer.__class__(offer.terms.but(start=DAY_10 + 3 * H, end=DAY_10 + 4 * H), offer.per_instance, ()),
                       T0 + H, T0)
    memory_app.save(reservation)
    report = audit(memory_app)
    assert any("beyond the freedom" in v.message for v in report.violations)


# --- the property -------------------------------------------------------------------------

booking = st.tuples(
    st.sampled_from(["SMALL", "MEDIUM", "LARGE", "XLARGE"]), st.integers(1, 5), st.integers(0, 20), st.integers(1, 8),
)
flexible = st.tuples(
    st.sampled_from(["SMALL", "MEDIUM", "LARGE", "XLARGE"]), st.integers(1, 6), st.integers(0, 3),
    st.integers(0, 20), st.integers(1, 10), st.integers(0, 12), st.integers(0, 600), st.none() | st.integers(0, 40),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bookings=st.lists(booking, max_size=6), asked=flexible)
def test_an_accepts_chosen_terms_lie_inside_the_asked_freedom_and_never_overbook(bookings, asked):
    app = build_application(Settings(database_url="memory:"), clock=ManualClock(T0))
    try:
        for size, n, start_h, hours in bookings:
            rid, outcome = negotiate(app, terms(size, fixed=n, start=T0 + start_h * H, duration=hours * H), user="filler")
            if outcome.reply == Reply.ACCEPT:
                app.confirm(rid)
        size, fixed, option, start_h, hours, later_h, shorter_m, price = asked
        start = T0 + start_h * H
        proposal = terms(
            size, fixed=fixed, option=option, start=start, duration=hours * H, latest=start + later_h * H,
            shortest=max(M, hours * H - shorter_m * M), price=None if price is None else str(price),
        )
        rid, outcome = negotiate(app, proposal)
        if outcome.reply == Reply.ACCEPT:
            chosen = outcome.reservation.offer.terms
            assert proposal.allows(chosen)
            event("ACCEPT as asked" if chosen.but(price=None) == proposal.firm().but(price=None) else "ACCEPT as chosen")
            assert proposal.price is None or chosen.price <= proposal.price
            assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
        else:
            event(outcome.reply.value)
            assert all(not proposal.allows(o.terms) or (proposal.price is not None and o.terms.price > proposal.price)
                       for o in (outcome.reservation.offer, *outcome.reservation.alternatives) if o is not None)
        report = audit(app)
        assert report.ok, report.violations
    finally:
        app.close()
