"""The policies of the paper's §5 through the application service: where an offer's instances
go under each placement policy (PEX_PLACEMENT), and what the market pricing asks
(PEX_PRICING=market) as the pool fills."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from pex.bootstrap import build_application, placement_of, pricing_policy
from pex.domain import Reply, Terms
from pex.domain.pricing import MarketPricing
from pex.domain.values import Allocation
from pex.settings import Settings, SettingsError
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
H = timedelta(hours=1)


def terms(size="SMALL", fixed=1, start=T0 + 2 * H, hours=1) -> Terms:
    return Terms(size, ETCH, fixed, 0, start, start + hours * H)


@pytest.fixture
def build(clock):
    apps = []

    def make(**settings):
        application = build_application(Settings(database_url="memory:", **settings), clock=clock)
        apps.append(application)
        return application

    yield make
    for application in apps:
        application.close()


def offered(app, t: Terms, user="alice", confirm=False):
    rid = app.initiate_reservation(user)
    outcome = app.submit_proposal(rid, t)
    if confirm:
        assert outcome.reply == Reply.ACCEPT
        assert app.confirm(rid).reply == Reply.REQUEST_SUCCESS
    return outcome


def placement(app, t: Terms, confirm=True) -> tuple[Allocation, ...]:
    outcome = offered(app, t, confirm=confirm)
    assert outcome.reply == Reply.ACCEPT, outcome.reason
    return outcome.reservation.offer.placement


def test_best_fit_the_default_fills_one_node_before_the_next(build):
    app = build()
    assert placement(app, terms(fixed=3)) == (Allocation("node1", 3),)
    assert placement(app, terms(fixed=2)) == (Allocation("node1", 1), Allocation("node2", 1))


def test_least_loaded_spreads_instances_over_the_least_loaded_nodes(build):
    app = build(placement="least-loaded")
    assert placement(app, terms(fixed=3)) == (Allocation("node1", 1), Allocation("node2", 1), Allocation("node3", 1))
    # node4 and node5 are idle: they take the next two; the sixth goes back to node1.
    assert placement(app, terms(fixed=3)) == (Allocation("node4", 1), Allocation("node5", 1), Allocation("node1", 1))


def test_round_robin_takes_the_nodes_in_turn_from_where_the_last_offer_ended(build):
    app = build(placement="round-robin")
    firsts = [placement(app, terms())[0].node for _ in range(6)]
    assert firsts == ["node1", "node2", "node3", "node4", "node5", "node1"]
    assert placement(app, terms(fixed=2)) == (Allocation("node2", 1), Allocation("node3", 1))
    # A full node is skipped in its turn.
    assert placement(app, terms("XLARGE", start=T0 + 5 * H)) == (Allocation("node4", 1),)
    assert placement(app, terms("XLARGE", start=T0 + 5 * H)) == (Allocation("node5", 1),)
    assert placement(app, terms(start=T0 + 5 * H)) == (Allocation("node1", 1),)


def test_an_offer_that_is_only_tried_does_not_move_the_turn(build):
    app = build(placement="round-robin")
    fill = offered(app, terms("XLARGE", fixed=5, start=T0 + 3 * H), user="filler", confirm=True)
    assert fill.reply == Reply.ACCEPT
    # Countered: tried at the asked start (nothing fits), then offered at a later one.
    counter = offered(app, terms(start=T0 + 3 * H))
    assert counter.reply == Reply.COUNTER
    assert counter.reservation.offer.placement == (Allocation("node1", 1),)
    assert placement(app, terms()) == (Allocation("node2", 1),)


def test_random_placement_is_the_same_for_the_same_seed_and_spreads(build):
    def sequence(seed: int) -> list[tuple[Allocation, ...]]:
        app = build(placement="random", placement_seed=seed)
        return [placement(app, terms(fixed=2)) for _ in range(6)]

    first = sequence(7)
    assert sequence(7) == first
    assert len({a.node for p in first for a in p}) >= 3
    assert sequence(8) != first


def test_size_partitioned_keeps_small_instances_on_the_first_half_and_large_on_the_rest(build):
    app = build(placement="size-partitioned")
    smalls = placement(app, terms("MEDIUM", fixed=3))  # 2 CPUs of 4: small
    assert {a.node for a in smalls} <= {"node1", "node2"}
    assert placement(app, terms("LARGE", fixed=3)) == (
        Allocation("node3", 1), Allocation("node4", 1), Allocation("node5", 1),
    )
    # Three nodes take large instances: a fourth XLARGE waits, though node1 and node2 have room.
    assert offered(app, terms("XLARGE", fixed=1)).reply == Reply.COUNTER
    best_fit = build()
    assert offered(best_fit, terms("XLARGE", fixed=4)).reply == Reply.ACCEPT


def test_an_unknown_placement_policy_is_refused_at_start():
    with pytest.raises(SettingsError, match="PEX_PLACEMENT"):
        Settings.from_env({"PEX_PLACEMENT": "first-come"})
    assert Settings.from_env({"PEX_PLACEMENT": "Round-Robin"}).placement == "round-robin"
    assert placement_of("best-fit").name == "best-fit"


def test_market_prices_grow_with_the_pools_utilization_over_the_asked_interval(build):
    app = build(pricing="market")
    assert isinstance(pricing_policy("market"), MarketPricing)
    # An idle pool: half the flat rate (one SMALL hour flat: 0.05).
    assert offered(app, terms(start=T0 + 20 * H)).reservation.offer.terms.price == Decimal("0.03")
    # Two of the five nodes booked whole over 09:00-13:00: u = 8/20 = 0.4, factor 0.5 + 1.5 × 0.4 = 1.1.
    offered(app, terms("XLARGE", fixed=2, start=T0 + H, hours=4), user="filler", confirm=True)
    busy = offered(app, terms("XLARGE", fixed=1, start=T0 + 2 * H, hours=2))
    assert busy.reply == Reply.ACCEPT
    assert busy.reservation.offer.terms.price == Decimal("0.44")  # 0.40 flat × 1.1
    # The same terms after the busy interval: the idle price again.
    quiet = offered(app, terms("XLARGE", fixed=1, start=T0 + 6 * H, hours=2))
    assert quiet.reservation.offer.terms.price == Decimal("0.20")
    # The free windows are quoted the same way; the offer held on a third node counts too:
    # u = 12/20, factor 0.5 + 1.5 × 0.6 = 1.4.
    [window, *_] = app.availability("bob", "XLARGE", 1, 2 * H, T0 + 2 * H, T0 + 2 * H)
    assert window.price == Decimal("0.56")


def test_a_market_counter_offer_names_a_cheaper_quieter_start_within_the_budget(build):
    app = build(pricing="market")
    offered(app, terms("XLARGE", fixed=4, start=T0 + H, hours=4), user="filler", confirm=True)
    asked = terms("XLARGE", fixed=1, start=T0 + 2 * H, hours=2).but(price=Decimal("0.25"))
    outcome = offered(app, asked)  # 0.40 × (0.5 + 1.5 × 0.8) = 0.68 at 10:00: over the budget
    assert outcome.reply == Reply.COUNTER
    offer = outcome.reservation.offer.terms
    assert offer.price <= Decimal("0.25")
    assert offer.start != asked.start


def test_the_policies_in_force_are_shown_over_the_api_the_cli_and_the_portal(tmp_path):
    from click.testing import CliRunner

    from pex.cli import main
    from tests.support.api import make_api
    from tests.support.portal import make_portal

    api = make_api()
    try:
        assert api.get("/OpenPEX/policies").json == {"placement": "best-fit", "pricing": "flat", "credit": False, "currency": "USD"}
        assert api.client.simulate_get("/OpenPEX/policies").status_code == 401
    finally:
        api.read_models.close()
        api.application.close()
    env = {"PEX_DATABASE_URL": f"sqlite:///{tmp_path}/pex.sqlite3", "PEX_PRICING": "market", "PEX_PLACEMENT": "least-loaded",
           "PEX_CREDIT": "on"}
    shown = CliRunner().invoke(main, ["policies"], env=env, catch_exceptions=False).output
    assert "placement  least-loaded" in shown and "pricing    market (flat × (0.5 + 1.5 × utilization)), in USD" in shown
    assert "credit     on" in shown
    portal = make_portal()
    try:
        portal.application.pricing = pricing_policy("market")
        portal.application.policy = replace(portal.application.policy, placement=placement_of("round-robin"))
        page = portal.user("alice").get("/reservations/new").text
        assert "Prices follow demand" in page and "on the nodes in turn" in page
    finally:
        portal.close()


def test_the_market_policy_is_shown_with_its_formula_over_the_api():
    from tests.support.api import make_api

    api = make_api()
    try:
        api.application.pricing = pricing_policy("market")
        api.application.credit_enforced = True
        assert api.get("/OpenPEX/policies").json == {
            "placement": "best-fit", "pricing": "market", "credit": True, "currency": "USD",
            "market": {"floor": "0.5", "ceiling": "2.0"},
        }
    finally:
        api.read_models.close()
        api.application.close()
