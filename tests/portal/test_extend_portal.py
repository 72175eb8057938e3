"""A reservation's page in the portal extends it: an Extend form asks for a new end, the
provider's answer (ACCEPT or COUNTER, its end and price, held for a while) is shown with
Confirm, which books it, or Walk away, which leaves the reservation as it was."""

from __future__ import annotations

from datetime import timedelta

from tests.support import T0
from tests.support.portal import local

H = timedelta(hours=1)


def test_the_extend_form_asks_the_provider_and_confirm_books_the_answer(portal):
    v = portal.user("alice")
    rid = portal.book("alice", "XLARGE", 5, T0 + H, 4)  # 09:00-13:00 UTC, the whole pool
    portal.book("bob", "XLARGE", 5, T0 + 7 * H, 2)  # and again from 15:00
    page = v.get(f"/reservations/{rid}")
    assert f'action="/reservations/{rid}/extend"' in page.text and 'value="2026-03-02T14:00"' in page.text

    answered = v.follow(v.post(f"/reservations/{rid}/extend", {"end": local(T0 + 10 * H)}))
    assert "cannot extend it that far, and offers less" in answered.text
    assert "15:00" in answered.text and "2.00 USD" in answered.text and "Held for you for" in answered.text
    assert f'action="/reservations/{rid}/extension-confirm"' in answered.text
    assert f'action="/reservations/{rid}/extend"' not in answered.text  # one extension at a time
    assert portal.application.get_reservation(rid).offer.terms.end == T0 + 5 * H  # as agreed until confirmed

    booked = v.follow(v.post(f"/reservations/{rid}/extension-confirm"))
    assert "Extended: it now ends at 2026-03-02 15:00 UTC and costs 6.00 USD in all." in booked.text
    assert portal.application.get_reservation(rid).offer.terms.end == T0 + 7 * H
    assert f'action="/reservations/{rid}/extend"' in booked.text  # it may be extended again

    later = portal.book("alice", "SMALL", 1, T0 + 20 * H, 1)
    assert "as you asked" in v.follow(v.post(f"/reservations/{later}/extend", {"end": local(T0 + 23 * H)})).text
    declined = v.follow(v.post(f"/reservations/{later}/extension-decline"))
    assert "the reservation stays as it was" in declined.text
    after = portal.application.get_reservation(later)
    assert (after.extension, after.offer.terms.end) == (None, T0 + 21 * H)


def test_a_bad_or_refused_extension_is_said_and_changes_nothing(portal):
    v = portal.user("alice")
    rid = portal.book("alice", "XLARGE", 5, T0 + H, 4)
    portal.book("bob", "XLARGE", 1, T0 + 5 * H, 2)
    version = portal.application.get_reservation(rid).version
    bad = v.follow(v.post(f"/reservations/{rid}/extend", {"end": "soon"}))
    assert "The new end is not a time" in bad.text
    early = v.follow(v.post(f"/reservations/{rid}/extend", {"end": local(T0 + 4 * H)}))
    assert "That extension cannot be asked: an extension ends after the agreed end" in early.text
    assert portal.application.get_reservation(rid).version == version
    refused = v.follow(v.post(f"/reservations/{rid}/extend", {"end": local(T0 + 6 * H)}))
    assert "The provider cannot extend it: node" in refused.text
    assert portal.user("mallory").post(f"/reservations/{rid}/extend", {"end": local(T0 + 6 * H)}).status_code == 404
