"""Availability without a hold: the window search (pex.domain.availability) and the query.

The search is judged against the Node aggregates themselves (each node's live allocations and
its own peak sweep), never against the timeline it reads."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pex.application.errors import InvalidQuery
from pex.domain import CapacityExceeded, Node, Resources
from pex.domain.availability import free_windows
from pex.domain.node import peak_demand
from pex.domain.values import Reply, State, Terms
from pex.projections.capacity import CapacityTimeline
from tests.support import T0

M, H = timedelta(minutes=1), timedelta(hours=1)
SIZES = (Resources(1, 768, 10), Resources(2, 1536, 20), Resources(4, 3072, 40))
ETCH = "PEX Debian Etch 4.0 Template"

# Bookings and holds on three nodes, on a 15-minute grid: (node, kind, start, length, instances, size).
allocations = st.lists(
    st.tuples(
        st.integers(0, 2), st.sampled_from(["book", "book", "hold"]), st.integers(0, 32), st.integers(1, 16),
        st.integers(1, 3), st.integers(0, 2),
    ),
    max_size=25,
)


def build(history) -> tuple[CapacityTimeline, list[Node]]:
    timeline = CapacityTimeline()
    nodes = [Node(name=f"n{i}", capacity=Resources(4, 4096, 200), at=T0) for i in range(3)]
    for i, (n, kind, start, length, instances, size) in enumerate(history):
        begin = T0 + start * 15 * M
        try:
            if kind == "book":
                nodes[n].book(UUID(int=i + 1), begin, begin + length * 15 * M, instances, SIZES[size], T0)
            else:  # a hold that lapses before the query is made counts for nothing
                lapses = T0 + (2 * M if i % 2 else 10 * H)
                nodes[n].hold(UUID(int=i + 1), begin, begin + length * 15 * M, instances, SIZES[size], lapses, T0)
        except CapacityExceeded:
            pass
    for node in nodes:
        for event in node.collect_events():
            timeline.apply(event)
    return timeline, nodes


def fitting(nodes: list[Node], per_instance: Resources, start, end, at) -> int:
    """How many fit over [start, end), per node, as each node's own sweep judges it."""
    return sum(
        per_instance.how_many_fit_in(node.capacity - peak_demand(node.live_allocations(at), start, end)) for node in nodes
    )


@given(
    allocations, st.integers(0, 2), st.integers(1, 12), st.integers(1, 20), st.integers(0, 40),
    st.integers(1, 12 * 4), st.integers(1, 6),
)  # fmt: skip
def test_every_window_fits_and_no_start_at_which_fitting_begins_is_skipped(
    history, size, count, minutes_x15, from_x15, span_x15, limit
):
    timeline, nodes = build(history)
    at = T0 + 5 * M  # after the short holds lapsed
    per_instance, duration = SIZES[size], minutes_x15 * 15 * M
    earliest = T0 + from_x15 * 15 * M
    latest = earliest + span_x15 * 15 * M
    windows = free_windows(timeline, per_instance, count, duration, earliest, latest, at, limit)

    assert len(windows) <= limit
    assert [w.start for w in windows] == sorted({w.start for w in windows})
    for w in windows:
        assert earliest <= w.start <= latest and w.end == w.start + duration
        assert w.available == fitting(nodes, per_instance, w.start, w.end, at) >= count
    # Every start on a one-minute grid at which fitting begins (it fits, and a minute earlier it
    # did not or was out of range) is returned, up to the last window when `limit` cut it short.
    found = {w.start for w in windows}
    horizon = windows[-1].start if len(windows) == limit else latest
    start, fitted_before = earliest, False
    while start <= horizon:
        fits = fitting(nodes, per_instance, start, start + duration, at) >= count
        if fits and not fitted_before:
            assert start in found, f"fitting begins at {start} but no window starts there"
        fitted_before, start = fits, start + M
    # Only the first instant asked and the instants where free capacity changes are tried.
    assert found <= {earliest, *timeline.change_points(earliest, latest, at)}


def test_an_empty_pool_is_free_from_the_first_instant_asked(memory_app, clock):
    windows = memory_app.availability("alice", "XLARGE", 5, 2 * H, T0 + H, T0 + 6 * H, limit=3)
    assert [(w.start, w.end, w.available, w.price) for w in windows] == [(T0 + H, T0 + 3 * H, 5, Decimal("2.00"))]


def test_a_full_pool_is_free_again_when_its_bookings_end_and_asking_holds_nothing(memory_app, clock):
    app = memory_app
    rid = app.initiate_reservation("filler")
    assert app.submit_proposal(rid, Terms("XLARGE", ETCH, 4, 0, T0, T0 + 3 * H)).reply == Reply.ACCEPT
    app.confirm(rid)
    before = app.recorder.max_notification_id()
    windows = app.availability("alice", "XLARGE", 2, H, None, T0 + 5 * H)
    # From now one node is free (it fits one), so two fit only once the booking ends at 11:00.
    assert [(w.start, w.available) for w in windows] == [(T0 + 3 * H, 5)]
    assert [(w.start, w.available) for w in app.availability("alice", "XLARGE", 1, H, None, T0 + 5 * H)] == [
        (T0, 1), (T0 + 3 * H, 5),
    ]  # fmt: skip
    assert app.recorder.max_notification_id() == before  # nothing held or recorded
    proposal = Terms("XLARGE", ETCH, 2, 0, windows[0].start, windows[0].end)
    assert app.submit_proposal(app.initiate_reservation("alice"), proposal).reply == Reply.ACCEPT
    assert app.get_reservation(rid).state == State.CONFIRMED


def test_a_start_in_the_past_means_now_rounded_up_to_the_second(memory_app, clock):
    clock.advance(timedelta(microseconds=1500))
    [window] = memory_app.availability("alice", "SMALL", 1, H, T0 - H, T0 + H, limit=1)
    assert window.start == T0 + timedelta(seconds=1)


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("type", {"size": "HUGE"}),
        ("count", {"count": 0}),
        ("duration", {"duration": timedelta(0)}),
        ("duration", {"duration": timedelta(days=400)}),
        ("limit", {"limit": 51}),
        ("limit", {"limit": 0}),
        ("from", {"earliest": T0 + timedelta(days=61)}),
        ("to", {"earliest": T0 + H, "latest": T0}),
        ("to", {"latest": T0 + timedelta(days=61)}),
    ],
)
def test_parameters_out_of_range_are_refused_with_their_name(memory_app, field, kwargs):
    asked = {"size": "SMALL", "count": 1, "duration": H, **kwargs}
    with pytest.raises(InvalidQuery) as refused:
        memory_app.availability("alice", **asked)
    assert refused.value.field == field
