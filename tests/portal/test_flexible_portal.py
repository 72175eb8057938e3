"""Flexible proposals in the portal: the new-reservation form's two optional fields, the
terms the provider chose shown on the reservation page beside what was asked, and a
malformed freedom refused beside its field."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.portal.test_pages import START, ask, field_error, fill_pool, reservation_id
from tests.support.portal import local

H = timedelta(hours=1)


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_form_offers_the_two_optional_fields(portal):
    form = portal.user("alice").get("/reservations/new").text
    assert "If you are flexible (optional)" in form
    assert 'name="latest_start"' in form and 'name="min_duration"' in form


def test_a_flexible_request_is_accepted_with_the_chosen_terms_shown_beside_what_was_asked(portal):
    fill_pool(portal, START, hours=2)  # the pool is full for the two hours from START
    v = portal.user("alice")
    r = ask(v, fixed=5, start=START, hours="3", latest_start=local(START + 4 * H), min_duration="1.5")
    assert r.status_code == 303
    rid = reservation_id(r.headers["location"])
    offer = portal.application.get_reservation(rid).offer
    assert (offer.terms.start, offer.terms.duration) == (START + 2 * H, 3 * H)
    page = v.follow(r).text
    shown = text(page)
    assert "Accepted, with terms the provider chose within what you allowed." in shown
    assert "What the provider chose, within what you allowed:" in shown
    assert "chosen, within the starts up to" in shown
    assert "Latest start" in shown and "Shortest duration 1 hour 30 minutes" in shown  # what was asked
    confirmed = v.follow(v.post(f"/reservations/{rid}/confirm"))
    assert portal.application.get_reservation(rid).state.value == "CONFIRMED"
    assert confirmed.status_code == 200


def test_a_latest_start_before_the_start_is_refused_beside_its_field(portal):
    v = portal.user("alice")
    page = ask(v, start=START, latest_start=local(START - H))
    assert page.status_code == 422
    assert "before the start" in field_error(page.text, "latest_start")
    page = ask(v, start=START, hours="1", min_duration="2")
    assert page.status_code == 422
    assert "longer than the duration" in field_error(page.text, "min_duration")
    page = ask(v, start=START, min_duration="soon")
    assert page.status_code == 422 and field_error(page.text, "min_duration")
    assert portal.application.list_reservations("alice") == []


def test_the_counter_proposal_form_keeps_the_freedom_asked(portal):
    fill_pool(portal, START, hours=6)
    v = portal.user("alice")
    r = ask(v, fixed=5, start=START, hours="2", min_duration="1", latest_start=local(START + H))
    rid = reservation_id(r.headers["location"])
    assert portal.application.get_reservation(rid).state.value == "COUNTERED"
    page = v.follow(r).text
    assert f'value="{local(START + H)}"' in page and 'name="min_duration"' in page
    assert re.search(r'id="counter-min_duration" name="min_duration" type="number" value="1"', page)
