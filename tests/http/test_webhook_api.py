"""A user's webhook over the API (issue 14, item 6): /OpenPEX/users/{username}/webhook, the
owner's to set (its secret answered once), read and remove; the delivery log beside it. Every
bad URL a clear 4xx that changes nothing."""

from __future__ import annotations

import pytest

PATH = "/OpenPEX/users/{}/webhook"
HOOK = "https://hooks.example.org/pex?team=7"


def test_the_first_registration_answers_the_secret_once_and_a_rotation_a_new_one(api):
    assert api.get(PATH.format("alice")).json == {"username": "alice", "url": None, "since": None}
    put = api.put(PATH.format("Alice"), json={"url": HOOK})
    assert put.status_code == 200
    secret = put.json["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert put.json["url"] == "https://hooks.example.org/pex?team=7" and put.json["since"]
    got = api.get(PATH.format("alice")).json
    assert got["url"] == HOOK and "secret" not in got
    # A new URL keeps the secret (and does not show it); a rotation makes a new one.
    moved = api.put(PATH.format("alice"), json={"url": "https://other.example.org/h"})
    assert moved.status_code == 200 and "secret" not in moved.json
    assert api.application.webhook_secret(api.application.webhook_of("alice").secret_id) == secret
    rotated = api.put(PATH.format("alice"), json={"url": "https://other.example.org/h", "rotateSecret": True})
    assert rotated.json["secret"] not in (None, secret)
    assert api.application.webhook_secret(api.application.webhook_of("alice").secret_id) == rotated.json["secret"]


def test_delete_removes_the_webhook_and_forgets_its_secret(api):
    api.put(PATH.format("alice"), json={"url": HOOK})
    secret_id = api.application.webhook_of("alice").secret_id
    assert api.delete(PATH.format("alice")).status_code == 204
    assert api.get(PATH.format("alice")).json["url"] is None
    assert api.application.webhook_secret(secret_id) is None
    assert api.delete(PATH.format("alice")).status_code == 204  # again: nothing to remove


def test_only_the_owner_sets_it_an_administrator_reads_and_removes_it(api):
    api.put(PATH.format("alice"), json={"url": HOOK})
    api.user("bob")
    assert api.get(PATH.format("alice"), user="bob").status_code == 404
    assert api.put(PATH.format("alice"), user="bob", json={"url": HOOK}).status_code == 404
    assert api.delete(PATH.format("alice"), user="bob").status_code == 404
    assert api.get(PATH.format("alice") + "/deliveries", user="bob").status_code == 404
    api.user("root", admin=True)
    assert api.put(PATH.format("alice"), user="root", json={"url": "https://evil.example.org/"}).status_code == 404
    assert api.get(PATH.format("alice"), user="root").json["url"] == HOOK
    assert api.get(PATH.format("alice") + "/deliveries", user="root").json == {"username": "alice", "deliveries": []}
    assert api.delete(PATH.format("alice"), user="root").status_code == 204
    assert api.client.simulate_get(PATH.format("alice")).status_code == 401


@pytest.mark.parametrize("url", [
    "ftp://hooks.example.org/", "hooks.example.org/pex", "https://", "https://user:pw@hooks.example.org/",
    "https://hooks.example.org/#frag", "http://127.0.0.1:8080/", "http://[::1]/", "http://10.1.2.3/",
    "http://192.168.0.10/", "http://169.254.169.254/latest/meta-data", "http://localhost/", "http://intranet/",
    "http://printer.local/", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "https://hooks.example.org:0/",
    "https://hooks.example.org:99999/", "https://hooks.example.org/a b", "   ",
])
def test_a_url_that_is_not_a_public_http_receiver_is_422_with_the_reason(api, url):
    reply = api.put(PATH.format("alice"), json={"url": url})
    assert reply.status_code == 422 and reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json["type"] == "/OpenPEX/problems/invalid-account"
    assert [e["pointer"] for e in reply.json["errors"]] == ["/url"]
    assert api.get(PATH.format("alice")).json["url"] is None


@pytest.mark.parametrize("body", [
    {}, {"url": 7}, {"url": ["https://hooks.example.org/"]}, {"url": HOOK, "rotateSecret": "yes"},
    {"url": HOOK, "extra": 1}, [HOOK], {"url": "https://hooks.example.org/" + "a" * 2100},
])
def test_a_body_of_the_wrong_shape_is_a_4xx_problem(api, body):
    reply = api.put(PATH.format("alice"), json=body)
    assert 400 <= reply.status_code < 500 and reply.headers["Content-Type"] == "application/problem+json"
    assert api.get(PATH.format("alice")).json["url"] is None


def test_the_delivery_log_shows_each_attempt_as_the_contract_says(api):
    from dataclasses import replace
    from datetime import timedelta

    from pex.workers.webhooks import Notifier
    from tests.support.webhooks import Receiver

    app = api.application
    app.webhook_settings = replace(app.webhook_settings, allow_private=True)
    notifier = Notifier(app)
    try:
        with Receiver() as receiver:
            receiver.secret = api.put(PATH.format("alice"), json={"url": receiver.url}).json["secret"]
            receiver.answer = 500
            created = api.propose()
            assert created.json["reply"] == "ACCEPT"
            api.clock.advance(timedelta(minutes=4))
            notifier.tick()
            [pending] = api.get(PATH.format("alice") + "/deliveries").json["deliveries"]
            assert (pending["type"], pending["status"], pending["attempts"], pending["lastStatus"]) == (
                "offer.lapsing", "PENDING", 1, 500)
            assert pending["nextAttemptAt"] and pending["finishedAt"] is None
            assert pending["body"]["reservationId"] == created.json["proposal"]["id"].lower()
            receiver.answer = 200
            api.clock.advance(timedelta(seconds=5))
            notifier.tick()
            [done] = api.get(PATH.format("alice") + "/deliveries?limit=1").json["deliveries"]
            assert (done["status"], done["attempts"], done["lastStatus"], done["nextAttemptAt"]) == ("DELIVERED", 2, 200, None)
            assert [r.signed for r in receiver.received] == [True, True]
    finally:
        notifier.close()
