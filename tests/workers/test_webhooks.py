"""Users are told (issue 14, item 6): the notifier follows the log into an outbox and POSTs each
notification, signed with the user's secret, to a real HTTP receiver on loopback: an offer
about to lapse, a reservation's start, 15 minutes before its end, its end, a failed instance.
At least once, with retries and a delivery log; a receiver that is down or slow never holds a
command. On a manual clock, with the in-memory enactment; the outbox on every store."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from uuid import uuid4

import pytest

from pex.application.errors import NotFound
from pex.domain.instance import FAILED_AFTER
from pex.domain.values import Reply, Terms
from pex.projections.webhooks import CANCELLED, DELIVERED, DROPPED, FAILED, PENDING
from pex.settings import WebhookSettings
from pex.workers.webhooks import Notifier
from tests.support.api import PASSWORD
from tests.support.webhooks import Receiver
from tests.support.world import HOUR
from tests.support.xen import TEMPLATE

SETTINGS = WebhookSettings(allow_private=True, threads=2)  # the receiver is on loopback


@pytest.fixture
def receiver():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def told(make_memory_world, database_url):
    """A worker world whose notifier was there from the start, and alice with no webhook yet."""

    def make(settings: WebhookSettings = SETTINGS, started: bool = True):
        world = make_memory_world(database_url=database_url)
        world.app.webhook_settings = settings
        world.app.register_user("alice", PASSWORD)
        notifier = Notifier(world.app, settings)
        world.closers.insert(0, notifier.close)
        if started:
            notifier.tick()  # a worker that runs from now on
        return world, notifier

    return make


def hook(world, receiver) -> None:
    receiver.secret = world.app.set_webhook("alice", receiver.url).secret


def offer(world, minutes_ahead: int = 60):
    start = world.clock() + timedelta(minutes=minutes_ahead)
    rid = world.app.initiate_reservation("alice")
    assert world.app.submit_proposal(rid, Terms("SMALL", TEMPLATE, 1, 0, start, start + HOUR)).reply == Reply.ACCEPT
    return rid


def log_of(world):
    return {d.kind: d for d in world.app.webhook_deliveries("alice")}


def test_an_offer_about_to_lapse_is_told_a_minute_before_signed_with_the_users_secret(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = offer(world)
    valid_until = world.app.get_reservation(rid).valid_until
    assert notifier.tick().outcomes == {}  # not yet: due a minute before it lapses
    world.clock.set(valid_until - timedelta(seconds=61))
    assert notifier.tick().outcomes == {}
    world.clock.set(valid_until - timedelta(seconds=60))
    assert list(notifier.tick().outcomes.values()) == [DELIVERED]
    [got] = receiver.received
    assert got.signed and got.path == "/hooks/pex"
    assert got.headers["X-PEX-Event"] == "offer.lapsing" and got.headers["Content-Type"] == "application/json"
    assert got.headers["X-PEX-Timestamp"] == str(int(world.clock().timestamp()))
    assert got.json["reservationId"] == str(rid) and got.json["user"] == "alice"
    assert got.json["validUntil"] == valid_until.isoformat().replace("+00:00", "Z")
    assert got.headers["X-PEX-Delivery"] == got.json["id"]
    entry = log_of(world)["offer.lapsing"]
    assert (entry.status, entry.attempts, entry.last_code) == (DELIVERED, 1, 200)
    assert notifier.tick().outcomes == {} and len(receiver.received) == 1  # once


def test_a_signature_made_with_another_secret_does_not_verify(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    receiver.secret = "whsec_not-alices"
    rid = offer(world)
    world.clock.set(world.app.get_reservation(rid).valid_until)
    notifier.tick()
    assert [r.signed for r in receiver.received] == [False]


def test_an_offer_taken_up_before_it_lapses_is_not_told(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = offer(world)
    valid_until = world.app.get_reservation(rid).valid_until
    world.app.decline(rid)
    world.clock.set(valid_until)
    assert list(notifier.tick().outcomes.values()) == [CANCELLED]
    assert receiver.received == []
    assert log_of(world)["offer.lapsing"].status == CANCELLED


def test_a_reservation_is_told_at_its_start_15_minutes_before_its_end_and_at_its_end(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = world.reserve(start_in=HOUR, hours=2)
    start, end = world.clock() + HOUR, world.clock() + 3 * HOUR
    notifier.tick()
    assert receiver.types() == []
    world.clock.set(start)
    world.tick()
    notifier.tick()
    assert receiver.types() == ["reservation.started"]
    world.clock.set(end - timedelta(minutes=15))
    notifier.tick()
    assert receiver.types() == ["reservation.started", "reservation.ending"]
    world.clock.set(end)
    world.tick()
    notifier.tick()
    assert receiver.types() == ["reservation.started", "reservation.ending", "reservation.ended"]
    ended = receiver.received[-1].json
    assert ended["reservationId"] == str(rid) and ended["reason"] == "end"
    assert ended["end"] == end.isoformat().replace("+00:00", "Z")
    assert all(r.signed for r in receiver.received)
    # The offer's own "about to lapse" was no longer true once confirmed.
    assert log_of(world)["offer.lapsing"].status == CANCELLED


def test_an_extended_reservation_is_told_its_end_at_the_new_end_and_not_at_the_old_one(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = world.reserve(start_in=HOUR, hours=2)
    start, end, later = world.clock() + HOUR, world.clock() + 3 * HOUR, world.clock() + 5 * HOUR
    notifier.tick()
    assert world.app.extend(rid, later, user_id="alice").reply == Reply.ACCEPT
    assert world.app.respond(rid, Reply.CONFIRM).reply == Reply.REQUEST_SUCCESS
    world.clock.set(start)
    world.tick()
    notifier.tick()
    world.clock.set(end)
    world.tick()
    notifier.tick()
    assert receiver.types() == ["reservation.started"]  # the old end is no longer its end
    world.clock.set(later - timedelta(minutes=15))
    notifier.tick()
    world.clock.set(later)
    world.tick()
    notifier.tick()
    assert receiver.types() == ["reservation.started", "reservation.ending", "reservation.ended"]
    assert receiver.received[-1].json["end"] == later.isoformat().replace("+00:00", "Z")


def test_a_reservation_released_early_is_told_it_ended_then_and_not_again_at_its_agreed_end(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = world.reserve(start_in=HOUR, hours=2)
    end = world.clock() + 3 * HOUR
    world.clock.set(world.clock() + HOUR)
    world.tick()
    notifier.tick()
    world.advance(HOUR)
    world.app.release(rid, "alice")
    notifier.tick()
    assert receiver.types() == ["reservation.started", "reservation.ended"]
    assert receiver.received[-1].json["reason"] == "released"
    world.clock.set(end)
    notifier.tick()
    assert receiver.types() == ["reservation.started", "reservation.ended"]
    statuses = sorted(d.status for d in world.app.webhook_deliveries("alice") if d.kind.startswith("reservation.end"))
    assert statuses == [CANCELLED, CANCELLED, DELIVERED]  # ending soon, the agreed end; the release


def test_an_instance_whose_start_keeps_failing_is_told(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = world.reserve(start_in=HOUR, hours=2)
    world.enactment.fail("start", times=100)
    world.clock.set(world.clock() + HOUR)
    for _ in range(FAILED_AFTER):
        world.tick()
        world.advance(timedelta(minutes=5))
    assert world.instance(rid).status == "FAILED"
    notifier.tick()
    failed = [r for r in receiver.received if r.json["type"] == "instance.failed"]
    assert len(failed) == 1 and failed[0].signed
    assert failed[0].json["instanceId"] == str(world.instance(rid).id)
    assert "injected failure of start" in failed[0].json["reason"]


def test_a_receiver_that_is_down_gets_it_once_it_is_up_again_with_the_same_id(told):
    world, notifier = told()
    with Receiver(listening=False) as receiver:
        hook(world, receiver)
        rid = offer(world)
        world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
        assert list(notifier.tick().outcomes.values()) == [PENDING]
        entry = log_of(world)["offer.lapsing"]
        assert entry.attempts == 1 and entry.last_code is None and "refused" in entry.last_error.lower()
        assert entry.next == pytest.approx(world.clock().timestamp() + 5)  # backoff: 5 s, then 10 s...
        world.advance(timedelta(seconds=4))
        assert notifier.tick().outcomes == {}  # not before its backoff is over
        world.advance(timedelta(seconds=1))
        assert list(notifier.tick().outcomes.values()) == [PENDING]
        assert log_of(world)["offer.lapsing"].next == pytest.approx(world.clock().timestamp() + 10)
        receiver.start()
        world.advance(timedelta(seconds=10))
        assert list(notifier.tick().outcomes.values()) == [DELIVERED]
        [got] = receiver.received
        assert got.signed and got.json["id"] == entry.id
        assert log_of(world)["offer.lapsing"].attempts == 3


def test_a_receiver_that_answers_an_error_gets_the_same_notification_again_at_least_once(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    receiver.answer = 503
    rid = offer(world)
    world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
    notifier.tick()
    entry = log_of(world)["offer.lapsing"]
    assert (entry.status, entry.last_code, entry.last_error) == (PENDING, 503, "the receiver answered 503")
    receiver.answer = 200
    world.advance(timedelta(seconds=5))
    notifier.tick()
    assert [r.json["id"] for r in receiver.received] == [entry.id, entry.id]
    assert all(r.signed for r in receiver.received)
    assert log_of(world)["offer.lapsing"].status == DELIVERED


def test_after_the_last_attempt_it_is_given_up_and_shown_failed(told, receiver):
    world, notifier = told(replace(SETTINGS, attempts=3))
    hook(world, receiver)
    receiver.answer = 500
    rid = offer(world)
    world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
    for _ in range(5):
        notifier.tick()
        world.advance(timedelta(minutes=1))
    assert len(receiver.received) == 3
    entry = log_of(world)["offer.lapsing"]
    assert (entry.status, entry.attempts, entry.last_code) == (FAILED, 3, 500) and entry.finished is not None


def test_a_slow_receiver_holds_no_command(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    receiver.gate = threading.Event()
    rid = offer(world)
    world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
    delivering = threading.Thread(target=notifier.tick, name="notifier")
    delivering.start()
    try:
        assert receiver.waiting.wait(timeout=30)  # the receiver holds the delivery...
        # ...while the user's commands go on: a new negotiation, confirmed, activated.
        other = offer(world)
        assert world.app.confirm(other).reply == Reply.REQUEST_SUCCESS
        world.app.activate(other)
        world.app.set_webhook("alice", receiver.url)
        assert delivering.is_alive() and not receiver.gate.is_set() and receiver.received == []
    finally:
        receiver.gate.set()
        delivering.join(timeout=30)
    assert receiver.types() == ["offer.lapsing"]


def test_a_receiver_that_moved_to_a_private_address_is_refused_at_delivery(told, receiver):
    world, notifier = told()
    hook(world, receiver)  # allowed when it was registered
    notifier.settings = replace(SETTINGS, allow_private=False)
    rid = offer(world)
    world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
    notifier.tick()
    assert receiver.received == []
    assert "non-public" in log_of(world)["offer.lapsing"].last_error


def test_a_notification_of_a_user_who_removed_the_webhook_is_dropped(told, receiver):
    world, notifier = told()
    hook(world, receiver)
    rid = offer(world)
    notifier.tick()  # in the outbox, due later
    world.app.remove_webhook("alice")
    world.clock.set(world.app.get_reservation(rid).valid_until)
    assert list(notifier.tick().outcomes.values()) == [DROPPED]
    assert receiver.received == []


def test_nobody_without_a_webhook_is_told_anything_and_the_log_stays_empty(told, receiver):
    world, notifier = told()
    world.reserve(start_in=HOUR, hours=2)
    world.clock.set(world.clock() + 4 * HOUR)
    world.tick()
    notifier.tick()
    assert world.app.webhook_deliveries("alice") == [] and receiver.received == []


def test_the_delivery_log_keeps_the_newest_finished_deliveries_only(told, receiver):
    world, notifier = told(replace(SETTINGS, log_size=2))
    hook(world, receiver)
    for _ in range(4):
        rid = offer(world)
        world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
        notifier.tick()
    assert len(receiver.received) == 4
    kept = world.app.webhook_deliveries("alice")
    assert [d.id for d in kept] == [r.json["id"] for r in receiver.received[:1:-1]]


def test_two_workers_never_send_one_attempt_twice(told, receiver):
    world, notifier = told()
    second = Notifier(world.app, SETTINGS)
    world.closers.insert(0, second.close)
    hook(world, receiver)
    for _ in range(3):
        offer(world)
    world.clock.set(world.clock() + timedelta(minutes=5))
    reports = []
    both = [threading.Thread(target=lambda n=n: reports.append(n.tick())) for n in (notifier, second)]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(timeout=60)
    assert sorted(r.json["id"] for r in receiver.received) == sorted({r.json["id"] for r in receiver.received})
    assert len(receiver.received) == 3


def test_a_notifier_that_starts_late_tells_what_happened_since_the_tables_were_made(told, receiver):
    world, notifier = told(started=False)
    hook(world, receiver)
    rid = offer(world)  # before the worker's first tick, after `pex init`
    world.clock.set(world.app.get_reservation(rid).valid_until - timedelta(seconds=60))
    assert list(notifier.tick().outcomes.values()) == [DELIVERED]


def test_an_offer_folded_after_its_reservation_is_over_still_finds_whose_it_was(told, receiver):
    """The outbox asks the commands' index whose a reservation is (no load); one it forgot, being
    over, is loaded instead: a notifier that starts late meets such offers."""
    world, notifier = told(started=False)
    hook(world, receiver)
    rid = offer(world)
    world.app.follow()
    assert world.app.owner_of(rid) == "alice" and rid in world.app.index.reservations
    world.app.decline(rid)
    world.app.follow()
    assert rid not in world.app.index.reservations  # over: the pending index let it go
    assert world.app.owner_of(rid) == "alice"
    notifier.tick()  # folds the offer (and its decline): the lapse is written down for alice,
    lapsing = log_of(world)["offer.lapsing"]  # to be dropped when due, as no longer true
    assert lapsing.username == "alice" and str(rid) in lapsing.body
    with pytest.raises(NotFound):
        world.app.owner_of(uuid4())
