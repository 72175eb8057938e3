"""Negotiation histories for the projection tests: a compact Hypothesis generator of user moves
and the passing of time, the player that runs them against the application, and the checks
that the read models say what the aggregates say."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

from hypothesis import strategies as st

from pex.application import Contention, NotFound
from pex.domain import DomainError, Reply, State, Terms
from pex.projections.readmodels import ReadModels
from pex.projections.store import MemoryStore
from pex.wire import instance_json, reservation_json

H = timedelta(hours=1)
ETCH = "PEX Debian Etch 4.0 Template"
SIZES = ("SMALL", "MEDIUM", "LARGE", "XLARGE")

# How often each move comes, by repetition: users mostly propose and answer.
KINDS = ["propose"] * 5 + ["agree"] * 3 + ["confirm", "accept", "decline", "cancel", "activate", "counter"] * 1 + ["wait"] * 3 + ["catch_up"]
which = st.sampled_from([-1, -1, -1, -2, -3, 0])  # which reservation (mostly the latest one)


@st.composite
def moves(draw) -> tuple:
    kind = draw(st.sampled_from(KINDS))
    if kind == "propose":
        return (
            kind,
            draw(st.sampled_from(["alice", "bob"])),
            draw(st.sampled_from(SIZES)),
            draw(st.integers(1, 6)),  # instances needed (6 XLARGE never fit)
            draw(st.integers(0, 3)),  # optional instances
            draw(st.integers(0, 8)),  # start, hours from now
            draw(st.integers(1, 6)),  # duration in hours
            draw(st.none() | st.integers(1, 6)),  # the most the user pays
        )
    if kind == "counter":
        return (kind, draw(which), draw(st.sampled_from(SIZES)), draw(st.integers(1, 5)), draw(st.integers(0, 8)), draw(st.integers(1, 6)))
    if kind == "wait":
        return (kind, draw(st.sampled_from([2, 6, 45, 180, 600, 1440])))  # minutes
    if kind == "catch_up":
        return (kind,)
    return (kind, draw(which))


histories = st.lists(moves(), min_size=10, max_size=30)

# A history that makes every kind of move, for the stores Hypothesis does not roam.
FIXED_HISTORY = [
    ("propose", "alice", "XLARGE", 5, 0, 2, 2, None),
    ("confirm", 0),
    ("propose", "bob", "XLARGE", 1, 1, 2, 1, None),  # the pool is full then: COUNTER
    ("catch_up",),
    ("accept", 1),
    ("confirm", 1),
    ("propose", "alice", "SMALL", 2, 2, 1, 3, 1),  # above the price: COUNTER with fewer
    ("counter", 2, "SMALL", 1, 6, 2),
    ("decline", 2),
    ("propose", "bob", "MEDIUM", 1, 0, 10, 4, None),
    ("wait", 6),  # its offer lapses
    ("propose", "alice", "LARGE", 1, 0, 3, 2, None),
    ("confirm", 4),
    ("cancel", 4),
    ("propose", "bob", "SMALL", 9, 0, 3, 2, None),  # more than the pool can ever hold: REJECT
    ("wait", 180),
    ("activate", 1),
    ("catch_up",),
    ("wait", 720),  # everything ends
    ("propose", "alice", "SMALL", 1, 0, 1, 1, None),
]


def play(app, clock, history, read_models: ReadModels | None = None) -> list[UUID]:
    """Run the moves; a refused move is part of the story. Returns the reservation ids."""
    rids: list[UUID] = []
    for move in history:
        kind, *args = move
        try:
            if kind == "propose":
                user, size, fixed, option, start_h, hours, price = args
                start = clock() + start_h * H
                rid = app.initiate_reservation(user)
                rids.append(rid)
                terms = Terms(size, ETCH, fixed, option, start, start + hours * H, Decimal(price) if price else None)
                app.submit_proposal(rid, terms)
            elif kind == "wait":
                clock.advance(timedelta(minutes=args[0]))
                app.expire_offers()
                for r in app.list_reservations():
                    if r.state in (State.CONFIRMED, State.ACTIVATED):
                        app.expire_reservation(r.id)
            elif kind == "catch_up":
                if read_models is not None:
                    read_models.catch_up()
            elif rids:
                rid = rids[args[0] % len(rids)]  # -1: the latest
                if kind == "counter":
                    size, fixed, start_h, hours = args[1:]
                    start = clock() + start_h * H
                    app.respond(rid, Reply.COUNTER, Terms(size, ETCH, fixed, 0, start, start + hours * H))
                elif kind == "accept":
                    app.accept_counter(rid)
                elif kind == "agree":  # whatever the provider offered
                    if app.get_reservation(rid).state == State.COUNTERED:
                        app.accept_counter(rid)
                    app.confirm(rid)
                elif kind == "confirm":
                    app.confirm(rid)
                elif kind == "decline":
                    app.decline(rid)
                elif kind == "cancel":
                    app.cancel(rid)
                elif kind == "activate":
                    app.activate(rid)
        except (DomainError, NotFound, Contention):
            pass
    return rids


def rebuilt(app) -> ReadModels:
    """The same read models, built from scratch in memory."""
    fresh = ReadModels(app, store=MemoryStore())
    fresh.catch_up()
    return fresh


def tables_of(read_models: ReadModels, views=None) -> tuple[dict, dict]:
    views = views if views is not None else read_models.views
    return read_models.store.snapshot([t for v in views for t in v.tables], [v.name for v in views])


def assert_same_views(stored: ReadModels, reference: ReadModels) -> None:
    """The stored views (all of them, ledger included) equal the reference's, row for row."""
    positions, contents = tables_of(stored)
    ref_positions, ref_contents = tables_of(reference, stored.views)
    assert positions == ref_positions
    for name, rows in ref_contents.items():
        assert contents[name] == rows, name


