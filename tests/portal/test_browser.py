"""The portal in a real browser: Debian's chromium driven by Playwright, against `pex serve`
(gunicorn, two workers) on loopback, with the embedded worker and its simulated Xen pool that
`pex serve` starts when no PEX_XEN_URL is set. One story, as a person would go through it; a
screenshot of every page goes to test-artifacts/portal/ (and to docs/portal/ with
PEX_UPDATE_PORTAL_DOCS=1).

The reservation that is negotiated starts LEAD seconds after the user types its start, so the
VMs run (and report an IP) while the test waits a few seconds, not minutes: the worker ticks
every second (PEX_WORKER_TICK_SECONDS) and the simulated guests report their IP 2 s after boot
(PEX_SIM_GUEST_IP_DELAY_SECONDS): pex.settings.WorkerSettings' defaults, pinned by the live_portal
fixture. The whole story takes about 25 s, some 10 of them waiting for the start.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.support.portal import ETCH, PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen]

BERLIN = ZoneInfo("Europe/Berlin")
LEAD = 10  # seconds between typing the start and the start: enough to send the form before it
RUNNING_WITHIN = 90  # seconds allowed for the worker to start the VMs and for their IPs to show
HALTED_WITHIN = 60  # seconds allowed for the worker to carry out a stop
IP = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b")


def rfc1123(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def book(url: str, size: str, instances: int, start: datetime, hours: float) -> None:
    """bob books `instances` × `size` from `start` through the API (confirmed, not activated)."""
    body = {"duration": int(hours * 3600 * 1000), "numInstancesFixed": instances, "numInstancesOption": 0,
            "startTime": rfc1123(start), "template": ETCH, "type": size}
    r = requests.post(f"{url}/OpenPEX/reservations", json=body, auth=("bob", PASSWORD), timeout=10)
    assert r.status_code == 201 and r.json()["reply"] == "ACCEPT", r.text
    r = requests.put(r.headers["Location"] if r.headers["Location"].startswith("http") else url + r.headers["Location"],
                     json={"reply": "CONFIRM"}, auth=("bob", PASSWORD), timeout=10)
    assert r.json()["reply"] == "REQUEST_SUCCESS", r.text


def fill_most_of_the_pool(url: str, start: datetime) -> None:
    """bob books the demo pool (five nodes of 4 CPUs) but for 2 CPUs: four XLARGE take four
    nodes, a MEDIUM half of the fifth. Room is left for two SMALL instances, no more."""
    assert requests.post(f"{url}/OpenPEX/users", json={"username": "bob", "password": PASSWORD}, timeout=10).status_code == 201
    book(url, "XLARGE", 4, start, 3)
    book(url, "MEDIUM", 1, start, 3)


def datetime_local(when: datetime) -> str:
    """The value of a datetime-local input for `when` in Berlin, with seconds when it has some
    (Chromium drops ":00", and Playwright checks that the value it typed is the input's value)."""
    local = when.astimezone(BERLIN)
    return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")


def fits_a_phone(page) -> None:
    """Nothing of the page is wider than the phone's screen, and Log out is on it."""
    width = page.viewport_size["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    logout = page.get_by_role("button", name=re.compile("^Log out"))
    expect_visible = logout.bounding_box()
    assert expect_visible is not None and 0 <= expect_visible["x"] and expect_visible["x"] + expect_visible["width"] <= width


def reload_until(page, row, text: str | re.Pattern, within: float) -> None:
    """Reload `page` until `row` contains `text`, for at most `within` seconds: the status comes
    from the worker, which carries out what is due at its next tick."""
    deadline = time.monotonic() + within
    while True:
        if row.count() and (row.inner_text().find(text) >= 0 if isinstance(text, str) else text.search(row.inner_text())):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within}s the row still says {row.inner_text() if row.count() else '(no row)'!r}, "
                                 f"not {text!r}")
        page.wait_for_timeout(500)
        page.reload()


