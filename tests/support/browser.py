"""What the browser tests of one feature each share (tests/portal/test_browser_*.py): a user's
page in a fresh chromium context, logged in or just registered through the portal's own
forms, and a reservation booked over the API as another client would."""

from __future__ import annotations

from datetime import datetime, timedelta

import requests

from tests.support.portal import PASSWORD

ETCH = "PEX Debian Etch 4.0 Template"


def rfc1123(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def new_page(browser, timezone_id: str | None = None):
    """A context of its own (no cookies of another user) and its page; `timezone_id` as the
    browser's zone (None: the machine's)."""
    options = {"viewport": {"width": 1280, "height": 900}, "locale": "en-GB"}
    if timezone_id is not None:
        options["timezone_id"] = timezone_id
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return context, page


def logged_in(browser, url: str, username: str, timezone_id: str | None = None):
    """(context, page) of `username` (who exists), logged in through the login form."""
    from playwright.sync_api import expect

    context, page = new_page(browser, timezone_id)
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {username}")).to_be_visible()
    return context, page


def registered(browser, url: str, username: str, timezone_id: str | None = None):
    """(context, page) of a new user, who made their account with the registration form."""
    from playwright.sync_api import expect

    context, page = new_page(browser, timezone_id)
    page.goto(f"{url}/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name=f"Welcome, {username}")).to_be_visible()
    return context, page


def register_over_api(url: str, username: str) -> None:
    assert requests.post(f"{url}/OpenPEX/users", json={"username": username, "password": PASSWORD}, timeout=30).status_code == 201


def booked_over_api(url: str, username: str, size: str, instances: int, start: datetime, hours: float) -> str:
    """Register `username` and book `instances` × `size` from `start` for `hours` over the API
    (ACCEPT, then CONFIRM); the reservation's path."""
    register_over_api(url, username)
    body = {"duration": int(timedelta(hours=hours).total_seconds() * 1000), "numInstancesFixed": instances,
            "startTime": rfc1123(start), "template": ETCH, "type": size}
    created = requests.post(f"{url}/OpenPEX/reservations", json=body, auth=(username, PASSWORD), timeout=30)
    assert created.json()["reply"] == "ACCEPT", created.text
    path = created.headers["Location"]
    confirmed = requests.put(url + path, json={"reply": "CONFIRM"}, auth=(username, PASSWORD), timeout=30)
    assert confirmed.json()["reply"] == "REQUEST_SUCCESS", confirmed.text
    return path
