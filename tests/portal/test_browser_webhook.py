"""Users are told, in a real browser: a user registers their webhook on the Preferences page
(chromium, against `pex serve`), sees its secret once, and the API reads back the URL."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.browser import logged_in, register_over_api
from tests.support.portal import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen]


def test_a_user_registers_their_webhook_and_sees_the_secret_once(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    register_over_api(url, "alice")
    context, page = logged_in(browser, url, "alice")

    page.goto(f"{url}/preferences")
    page.get_by_label("Your receiver's URL").fill("http://10.0.0.7/hook")
    page.get_by_role("button", name="Save the URL").click()
    expect(page.get_by_text("non-public address")).to_be_visible()
    shots(page, "15e-preferences-webhook-refused")

    page.get_by_label("Your receiver's URL").fill("https://hooks.example.org/pex")
    page.get_by_role("button", name="Save the URL").click()
    secret = page.locator("#webhook-secret code")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    shown = secret.inner_text()
    shots(page, "15d-preferences-webhook-secret")
    page.goto(f"{url}/preferences")
    expect(page.get_by_label("Your receiver's URL")).to_have_value("https://hooks.example.org/pex")
    assert shown not in page.content()
    context.close()

    saved = requests.get(f"{url}/OpenPEX/users/alice/webhook", auth=("alice", PASSWORD), timeout=30)
    assert saved.json()["url"] == "https://hooks.example.org/pex" and "secret" not in saved.json()
