"""In a real browser (Debian's chromium via Playwright, against `pex serve` on loopback): a
reservation's page extends it: the Extend form asks for a new end, the provider's answer is
shown with its end, its price and how long it is held, and Confirm books it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support.browser import booked_over_api, logged_in, rfc1123
from tests.support.portal import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]


def test_the_extend_form_shows_the_providers_answer_and_confirm_books_it(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    # alice books two XLARGE tomorrow 10:00-12:00 (UTC, the page's zone here).
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    path = booked_over_api(url, "alice", "XLARGE", 2, start, 2)
    location = url + path

    context, page = logged_in(browser, url, "alice", "UTC")
    page.goto(f"{url}/reservations/{path.rsplit('/', 1)[1]}")

    page.get_by_role("button", name="Extend").click()  # the <summary> opens the form
    end = page.get_by_label("New end")
    expect(end).to_have_value((start + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M"))  # an hour more, proposed
    end.fill((start + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Ask to extend").click()
    expect(page.get_by_role("heading", name="The provider can extend it as you asked")).to_be_visible()
    expect(page.locator("section.extension")).to_contain_text("0.80 USD")  # 2 × 2 h × 0.20
    expect(page.locator("section.extension")).to_contain_text("Held for you for")
    shots(page, "05e-extension-offered")

    page.get_by_role("button", name="Confirm the extension").click()
    expect(page.get_by_text("Extended: it now ends at")).to_be_visible()
    expect(page.get_by_text("costs 1.60 USD in all")).to_be_visible()
    reservation = requests.get(location, headers={"Accept": "application/vnd.pex+json"}, auth=("alice", PASSWORD), timeout=10).json()
    assert reservation["proposal"]["endTime"] == rfc1123(start + timedelta(hours=4))
    context.close()