def assert_read_models_match_aggregates(app, read_models: ReadModels) -> None:
    """What the list endpoints would show equals what the aggregates themselves say."""
    by_id = {r.id: r for r in read_models.reservations()}
    live = app.list_reservations()
    assert set(by_id) == {r.id for r in live}
    for r in live:
        row = by_id[r.id]
        assert (row.user_id, row.state, row.round, row.valid_until, row.version) == (
            r.user_id, r.state, r.round, r.valid_until, r.version,
        )  # fmt: skip
        assert row.terms == r.terms
        assert row.proposal == r.proposal
        assert row.instance_ids == r.instance_ids
        assert row.placement == (r.offer.placement if r.offer else ())
        assert row.offer == r.offer and row.alternatives == r.alternatives
        assert [(s.at, s.party, s.reply, s.note) for s in row.history] == [(s.at, s.party, s.reply, s.note) for s in r.history]
        assert reservation_json(row) == reservation_json(r)  # a list item is the resource, as GET shows it
    for user in ("alice", "bob"):
        assert [r.id for r in read_models.reservations(user_id=user)] == [r.id for r in app.list_reservations(user)]
        for state in (State.CONFIRMED, State.COUNTERED):
            assert {r.id for r in read_models.reservations(user_id=user, state=state)} == {
                r.id for r in app.list_reservations(user, state)
            }
    instances = {i.id: i for i in read_models.instances()}
    assert set(instances) == {i.id for i in app.list_instances()}
    for i in app.list_instances():
        row = instances[i.id]
        assert (row.name, row.node, row.status, row.start, row.end, row.ip_address, row.user_id, row.version) == (
            i.name, i.node, i.status, i.start, i.end, i.ip_address, i.user_id, i.version,
        )  # fmt: skip
        assert instance_json(row) == instance_json(i)
    now = app.clock()
    for node in app.nodes():
        live_allocations = {
            (a.reservation_id, a.start, a.end, a.instances, a.is_hold) for a in app.node_allocations(node.name) if a.end > now
        }
        shown = {
            (e.reservation_id, e.start, e.end, e.instances, e.is_hold) for e in read_models.calendar(node=node.name, start=now, at=now)
        }
        assert shown == live_allocations, node.name
    assert {(n.name, n.capacity, n.available, n.version) for n in read_models.nodes()} == {
        (n.name, n.capacity, n.available, n.version) for n in app.nodes()
    }
