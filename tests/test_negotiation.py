"""The Alternate Offers protocol (paper §3.1) through the application service, as stories."""

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest

from pex.application import NotFound
from pex.domain import IllegalMove, InvalidProposal, OfferExpired, Reply, State, Terms
from pex.domain.values import time_text
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
DAY, H = timedelta(days=1), timedelta(hours=1)


def terms(size="SMALL", fixed=1, option=0, start=T0 + 2 * H, duration=H, price=None) -> Terms:
    return Terms(size, ETCH, fixed, option, start, start + duration, Decimal(price) if price else None)


def negotiate(app, t: Terms, user="alice"):
    rid = app.initiate_reservation(user)
    return rid, app.submit_proposal(rid, t)


def fill_pool(app, start, duration):
    """Book one XLARGE on each of the five demo nodes: the pool is full for that interval."""
    rid, outcome = negotiate(app, terms("XLARGE", fixed=5, start=start, duration=duration), user="filler")
    assert outcome.reply == Reply.ACCEPT
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    return rid


def test_a_proposal_that_fits_is_accepted_then_confirmed(app):
    rid, outcome = negotiate(app, terms(fixed=2))
    assert outcome.reply == Reply.ACCEPT
    assert outcome.reservation.valid_until == T0 + app.policy.offer_ttl
    confirmed = app.confirm(rid)
    assert confirmed.reply == Reply.REQUEST_SUCCESS
    assert confirmed.reservation.state == State.CONFIRMED
    assert len(confirmed.reservation.instance_ids) == 2
    assert app.activate(rid).state == State.ACTIVATED


def test_the_papers_example_counter_moves_only_the_start_time(app, clock):
    day = T0 + DAY + 2 * H  # 10:00 tomorrow
    fill_pool(app, day, 2 * DAY)
    rid, outcome = negotiate(app, terms(fixed=5, start=day, duration=6 * DAY))
    assert outcome.reply == Reply.COUNTER
    offered = outcome.reservation.offer.terms
    assert offered.start == day + 2 * DAY
    assert (offered.size, offered.instances_fixed, offered.duration) == ("SMALL", 5, 6 * DAY)
    assert app.respond(rid, Reply.ACCEPT).reply == Reply.CONFIRM_REQUEST
    assert app.respond(rid, Reply.CONFIRM).reply == Reply.REQUEST_SUCCESS


def test_instances_of_one_reservation_span_nodes_and_fill_the_most_loaded_first(app):
    negotiate_and_confirm = lambda t, u="x": app.confirm(negotiate(app, t, u)[0])  # noqa: E731
    negotiate_and_confirm(terms("MEDIUM", fixed=1, duration=4 * H))  # node1 now half full
    rid, outcome = negotiate(app, terms("MEDIUM", fixed=3, duration=4 * H))
    placement = outcome.reservation.offer.placement
    assert outcome.reply == Reply.ACCEPT
    assert placement[0].node == "node1" and placement[0].instances == 1
    assert sum(a.instances for a in placement) == 3


def test_a_counter_says_why_when_the_pool_is_full_for_part_of_the_asked_interval(app):
    fill_pool(app, T0 + 3 * H, 2 * H)  # full from 11:00 to 13:00 of the asked 10:00-14:00
    _, outcome = negotiate(app, terms(fixed=1, start=T0 + 2 * H, duration=4 * H))
    changes = outcome.reservation.offer.changes
    assert outcome.reply == Reply.COUNTER
    assert changes[-1] == f"why: the pool is full from {time_text(T0 + 3 * H)} to {time_text(T0 + 5 * H)}"
    assert changes[0].startswith("start moved")
    # every alternative is an answer to the same asked terms: the same why
    assert all(alt.changes[-1] == changes[-1] for alt in outcome.reservation.alternatives)


def test_a_proposal_refused_only_for_its_price_gives_no_capacity_why(app):
    _, outcome = negotiate(app, terms("XLARGE", fixed=1, price="0.01"))
    assert outcome.reply == Reply.COUNTER
    changes = outcome.reservation.offer.changes
    assert any(c.startswith("price") for c in changes) and not any(c.startswith("why:") for c in changes)