def test_register_negotiate_a_counter_confirm_activate_run_and_stop_an_instance(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    now = datetime.now(UTC)
    fill_most_of_the_pool(url, (now + timedelta(seconds=10)).replace(microsecond=0))

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

    # One SMALL instance needed and three more welcome, from in a few seconds, while bob holds
    # all but 2 CPUs of the pool: the provider counters with two at the asked start.
    start = datetime.fromtimestamp(math.ceil(time.time()) + LEAD, UTC)
    page.get_by_label("Start").fill(datetime_local(start))
    page.get_by_label("or duration (hours)").fill("2")
    page.get_by_label("Instances you need").fill("1")
    page.get_by_label("More you would also take").fill("3")
    page.get_by_label("Highest total price").fill("1.00")
    expect(page.get_by_role("radio", name="By itself, when its time comes")).to_be_checked()  # the default
    shots(page, "05-new-reservation")
    assert (start - datetime.now(UTC)).total_seconds() > 3, "too slow to send the form before its start: raise LEAD"
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.get_by_role("heading", name=re.compile("cannot do exactly what you asked"))).to_be_visible()
    expect(page.locator("ul.changes li").first).to_contain_text("1 of 3 optional instances granted")
    expect(page.locator("ul.changes li.why")).to_contain_text("Why: the pool has room for only 2 SMALL from")
    countdown = page.locator("[data-countdown]")
    first = countdown.inner_text()
    # The script counts the offer's validity down, a second at a time (on a loaded machine a
    # tick may come late: waited for, not slept for).
    expect(countdown).not_to_have_text(first, timeout=10_000)
    shots(page, "06-counter-offer")
    phone = context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(page.url)
    shots(phone, "06b-counter-offer-phone")
    fits_a_phone(phone)
    phone.close()

    page.get_by_role("button", name="Accept these terms").click()
    expect(page.get_by_role("heading", name="You accepted the provider's terms.")).to_be_visible()
    shots(page, "07-confirm-request")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked; it starts by itself at its start.")).to_be_visible()
    expect(page.get_by_role("button", name="Activate")).to_have_count(0)  # it starts by itself
    expect(page.get_by_role("cell", name="The provider booked it (REQUEST_SUCCESS)")).to_be_visible()
    shots(page, "08-reservation-history")

    # A second request that fits as asked, to be started only once activated: accepted, then
    # confirmed but not activated.
    page.get_by_role("link", name="New reservation").first.click()
    page.get_by_role("radio", name=re.compile(r"MEDIUM\b")).check()
    page.get_by_role("radio", name="Only once I activate it").check()
    page.get_by_label("Start").fill(datetime_local((start + timedelta(days=1)).replace(second=0)))
    page.get_by_label("or duration (hours)").fill("3")
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.get_by_role("heading", name="Accepted as you asked.")).to_be_visible()
    shots(page, "08b-accepted")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked; activate it, or nothing starts.")).to_be_visible()
    expect(page.get_by_role("heading", name="Booked, waiting for you to activate it.")).to_be_visible()

    page.get_by_role("link", name="Reservations", exact=True).click()
    rows = page.locator("tr[data-reservation]")
    expect(rows).to_have_count(2)
    started = rows.filter(has_text="2 × SMALL")  # about to start, or starting
    expect(started.locator(".state")).to_have_text(re.compile(r"^(Booked: starts by itself|Starting|Running)$"))
    expect(started.get_by_role("button", name="Activate")).to_have_count(0)
    confirmed = rows.filter(has_text="1 × MEDIUM")
    expect(confirmed.locator(".state")).to_have_text("Booked: activate it, or nothing starts")
    expect(confirmed.get_by_role("button", name="Activate")).to_be_visible()
    expect(confirmed.get_by_role("button", name="Delete")).to_be_visible()
    shots(page, "09-reservations")

    # The instances: two SMALL on node(s) bob left room on, and the MEDIUM of tomorrow. At the
    # start the worker creates and starts the SMALL ones on the simulated pool; they report an IP.
    page.get_by_role("link", name="Instances", exact=True).click()
    expect(page.locator("tr[data-instance]")).to_have_count(3)
    expect(page.locator("tbody[data-reservation]")).to_have_count(2)  # grouped by reservation
    small = page.locator("tr[data-instance]").filter(has_text="SMALL ·")
    expect(small).to_have_count(2)
    ids = [small.nth(i).get_attribute("data-instance") for i in range(2)]
    rows = [page.locator(f'tr[data-instance="{i}"]') for i in ids]
    for row in rows:
        reload_until(page, row, re.compile(r"RUNNING[\s\S]*" + IP.pattern), RUNNING_WITHIN)
    running = datetime.now(UTC)
    for row in rows:
        expect(row.locator(".status")).to_have_text("RUNNING")
        expect(row).to_contain_text(re.compile(r"node\d"))
        expect(row.locator("td code")).to_have_text(IP)
        expect(row.get_by_role("button", name="Stop")).to_be_enabled()
        expect(row.get_by_role("button", name="Reboot")).to_be_enabled()
        expect(row.get_by_role("button", name="Start")).to_be_disabled()
        expect(row.get_by_role("button", name="Delete")).to_be_enabled()
    # Its VMs run: the reservation says so (not "Booked"), and offers no Activate.
    page.goto(f"{url}/reservations")
    expect(page.locator("tr[data-reservation]").filter(has_text="2 × SMALL").locator(".state")).to_have_text("Running")
    page.goto(f"{url}/instances")
    medium = page.locator("tr[data-instance]").filter(has_text="MEDIUM ·")
    expect(medium.locator(".status")).to_have_text("SCHEDULED")  # tomorrow's: no VM yet
    expect(medium.get_by_role("button", name="Stop")).to_be_disabled()
    shots(page, "10-instances")

    # Stop the first: the request is recorded at once, the worker shuts the VM down at its next tick.
    stopping = time.monotonic()
    rows[0].get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r": stop requested\."))).to_be_visible()
    reload_until(page, rows[0], "HALTED", HALTED_WITHIN)
    expect(rows[0].locator(".status")).to_have_text("HALTED")
    expect(rows[0].get_by_role("button", name="Start")).to_be_enabled()  # within the reservation: may run again
    expect(rows[0].get_by_role("button", name="Stop")).to_be_disabled()
    expect(rows[1].locator(".status")).to_have_text("RUNNING")  # the other one runs on
    shots(page, "10b-instance-stopped")
    print(f"\nRUNNING with IPs on the page {(running - start).total_seconds():.1f} s after the start; "
          f"HALTED {time.monotonic() - stopping:.1f} s after Stop was clicked")

    # The calendar: bob's bookings are "busy", alice's are hers, named as the reservation;
    # cells give free CPUs and memory, a last row the pool's; a range of free cells of one node
    # opens the form for the whole range.
    page.get_by_role("link", name="Calendar").click()
    expect(page.locator(".gantt-row:not(.totals)")).to_have_count(5)
    expect(page.locator(".gantt-row.totals .gantt-label")).to_contain_text("Pool")
    mine = page.locator(".bar.mine").filter(has_text="SMALL").first  # on one node or two
    expect(mine).to_be_visible()
    expect(mine).to_contain_text(re.compile(r"yours: [12] × SMALL · [0-9A-F]{8}"))
    assert re.match(r"Reservation [0-9A-F]{8}, yours: ([12]) × SMALL \(\1 CPU, [\d.]+ (MB|GB)\)", mine.get_attribute("title"))
    expect(page.locator(".bar.busy").first).to_contain_text("busy")
    expect(page.locator("a.slot.free").first).to_have_attribute("title", re.compile(r"\d+ CPUs, [\d.]+ (GB|MB) free on node\d"))
    assert "bob" not in page.content()
    shots(page, "11-calendar-week")
    page.get_by_role("link", name="Day", exact=True).click()
    shots(page, "12-calendar-day")
    page.locator("a.slot.free").last.click()  # the start of a range, or one cell: its own start and end
    page.get_by_role("link", name="reserve this cell alone").click()
    expect(page.get_by_role("heading", name="New reservation")).to_be_visible()
    assert page.get_by_label("End").input_value() != ""
    page.go_back()
    row = page.locator(".gantt-row:not(.totals)").last.locator(".slots > *")
    last = row.count() - 1
    first_cell, last_cell = row.nth(last - 3), row.nth(last)
    expect(first_cell).to_have_class(re.compile(r"\bfree\b"))
    start_value, end_value = first_cell.get_attribute("data-start"), last_cell.get_attribute("data-end")
    first_cell.click()
    expect(page.locator("[data-range-hint]")).to_contain_text("pick the last cell")
    shots(page, "12b-calendar-range")
    last_cell.click()
    expect(page.get_by_role("heading", name="New reservation")).to_be_visible()
    assert (page.get_by_label("Start").input_value(), page.get_by_label("End").input_value()) == (start_value, end_value)
    page.go_back()
    page.get_by_role("link", name="Month", exact=True).click()
    shots(page, "13-calendar-month")
    phone = context.new_page()
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.goto(page.url)
    fits_a_phone(phone)
    shots(phone, "13b-calendar-phone")
    phone.close()
    page.get_by_role("link", name="PEX", exact=True).click()
    expect(page.get_by_role("heading", name="Your next reservations")).to_be_visible()
    expect(page.locator("main table tbody tr")).to_have_count(2)
    shots(page, "14-welcome-next-reservations")
    page.goto(f"{url}/preferences")
    expect(page.get_by_role("heading", name="Time zone")).to_be_visible()
    shots(page, "15-preferences")
    page.goto(f"{url}/reservations/00000000-0000-0000-0000-000000000000")
    shots(page, "16-not-found")

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
