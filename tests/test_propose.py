"""`propose`: a user's first proposal as one command, the one the API's POST and the portal's
form each call once (initiate, check, submit, replay, abandon)."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from pex.application.errors import ProposalReused
from pex.domain.errors import InvalidProposal
from pex.domain.values import Reply, State, Terms

H = timedelta(hours=1)
TEMPLATE = "PEX Debian Etch 4.0 Template"


def terms(clock, size="SMALL", hours=2, fixed=1):
    start = clock() + H
    return Terms(size, TEMPLATE, fixed, 0, start, start + hours * H)


def test_propose_initiates_and_answers_in_one_command(memory_app, clock):
    proposed = memory_app.propose("alice", terms(clock))

    assert proposed.outcome.reply == Reply.ACCEPT
    assert not proposed.replayed
    assert memory_app.get_reservation(proposed.outcome.reservation.id, "alice").state == State.ACCEPTED


def test_a_malformed_proposal_is_refused_before_any_reservation_is_made(memory_app, clock):
    with pytest.raises(InvalidProposal):
        memory_app.propose("alice", terms(clock, size="HUGE"))

    assert memory_app.list_reservations("alice") == []


def test_the_same_id_proposed_again_answers_what_was_answered_then(memory_app, clock):
    rid, asked = uuid4(), terms(clock)
    first = memory_app.propose("alice", asked, rid, keep_on_failure=True)

    again = memory_app.propose("alice", asked, rid, keep_on_failure=True)

    assert again.replayed
    assert again.outcome.reply == first.outcome.reply
    assert again.outcome.reservation.version == first.outcome.reservation.version


def test_the_same_id_proposed_again_after_a_counter_replays_the_counter_and_starts_no_new_round(memory_app, clock):
    whole_pool = terms(clock, size="XLARGE", fixed=5)
    assert memory_app.propose("bob", whole_pool).outcome.reply == Reply.ACCEPT
    rid = uuid4()
    first = memory_app.propose("alice", whole_pool, rid, keep_on_failure=True)
    assert first.outcome.reply == Reply.COUNTER

    again = memory_app.propose("alice", whole_pool, rid, keep_on_failure=True)

    assert again.replayed and again.outcome.reply == Reply.COUNTER
    assert again.outcome.reservation.version == first.outcome.reservation.version
    assert memory_app.get_reservation(rid, "alice").round == first.outcome.reservation.round


def test_a_refused_first_proposal_under_an_id_records_nothing_and_the_id_may_be_proposed_again(memory_app, clock):
    rid = uuid4()
    with pytest.raises(InvalidProposal):
        memory_app.propose("alice", terms(clock, size="HUGE"), rid)
    assert memory_app.list_reservations("alice") == []

    proposed = memory_app.propose("alice", terms(clock), rid)

    assert not proposed.replayed and proposed.outcome.reply == Reply.ACCEPT


def test_the_same_id_for_other_terms_is_refused(memory_app, clock):
    rid = uuid4()
    memory_app.propose("alice", terms(clock), rid)

    with pytest.raises(ProposalReused):
        memory_app.propose("alice", terms(clock, hours=3), rid)
