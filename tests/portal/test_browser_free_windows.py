"""In a real browser (Debian's chromium via Playwright, against `pex serve` on loopback): the
new-reservation form shows the next free windows for what is being typed, without a reload;
a window's link fills the form with its start, the provider accepts it as asked, and the
reservation's page releases it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.browser import booked_over_api, registered

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]


def test_the_form_shows_free_windows_as_the_user_types_and_a_window_is_accepted_then_released(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    # bob books four of the five nodes tomorrow 10:00-13:00 (UTC, the page's zone here).
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    booked_over_api(url, "bob", "XLARGE", 4, start, 3)

    context, page = registered(browser, url, "alice", "UTC")

    page.get_by_role("link", name="New reservation").first.click()
    page.get_by_role("radio", name=re.compile(r"XLARGE\b")).check()
    page.get_by_label("Start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("or duration (hours)").fill("1")
    windows = page.locator("#free-windows li")
    expect(windows.first).to_contain_text("10:00")  # one fits at the start typed
    page.get_by_label("Instances you need").fill("2")  # two fit only when bob's booking ends
    expect(windows.first).to_contain_text("13:00 UTC – 14:00: 5 would fit")
    expect(page.locator("#free-windows")).to_have_attribute("aria-live", "polite")
    shots(page, "05c-free-windows")

    windows.first.get_by_role("link", name="use this start").click()
    expect(page.get_by_label("Start")).to_have_value((start + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"))
    expect(page.get_by_label("Instances you need")).to_have_value("2")
    page.get_by_role("button", name="Ask the provider").click()
    expect(page.get_by_role("heading", name="Accepted as you asked.")).to_be_visible()
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked; it starts by itself at its start.")).to_be_visible()

    page.on("dialog", lambda dialog: dialog.accept())  # "Release this reservation now?"
    page.get_by_role("button", name="Release").click()
    expect(page.get_by_text("Released: its capacity is free from now")).to_be_visible()
    expect(page.locator(".state").first).to_have_text("Ended")  # its phase, in words (EXPIRED on the wire)
    expect(page.get_by_role("button", name="Release")).to_have_count(0)
    context.close()
