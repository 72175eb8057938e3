"""Random negotiation histories, replayed by Hypothesis against the application.

Rules are user moves (several users proposing, countering, accepting, confirming, declining,
cancelling, activating, releasing early), an administrator ending a reservation, and the passing of time
(offers lapse, reservations end). After every step the promises are checked:

- no node is over capacity at any instant, counting bookings and live holds, judged both by
  the nodes themselves and independently from the reservations' own offers;
- every confirmed reservation has bookings for all its instances inside its interval;
- a reservation that is over (rejected, expired, released, cancelled) occupies nothing on any node;
- every move the protocol forbids was refused and recorded nothing (checked in the rules,
  against the model's own table of moves, written independently of the domain's);
- the state rebuilt from the stored events equals the live state;
- no user holds or booked more CPU-hours, or more live offers, than the quotas allow.

A failure shrinks to a short history that can be pasted back as a regression test.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from pex.application.ports import PoolHost, PoolInventory, PoolTemplate
from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.domain import IllegalMove, InvalidProposal, OfferExpired, Reply, State, Terms
from pex.domain.catalogue import DEMO_NODES
from pex.domain.node import Node, node_id, peak_demand
from pex.domain.pool import node_name
from pex.domain.quotas import QuotaExceeded
from pex.settings import Settings
from tests.support import T0

H = timedelta(hours=1)
S = State

# The protocol as this test understands it (paper §3.1), independent of pex.domain's table.
MODEL_MOVES = {
    "confirm": {S.ACCEPTED: S.CONFIRMED},
    "accept": {S.COUNTERED: S.ACCEPTED},
    "decline": {S.ACCEPTED: S.REJECTED, S.COUNTERED: S.REJECTED},
    "cancel": {s: S.CANCELLED for s in (S.INITIATED, S.ACCEPTED, S.COUNTERED, S.REJECTED, S.CONFIRMED)},
    "activate": {S.CONFIRMED: S.ACTIVATED},
    # An administrator ends any reservation that still stands or negotiates.
    "terminate": {s: S.CANCELLED for s in (S.INITIATED, S.ACCEPTED, S.COUNTERED, S.REJECTED, S.CONFIRMED, S.ACTIVATED)},
    # Its user ends a booked reservation early, before its end.
    "release": {S.CONFIRMED: S.EXPIRED, S.ACTIVATED: S.EXPIRED},
}
OFFER_MOVES = {"confirm", "accept"}  # moves that need the offer to be still valid

terms_strategy = st.builds(
    lambda size, fixed, option, start_h, duration_h, price, later_h, shorter_h: (
        size, fixed, option, start_h, duration_h, price, later_h, shorter_h,
    ),
    size=st.sampled_from(["SMALL", "MEDIUM", "LARGE", "XLARGE"]),
    fixed=st.integers(0, 6),
    option=st.integers(0, 4),
    start_h=st.integers(0, 48),
    duration_h=st.integers(1, 24),
    price=st.none() | st.integers(0, 20),
    # A flexible proposal: a latest start so many hours after the start, a shortest
    # duration so many hours (never below one minute) less than the duration.
    later_h=st.none() | st.integers(0, 24),
    shorter_h=st.none() | st.integers(0, 24),
)


class NegotiationHistories(RuleBasedStateMachine):
    database_url = "memory:"

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(T0)
        url = self.database_url() if callable(self.database_url) else self.database_url
        self.app = self.build(url)
        self.refused = 0
        self.homes: dict = {}  # reservation id -> the pool its offers are in

    def build(self, url: str):
        """The application, on the paper's testbed (a subclass may build other pools)."""
        return build_application(Settings(database_url=url), clock=self.clock)

    reservations = Bundle("reservations")

    def teardown(self) -> None:
        self.app.close()

    def make_terms(self, spec) -> Terms:
        size, fixed, option, start_h, duration_h, price, later_h, shorter_h = spec
        start = self.clock() + start_h * H
        from decimal import Decimal

        return Terms(
            size, "PEX Debian Etch 4.0 Template", fixed, option, start, start + duration_h * H,
            Decimal(price) if price is not None else None,
            latest_start=None if later_h is None else start + later_h * H,
            min_duration=None if shorter_h is None else max(timedelta(minutes=1), (duration_h - shorter_h) * H),
        )

    def check_answer(self, outcome, asked: Terms) -> None:
        r = outcome.reservation
        if outcome.reply == Reply.ACCEPT:
            # Terms the provider chose inside the asked freedom (the asked terms, without one),
            # within the asked price; the invariants below check that they overbook nothing.
            chosen = r.offer.terms
            assert r.state == S.ACCEPTED
            assert asked.allows(chosen) and not chosen.flexible
            assert asked.price is None or chosen.price <= asked.price
            if not asked.flexible:
                assert chosen.but(price=None) == asked.but(price=None)
        elif outcome.reply == Reply.COUNTER:
            offered = r.offer.terms
            assert r.state == S.COUNTERED
            assert offered.start >= self.clock()
            assert offered.duration <= asked.duration and not offered.flexible
            assert max(asked.instances_fixed, 1) <= offered.instances <= asked.instances
            assert offered.instances_fixed == asked.instances_fixed
        else:
            assert outcome.reply == Reply.REJECT and r.state == S.REJECTED and outcome.reason
        if r.offer is not None:
            assert sum(a.instances for a in r.offer.placement) == r.offer.terms.instances
            assert r.valid_until == self.clock() + self.app.policy.offer_ttl

    @rule(target=reservations, user=st.sampled_from(["alice", "bob", "carol"]), spec=terms_strategy)
    def propose(self, user, spec):
        asked = self.make_terms(spec)
        rid = self.app.initiate_reservation(user)
        try:
            outcome = self.app.submit_proposal(rid, asked)
        except QuotaExceeded as refused:
            assert refused.limit in ("cpu-hours", "live-offers")  # every start is within the horizon
            assert self.app.get_reservation(rid).version == 1
            return rid
        except InvalidProposal:
            assert asked.instances < 1
            assert self.app.get_reservation(rid).version == 1
            return rid
        self.check_answer(outcome, asked)
        return rid

    @rule(target=reservations, user=st.sampled_from(["alice", "bob", "carol"]), spec=terms_strategy)
    def book(self, user, spec):
        """Propose and take whatever is offered at once (as `pex negotiate --confirm`), so that
        histories reach booked reservations often enough to release, end and cancel them."""
        rid = self.propose(user, spec)
        r = self.app.get_reservation(rid)
        if r.state == S.COUNTERED:
            self.app.accept_counter(rid)
        if self.app.get_reservation(rid).state == S.ACCEPTED:
            assert self.app.confirm(rid).reply == Reply.REQUEST_SUCCESS
        return rid

    @rule(rid=reservations, spec=terms_strategy)
    def counter(self, rid, spec):
        before = self.app.get_reservation(rid)
        asked = self.make_terms(spec)
        try:
            outcome = self.app.respond(rid, Reply.COUNTER, asked)
        except QuotaExceeded as refused:
            assert before.state == S.COUNTERED and refused.limit in ("cpu-hours", "live-offers")
            assert self.app.get_reservation(rid).version == before.version
            return
        except (IllegalMove, InvalidProposal):
            assert before.state != S.COUNTERED or asked.instances < 1
            assert self.app.get_reservation(rid).version == before.version
            return
        assert before.state == S.COUNTERED
        self.check_answer(outcome, asked)

    def attempt(self, move: str, rid, call) -> None:
        before = self.app.get_reservation(rid)
        expected = MODEL_MOVES[move].get(before.state)
        lapsed = before.valid_until is not None and before.valid_until <= self.clock()
        if move in ("activate", "release") and before.offer is not None and before.offer.terms.end <= self.clock():
            expected = None
        try:
            call(rid)
        except (IllegalMove, OfferExpired):
            assert expected is None or (move in OFFER_MOVES and lapsed), f"{move} refused in {before.state}"
            assert self.app.get_reservation(rid).version == before.version
            self.refused += 1
            return
        assert expected is not None, f"{move} allowed in {before.state}"
        assert not (move in OFFER_MOVES and lapsed), f"{move} allowed on a lapsed offer"
        assert self.app.get_reservation(rid).state == expected

    @rule(rid=reservations)
    def confirm(self, rid):
        def call(r):
            outcome = self.app.confirm(r)
            assert outcome.reply == Reply.REQUEST_SUCCESS, outcome.reason

        self.attempt("confirm", rid, call)

    @rule(rid=reservations)
    def accept(self, rid):
        self.attempt("accept", rid, self.app.accept_counter)

    @rule(rid=reservations)
    def decline(self, rid):
        self.attempt("decline", rid, self.app.decline)

    @rule(rid=reservations)
    def cancel(self, rid):
        self.attempt("cancel", rid, self.app.cancel)

    @rule(rid=reservations)
    def activate(self, rid):
        self.attempt("activate", rid, self.app.activate)

    @rule(rid=reservations)
    def terminate(self, rid):
        self.attempt("terminate", rid, lambda r: self.app.terminate(r, by="root", reason="abuse"))

    @rule(rid=reservations)
    def release(self, rid):
        self.attempt("release", rid, lambda r: self.app.release(r, by="alice"))

    @rule(minutes=st.sampled_from([1, 4, 6, 30, 90, 600]))
    def time_passes(self, minutes):
        self.clock.advance(timedelta(minutes=minutes))
        self.app.expire_offers()
        for r in self.app.list_reservations():
            if r.state in (S.CONFIRMED, S.ACTIVATED) and r.offer.terms.end <= self.clock():
                assert self.app.expire_reservation(r.id)

    # --- the promises ------------------------------------------------------------------

    def live_nodes(self) -> list[Node]:
        return [self.app.repository.get(node_id(n.name)) for n in self.app.nodes()]

    @invariant()
    def no_node_is_over_capacity_by_its_own_account(self):
        now = self.clock()
        for node in self.live_nodes():
            live = node.live_allocations(now)
            for a in live:  # the peak is reached at the start of some allocation
                assert peak_demand(live, a.start, a.end).fits_in(node.capacity), node.name

    @invariant()
    def no_node_is_over_capacity_by_the_reservations_account(self):
        now = self.clock()
        demand: dict[str, list] = {}
        from pex.domain.node import NodeAllocation

        for r in self.app.list_reservations():
            counts = r.state in (S.CONFIRMED, S.ACTIVATED) or (
                r.state in (S.ACCEPTED, S.COUNTERED) and r.valid_until > now
            )
            if r.offer is None or not counts or r.offer.terms.end <= now:
                continue
            for a in r.offer.placement:
                demand.setdefault(a.node, []).append(
                    NodeAllocation(r.id, r.offer.terms.start, r.offer.terms.end, a.instances, r.offer.per_instance)
                )
        capacities = {n.name: n.capacity for n in self.app.nodes()}
        for name, allocations in demand.items():
            for a in allocations:
                assert peak_demand(allocations, a.start, a.end).fits_in(capacities[name]), name

    @invariant()
    def every_confirmed_reservation_is_booked_in_full(self):
        now = self.clock()
        nodes = {n.name: n for n in self.live_nodes()}
        for r in self.app.list_reservations():
            if r.state not in (S.CONFIRMED, S.ACTIVATED) or r.offer.terms.end <= now:
                continue
            terms = r.offer.terms
            assert len(r.instance_ids) == terms.instances
            for a in r.offer.placement:
                booking = nodes[a.node].allocation_of(r.id)
                assert booking is not None and not booking.is_hold, (r.id, a.node)
                assert (booking.start, booking.end, booking.instances) == (terms.start, terms.end, a.instances)
            instances = [self.app.get_instance(i) for i in r.instance_ids]
            assert sorted(i.node for i in instances) == sorted(a.node for a in r.offer.placement for _ in range(a.instances))
            assert all(i.start == terms.start and i.end == terms.end for i in instances)

    @invariant()
    def a_reservation_that_is_over_occupies_nothing(self):
        now = self.clock()
        nodes = self.live_nodes()
        for r in self.app.list_reservations():
            if r.state in (S.REJECTED, S.EXPIRED, S.CANCELLED):
                for node in nodes:
                    allocation = node.allocation_of(r.id)
                    assert allocation is None or not allocation.counts_at(now), (r.id, r.state, node.name)

    @invariant()
    def no_user_is_over_a_quota(self):
        quotas, pool_cpus = self.app.quotas(), self.app.pool_cpus()
        for user in ("alice", "bob", "carol"):
            usage = self.app.usage(user)
            assert usage.cpu_seconds <= quotas.cpu_hours_in_force(pool_cpus) * 3600, user
            assert usage.live_offers <= quotas.max_live_offers, user

    @invariant()
    def every_reservation_lives_in_one_pool_and_stays_there(self):
        pools = {n.name: n.pool for n in self.app.nodes()}
        held: dict = {}
        for node in self.live_nodes():
            for allocation in node.allocations.values():
                held.setdefault(allocation.reservation_id, set()).add(pools[node.name])
        for r in self.app.list_reservations():
            offered = {pools[a.node] for a in r.offer.placement} if r.offer is not None else set()
            assert len(offered) <= 1 and len(held.get(r.id, set())) <= 1, (r.id, offered, held.get(r.id))
            for pool in offered | held.get(r.id, set()):
                assert self.homes.setdefault(r.id, pool) == pool, (r.id, self.homes[r.id], pool)

    @invariant()
    def replaying_the_stored_events_gives_the_live_state(self):
        ids = [r.id for r in self.app.list_reservations()] + [node_id(n.name) for n in self.app.nodes()]
        for aggregate_id in ids:
            replayed = None
            for event in self.app.events.get(aggregate_id):
                replayed = event.mutate(replayed)
            assert replayed.__dict__ == self.app.repository.get(aggregate_id).__dict__


