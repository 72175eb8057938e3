"""A reservation's phase (pex.domain.lifecycle) keeps its promises for every state, interval,
moment and mix of instance statuses: what the API, the portal and the CLI tell a user."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from pex.domain.instance import Status
from pex.domain.lifecycle import Phase, phase_of, runs_by_itself
from pex.domain.values import State
from tests.support import T0

BOOKED_STATES = (State.CONFIRMED, State.ACTIVATED)


@given(
    state=st.sampled_from(list(State)),
    auto_start=st.booleans(),
    minutes=st.integers(-600, 600),
    statuses=st.lists(st.sampled_from([s.value for s in Status]), max_size=4),
)
def test_the_phase_never_says_booked_once_it_should_run_and_asks_for_activation_only_when_needed(state, auto_start, minutes, statuses):
    start, end = T0, T0 + timedelta(hours=2)
    now = T0 + timedelta(minutes=minutes)
    if state in BOOKED_STATES or state == State.EXPIRED:
        statuses = statuses or ["SCHEDULED"]  # a booked reservation has its instances
    phase = phase_of(state, auto_start, start, end, now, statuses)
    if phase in (Phase.BOOKED, Phase.AWAITING_ACTIVATION):
        assert state in BOOKED_STATES and now < end
    if phase == Phase.BOOKED:
        assert now < start and runs_by_itself(state, auto_start)
    if phase == Phase.AWAITING_ACTIVATION:
        assert state == State.CONFIRMED and not auto_start  # the only time Activate is offered
    if phase in (Phase.STARTING, Phase.RUNNING, Phase.STOPPED, Phase.FAILED):
        assert start <= now < end and runs_by_itself(state, auto_start)
    if phase == Phase.RUNNING:
        assert any(s in ("RUNNING", "PAUSED", "SUSPENDED") for s in statuses)
    if state in BOOKED_STATES and runs_by_itself(state, auto_start) and start <= now < end:
        assert phase not in (Phase.BOOKED, Phase.AWAITING_ACTIVATION)
    if phase == Phase.ENDED:
        assert not any(s in ("RUNNING", "HALTED", "PAUSED", "SUSPENDED") for s in statuses)
