"""The portal in process (falcon.testing): accounts, CSRF, PRG, field errors, the negotiation
pages, access control, time zones, the calendar; and that the API beside it is unchanged."""

from __future__ import annotations

import re
from datetime import timedelta
from uuid import UUID

import pytest

from pex.domain.instance import FAILED_AFTER
from tests.support import T0
from tests.support.portal import ETCH, PASSWORD, local, make_portal

START = T0 + timedelta(hours=2)


def reservation_id(location: str) -> UUID:
    match = re.fullmatch(r"/reservations/([0-9a-f-]{36})", location)
    assert match, location
    return UUID(match.group(1))


def ask(visitor, size="SMALL", fixed=1, option=0, start=START, hours="2", **extra):
    data = {
        "size": size, "template": ETCH, "start": local(start), "duration": hours,
        "instances_fixed": str(fixed), "instances_option": str(option), "nonce": extra.pop("nonce", ""),
        **extra,
    }
    return visitor.post("/reservations/new", data)


def field_error(html: str, field: str) -> str:
    match = re.search(rf'<small id="{field}-error" class="field-error">(.*?)</small>', html)
    assert match, f"no error beside {field}"
    return re.sub(r"<[^>]+>", "", match.group(1))


def fill_pool(portal, start=START, hours=2):
    """The demo pool's five nodes each take one XLARGE: bob takes them all."""
    return portal.book("bob", "XLARGE", 5, start, hours)


# --- accounts and sessions ----------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_log_in_and_back(portal):
    v = portal.visitor()
    assert v.get("/").headers["location"] == "/login"
    r = v.get("/reservations?all=true")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/reservations%3Fall%3Dtrue"
    portal.application.register_user("alice", PASSWORD)
    v.get("/login?next=/reservations")
    r = v.post("/login", {"username": "alice", "password": PASSWORD, "next": "/reservations"})
    assert r.headers["location"] == "/reservations"


