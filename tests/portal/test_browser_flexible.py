"""A flexible proposal in a real browser (Debian's chromium via Playwright, against `pex serve`
on loopback): the user allows a later start and a shorter duration in the new-reservation
form, and the reservation's page shows the terms the provider chose, then books them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.support.browser import booked_over_api, registered, rfc1123
from tests.support.portal import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]


def test_a_user_allows_a_later_start_and_sees_the_start_the_provider_chose(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    # bob books the whole pool tomorrow 10:00-12:00 (UTC, the page's zone here).
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    booked_over_api(url, "bob", "XLARGE", 5, start, 2)

    context, page = registered(browser, url, "alice", "UTC")

    page.get_by_role("link", name="New reservation").first.click()
    page.get_by_role("radio", name="SMALL").check()
    page.get_by_label("Start").fill(start.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("or duration (hours)").fill("3")
    page.get_by_label("Instances you need").fill("5")
    page.get_by_label("It may begin as late as").fill((start + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("It may be as short as (hours)").fill("1.5")
    shots(page, "flexible-form")
    page.get_by_role("button", name="Ask the provider").click()

    expect(page.get_by_role("heading", name="Accepted, with terms the provider chose within what you allowed.")).to_be_visible()
    expect(page.locator("ul.chosen")).to_contain_text("chosen, within the starts up to")
    expect(page.locator("table.terms").first).to_contain_text("12:00")  # the provider's terms: from noon
    expect(page.get_by_role("region", name="What you asked for")).to_contain_text("Latest start")
    shots(page, "flexible-accepted")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_text("Confirmed: the reservation is booked; it starts by itself at its start.")).to_be_visible()
    context.close()

    [mine] = requests.get(f"{url}/OpenPEX/reservations", auth=("alice", PASSWORD), timeout=10,
                          headers={"Accept": "application/vnd.pex+json"}).json()["reservations"]
    assert (mine["state"], mine["proposal"]["startTime"]) == ("CONFIRMED", rfc1123(start + timedelta(hours=2)))
    assert mine["proposal"]["duration"] == 3 * 3600 * 1000
