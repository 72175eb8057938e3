"""Quotas: what one user may take of the pool (pex.domain.quotas), as arithmetic and as stories
through the application service; and an administrator ending any reservation."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pex.domain import IllegalMove, Reply, Resources, State, Terms
from pex.domain.catalogue import CATALOGUE_ID, TABLE_1_SIZES
from pex.domain.negotiation import NegotiationPolicy, answer_within_quotas, evaluate
from pex.domain.node import Node
from pex.domain.pricing import FlatRatePricing
from pex.domain.quotas import (
    QuotaError,
    QuotaExceeded,
    Quotas,
    TooManyLiveOffers,
    Usage,
    cpu_seconds,
)
from pex.projections.capacity import CapacityTimeline
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
H, DAY = timedelta(hours=1), timedelta(days=1)
POOL_CPUS = 20  # the paper's testbed: five nodes of four CPUs
SIXTY_DAYS = timedelta(days=60)


def terms(size="SMALL", fixed=1, option=0, start=T0 + 2 * H, duration=H, price=None) -> Terms:
    return Terms(size, ETCH, fixed, option, start, start + duration, Decimal(price) if price else None)


def negotiate(app, t: Terms, user="alice"):
    rid = app.initiate_reservation(user)
    return rid, app.submit_proposal(rid, t)


# --- the arithmetic ----------------------------------------------------------------------


def test_the_default_cpu_hours_are_a_quarter_of_the_pool_over_thirty_days():
    assert Quotas().cpu_hours_in_force(POOL_CPUS) == 20 * 30 * 24 // 4 == 3600
    assert Quotas(max_cpu_hours=10).cpu_hours_in_force(POOL_CPUS) == 10


def test_cpu_seconds_count_only_what_is_still_to_come():
    assert cpu_seconds(4, 5, T0, T0 + 2 * H, T0) == 4 * 5 * 7200
    assert cpu_seconds(4, 5, T0, T0 + 2 * H, T0 + H) == 4 * 5 * 3600
    assert cpu_seconds(4, 5, T0, T0 + 2 * H, T0 + 3 * H) == 0


def test_the_whole_pool_for_an_hour_and_for_a_week_fit_the_default_quotas():
    for duration in (H, 7 * DAY):
        asked = terms("XLARGE", fixed=5, duration=duration)
        assert Quotas().limit(asked, 4, Usage(), POOL_CPUS, T0, SIXTY_DAYS) == asked


def test_with_no_node_up_the_default_cpu_hours_leave_the_answer_to_the_negotiation():
    asked = terms("XLARGE")
    assert Quotas().limit(asked, 4, Usage(), 0, T0, SIXTY_DAYS) == asked
    with pytest.raises(QuotaExceeded):
        Quotas(max_cpu_hours=0).limit(asked, 4, Usage(), 0, T0, SIXTY_DAYS)


def test_a_duration_over_the_longest_reservation_is_cut_to_it():
    limited = Quotas().limit(terms(duration=366 * DAY), 1, Usage(), POOL_CPUS, T0, SIXTY_DAYS)
    assert limited.duration == 14 * DAY and limited.start == T0 + 2 * H


def test_over_the_cpu_hours_the_optional_instances_are_cut_first():
    # 3600 CPU-hours left; an XLARGE for 14 days takes 4 × 336 = 1344: two fit.
    limited = Quotas().limit(terms("XLARGE", fixed=1, option=4, duration=14 * DAY), 4, Usage(), POOL_CPUS, T0, SIXTY_DAYS)
    assert (limited.instances_fixed, limited.instances_option) == (1, 1)


def test_fixed_instances_over_the_cpu_hours_left_are_refused_naming_the_limit():
    used = Usage(cpu_seconds=3000 * 3600)
    with pytest.raises(QuotaExceeded) as refused:
        Quotas().limit(terms("XLARGE", fixed=1, duration=7 * DAY), 4, used, POOL_CPUS, T0, SIXTY_DAYS)
    assert refused.value.limit == "cpu-hours" and refused.value.allowed == 3600
    assert refused.value.field == "numInstancesFixed"


def test_a_start_beyond_the_horizon_is_refused_naming_the_limit():
    quotas = Quotas(horizon=7 * DAY)
    quotas.limit(terms(start=T0 + 7 * DAY), 1, Usage(), POOL_CPUS, T0, SIXTY_DAYS)
    with pytest.raises(QuotaExceeded) as refused:
        quotas.limit(terms(start=T0 + 7 * DAY + H), 1, Usage(), POOL_CPUS, T0, SIXTY_DAYS)
    assert (refused.value.limit, refused.value.allowed) == ("horizon", 7)


def test_one_more_live_offer_than_allowed_is_refused():
    Quotas().limit(terms(), 1, Usage(live_offers=4), POOL_CPUS, T0, SIXTY_DAYS)
    with pytest.raises(TooManyLiveOffers) as refused:
        Quotas().limit(terms(), 1, Usage(live_offers=5), POOL_CPUS, T0, SIXTY_DAYS)
    assert (refused.value.limit, refused.value.allowed) == ("live-offers", 5)


@pytest.mark.parametrize(
    "changes",
    [{"max_duration": timedelta(minutes=30)}, {"horizon": -DAY}, {"max_cpu_hours": -1}, {"max_live_offers": -1}],
)
def test_quotas_out_of_range_are_refused(changes):
    with pytest.raises(QuotaError):
        Quotas().but(**changes)


sizes = st.sampled_from(TABLE_1_SIZES)


@given(
    size=sizes,
    fixed=st.integers(0, 6),
    option=st.integers(0, 6),
    start_in=st.integers(0, 70 * 24),
    hours=st.integers(1, 400 * 24),
    used_cpu_hours=st.integers(0, 4000),
    live=st.integers(0, 6),
    quotas=st.builds(
        Quotas,
        max_duration=st.integers(1, 30 * 24).map(lambda h: h * H),
        horizon=st.none() | st.integers(0, 90).map(lambda d: d * DAY),
        max_cpu_hours=st.none() | st.integers(0, 5000),
        max_live_offers=st.integers(0, 6),
    ),
)
def test_no_accepted_or_countered_offer_ever_exceeds_a_quota(size, fixed, option, start_in, hours, used_cpu_hours, live, quotas):
    if fixed + option == 0:
        fixed = 1
    asked = Terms(size.name, ETCH, fixed, option, T0 + start_in * H, T0 + start_in * H + hours * H)
    usage = Usage(used_cpu_hours * 3600, live)
    policy = NegotiationPolicy(max_duration=366 * DAY)
    timeline = CapacityTimeline()
    for i in range(1, 6):
        for event in Node(name=f"node{i}", capacity=Resources(4, 4096, 200), at=T0).collect_events():
            timeline.apply(event)
    try:
        limited = quotas.limit(asked, size.cpus, usage, POOL_CPUS, T0, policy.horizon)
    except QuotaExceeded as refused:
        assert refused.limit in ("horizon", "cpu-hours", "live-offers")
        return
    decision = answer_within_quotas(asked, limited, evaluate(limited, size, timeline, T0, FlatRatePricing(), policy))
    if limited != asked:
        assert decision.reply != Reply.ACCEPT
    for offer in filter(None, (decision.offer, *decision.alternatives)):
        t = offer.terms
        assert t.duration <= quotas.max_duration
        assert t.start <= T0 + quotas.horizon_in_force(policy.horizon)
        taken = cpu_seconds(size.cpus, t.instances, t.start, t.end, T0)
        assert usage.cpu_seconds + taken <= quotas.cpu_hours_in_force(POOL_CPUS) * 3600 or size.cpus == 0
        assert t.instances_fixed == asked.instances_fixed
    assert usage.live_offers < quotas.max_live_offers


# --- through the application ---------------------------------------------------------------


def test_one_account_cannot_take_the_whole_pool_for_a_year(memory_app):
    """The abuse of issue 10: 5 × XLARGE for 366 days, confirmed and activated."""
    with pytest.raises(QuotaExceeded) as refused:
        negotiate(memory_app, terms("XLARGE", fixed=5, duration=366 * DAY), user="mallory")
    assert refused.value.limit == "cpu-hours"
    rid, outcome = negotiate(memory_app, terms("XLARGE", fixed=1, option=4, duration=366 * DAY), user="mallory")
    assert outcome.reply == Reply.COUNTER
    offered = outcome.reservation.offer.terms
    assert offered.duration == 14 * DAY and offered.instances == 2
    assert "duration cut from 366 days to 14 days" in outcome.reservation.offer.changes


def test_the_papers_example_the_whole_pool_for_an_hour_is_accepted(memory_app):
    rid, outcome = negotiate(memory_app, terms("XLARGE", fixed=5, duration=H))
    assert outcome.reply == Reply.ACCEPT
    assert memory_app.confirm(rid).reply == Reply.REQUEST_SUCCESS


def test_a_proposal_longer_than_the_longest_reservation_gets_a_counter_cut_to_it(memory_app):
    rid, outcome = negotiate(memory_app, terms(duration=20 * DAY))
    assert outcome.reply == Reply.COUNTER
    assert outcome.reservation.offer.terms.duration == 14 * DAY
    assert memory_app.respond(rid, Reply.ACCEPT).reply == Reply.CONFIRM_REQUEST
    assert memory_app.confirm(rid).reply == Reply.REQUEST_SUCCESS


def test_the_cpu_hours_count_what_the_user_already_holds_or_booked(memory_app):
    rid, _ = negotiate(memory_app, terms("XLARGE", fixed=2, duration=14 * DAY))  # 2688 CPU-hours
    memory_app.confirm(rid)
    assert memory_app.usage("alice").cpu_hours == 2688
    _, outcome = negotiate(memory_app, terms("XLARGE", fixed=0, option=3, duration=2 * DAY))  # 192 each: 4 fit
    assert outcome.reply == Reply.ACCEPT
    _, outcome = negotiate(memory_app, terms("XLARGE", fixed=0, option=5, duration=2 * DAY))
    assert outcome.reply == Reply.COUNTER and outcome.reservation.offer.terms.instances == 1
    with pytest.raises(QuotaExceeded):
        negotiate(memory_app, terms("XLARGE", fixed=1, duration=2 * DAY))
    _, outcome = negotiate(memory_app, terms("XLARGE", fixed=5, duration=2 * DAY), user="bob")  # bob's own quota
    assert outcome.reply == Reply.COUNTER  # the pool is busy, not bob's quota


def test_a_lapsed_declined_or_cancelled_offer_no_longer_counts(memory_app, clock):
    rid, _ = negotiate(memory_app, terms("XLARGE", fixed=2, duration=14 * DAY))
    assert memory_app.usage("alice") == Usage(2688 * 3600, 1)
    memory_app.decline(rid)
    assert memory_app.usage("alice") == Usage(0, 0)
    negotiate(memory_app, terms("XLARGE", fixed=2, duration=14 * DAY))
    clock.advance(memory_app.policy.offer_ttl)
    assert memory_app.usage("alice") == Usage(0, 0)


def test_a_renewed_proposal_replaces_the_users_own_offer_in_the_count(memory_app):
    rid, outcome = negotiate(memory_app, terms("XLARGE", fixed=2, duration=20 * DAY))
    assert outcome.reply == Reply.COUNTER  # cut to 14 days: 2688 CPU-hours held
    outcome = memory_app.counter(rid, terms("XLARGE", fixed=2, duration=13 * DAY))  # 2496 more would be over
    assert outcome.reply == Reply.ACCEPT
    assert memory_app.usage("alice").cpu_hours == 2496


def test_a_sixth_live_offer_is_refused_until_one_is_declined(memory_app):
    held = [negotiate(memory_app, terms())[0] for _ in range(5)]
    with pytest.raises(TooManyLiveOffers):
        negotiate(memory_app, terms())
    memory_app.decline(held[0])
    _, outcome = negotiate(memory_app, terms())
    assert outcome.reply == Reply.ACCEPT


def test_a_confirmed_offer_is_no_longer_a_live_offer(memory_app):
    held = [negotiate(memory_app, terms())[0] for _ in range(5)]
    memory_app.confirm(held[0])
    assert memory_app.usage("alice").live_offers == 4
    assert negotiate(memory_app, terms())[1].reply == Reply.ACCEPT


def test_a_start_beyond_the_horizon_names_the_horizon(memory_app):
    with pytest.raises(QuotaExceeded) as refused:
        negotiate(memory_app, terms(start=T0 + 61 * DAY))
    assert refused.value.limit == "horizon"


def test_an_administrator_changes_the_quotas_and_the_next_proposal_obeys_them(memory_app):
    memory_app.set_quotas(memory_app.quotas().but(max_live_offers=1, horizon=90 * DAY, max_duration=2 * DAY), by="root")
    assert memory_app.quotas() == Quotas(max_duration=2 * DAY, horizon=90 * DAY, max_live_offers=1)
    _, outcome = negotiate(memory_app, terms(start=T0 + 80 * DAY, duration=3 * DAY))
    assert outcome.reply == Reply.COUNTER and outcome.reservation.offer.terms.duration == 2 * DAY
    with pytest.raises(TooManyLiveOffers):
        negotiate(memory_app, terms())
    changed = [e for e in memory_app.events.get(CATALOGUE_ID) if type(e).__name__ == "QuotasChanged"]
    assert [(e.by, e.quotas.max_live_offers) for e in changed] == [("root", 1)]


def test_a_user_with_quotas_of_their_own_is_judged_by_them_alone(memory_app):
    memory_app.set_user_quotas("bob", Quotas(max_duration=2 * DAY, max_cpu_hours=10_000), by="root")
    _, outcome = negotiate(memory_app, terms("XLARGE", fixed=5, duration=2 * DAY), user="bob")  # 960 CPU-hours
    assert outcome.reply == Reply.ACCEPT
    _, outcome = negotiate(memory_app, terms(start=T0 + 3 * DAY, duration=3 * DAY), user="bob")
    assert outcome.reply == Reply.COUNTER and outcome.reservation.offer.terms.duration == 2 * DAY
    _, outcome = negotiate(memory_app, terms(start=T0 + 3 * DAY, duration=3 * DAY), user="alice")
    assert outcome.reply == Reply.ACCEPT  # everyone else: 14 days
    memory_app.set_user_quotas("bob", None, by="root")
    assert memory_app.quotas("bob") == memory_app.quotas() and not memory_app.has_own_quotas("bob")


def test_quotas_survive_a_restart(tmp_path, clock):
    from pex.bootstrap import build_application
    from pex.settings import Settings

    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    app = build_application(Settings(database_url=url), clock=clock)
    app.set_quotas(Quotas(max_cpu_hours=100, horizon=None), by="root")
    app.close()
    again = build_application(Settings(database_url=url), clock=clock)
    try:
        assert again.quotas() == Quotas(max_cpu_hours=100)
    finally:
        again.close()


# --- an administrator ends a reservation ------------------------------------------------------


def test_an_administrator_ends_an_activated_reservation_and_frees_its_capacity(memory_app, clock):
    rid, _ = negotiate(memory_app, terms("XLARGE", fixed=5, duration=2 * H), user="mallory")
    memory_app.confirm(rid)
    clock.advance(2 * H)
    memory_app.activate(rid)
    with pytest.raises(IllegalMove):
        memory_app.cancel(rid)  # its user still cannot
    view = memory_app.terminate(rid, by="root", reason="took the whole pool")
    assert view.state == State.CANCELLED
    assert view.history[-1].note == "ended by root: took the whole pool"
    ended = memory_app.reservation_events(rid)[-1]
    assert (type(ended).__name__, ended.by, ended.reason, ended.at) == ("Terminated", "root", "took the whole pool", clock())
    assert memory_app.usage("mallory") == Usage()
    assert negotiate(memory_app, terms("XLARGE", fixed=5, start=clock() + H, duration=H))[1].reply == Reply.ACCEPT


def test_ending_an_ended_reservation_is_an_illegal_move(memory_app):
    rid, _ = negotiate(memory_app, terms())
    memory_app.terminate(rid, by="root", reason="spam")
    with pytest.raises(IllegalMove):
        memory_app.terminate(rid, by="root", reason="again")


def test_the_audit_accepts_an_administrators_end(memory_app, clock):
    from pex.projections.audit import Auditor
    from pex.projections.history import render_history
    from pex.projections.readmodels import ReadModels

    rid, _ = negotiate(memory_app, terms("XLARGE", fixed=2, duration=2 * H))
    memory_app.confirm(rid)
    clock.advance(2 * H)
    memory_app.activate(rid)
    memory_app.terminate(rid, by="root", reason="abuse")
    offered, _ = negotiate(memory_app, terms())
    memory_app.terminate(offered, by="root", reason="abuse")
    read_models = ReadModels(memory_app)
    read_models.catch_up()
    report = Auditor(memory_app, read_models).run()
    assert report.violations == [], [v.as_dict() for v in report.violations]
    listed = {r.id: r for r in read_models.reservations(None, State.CANCELLED)}
    assert listed[rid].history[-1].note == "ended by root: abuse" == memory_app.get_reservation(rid).history[-1].note
    read_models.close()
    assert re.search(r"provider +TERMINATE +ended by root: abuse", render_history(memory_app, rid))


# --- across processes ---------------------------------------------------------------------


def test_two_processes_deciding_on_one_users_quota_at_once_never_overshoot_it(tmp_path, clock):
    """Process B reads alice's usage, then process A makes her an offer before B saves its own
    (on other nodes, so no node's version tells them apart): B's save loses on her quota
    account and B decides again, on fresh usage."""
    from pex.bootstrap import build_application
    from pex.domain.values import Size
    from pex.settings import Settings

    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    a = build_application(Settings(database_url=url), clock=clock)
    b = build_application(Settings(database_url=url), clock=clock)
    try:
        # A size only the node "wide" takes (16 CPUs, little memory), which no XLARGE fits.
        a.define_size(Size("WIDE", cpus=16, memory_mb=512, disk_gb=10))
        a.register_node("wide", Resources(16, 1024, 100))
        a.set_quotas(Quotas(max_cpu_hours=1000), by="root")
        racing = {"done": False}
        negotiator = b.negotiator

        def b_negotiates_while_a_offers(*args, **kwargs):
            if not racing["done"]:
                racing["done"] = True
                _, outcome = negotiate(a, terms("WIDE", fixed=1, duration=50 * H))  # 800 CPU-hours
                assert outcome.reply == Reply.ACCEPT
            return negotiator(*args, **kwargs)

        b.negotiator = b_negotiates_while_a_offers
        with pytest.raises(QuotaExceeded) as refused:
            negotiate(b, terms("XLARGE", fixed=1, duration=100 * H))  # 400 more: over 1000
        assert refused.value.limit == "cpu-hours"
        assert b.usage("alice").cpu_hours == 800
    finally:
        a.close()
        b.close()


def test_a_users_quota_account_is_snapshotted_so_loading_it_stays_cheap(memory_app):
    from pex.domain.quotas import quota_account_id

    for _ in range(memory_app.node_snapshot_interval):
        rid, _ = negotiate(memory_app, terms())
        memory_app.decline(rid)
    account = quota_account_id("alice")
    assert memory_app.repository.get(account).offers_charged == memory_app.node_snapshot_interval  # version 51
    assert [s.originator_version for s in memory_app.snapshots.get(account)] == [memory_app.node_snapshot_interval]
