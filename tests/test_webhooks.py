"""The webhook setting of an account (issue 14, item 6): its URL checked in the domain, its
secret kept beside the store and never in an event, its events accepted by `pex audit`."""

from __future__ import annotations

import pytest

from pex.domain.user import AccountError, User, normalized_webhook_url, user_id
from pex.projections.audit import Auditor
from pex.projections.readmodels import ReadModels
from tests.projections.histories import FIXED_HISTORY, play
from tests.support.api import PASSWORD


@pytest.mark.parametrize("url, normalized", [
    ("https://Hooks.Example.ORG", "https://hooks.example.org/"),
    ("HTTP://hooks.example.org:8443/a/b?c=d", "http://hooks.example.org:8443/a/b?c=d"),
    ("  https://93.184.215.14/hook  ", "https://93.184.215.14/hook"),
    ("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/h", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/h"),
])
def test_a_public_http_url_is_kept_normalized(url, normalized):
    assert normalized_webhook_url(url) == normalized


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://10.0.0.1/", "http://172.16.5.4/", "http://100.64.0.1/", "http://[fe80::1]/",
    "http://[fd00::1]/", "http://[::ffff:10.0.0.1]/", "http://224.0.0.1/", "http://localhost:8080/",
    "http://api.localhost/", "http://nas.local/", "http://metadata.google.internal/", "http://router/",
])
def test_a_private_host_is_refused_unless_the_operator_allows_it(url):
    with pytest.raises(AccountError) as refused:
        normalized_webhook_url(url)
    assert refused.value.field == "url"
    assert normalized_webhook_url(url, allow_private=True).startswith("http://")


def test_the_secret_is_in_no_event_and_removal_forgets_it(app):
    app.register_user("alice", PASSWORD)
    view = app.set_webhook("alice", "https://hooks.example.org/pex")
    rotated = app.set_webhook("alice", "https://hooks.example.org/pex", rotate_secret=True)
    app.remove_webhook("alice")
    events = list(app.events.get(user_id("alice")))
    assert [type(e).__name__ for e in events][-3:] == ["WebhookSet", "WebhookSet", "WebhookRemoved"]
    stored = b"".join(n.state for n in app.recorder.select_notifications(start=1, limit=1000))
    assert b"hooks.example.org" in stored and view.secret_id.encode() in stored  # the log is readable here...
    assert view.secret.encode() not in stored and rotated.secret.encode() not in stored
    assert app.webhook_secret(view.secret_id) is None and app.webhook_secret(rotated.secret_id) is None
    assert isinstance(events[-1], User.WebhookRemoved)


def test_the_audit_accepts_the_webhook_events_beside_an_honest_history(app, clock):
    app.register_user("alice", PASSWORD)
    app.set_webhook("alice", "https://hooks.example.org/pex")
    play(app, clock, FIXED_HISTORY)
    app.set_webhook("alice", "https://hooks.example.org/pex", rotate_secret=True)
    app.remove_webhook("alice")
    read_models = ReadModels(app)
    read_models.catch_up()
    report = Auditor(app, read_models).run()
    read_models.close()
    assert report.ok, report.render()
    assert report.events == app.recorder.max_notification_id()


def test_a_store_from_before_webhooks_tells_nobody_of_its_history(tmp_path, clock):
    from datetime import timedelta
    from types import SimpleNamespace

    from pex.bootstrap import build_application
    from pex.projections.webhooks import VIEW
    from pex.workers.webhooks import Notifier
    from tests.support.api import cheap_settings
    from tests.support.webhooks import Receiver
    from tests.workers.test_webhooks import SETTINGS, offer

    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    with Receiver() as receiver:
        before = build_application(cheap_settings(url), clock=clock)
        before.webhook_settings = SETTINGS
        before.register_user("alice", PASSWORD)
        receiver.secret = before.set_webhook("alice", receiver.url).secret
        old = offer(SimpleNamespace(app=before, clock=clock))
        with before.webhook_state.store.transaction(write=True) as cursor:  # as a PEX without webhooks left it
            cursor.execute("DELETE FROM pex_view_tracking WHERE view_name = ?", (VIEW,))
        before.close()
        after = build_application(cheap_settings(url), clock=clock)
        after.webhook_settings = SETTINGS
        notifier = Notifier(after, SETTINGS)
        try:
            clock.set(after.get_reservation(old).valid_until)
            assert notifier.tick().outcomes == {} and receiver.received == []
            new = offer(SimpleNamespace(app=after, clock=clock))
            clock.set(after.get_reservation(new).valid_until - timedelta(seconds=60))
            assert list(notifier.tick().outcomes.values()) == ["delivered"]
        finally:
            notifier.close()
            after.close()