def test_fewer_optional_instances_at_the_asked_time_come_before_moving_the_start(app):
    rid, _ = negotiate(app, terms("XLARGE", fixed=3, start=T0 + 2 * H, duration=H), user="filler")
    app.confirm(rid)  # two nodes stay free for that hour
    _, outcome = negotiate(app, terms("XLARGE", fixed=1, option=4, start=T0 + 2 * H, duration=H))
    offer = outcome.reservation.offer
    assert outcome.reply == Reply.COUNTER
    assert offer.terms.start == T0 + 2 * H
    assert (offer.terms.instances_fixed, offer.terms.instances_option) == (1, 1)
    two_free = f"{time_text(T0 + 2 * H)} to {time_text(T0 + 3 * H)}"
    assert offer.changes == ("1 of 4 optional instances granted", f"why: the pool has room for only 2 XLARGE from {two_free}")
    moved = outcome.reservation.alternatives[0].terms
    assert (moved.start, moved.instances) == (T0 + 3 * H, 5)


def test_never_offers_a_start_in_the_past(app, clock):
    fill_pool(app, T0 + H, 3 * H)
    rid, outcome = negotiate(app, terms("XLARGE", fixed=1, start=T0 + 2 * H, duration=H))
    assert outcome.reply == Reply.COUNTER
    assert all(o.terms.start >= T0 for o in (outcome.reservation.offer, *outcome.reservation.alternatives))
    assert outcome.reservation.offer.terms.start == T0 + 4 * H


def test_an_earlier_start_is_offered_when_it_is_the_nearest(app, clock):
    fill_pool(app, T0 + 10 * H, 10 * H)
    rid, outcome = negotiate(app, terms("XLARGE", fixed=1, start=T0 + 9 * H, duration=2 * H))
    assert outcome.reply == Reply.COUNTER
    assert outcome.reservation.offer.terms.start == T0 + 8 * H


def test_more_than_the_pool_can_ever_hold_is_rejected(app):
    rid, outcome = negotiate(app, terms("XLARGE", fixed=6))
    assert outcome.reply == Reply.REJECT
    assert "more than the pool can ever hold" in outcome.reason
    assert outcome.reservation.state == State.REJECTED


def test_a_price_above_the_users_limit_is_countered_with_fewer_optional_instances(app):
    # SMALL costs 0.05 an hour: 4 instances for 10 hours cost 2.00, 3 cost 1.50.
    rid, outcome = negotiate(app, terms(fixed=2, option=2, duration=10 * H, price="1.60"))
    assert outcome.reply == Reply.COUNTER
    assert outcome.reservation.offer.terms.instances == 3
    assert outcome.reservation.offer.terms.price == Decimal("1.50")


def test_a_price_counter_when_even_the_fixed_instances_cost_more(app):
    rid, outcome = negotiate(app, terms(fixed=2, duration=10 * H, price="0.50"))
    assert outcome.reply == Reply.COUNTER
    assert outcome.reservation.offer.terms.price == Decimal("1.00")
    assert any("price" in c for c in outcome.reservation.offer.changes)


def test_an_offer_holds_capacity_so_the_confirm_cannot_fail(app):
    rid, outcome = negotiate(app, terms("XLARGE", fixed=5))
    assert outcome.reply == Reply.ACCEPT
    rival, rival_outcome = negotiate(app, terms("XLARGE", fixed=1), user="bob")
    assert rival_outcome.reply == Reply.COUNTER  # the held hour is not offered again
    assert rival_outcome.reservation.offer.terms.start >= T0 + 3 * H
    assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS


def test_a_lapsed_offer_cannot_be_confirmed_and_its_holds_are_released(app, clock):
    rid, _ = negotiate(app, terms("XLARGE", fixed=5))
    clock.advance(app.policy.offer_ttl)
    with pytest.raises(OfferExpired):
        app.confirm(rid)
    assert app.expire_offers() == 1
    assert app.get_reservation(rid).state == State.EXPIRED
    assert all(not app.node_allocations(n.name) for n in app.nodes())
    _, again = negotiate(app, terms("XLARGE", fixed=5), user="bob")
    assert again.reply == Reply.ACCEPT


