"""Credit in a real browser: an administrator grants a user credit on the Preferences page
(chromium, against `pex serve`), the user sees the balance and the grant's note there, and the
API reads back the same balance."""

from __future__ import annotations

import pytest
import requests

from pex.bootstrap import build_application
from pex.settings import Settings
from tests.support.api import CHEAP_PASSWORDS
from tests.support.browser import logged_in, register_over_api
from tests.support.portal import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen]


def test_an_administrator_grants_credit_and_the_user_sees_it(browser, live_portal, shots):
    from playwright.sync_api import expect

    url = live_portal.url.replace("127.0.0.1", "localhost")
    register_over_api(url, "alice")
    admin = build_application(Settings(database_url=live_portal.env["PEX_DATABASE_URL"], passwords=CHEAP_PASSWORDS,
                                       install_demo_pool=False, create_tables=False))
    try:
        admin.register_user("root", PASSWORD, is_admin=True)
    finally:
        admin.close()

    context, page = logged_in(browser, url, "root")
    page.goto(f"{url}/preferences")
    page.get_by_label("User", exact=True).fill("alice")
    page.get_by_label("Amount").fill("-5")
    page.get_by_role("button", name="Grant").click()
    expect(page.get_by_text("at most that much can be taken back")).to_be_visible()
    page.get_by_label("Amount").fill("12.50")
    page.get_by_label("Note for the user").fill("for the course")
    page.get_by_role("button", name="Grant").click()
    expect(page.get_by_text("alice now has 12.50 USD of credit.")).to_be_visible()
    shots(page, "17b-preferences-credit-granted")
    context.close()

    context, page = logged_in(browser, url, "alice")
    page.goto(f"{url}/preferences")
    expect(page.locator("[data-credit-balance]")).to_have_text("12.50 USD")
    expect(page.get_by_text("granted by root: for the course")).to_be_visible()
    expect(page.get_by_role("button", name="Grant")).to_have_count(0)
    shots(page, "17c-preferences-credit")
    context.close()

    credit = requests.get(f"{url}/OpenPEX/users/alice/credit", auth=("alice", PASSWORD), timeout=30).json()
    assert credit["balance"] == "12.50"
