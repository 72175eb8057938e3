"""The one log follower: every read model it feeds, in whatever interleaving of appends, follows
and resets, ends in the state it reaches folded alone from the start; each event is decoded
once for all the models that follow it together; and a model that is behind (reset, or a new
one) is brought up from its own position while the others are given nothing they have seen."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from pex.bootstrap import build_application
from pex.clock import ManualClock
from pex.projections.capacity import CapacityTimeline
from pex.projections.follower import Follower, Recorded, after
from pex.projections.readmodels import ReadModels
from pex.projections.reservations import ReservationIndex
from pex.projections.store import MemoryStore
from pex.settings import Settings
from pex.workers.index import DispatchIndex
from tests.projections.histories import FIXED_HISTORY, assert_same_views, moves, play
from tests.projections.test_checkpoints import counting_decodes, what_counts
from tests.support import T0


class Counting:
    """A read model that keeps the ids it was given to fold, to show none is folded twice."""

    name = "counting"

    def __init__(self) -> None:
        self.ids: list[int] = []

    def position(self) -> int:
        return self.ids[-1] if self.ids else 0

    def fold(self, batch: Sequence[Recorded]) -> bool:
        self.ids.extend(r.id for r in after(batch, self.position()))
        return True


def alone(app, model) -> None:
    """Fold `model` from its position to the head, with a follower of its own."""
    Follower(app.recorder, app.mapper).follow(model)


def events_of(app) -> list:
    return [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(start=1, limit=10**6)]


def rebuilt(app) -> ReadModels:
    reference = ReadModels(app, store=MemoryStore())
    alone(app, reference)
    return reference


MODELS = ("decisions", "listing", "dispatch", "views", "counting")
steps = st.lists(
    st.one_of(
        st.tuples(st.just("play"), st.lists(moves(), min_size=1, max_size=4)),
        st.tuples(st.just("follow"), st.sets(st.sampled_from(MODELS))),  # the empty set: every model
        st.tuples(st.just("reset"), st.sampled_from(MODELS)),
    ),
    min_size=3,
    max_size=14,
)


@settings(max_examples=20, deadline=None)
@given(steps, st.integers(1, 9))
def test_every_model_the_one_follower_feeds_ends_as_it_would_folded_alone(steps, batch_size):
    clock = ManualClock(T0)
    app = build_application(Settings(database_url="memory:"), clock=clock)
    try:
        app.follower.batch_size = batch_size  # batch boundaries fall anywhere
        dispatch, views, counting = DispatchIndex(), ReadModels(app, store=MemoryStore()), Counting()
        views.batch_size = batch_size + 1
        app.follower.register(dispatch.read_model(app), views, counting)
        models = {
            "decisions": app.decisions, "listing": app._listing, "dispatch": dispatch.read_model(app),
            "views": views, "counting": counting,
        }  # fmt: skip
        for kind, arg in steps:
            if kind == "play":
                play(app, clock, arg)
            elif kind == "follow":
                app.follower.follow(*(models[name] for name in sorted(arg)))
            elif arg == "decisions":  # a checkpoint that could not be used: from the start
                app.timeline, app.index = CapacityTimeline(), ReservationIndex(pending_only=True)
            elif arg == "listing":
                app._listing.index, app._listing.at = ReservationIndex(), 0
            elif arg == "dispatch":
                dispatch._clear()
            elif arg == "views":
                view = views.views[len(steps) % len(views.views)]
                if view.rebuildable:
                    views.store.reset(view.name, view.tables)
            else:
                counting.ids = []
        head = app.follower.follow(*models.values())  # the listings' index is not registered: asked for
        assert head == (app.recorder.max_notification_id() or 0)

        assert counting.ids == list(range(1, head + 1)), "each event folded once, in order"
        timeline, index = CapacityTimeline(), ReservationIndex(pending_only=True)
        for event in events_of(app):
            timeline.apply(event)
            index.apply(event)
        assert app.timeline.position == head
        assert what_counts(app.timeline, clock()) == what_counts(timeline, clock())
        assert app.index == index
        listing = ReservationIndex()
        for event in events_of(app):
            listing.apply(event)
        assert app._listing.index == listing
        reference = DispatchIndex(resumed=True)
        alone(app, reference.read_model(app))
        assert dispatch == reference and dispatch.position == reference.position == head
        assert_same_views(views, rebuilt(app))
    finally:
        app.close()


def test_models_that_follow_together_decode_each_event_once(memory_app, clock):
    dispatch, views = DispatchIndex(), ReadModels(memory_app, store=MemoryStore())
    memory_app.follower.register(dispatch.read_model(memory_app), views)
    memory_app.follower.follow()
    before = memory_app.recorder.max_notification_id()
    play(memory_app, clock, FIXED_HISTORY)
    decoded = counting_decodes(memory_app)
    memory_app.follower.follow()  # the decisions, the dispatch index and the views, together
    views.catch_up()
    dispatch.follow(memory_app)
    new = memory_app.recorder.max_notification_id() - before
    # The listings' index followed during the play (its queries fold it), and the commands the
    # decisions: what the others then fold a moment later comes from the events decoded.
    assert decoded[0] <= new
    assert dispatch.position == views.position() == memory_app.timeline.position == before + new


def test_models_that_follow_apart_from_different_positions_decode_each_event_once(memory_app, clock):
    # As a worker's timer, views and outbox do: each follows on its own, from where it is, while
    # the log grows; the events one of them had decoded are not decoded again for another.
    first, second, third = Counting(), Counting(), Counting()
    follower = Follower(memory_app.recorder, memory_app.mapper)  # apart from the commands' follows
    decoded = counting_decodes(memory_app)  # the commands' loads count too: only the follows are summed
    following = 0

    def follow(model: Counting) -> None:
        nonlocal following
        before = decoded[0]
        follower.follow(model)
        following += decoded[0] - before

    half = len(FIXED_HISTORY) // 2
    play(memory_app, clock, FIXED_HISTORY[:half])
    follow(first)
    play(memory_app, clock, FIXED_HISTORY[half:])
    follow(second)  # from the start: the first's events, and the new ones
    follow(first)
    follow(third)  # from the start again, after the first's second batch
    head = memory_app.recorder.max_notification_id()
    assert first.ids == second.ids == third.ids == list(range(1, head + 1))
    assert following == head


def test_a_model_reset_mid_way_catches_up_alone(memory_app, clock):
    dispatch, views = DispatchIndex(), ReadModels(memory_app, store=MemoryStore())
    memory_app.follower.register(dispatch.read_model(memory_app), views)
    play(memory_app, clock, FIXED_HISTORY)
    head = memory_app.follower.follow()
    calendar = views.by_name["calendar"]
    views.store.reset(calendar.name, calendar.tables)
    fresh = DispatchIndex(resumed=True)  # a model of another schema's checkpoint: from the start
    memory_app.follower.register(fresh.read_model(memory_app))

    applied: dict[str, int] = {}
    for view in views.views:
        original = view.apply

        def counted(batch, event, notification, _name=view.name, _original=original):
            applied[_name] = applied.get(_name, 0) + 1
            _original(batch, event, notification)

        view.apply = counted  # type: ignore[method-assign]
    timeline_applies = [0]
    timeline_apply = memory_app.timeline.apply

    def counted_timeline(event):
        timeline_applies[0] += 1
        timeline_apply(event)

    memory_app.timeline.apply = counted_timeline  # type: ignore[method-assign]
    dispatch_before = (dispatch.position, dispatch.to_state())

    assert memory_app.follower.follow() == head
    assert applied == {"calendar": head}, "only the reset view folded, from its own position"
    assert timeline_applies[0] == 0
    assert (dispatch.position, dispatch.to_state()) == dispatch_before
    reference = DispatchIndex(resumed=True)
    alone(memory_app, reference.read_model(memory_app))
    assert fresh == reference and fresh.position == head
    assert_same_views(views, rebuilt(memory_app))