def test_counters_go_back_and_forth_until_the_round_limit(app):
    fill_pool(app, T0 + 2 * H, 2 * H)
    rid, outcome = negotiate(app, terms("XLARGE", fixed=1, start=T0 + 2 * H))
    for _ in range(app.policy.max_rounds - 1):
        assert outcome.reply == Reply.COUNTER
        outcome = app.respond(rid, Reply.COUNTER, terms("XLARGE", fixed=1, start=T0 + 2 * H))
    assert outcome.reply == Reply.COUNTER
    last = app.respond(rid, Reply.COUNTER, terms("XLARGE", fixed=1, start=T0 + 2 * H))
    assert last.reply == Reply.REJECT and "at most" in last.reason
    assert all(not [a for a in app.node_allocations(n.name) if a.reservation_id == rid] for n in app.nodes())


def test_a_users_counter_releases_the_holds_of_the_previous_offer(app):
    fill_pool(app, T0 + 2 * H, H)
    rid, outcome = negotiate(app, terms("XLARGE", fixed=5, start=T0 + 2 * H))
    assert outcome.reply == Reply.COUNTER
    later = app.respond(rid, Reply.COUNTER, terms("XLARGE", fixed=1, start=T0 + 20 * H))
    assert later.reply == Reply.ACCEPT
    held = [a for n in app.nodes() for a in app.node_allocations(n.name) if a.reservation_id == rid]
    assert len(held) == 1 and held[0].start == T0 + 20 * H


@pytest.mark.parametrize(
    "move",
    [
        lambda app, rid: app.confirm(rid),
        lambda app, rid: app.accept_counter(rid),
        lambda app, rid: app.activate(rid),
        lambda app, rid: app.decline(rid),
    ],
)
def test_moves_the_protocol_forbids_are_refused_and_record_nothing(app, move):
    rid = app.initiate_reservation("alice")
    version = app.get_reservation(rid).version
    with pytest.raises(IllegalMove):
        move(app, rid)
    assert app.get_reservation(rid).version == version


def test_confirm_needs_an_accept_first_when_the_provider_countered(app):
    fill_pool(app, T0 + 2 * H, H)
    rid, outcome = negotiate(app, terms("XLARGE", fixed=1))
    assert outcome.reply == Reply.COUNTER
    with pytest.raises(IllegalMove):
        app.confirm(rid)


def test_an_activated_reservation_cannot_be_deleted_but_a_confirmed_one_can(app):
    rid, _ = negotiate(app, terms("XLARGE", fixed=5))
    app.confirm(rid)
    assert app.cancel(rid).state == State.CANCELLED
    _, again = negotiate(app, terms("XLARGE", fixed=5), user="bob")
    assert again.reply == Reply.ACCEPT
    app.confirm(again.reservation.id)
    app.activate(again.reservation.id)
    with pytest.raises(IllegalMove):
        app.cancel(again.reservation.id)


@pytest.mark.parametrize(
    "bad, field",
    [
        (terms(size="HUGE"), "type"),
        (terms().but(template="Windows 95"), "template"),
        (terms(start=T0 - H), "startTime"),
        (terms(duration=timedelta(0)), "duration"),
        (terms(fixed=0, option=0), "numInstancesFixed"),
        (terms(fixed=-1, option=3), "numInstancesFixed"),
        (terms(start=T0 + 400 * DAY), "startTime"),
    ],
)
def test_malformed_proposals_are_refused_and_record_nothing(app, bad, field):
    rid = app.initiate_reservation("alice")
    with pytest.raises(InvalidProposal) as error:
        app.submit_proposal(rid, bad)
    assert error.value.field == field
    assert app.get_reservation(rid).version == 1


def test_a_reservation_expires_at_its_end(app, clock):
    rid, _ = negotiate(app, terms(fixed=1, duration=H))
    app.confirm(rid)
    assert not app.expire_reservation(rid)
    clock.advance(3 * H)
    assert app.expire_reservation(rid)
    assert app.get_reservation(rid).state == State.EXPIRED