TestOnMemoryStore = NegotiationHistories.TestCase
TestOnMemoryStore.settings = settings(stateful_step_count=30)


class TwoPoolHistories(NegotiationHistories):
    """The same histories on two Xen pools (PEX_POOLS) of three testbed hosts each, the hosts
    of both named alike: the promises hold, and no reservation is ever offered, held or
    booked in two pools, nor moves from one to the other."""

    def build(self, url: str):
        app = build_application(Settings(database_url=url, install_demo_pool=False), clock=self.clock)
        app.pool_configured = True
        app.install_demo_pool()  # the sizes: the nodes and templates come from the pools
        template = PoolTemplate("t-uuid", "PEX Debian Etch 4.0 Template")
        for pool in ("east", "west"):
            hosts = tuple(PoolHost(node_name(pool, name), f"{pool}-{name}", capacity, True) for name, capacity in DEMO_NODES[:3])
            app.sync_pool(PoolInventory(hosts, (template,)), pool=pool)
        app.register_template(template.name)
        return app


TestOnTwoPools = TwoPoolHistories.TestCase
TestOnTwoPools.settings = settings(stateful_step_count=30)


class SqliteHistories(NegotiationHistories):
    pass


class PostgresHistories(NegotiationHistories):
    pass


@pytest.fixture
def sqlite_machine(tmp_path_factory):
    counter = iter(range(10**6))
    SqliteHistories.database_url = staticmethod(
        lambda: f"sqlite:///{tmp_path_factory.mktemp('h')}/pex-{next(counter)}.sqlite3"
    )
    return SqliteHistories


def test_histories_on_sqlite(sqlite_machine):
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(sqlite_machine, settings=settings(max_examples=15, stateful_step_count=20))


@pytest.mark.postgres
def test_histories_on_postgres(postgres):
    from hypothesis.stateful import run_state_machine_as_test

    PostgresHistories.database_url = staticmethod(postgres.create_database)
    run_state_machine_as_test(PostgresHistories, settings=settings(max_examples=10, stateful_step_count=20))
