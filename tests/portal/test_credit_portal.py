"""Credit in the portal (issue 14, item 7): the Preferences page shows a user their balance and
statement; an administrator grants credit there, behind the CSRF check; with PEX_CREDIT=on a
Confirm beyond the balance books nothing and says why."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

from markupsafe import escape

from pex.domain.values import Terms
from tests.support import T0
from tests.support.portal import ETCH

BALANCE = re.compile(r"<strong data-credit-balance>([^<]+)</strong>")


def test_a_user_sees_their_credit_and_an_administrator_grants_it_with_a_note(portal):
    alice = portal.user("alice")
    page = alice.get("/preferences").text
    assert BALANCE.search(page).group(1) == "0.00 USD" and "not charged to it" in page
    assert "Grant credit" not in page
    root = portal.user("root", admin=True)
    granted = root.post("/preferences/credit", {"username": "alice", "amount": "12.50", "note": "for the course"})
    assert granted.status_code == 303
    assert "alice now has 12.50 USD of credit." in root.follow(granted).text
    page = alice.get("/preferences").text
    assert BALANCE.search(page).group(1) == "12.50 USD"
    assert "granted by root: for the course" in page
    assert portal.application.credit("alice").balance == Decimal("12.50")


def test_a_refused_grant_is_shown_again_beside_its_reason_and_nothing_changes(portal):
    portal.user("alice")
    root = portal.user("root", admin=True)
    refused = root.post("/preferences/credit", {"username": "alice", "amount": "-1", "note": "oops"})
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in refused.text and "at most that much can be taken back" in refused.text
    assert 'value="-1"' in refused.text and 'value="oops"' in refused.text
    unknown = root.post("/preferences/credit", {"username": "nobody", "amount": "5"})
    assert unknown.status_code == 422 and str(escape("there is no user 'nobody'")) in unknown.text
    assert portal.application.credit("alice").entries == ()


def test_only_an_administrator_grants_and_only_with_the_forms_token(portal):
    alice = portal.user("alice")
    assert alice.post("/preferences/credit", {"username": "alice", "amount": "100"}).status_code == 403
    root = portal.user("root", admin=True)
    assert root.post("/preferences/credit", {"username": "alice", "amount": "100"}, csrf=False).status_code == 403
    assert portal.application.credit("alice").entries == ()


def test_with_credit_on_a_confirm_beyond_the_credit_books_nothing_and_says_why(portal):
    app = portal.application
    app.credit_enforced = True
    alice = portal.user("alice")
    rid = app.initiate_reservation("alice")
    start = T0 + timedelta(hours=1)
    app.submit_proposal(rid, Terms("XLARGE", ETCH, 5, 0, start, start + timedelta(hours=4)))  # 4.00
    page = alice.follow(alice.post(f"/reservations/{rid}/confirm"))
    assert "Not booked: it costs 4.00 USD and your credit is 0.00 USD." in page.text
    assert app.get_reservation(rid).state.value == "ACCEPTED"
    app.grant_credit("alice", "5", by="root")
    page = alice.follow(alice.post(f"/reservations/{rid}/confirm"))
    assert "Confirmed: the reservation is booked" in page.text
    prefs = alice.get("/preferences").text
    assert BALANCE.search(prefs).group(1) == "1.00 USD" and "every reservation you confirm is paid from it" in prefs
    assert f'charged for <a href="/reservations/{rid}">a reservation</a>' in prefs