def test_registering_logs_in_with_an_httponly_lax_cookie(portal):
    v = portal.visitor()
    v.get("/register")
    r = v.post("/register", {"username": "alice", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.cookies["pex_session"]
    assert cookie.http_only and cookie.same_site == "Lax" and not cookie.secure
    page = v.get("/")
    assert "Welcome, alice" in page.text and "Your next reservations" in page.text
    assert portal.application.get_user("alice") is not None


def test_the_cookie_is_secure_over_https(portal):
    r = portal.client.simulate_get("/login", protocol="https", headers={"Accept": "text/html"})
    assert r.cookies["pex_session"].secure
    assert r.headers["strict-transport-security"]


def test_registration_errors_are_shown_beside_their_field(portal):
    v = portal.visitor()
    v.get("/register")
    r = v.post("/register", {"username": "alice", "password": "short", "confirm": "short"})
    assert r.status_code == 422
    assert "8" in field_error(r.text, "password")
    r = v.post("/register", {"username": "al ice", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 422 and field_error(r.text, "username")
    r = v.post("/register", {"username": "alice", "password": PASSWORD, "confirm": PASSWORD + "x"})
    assert r.status_code == 422 and field_error(r.text, "confirm") == "The two passwords differ"
    portal.application.register_user("carol", PASSWORD)
    r = v.post("/register", {"username": "carol", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 422 and "taken" in field_error(r.text, "username")
    assert 'value="carol"' in r.text and PASSWORD not in r.text  # what was typed is kept, passwords are not


def test_registration_can_be_closed():
    portal = make_portal(registration=False)
    v = portal.visitor()
    assert v.get("/register").status_code == 403
    r = v.post("/register", {"username": "alice", "password": PASSWORD, "confirm": PASSWORD})
    assert r.status_code == 403 and portal.application.get_user("alice") is None


def test_a_wrong_password_is_refused_then_throttled(portal):
    portal.application.register_user("alice", PASSWORD)
    v = portal.visitor()
    v.get("/login")
    for _ in range(3):
        r = v.post("/login", {"username": "alice", "password": "wrong password"})
        assert r.status_code == 422 and "wrong password" in r.text
    r = v.post("/login", {"username": "alice", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    portal.clock.advance(timedelta(minutes=1))  # the throttle keeps its own monotonic time
    assert "Too many failed attempts" in r.text


def test_logging_in_with_an_off_site_next_is_refused_and_logs_no_one_in(portal):
    portal.application.register_user("alice", PASSWORD)
    v = portal.visitor()
    v.get("/login")
    r = v.post("/login", {"username": "alice", "password": PASSWORD, "next": "//evil.example/"})
    assert r.status_code == 400 and "location" not in r.headers
    assert v.get("/reservations").status_code == 303  # still anonymous: sent to the login page


def test_logging_out_ends_the_session(portal):
    v = portal.user("alice")
    assert v.get("/reservations").status_code == 200
    r = v.post("/logout")
    assert r.headers["location"] == "/login"
    assert v.get("/reservations").status_code == 303


# --- CSRF ---------------------------------------------------------------------------------


def test_a_form_without_a_csrf_token_is_refused(portal):
    v = portal.user("alice")
    r = ask(v, csrf_token="")
    assert r.status_code == 403 and "This form has expired" in r.text
    assert portal.application.list_reservations("alice") == []


def test_a_csrf_token_of_another_session_is_refused(portal):
    alice, mallory = portal.user("alice"), portal.user("mallory")
    r = ask(alice, csrf_token=mallory.csrf())
    assert r.status_code == 403
    assert portal.application.list_reservations("alice") == []


def test_a_forged_session_cookie_counts_for_nothing(portal):
    v = portal.user("alice")
    v.cookies["pex_session"] = v.cookies["pex_session"][:-3] + "abc"
    assert v.get("/reservations").status_code == 303


# --- negotiating ----------------------------------------------------------------------------


def test_a_request_that_fits_is_accepted_confirmed_and_activated_post_redirect_get(portal):
    v = portal.user("alice")
    form = v.get("/reservations/new")
    assert "1 CPU · 768 MB memory · 10 GB disk" in form.text  # Table 1, shown with each size
    r = ask(v, size="MEDIUM", fixed=2)
    assert r.status_code == 303
    rid = reservation_id(r.headers["location"])
    page = v.follow(r)
    assert "Accepted as you asked." in page.text and 'data-countdown="300"' in page.text
    r = v.post(f"/reservations/{rid}/confirm")
    assert r.status_code == 303 and r.headers["location"] == f"/reservations/{rid}"
    page = v.follow(r)
    assert "Confirmed: the reservation is booked; it starts by itself at its start." in page.text
    assert "Booked: it starts by itself." in page.text and "CONFIRMED" in page.text
    assert f"/reservations/{rid}/activate" not in page.text  # nothing to activate: it starts by itself
    v.follow(v.post(f"/reservations/{rid}/activate"))  # an old page's button: still harmless
    assert portal.application.get_reservation(rid).state.value == "ACTIVATED"
    listing = v.get("/reservations")
    assert "ACTIVATED" in listing.text and f"/reservations/{rid}/delete" not in listing.text
    instances = v.get("/instances")
    assert instances.text.count(">SCHEDULED</span>") == 2


def test_the_form_asks_when_it_starts_and_the_pages_name_each_phase(portal):
    v = portal.user("alice")
    form = v.get("/reservations/new").text
    assert 'name="auto_start" value="on" checked' in form  # by itself, unless asked otherwise
    manual = reservation_id(ask(v, fixed=1, auto_start="off").headers["location"])
    page = v.follow(v.post(f"/reservations/{manual}/confirm")).text
    assert "activate it, or nothing starts" in page and "Booked, waiting for you to activate it." in page
    assert f"/reservations/{manual}/activate" in page
    assert portal.application.get_reservation(manual).offer.terms.auto_start is False
    auto = reservation_id(ask(v, fixed=1, start=START + timedelta(hours=3)).headers["location"])
    v.post(f"/reservations/{auto}/confirm")
    assert portal.application.get_reservation(auto).offer.terms.auto_start is True
    listing = v.get("/reservations").text
    assert f"/reservations/{manual}/activate" in listing and f"/reservations/{auto}/activate" not in listing
    assert "Booked: starts by itself" in listing and "Booked: activate it, or nothing starts" in listing
    portal.clock.advance(START + timedelta(hours=3, minutes=1) - portal.clock())  # inside the auto one
    page = v.get(f"/reservations/{auto}").text
    assert "Starting." in page and "Booked" not in page  # no worker here: its VMs wait to be created
    portal.clock.advance(timedelta(hours=2))
    assert "Over." in v.get(f"/reservations/{auto}").text


def test_a_counter_offer_says_what_changed_and_can_be_accepted_then_confirmed(portal):
    fill_pool(portal)
    v = portal.user("alice")
    rid = reservation_id(ask(v, size="SMALL", fixed=2).headers["location"])
    page = v.get(f"/reservations/{rid}")
    assert "cannot do exactly what you asked" in page.text
    assert "start moved 2 hours later" in page.text
    assert re.search(r'<li class="why">Why: the pool is full from <time datetime="[^"]+Z"', page.text)
    assert "Other terms the provider could offer" in page.text  # an earlier start, beside it
    assert "pick one of the alternatives" in page.text
    assert "Make your own counter-proposal" in page.text
    page = v.follow(v.post(f"/reservations/{rid}/accept"))
    assert "You accepted the provider&#39;s terms." in page.text
    v.follow(v.post(f"/reservations/{rid}/confirm"))
    view = portal.application.get_reservation(rid)
    assert view.state.value == "CONFIRMED" and view.terms.start == START + timedelta(hours=2)
    history = v.get(f"/reservations/{rid}").text
    for words in ("You proposed", "The provider made a counter-offer", "The provider asked you to confirm",
                  "The provider booked it"):
        assert words in history


def test_picking_an_alternative_proposes_its_terms(portal):
    fill_pool(portal, start=START + timedelta(hours=1))
    v = portal.user("alice")
    rid = reservation_id(ask(v, size="SMALL", fixed=1, start=START + timedelta(hours=1)).headers["location"])
    view = portal.application.get_reservation(rid)
    assert view.state.value == "COUNTERED" and view.alternatives
    chosen = view.alternatives[0].terms
    page = v.follow(v.post(f"/reservations/{rid}/alternative", {"index": "0"}))
    assert "The provider accepted your proposal." in page.text
    view = portal.application.get_reservation(rid)
    assert view.state.value == "ACCEPTED" and view.terms.start == chosen.start


def test_a_counter_proposal_with_a_mistake_is_shown_again_with_the_error(portal):
    fill_pool(portal)
    v = portal.user("alice")
    rid = reservation_id(ask(v, size="SMALL").headers["location"])
    counter = {"size": "SMALL", "template": ETCH, "start": local(T0 - timedelta(hours=1)), "duration": "1",
               "instances_fixed": "1", "instances_option": "0"}
    r = v.post(f"/reservations/{rid}/counter", counter)
    assert r.status_code == 422 and "in the past" in field_error(r.text, "start")
    assert "<details open>" in r.text
    counter["start"] = local(START + timedelta(hours=4))
    page = v.follow(v.post(f"/reservations/{rid}/counter", counter))
    assert "The provider accepted your proposal." in page.text


def test_walking_away_releases_the_offer(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    page = v.follow(v.post(f"/reservations/{rid}/decline"))
    assert "You walked away." in page.text
    assert portal.application.get_reservation(rid).state.value == "REJECTED"


def test_a_lapsed_offer_cannot_be_confirmed(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    portal.clock.advance(timedelta(minutes=6))
    page = v.follow(v.post(f"/reservations/{rid}/confirm"))
    assert "The offer has lapsed" in page.text
    assert portal.application.get_reservation(rid).state.value == "ACCEPTED"  # the timer worker expires it


def test_a_refused_request_says_why(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v, size="XLARGE", fixed=6).headers["location"])
    page = v.get(f"/reservations/{rid}")
    assert "cannot satisfy this request in any manner" in page.text
    assert "more than the pool can ever hold" in page.text and "Try other terms" in page.text


def test_a_resubmitted_form_negotiates_once(portal):
    v = portal.user("alice")
    first = ask(v, nonce="f0f0").headers["location"]
    again = ask(v, nonce="f0f0").headers["location"]
    assert first == again and len(portal.application.list_reservations("alice")) == 1


def test_deleting_a_confirmed_reservation(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    v.post(f"/reservations/{rid}/confirm")
    r = v.post(f"/reservations/{rid}/delete")
    assert r.headers["location"] == "/reservations"
    assert "The reservation is deleted." in v.follow(r).text
    assert portal.application.get_reservation(rid).state.value == "CANCELLED"
    assert str(rid) not in v.get("/reservations").text
    assert str(rid) in v.get("/reservations?all=true").text


# --- field errors ---------------------------------------------------------------------------


def test_form_mistakes_are_shown_beside_their_field_and_nothing_is_created(portal):
    v = portal.user("alice")
    cases = [
        ({"start": local(T0 - timedelta(hours=1))}, "start", "in the past"),
        ({"start": "tomorrow"}, "start", "Enter a date and time"),
        ({"size": "HUGE"}, "size", "unknown size"),
        ({"template": "Windows 95"}, "template", "unknown template"),
        ({"fixed": 0}, "instances_fixed", "at least one instance"),
        ({"fixed": "two"}, "instances_fixed", "whole number"),
        ({"hours": "-1"}, "duration", "positive number of hours"),
        ({"hours": "", "end": local(START - timedelta(hours=1))}, "end", "after the start"),
        ({"hours": ""}, "end", "Give an end, or a duration"),
        ({"price": "cheap"}, "price", "as a number"),
        ({"start": local(T0 + timedelta(days=90))}, "start", "60 days ahead"),
    ]
    for change, field, words in cases:
        r = ask(v, **change)
        assert r.status_code == 422, (change, r.status)
        assert words.lower() in field_error(r.text, field).lower(), (change, field_error(r.text, field))
        assert f'aria-describedby="{field}-error"' in r.text
    assert portal.application.list_reservations("alice") == []


def test_what_was_typed_is_kept_when_the_form_comes_back(portal):
    v = portal.user("alice")
    r = ask(v, size="LARGE", fixed=3, option=2, price="7.50", start=T0 - timedelta(hours=1))
    assert r.status_code == 422
    assert re.search(r'value="LARGE" checked', r.text)
    assert re.search(r'name="instances_option"[^>]* value="2"', r.text) and 'value="7.50"' in r.text


# --- access control ---------------------------------------------------------------------------


def test_someone_elses_reservation_is_not_found(portal):
    bob = portal.book("bob", "SMALL", 1, START)
    v = portal.user("alice")
    assert v.get(f"/reservations/{bob}").status_code == 404
    r = v.post(f"/reservations/{bob}/delete")
    assert r.status_code == 404 and "Not found" in r.text
    assert portal.application.get_reservation(bob).state.value == "CONFIRMED"
    instance = portal.application.get_reservation(bob).instance_ids[0]
    assert v.post(f"/instances/{instance}/stop").status_code == 404
    assert "bob" not in v.get("/instances").text


def test_an_administrator_may_open_anyones_reservation(portal):
    bob = portal.book("bob", "SMALL", 1, START)
    admin = portal.user("root", admin=True)
    assert admin.get(f"/reservations/{bob}").status_code == 200


def test_an_unknown_move_is_not_found(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    assert v.post(f"/reservations/{rid}/explode").status_code == 404


# --- instances ---------------------------------------------------------------------------


def instance_row(html: str, instance: UUID) -> str:
    match = re.search(rf'<tr data-instance="{instance}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {instance}"
    return match.group(1)


def buttons(row: str) -> dict[str, str | None]:
    """Each instance button's text → None when enabled, else its title (why it is disabled)."""
    found = {}
    for attrs, text in re.findall(r"<button([^>]*)>([^<]+)</button>", row):
        title = re.search(r'title="([^"]*)"', attrs)
        found[text] = (title.group(1) if title else "disabled") if " disabled" in attrs else None
    return found


def status(row: str) -> str:
    return re.search(r'<span class="status[^"]*">([A-Z]+)</span>', row).group(1)


def test_instance_buttons_say_why_a_scheduled_instance_cannot_be_acted_on_yet(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v, fixed=1, auto_start="off").headers["location"])
    v.post(f"/reservations/{rid}/confirm")
    instance = portal.application.get_reservation(rid).instance_ids[0]
    page = v.get("/instances").text
    assert "need the Xen dispatcher" not in page  # the application has the instance actions
    row = instance_row(page, instance)
    assert status(row) == "SCHEDULED" and f"/instances/{instance}/stop" in row
    assert buttons(row) == {"Start": "only during the reservation", "Stop": "not while SCHEDULED",
                            "Reboot": "not while SCHEDULED", "Delete": None}
    # Sent anyway (an old page, no JavaScript), the action is refused by the domain, in words.
    page = v.follow(v.post(f"/instances/{instance}/stop")).text
    assert "cannot stop an instance that is SCHEDULED" in page
    page = v.follow(v.post(f"/instances/{instance}/start")).text
    assert "cannot start an instance that is SCHEDULED: activate its reservation first" in page
    assert v.post(f"/instances/{instance}/explode").status_code == 404


@pytest.mark.xen
def test_instance_buttons_record_requests_that_the_worker_carries_out(portal_and_worker):
    """Stop, Start, Reboot and delete through the portal, with the application's real instance
    actions; a worker on the same store carries each out on a simulated Xen pool."""
    portal, worker = portal_and_worker
    v = portal.user("alice")
    rid = reservation_id(ask(v, fixed=1).headers["location"])
    v.post(f"/reservations/{rid}/confirm")
    v.follow(v.post(f"/reservations/{rid}/activate"))
    instance = portal.application.get_reservation(rid).instance_ids[0]

    portal.clock.advance(START - T0)  # the reservation's start: the worker creates and starts the VM
    assert worker.tick().dispatched == ["start"]
    ip = worker.wait_for_ips(rid)[0].ip_address
    row = instance_row(v.get("/instances").text, instance)
    assert status(row) == "RUNNING" and f"<code>{ip}</code>" in row
    assert buttons(row) == {"Start": "not while RUNNING", "Stop": None, "Reboot": None, "Delete": None}

    # Stop: the portal records the request (it has no dispatcher); the worker's next tick does it.
    r = v.post(f"/instances/{instance}/stop")
    assert r.status_code == 303 and r.headers["location"] == "/instances"
    page = v.follow(r).text
    assert "stop requested" in page and status(instance_row(page, instance)) == "RUNNING"
    worker.tick()
    worker.settle()
    row = instance_row(v.get("/instances").text, instance)
    assert status(row) == "HALTED"
    assert buttons(row) == {"Start": None, "Stop": "not while HALTED", "Reboot": "not while HALTED", "Delete": None}
    assert [vm["power_state"] for vm in worker.vms()] == ["Halted"]

    # A halted VM cannot be rebooted; it can be started again within the reservation.
    assert "cannot reboot an instance that is HALTED" in v.follow(v.post(f"/instances/{instance}/reboot")).text
    assert "start requested" in v.follow(v.post(f"/instances/{instance}/start")).text
    worker.tick()
    worker.wait_for_ips(rid)
    assert status(instance_row(v.get("/instances").text, instance)) == "RUNNING"

    assert "reboot requested" in v.follow(v.post(f"/instances/{instance}/reboot")).text
    worker.tick()
    assert "Rebooted" in worker.events(instance)

    # Delete (the API's DELETE): the VM and its disks go.
    assert "delete requested" in v.follow(v.post(f"/instances/{instance}/delete")).text
    worker.tick()
    assert worker.vms() == []
    assert f'data-instance="{instance}"' not in v.get("/instances").text  # ended: no longer current
    row = instance_row(v.get("/instances?show=all").text, instance)
    assert status(row) == "DELETED" and all(why for why in buttons(row).values())

    # Someone else's instance is not found, to the portal as to the API.
    assert portal.user("mallory").post(f"/instances/{instance}/stop").status_code == 404


# --- time zones ---------------------------------------------------------------------------


def test_times_are_shown_in_the_chosen_zone_with_utc_on_hover(portal):
    v = portal.user("alice")
    rid = reservation_id(ask(v).headers["location"])
    page = v.get(f"/reservations/{rid}").text
    assert '<time datetime="2026-03-02T10:00:00Z" title="2026-03-02 10:00 UTC">Mon 2 Mar 2026, 10:00 UTC</time>' in page
    r = v.post("/preferences", {"tz": "Asia/Tokyo", "back": f"/reservations/{rid}"})
    assert r.headers["location"] == f"/reservations/{rid}"
    page = v.follow(r).text
    assert '<time datetime="2026-03-02T10:00:00Z" title="2026-03-02 10:00 UTC">Mon 2 Mar 2026, 19:00 JST</time>' in page
    # The form's times are read in the same zone: 19:00 in Tokyo is 10:00 UTC.
    r = v.post("/reservations/new", {"size": "SMALL", "template": ETCH, "start": "2026-03-02T21:00", "duration": "1",
                                     "instances_fixed": "1", "instances_option": "0"})
    view = portal.application.get_reservation(reservation_id(r.headers["location"]))
    assert view.terms.start == T0 + timedelta(hours=4)


def test_an_unknown_time_zone_is_refused(portal):
    v = portal.user("alice")
    r = v.post("/preferences", {"tz": "Mars/Olympus"})
    assert r.status_code == 422 and "Mars/Olympus" in field_error(r.text, "tz")


# --- calendar -----------------------------------------------------------------------------


def test_the_calendar_shows_my_bookings_and_others_only_as_busy(portal):
    portal.book("bob", "XLARGE", 1, START)
    v = portal.user("alice")
    mine = reservation_id(ask(v, size="MEDIUM").headers["location"])
    v.post(f"/reservations/{mine}/confirm")
    for view in ("day", "week", "month"):
        page = v.get(f"/calendar?view={view}").text
        assert page.count('data-node="node') == 5
        assert f'href="/reservations/{mine}"' in page and "yours: 1 × MEDIUM" in page
        assert ">busy</span>" in page and "bob" not in page


def test_an_administrator_sees_whose_bookings_they_are(portal):
    bob = portal.book("bob", "XLARGE", 1, START)
    admin = portal.user("root", admin=True)
    page = admin.get("/calendar?view=day").text
    assert f'href="/reservations/{bob}"' in page and "bob: 1 × XLARGE" in page


def test_a_free_slot_links_to_a_prefilled_form(portal):
    fill_pool(portal)  # 10:00–12:00 UTC is full everywhere
    v = portal.user("alice")
    page = v.get("/calendar?view=day&date=2026-03-02").text
    assert 'title="no free CPU"' in page
    link = re.search(r'class="slot free"[^>]*href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert link.startswith("/reservations/new?start=2026-03-02T08%3A00&end=2026-03-02T09%3A00&size=XLARGE")
    form = v.get(link).text
    assert re.search(r'name="start"[^>]* value="2026-03-02T08:00"', form) and 'value="XLARGE" checked' in form


def test_the_lists_the_welcome_page_and_the_calendar_are_read_from_the_read_models(portal, monkeypatch):
    bob = portal.book("bob", "XLARGE", 1, START)
    v = portal.user("alice")
    mine = reservation_id(ask(v, size="MEDIUM").headers["location"])
    v.post(f"/reservations/{mine}/confirm")
    waiting = reservation_id(ask(v, size="SMALL", start=START + timedelta(hours=4)).headers["location"])
    admin = portal.user("root", admin=True)

    def not_the_aggregates(*args, **kwargs):
        raise AssertionError("a list page loaded the aggregates")

    for query in ("list_reservations", "list_instances", "nodes", "node_allocations", "get_reservation"):
        monkeypatch.setattr(portal.application, query, not_the_aggregates)
    later = portal.book("alice", "LARGE", 1, START + timedelta(hours=6))  # a write the pages must show at once

    welcome = v.get("/").text
    assert f'href="/reservations/{waiting}"' in welcome and f'href="/reservations/{later}"' in welcome
    listed = re.findall(r'data-reservation="([0-9a-f-]{36})"', v.get("/reservations").text)
    assert listed == [str(later), str(waiting), str(mine)]  # newest first
    instance = portal.read_models.instances(reservation_id=mine)[0].id
    assert f'data-instance="{instance}"' in v.get("/instances").text
    page = v.get("/calendar?view=day").text
    assert "yours: 1 × MEDIUM" in page and "yours: 1 × LARGE" in page and ">busy</span>" in page
    page = admin.get("/calendar?view=day").text
    assert "bob: 1 × XLARGE" in page and f'href="/reservations/{bob}"' in page


# --- beside the API -----------------------------------------------------------------------


def test_the_api_keeps_basic_auth_and_problem_json(portal):
    r = portal.client.simulate_get("/OpenPEX/reservations")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = portal.client.simulate_get("/OpenPEX/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    r = portal.client.simulate_get("/no-such-page", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


def test_a_session_cookie_does_not_open_the_api(portal):
    v = portal.user("alice")
    r = portal.client.simulate_get("/OpenPEX/reservations", cookies=v.cookies)
    assert r.status_code == 401


def test_pages_forbid_framing_and_load_only_own_files(portal):
    r = portal.visitor().get("/login")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "http" not in r.text.split("<body>")[0].replace('name="viewport"', "")  # no CDN
    assert portal.client.simulate_get("/static/pico.min.css").status_code == 200
    assert portal.client.simulate_get("/static/portal.js").status_code == 200


def test_a_counter_without_alternatives_does_not_offer_to_pick_one(portal):
    from dataclasses import replace

    from pex.domain.lifecycle import Phase
    from pex.http.portal.resources import plain_reply

    fill_pool(portal)
    v = portal.user("alice")
    rid = reservation_id(ask(v, size="SMALL", fixed=2).headers["location"])
    countered = portal.application.get_reservation(rid)
    assert countered.alternatives  # the demo's counter has some: then they are offered
    assert "pick one of the alternatives" in plain_reply(countered, Phase.OFFERED)[1]
    alone = replace(countered, alternatives=())
    assert plain_reply(alone, Phase.OFFERED)[1] == "Accept them, make your own counter-proposal, or walk away."


@pytest.mark.xen
def test_an_instance_whose_start_keeps_failing_shows_failed_with_the_error_and_since_when(portal_and_worker):
    portal, worker = portal_and_worker
    v = portal.user("alice")
    rid = reservation_id(ask(v, fixed=1).headers["location"])
    v.post(f"/reservations/{rid}/confirm")
    v.follow(v.post(f"/reservations/{rid}/activate"))
    instance = portal.application.get_reservation(rid).instance_ids[0]
    worker.control.fail_next("VM.start_on", ["HOST_NOT_ENOUGH_FREE_MEMORY", "805306368", "0"], times=100)
    worker.clock.set(portal.application.get_instance(instance).start)
    for _ in range(FAILED_AFTER):
        worker.tick()
        worker.advance(timedelta(minutes=5))
    row = instance_row(v.get("/instances").text, instance)
    assert status(row) == "FAILED"
    assert "HOST_NOT_ENOUGH_FREE_MEMORY" in row and "since" in row
