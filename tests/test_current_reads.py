"""A thread's reads of one moment (Core.begin_reads, as each HTTP request has them): the log is
followed once, the cached aggregates are brought forward by it and taken as they stand, with no
query each. Two applications on one store stand for two processes: what one recorded before the
other's reads began is what the other reads."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from pex.bootstrap import build_application
from pex.domain.node import node_id
from pex.domain.values import State, Terms
from tests.support.api import PASSWORD, cheap_settings

H = timedelta(hours=1)
ETCH = "PEX Debian Etch 4.0 Template"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_processes(request, tmp_path, clock):
    url = f"sqlite:///{tmp_path}/pex.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    settings = cheap_settings(url)
    first = build_application(settings, clock=clock)
    second = build_application(replace(settings, install_demo_pool=False), clock=clock)
    yield first, second
    second.close()
    first.close()


def test_reads_that_begin_after_another_process_recorded_see_it(two_processes, clock):
    here, there = two_processes
    here.register_user("alice", PASSWORD)
    start = clock() + H
    proposed = here.propose("alice", Terms("SMALL", ETCH, 2, 0, start, start + H)).outcome.reservation
    # The other process has it cached, as it stood: offered, and alice's first password.
    assert there.get_reservation(proposed.id).state == State.ACCEPTED
    assert there.authenticate("alice", PASSWORD) is not None
    node = proposed.offer.placement[0].node
    before = there.repository.get(node_id(node)).version

    confirmed = here.respond(proposed.id, "CONFIRM").reservation
    here.set_password("alice", "a new one, long enough")

    with there.current_reads():
        assert there.get_reservation(proposed.id).state == State.CONFIRMED
        assert there.authenticate("alice", PASSWORD) is None
        assert there.authenticate("alice", "a new one, long enough") is not None
        assert there.repository.get(node_id(node)).version > before
        instances = there.repository.get_many(list(confirmed.instance_ids))
        assert set(instances) == set(confirmed.instance_ids)


def test_reads_after_a_save_of_their_own_see_it(two_processes, clock):
    here, _ = two_processes
    here.register_user("alice", PASSWORD)
    start = clock() + H
    with here.current_reads():
        proposed = here.propose("alice", Terms("SMALL", ETCH, 1, 0, start, start + H)).outcome.reservation
        assert here.get_reservation(proposed.id).state == State.ACCEPTED
        here.respond(proposed.id, "CONFIRM")
        assert here.get_reservation(proposed.id).state == State.CONFIRMED


def test_current_reads_take_cached_aggregates_without_a_query_each(two_processes, clock):
    here, there = two_processes
    start = clock() + H
    proposed = here.propose("alice", Terms("SMALL", ETCH, 1, 0, start, start + H)).outcome.reservation
    node = node_id(proposed.offer.placement[0].node)
    there.follow()  # as a process does when it starts (pex.bootstrap.build_http_app)
    there.repository.get(node)
    there.get_reservation(proposed.id)
    here.respond(proposed.id, "CONFIRM")  # both change: the follower brings them forward
    asked: list[object] = []
    recorder = there.repository.event_store.recorder
    select_events = recorder.select_events

    def counted(*args, **kwargs):
        asked.append(args)
        return select_events(*args, **kwargs)

    recorder.select_events = counted
    try:
        with there.current_reads():
            assert there.repository.get(node).version == here.repository.get(node).version
            assert there.get_reservation(proposed.id).state == State.CONFIRMED
        assert asked == []
        there.repository.get(node)  # outside: each load asks the store for what is newer
        assert len(asked) == 1
    finally:
        recorder.select_events = select_events


def test_what_a_process_saved_it_reads_back_without_a_query_and_as_others_change_it(two_processes, clock, monkeypatch):
    """A reservation proposed here is cached as saved: the CONFIRM that follows (the PUT after
    the POST) reads it with no query of its events. Changed by another process next, it is
    read here as that one left it: the follower brings the cached copy forward."""
    import pex.application.core as core

    here, there = two_processes
    start = clock() + H
    proposed = here.propose("alice", Terms("SMALL", ETCH, 1, 0, start, start + H)).outcome.reservation
    asked: list[object] = []
    stored_events_of = core.stored_events_of
    monkeypatch.setattr(core, "stored_events_of", lambda recorder, ids: asked.append(ids) or stored_events_of(recorder, ids))
    with here.current_reads():
        assert here.respond(proposed.id, "CONFIRM").reservation.state == State.CONFIRMED
    assert asked == []
    there.cancel(proposed.id)
    with here.current_reads():
        assert here.get_reservation(proposed.id).state == State.CANCELLED
