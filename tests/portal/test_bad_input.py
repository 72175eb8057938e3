"""What an attacker can put in the portal's links and forms: only this site's paths are
redirect targets, and every absurd form value is a 4xx beside its field that changes nothing."""

from __future__ import annotations

import pytest

from tests.portal.test_pages import START, ask, field_error, fill_pool, reservation_id
from tests.support.portal import ETCH

OFF_SITE = [
    "/\t/evil.example",  # Chromium drops the tab: //evil.example
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "evil.example",
    "/%2",  # a broken escape
]
UNSENDABLE = ["/a\nb", "/a\rb", "/a\x0bb", "/\u3000", "/caf\u00e9"]  # gunicorn's 500 in a Location header


@pytest.mark.parametrize("target", OFF_SITE + UNSENDABLE)
def test_a_login_link_with_a_target_off_this_site_is_400_not_a_redirect(portal, target):
    v = portal.user("alice")
    r = v.get("/login", params={"next": target})
    assert r.status_code == 400 and "location" not in r.headers
    assert "Not a page of this site" in r.text


@pytest.mark.parametrize("target", OFF_SITE + UNSENDABLE)
def test_a_preferences_form_with_a_target_off_this_site_is_400_and_keeps_the_zone(portal, target):
    v = portal.user("alice")
    assert v.get("/preferences", params={"back": target}).status_code == 400
    r = v.post("/preferences", {"tz": "Asia/Tokyo", "back": target})
    assert r.status_code == 400 and "location" not in r.headers
    assert "UTC" in v.get("/reservations").text and "Asia/Tokyo" not in v.get("/reservations").text


@pytest.mark.parametrize("target", ["/reservations?all=1", "/calendar?view=day&date=2026-01-01", "/reservations/new",
                                    "/instances", "/a%20b"])
def test_a_path_of_this_site_is_a_redirect_target(portal, target):
    v = portal.user("alice")
    assert v.get("/login", params={"next": target}).headers["location"] == target


ABSURD = [
    ({"hours": "1e9"}, "duration"),
    ({"hours": "1e999999"}, "duration"),
    ({"start": "9999-12-31T23:00"}, "start"),
    ({"start": "9999-12-31T23:00", "hours": "", "end": "9999-12-31T23:59"}, "start"),
    ({"hours": "", "end": "9999-12-31T23:59"}, "end"),
    ({"price": "1e9999999"}, "price"),
    ({"price": "1E+2"}, "price"),
    ({"price": "1234567890123"}, "price"),
    ({"fixed": "100001"}, "instances_fixed"),
    ({"size": "S" * 65}, "size"),
]


@pytest.mark.parametrize("change, field", ABSURD)
def test_an_absurd_new_reservation_form_is_422_beside_its_field_and_creates_nothing(portal, change, field):
    v = portal.user("alice")
    v.get("/reservations/new")
    r = ask(v, **change)
    assert r.status_code == 422 and field_error(r.text, field)
    assert len(r.text) < 100_000
    assert portal.application.list_reservations() == []


@pytest.mark.parametrize("change, field", ABSURD)
def test_an_absurd_counter_proposal_is_422_beside_its_field_and_changes_nothing(portal, change, field):
    fill_pool(portal)
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    before = portal.application.get_reservation(rid)
    values = {"size": "SMALL", "template": ETCH, "start": START.strftime("%Y-%m-%dT%H:%M"), "duration": "1",
              "instances_fixed": "1", "instances_option": "0"}
    renamed = {"hours": "duration", "fixed": "instances_fixed"}
    values.update({renamed.get(k, k): v for k, v in change.items()})
    r = v.post(f"/reservations/{rid}/counter", values)
    assert r.status_code == 422 and field_error(r.text, field)
    assert len(r.text) < 100_000
    assert portal.application.get_reservation(rid).version == before.version


def test_a_start_in_the_year_1_east_of_utc_is_422_not_an_overflow(portal):
    v = portal.user("alice")
    v.post("/preferences", {"tz": "Asia/Tokyo", "back": "/"})
    v.get("/reservations/new")
    r = ask(v, start="0001-01-01T00:00")
    assert r.status_code == 422 and field_error(r.text, "start")
    assert portal.application.list_reservations() == []


def test_the_portal_refuses_the_price_the_api_refuses(portal):
    v = portal.user("alice")
    v.get("/reservations/new")
    assert ask(v, price="2.50").status_code == 303  # what the API accepts, the portal accepts
    v.get("/reservations/new")
    assert ask(v, price="2.1234567").status_code == 422  # seven decimals: the API's pattern refuses it
