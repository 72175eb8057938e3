"""The portal in a real browser: Debian's chromium driven by Playwright, against `pex serve`
(gunicorn, two workers) on loopback. One story, as a person would go through it; a screenshot
of every page goes to test-artifacts/portal/ (and to docs/portal/ with PEX_UPDATE_PORTAL_DOCS=1).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.portal.conftest import ETCH, PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]

BERLIN = ZoneInfo("Europe/Berlin")


def fill_the_pool(url: str, start: datetime) -> None:
    """bob books the five nodes of the demo pool (one XLARGE each) through the API."""
    assert requests.post(f"{url}/OpenPEX/users", json={"username": "bob", "password": PASSWORD}, timeout=10).status_code == 201
    body = {"duration": 2 * 3600 * 1000, "numInstancesFixed": 5, "numInstancesOption": 0,
            "startTime": start.strftime("%a, %d %b %Y %H:%M:%S GMT"), "template": ETCH, "type": "XLARGE"}
    r = requests.post(f"{url}/OpenPEX/reservations", json=body, auth=("bob", PASSWORD), timeout=10)
    assert r.status_code == 201 and r.json()["reply"] == "ACCEPT", r.text
    r = requests.put(r.headers["Location"] if r.headers["Location"].startswith("http") else url + r.headers["Location"],
                     json={"reply": "CONFIRM"}, auth=("bob", PASSWORD), timeout=10)
    assert r.json()["reply"] == "REQUEST_SUCCESS", r.text


def test_register_negotiate_a_counter_confirm_activate_and_see_the_instances(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    now = datetime.now(timezone.utc)
    start = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=4)
    fill_the_pool(url, start)

    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB")
    page = context.new_page()
    page.set_default_timeout(15_000)

    # Register; the portal starts at the welcome page.
    page.goto(f"{url}/")
    expect(page).to_have_url(re.compile(r"/login$"))
    shots(page, "01-login")
    page.get_by_role("link", name="Register").first.click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    shots(page, "02-register")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Welcome, alice")).to_be_visible()

    # The browser says Europe/Berlin: the portal offers to show times in that zone.
    expect(page.get_by_role("button", name="Show times in my zone")).to_be_visible()
    shots(page, "03-welcome")
    page.get_by_role("button", name="Show times in my zone").click()
    expect(page.get_by_text("Times are now shown in Europe/Berlin.")).to_be_visible()

    # Log out and in again.
    page.get_by_role("button", name="Log out alice").click()
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Welcome, alice")).to_be_visible()

    # A mistake first: a start in the past is shown beside the start field.
    page.get_by_role("link", name="New reservation").first.click()
    page.get_by_role("radio", name=re.compile(r"SMALL\b")).check()
    page.get_by_label("Start").fill((now - timedelta(hours=2)).astimezone(BERLIN).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.locator("#start-error")).to_contain_text("in the past")
    expect(page.get_by_label("Start")).to_have_attribute("aria-invalid", "true")
    shots(page, "04-new-reservation-error")

    # Two SMALL instances while bob holds the whole pool: the provider counters.
    page.get_by_label("Start").fill(start.astimezone(BERLIN).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("or duration (hours)").fill("2")
    page.get_by_label("Instances you need").fill("2")
    page.get_by_label("Highest total price").fill("1.00")
    shots(page, "05-new-reservation")
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.get_by_role("heading", name=re.compile("cannot do exactly what you asked"))).to_be_visible()
    expect(page.locator("ul.changes li").first).to_contain_text("start moved 2 hours later")
    countdown = page.locator("[data-countdown]")
    first = countdown.inner_text()
    page.wait_for_timeout(1500)
    assert countdown.inner_text() != first  # the script counts the offer's validity down
    shots(page, "06-counter-offer")
    phone = context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(page.url)
    shots(phone, "06b-counter-offer-phone")
    phone.close()

    page.get_by_role("button", name="Accept these terms").click()
    expect(page.get_by_role("heading", name="You accepted the provider's terms.")).to_be_visible()
    shots(page, "07-confirm-request")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked.")).to_be_visible()
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_text("Activated.", exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name="The provider booked it (REQUEST_SUCCESS)")).to_be_visible()
    shots(page, "08-reservation-history")

    # A second request that fits as asked: accepted, then confirmed but not activated.
    page.get_by_role("link", name="New reservation").first.click()
    page.get_by_role("radio", name=re.compile(r"MEDIUM\b")).check()
    page.get_by_label("Start").fill((start + timedelta(days=1)).astimezone(BERLIN).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("or duration (hours)").fill("3")
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.get_by_role("heading", name="Accepted as you asked.")).to_be_visible()
    shots(page, "08b-accepted")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked.")).to_be_visible()

    page.get_by_role("link", name="Reservations", exact=True).click()
    rows = page.locator("tr[data-reservation]")
    expect(rows).to_have_count(2)
    activated = rows.filter(has_text="2 × SMALL")
    expect(activated).to_contain_text("ACTIVATED")
    expect(activated.get_by_role("button", name="Delete")).to_have_count(0)  # activated: no longer deletable
    confirmed = rows.filter(has_text="1 × MEDIUM")
    expect(confirmed.get_by_role("button", name="Activate")).to_be_visible()
    expect(confirmed.get_by_role("button", name="Delete")).to_be_visible()
    shots(page, "09-reservations")

    # The instances: two SMALL (and the MEDIUM), on the booked nodes; they start at the agreed start.
    page.get_by_role("link", name="Instances", exact=True).click()
    expect(page.locator("tr[data-instance]")).to_have_count(3)
    rows = page.locator("tr[data-instance]").filter(has_text="SMALL ·")
    expect(rows).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i)).to_contain_text("SCHEDULED")
        expect(rows.nth(i)).to_contain_text(re.compile(r"node\d"))
    stop = rows.first.get_by_role("button", name="Stop")
    expect(stop).to_be_disabled()  # a SCHEDULED VM is not running yet (or no dispatcher at all)
    shots(page, "10-instances")

    # The calendar: bob's bookings are "busy", alice's are hers; free slots link to the form.
    page.get_by_role("link", name="Calendar").click()
    expect(page.locator(".gantt-row")).to_have_count(5)
    expect(page.locator(".bar.mine").first).to_be_visible()
    expect(page.locator(".bar.busy").first).to_contain_text("busy")
    assert "bob" not in page.content()
    shots(page, "11-calendar-week")
    page.get_by_role("link", name="Day", exact=True).click()
    shots(page, "12-calendar-day")
    page.locator("a.slot.free").last.click()
    expect(page.get_by_role("heading", name="New reservation")).to_be_visible()
    assert page.get_by_label("End").input_value() != ""
    page.go_back()
    page.get_by_role("link", name="Month", exact=True).click()
    shots(page, "13-calendar-month")
    page.get_by_role("link", name="PEX", exact=True).click()
    expect(page.get_by_role("heading", name="Your next reservations")).to_be_visible()
    expect(page.locator("main table tbody tr")).to_have_count(2)
    shots(page, "14-welcome-next-reservations")

    # Without JavaScript the same forms work (PRG), and there is no countdown script.
    plain = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    p2 = plain.new_page()
    p2.goto(f"{url}/login")
    p2.get_by_label("Username").fill("alice")
    p2.get_by_label("Password").fill(PASSWORD)
    p2.get_by_role("button", name="Log in").click()
    expect(p2.get_by_role("heading", name="Welcome, alice")).to_be_visible()
    expect(p2.get_by_role("cell", name=re.compile("2 × SMALL"))).to_be_visible()
    plain.close()
    context.close()
