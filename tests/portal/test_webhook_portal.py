"""The portal's side of "users are told" (issue 14, item 6): the Preferences page registers the
user's webhook behind the portal's CSRF check, shows the signing secret on the page once (never
in a redirect or a flash), makes a new one on request, removes the webhook, and lists the
newest deliveries."""

from __future__ import annotations

import html

HOOK = "https://hooks.example.org/pex"


def test_a_first_url_shows_the_secret_on_the_page_once(portal):
    v = portal.user("alice")
    saved = v.post("/preferences/webhook", {"url": HOOK})
    assert saved.status_code == 200
    view = portal.application.webhook_of("alice")
    secret = portal.application.webhook_secret(view.secret_id)
    assert view.url == HOOK and f"<code>{secret}</code>" in saved.text
    again = v.get("/preferences")
    assert secret not in again.text and f'value="{HOOK}"' in again.text
    moved = v.post("/preferences/webhook", {"url": "https://other.example.org/h"})
    assert moved.status_code == 303 and secret not in v.follow(moved).text
    assert portal.application.webhook_secret(portal.application.webhook_of("alice").secret_id) == secret


def test_a_new_secret_on_request_and_the_old_one_is_gone(portal):
    v = portal.user("alice")
    v.post("/preferences/webhook", {"url": HOOK})
    old = portal.application.webhook_of("alice").secret_id
    rotated = v.post("/preferences/webhook", {"url": HOOK, "rotate": "on"})
    new = portal.application.webhook_of("alice").secret_id
    assert rotated.status_code == 200 and new != old and portal.application.webhook_secret(old) is None
    assert f"<code>{portal.application.webhook_secret(new)}</code>" in rotated.text


def test_a_refused_url_is_shown_again_beside_its_reason_and_nothing_changes(portal):
    v = portal.user("alice")
    refused = v.post("/preferences/webhook", {"url": "http://10.0.0.7/hook"})
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in refused.text and "non-public address" in refused.text
    assert html.escape("http://10.0.0.7/hook") in refused.text
    assert portal.application.webhook_of("alice") is None


def test_remove_and_the_form_needs_a_login_and_its_csrf_token(portal):
    v = portal.user("alice")
    forged = v.post("/preferences/webhook", {"url": HOOK}, csrf=False)
    assert forged.status_code == 403 and portal.application.webhook_of("alice") is None
    stranger = portal.visitor()
    assert "webhook_url" not in stranger.get("/preferences").text
    r = stranger.post("/preferences/webhook", {"url": HOOK})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    v.post("/preferences/webhook", {"url": HOOK})
    removed = v.post("/preferences/webhook", {"action": "remove"})
    assert removed.status_code == 303 and "tells you nothing" in v.follow(removed).text
    assert portal.application.webhook_of("alice") is None


def test_the_page_lists_the_newest_deliveries_with_their_last_answer(portal):
    from pex.projections.webhooks import Delivery

    v = portal.user("alice")
    v.post("/preferences/webhook", {"url": HOOK})
    at = portal.clock().timestamp()
    state = portal.application.webhook_state
    state.add(Delivery("offer.lapsing:r1", "alice", "offer.lapsing", "{}", due=at, next=at, created=at))
    [claimed] = [state.claim(d, at, at + 60) for d in state.due(at, 10)]
    state.finish(claimed, "pending", at, at + 5, 503, "the receiver answered 503")
    page = v.get("/preferences").text
    assert "<td>offer.lapsing</td><td>PENDING</td><td>1</td><td>HTTP 503 the receiver answered 503</td>" in page