def test_users_see_only_their_own_reservations(app):
    rid, _ = negotiate(app, terms(), user="alice")
    negotiate(app, terms(), user="bob")
    assert [r.id for r in app.list_reservations("alice")] == [rid]
    with pytest.raises(NotFound):
        app.get_reservation(rid, user_id="bob")


def test_initiating_with_the_same_id_twice_gives_one_reservation(app):
    from uuid import uuid4

    rid = uuid4()
    assert app.initiate_reservation("alice", rid) == rid
    assert app.initiate_reservation("alice", rid) == rid
    assert len(app.list_reservations("alice")) == 1


def test_the_history_records_who_said_what(app):
    fill_pool(app, T0 + 2 * H, H)
    rid, _ = negotiate(app, terms("XLARGE", fixed=1))
    app.respond(rid, Reply.ACCEPT)
    app.respond(rid, Reply.CONFIRM)
    steps = [(s.party, s.reply) for s in app.get_reservation(rid).history]
    assert steps == [
        ("user", "PROPOSE"),
        ("provider", "COUNTER"),
        ("user", "ACCEPT"),
        ("provider", "CONFIRM_REQUEST"),
        ("user", "CONFIRM"),
        ("provider", "REQUEST_SUCCESS"),
    ]


def test_a_step_taken_on_a_stale_version_is_refused_when_it_would_be_saved(app):
    from pex.application import VersionConflict

    rid, outcome = negotiate(app, terms())
    seen = outcome.reservation.version
    app.decline(rid)  # someone else's step lands first
    with pytest.raises(VersionConflict):
        app.respond(rid, Reply.CONFIRM, expected_version=seen)
    with pytest.raises(VersionConflict):
        app.cancel(rid, expected_version=seen)
    current = app.get_reservation(rid)
    assert current.state == State.REJECTED
    assert app.cancel(rid, expected_version=current.version).state == State.CANCELLED


def test_settings_refuse_a_flag_or_number_they_cannot_read():
    from pex.settings import Settings, SettingsError

    for env in ({"PEX_DEMO_POOL": "maybe"}, {"PEX_MAX_ROUNDS": "0"}, {"PEX_OFFER_TTL_SECONDS": "soon"}):
        with pytest.raises(SettingsError):
            Settings.from_env(env)
    assert Settings.from_env({"PEX_DEMO_POOL": "off"}).install_demo_pool is False


def test_a_reservation_made_through_the_service_layer_starts_by_itself_unless_asked_not_to(app):
    from pex.domain.lifecycle import Phase

    rid, _ = negotiate(app, terms(fixed=1))
    booked = app.confirm(rid).reservation
    assert booked.offer.terms.auto_start is True  # the default of Terms
    assert app.reservation_phase(booked) == Phase.BOOKED
    manual, _ = negotiate(app, terms(fixed=1).but(auto_start=False))
    waiting = app.confirm(manual).reservation
    assert app.reservation_phase(waiting) == Phase.AWAITING_ACTIVATION
    assert app.reservation_phase(app.activate(manual)) == Phase.BOOKED


def test_threads_of_one_process_proposing_at_once_are_each_decided_once(app):
    """Five threads of one process propose at once for an hour when each of the five demo nodes
    takes one XLARGE: each is offered a node of its own, and each is decided once. The
    decision is made under the process's placement lock, so no thread decides on a node that
    another is taking meanwhile, to lose that node and decide again."""
    decisions = []
    decide = app.negotiator

    def slow_decision(*args, **kwargs):
        decisions.append(args[0])
        time.sleep(0.02)  # time for the other threads to decide beside it, were they allowed
        return decide(*args, **kwargs)

    app.negotiator = slow_decision
    barrier = threading.Barrier(5)
    outcomes = {}

    def propose(n: int) -> None:
        barrier.wait()
        outcomes[n] = app.propose(f"user{n}", terms("XLARGE", start=T0 + 3 * H)).outcome

    threads = [threading.Thread(target=propose, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [o.reply for o in outcomes.values()] == [Reply.ACCEPT] * 5
    assert len({o.reservation.offer.placement[0].node for o in outcomes.values()}) == 5
    assert len(decisions) == 5
