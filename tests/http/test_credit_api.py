"""Credit over the API (issue 14, item 7): an administrator grants it, its owner reads it, and
with PEX_CREDIT=on a CONFIRM beyond it is 402 insufficient-credit, naming the price and the
balance, and changes nothing; against the in-process app and a real gunicorn on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from pex.bootstrap import build_application
from pex.settings import Settings
from pex.wire import rfc1123
from tests.support.api import ETCH, PASSWORD, RICH, proposal
from tests.support.server import serving

CREDIT, GRANTS = "/OpenPEX/users/{}/credit", "/OpenPEX/users/{}/credit/grants"


def test_an_administrator_grants_credit_and_its_owner_reads_the_statement(api):
    api.user("root", admin=True)
    assert api.get(CREDIT.format("alice")).json == {
        "username": "alice", "balance": "0.00", "currency": "USD", "enforced": False, "entries": [],
    }
    granted = api.post(GRANTS.format("alice"), user="root", json={"amount": "25.5", "note": "for the course"})
    assert granted.status_code == 200
    assert granted.json["balance"] == "25.50"
    [entry] = granted.json["entries"]
    assert entry == {"at": rfc1123(api.clock()), "kind": "grant", "amount": "25.50", "balance": "25.50",
                     "by": "root", "note": "for the course"}
    got = api.get(CREDIT.format("Alice"))
    assert got.json["balance"] == "25.50" and got.headers["ETag"] == granted.headers["ETag"]
    assert api.post(GRANTS.format("alice"), user="root", json={"amount": "-25.50"}).json["balance"] == "0.00"


def test_only_its_owner_or_an_administrator_reads_a_credit_and_only_an_administrator_grants(api):
    api.user("alice")
    api.user("bob")
    api.user("root", admin=True)
    assert api.get(CREDIT.format("alice"), user="bob").status_code == 404
    assert api.get(CREDIT.format("alice"), user="root").status_code == 200
    refused = api.post(GRANTS.format("alice"), json={"amount": "5"})
    assert refused.status_code == 403 and refused.json["type"] == "/OpenPEX/problems/forbidden"
    assert api.post(GRANTS.format("nobody"), user="root", json={"amount": "5"}).status_code == 404
    assert api.get(CREDIT.format("alice")).json["entries"] == []


@pytest.mark.parametrize("body, status, kind", [
    ({"amount": "0"}, 422, "invalid-credit"),
    ({"amount": "-1.00"}, 422, "invalid-credit"),  # more than the balance
    ({"amount": "1.001"}, 400, "invalid-request"),
    ({"amount": 5}, 400, "invalid-request"),
    ({"amount": "5", "note": "x" * 201}, 400, "invalid-request"),
    ({"amount": "5", "extra": 1}, 400, "invalid-request"),
    ({}, 400, "invalid-request"),
])
def test_a_bad_grant_is_a_problem_and_changes_nothing(api, body, status, kind):
    api.user("alice")
    api.user("root", admin=True)
    reply = api.post(GRANTS.format("alice"), user="root", json=body)
    assert reply.status_code == status and reply.headers["Content-Type"] == "application/problem+json"
    assert reply.json["type"] == f"/OpenPEX/problems/{kind}"
    assert api.get(CREDIT.format("alice")).json["entries"] == []


def test_with_credit_enforced_a_confirm_beyond_the_balance_is_402_and_the_offer_stands(api):
    api.application.credit_enforced = True
    api.user("root", admin=True)
    created = api.propose(size="XLARGE", fixed=5, hours=4)  # 4.00
    rid = created.json["proposal"]["id"]
    refused = api.step(rid, "CONFIRM")
    assert refused.status_code == 402 and refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json["type"] == "/OpenPEX/problems/insufficient-credit"
    assert (refused.json["price"], refused.json["balance"]) == ("4.00", "0.00")
    assert "costs 4.00" in refused.json["detail"]
    assert api.get(f"/OpenPEX/reservations/{rid}").json["state"] == "ACCEPTED"
    api.post(GRANTS.format("alice"), user="root", json={"amount": "4"})
    assert api.step(rid, "CONFIRM").json["reply"] == "REQUEST_SUCCESS"
    credit = api.get(CREDIT.format("alice")).json
    assert credit["balance"] == "0.00" and credit["enforced"] is True
    assert credit["entries"][-1] == {
        "at": rfc1123(api.clock()), "kind": "charge", "amount": "-4.00", "balance": "0.00", "reservationId": rid,
    }
    api.clock.advance(timedelta(minutes=30))  # before its start: the whole price back
    assert api.put(f"/OpenPEX/reservations/{rid}/release").status_code == 200
    assert api.get(CREDIT.format("alice")).json["balance"] == "4.00"


@pytest.mark.gunicorn
@pytest.mark.postgres
def test_a_served_pex_with_credit_on_charges_refuses_and_refunds_across_workers(postgres_url, tmp_path):
    with serving(postgres_url, tmp_path, workers=2, extra_env={"PEX_CREDIT": "on"}) as server:
        admin = build_application(Settings(database_url=postgres_url, install_demo_pool=False, create_tables=False))
        try:
            admin.register_user("root", PASSWORD, is_admin=True)
        finally:
            admin.close()
        alice, root = server.session(server.register("alice")), server.session(("root", PASSWORD))
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        body = {**proposal("XLARGE", 2, start=start, hours=2), "template": ETCH}  # 0.80
        created = alice.post(f"{server.url}/OpenPEX/reservations", json=body, timeout=30)
        assert created.status_code == 201, created.text
        rid = created.json()["proposal"]["id"]
        confirm = {"reply": "CONFIRM"}
        refused = alice.put(f"{server.url}/OpenPEX/reservations/{rid}", json=confirm, timeout=30)
        assert refused.status_code == 402 and refused.json()["balance"] == "0.00", refused.text
        granted = root.post(f"{server.url}{GRANTS.format('alice')}", json={"amount": "1.00"}, timeout=30)
        assert granted.json()["balance"] == "1.00"
        for _ in range(3):  # each on either worker: the store, not a process, keeps the balance
            assert alice.get(f"{server.url}{CREDIT.format('alice')}", timeout=30).json()["balance"] == "1.00"
        confirmed = alice.put(f"{server.url}/OpenPEX/reservations/{rid}", json=confirm, timeout=30)
        assert confirmed.json()["reply"] == "REQUEST_SUCCESS", confirmed.text
        assert alice.get(f"{server.url}{CREDIT.format('alice')}", timeout=30).json()["balance"] == "0.20"
        deleted = alice.delete(f"{server.url}/OpenPEX/reservations/{rid}", timeout=30)
        assert deleted.status_code in (200, 204), deleted.text
        statement = requests.get(f"{server.url}{CREDIT.format('alice')}", auth=("alice", PASSWORD), headers=RICH, timeout=30)
        assert [e["kind"] for e in statement.json()["entries"]] == ["grant", "charge", "refund"]
        assert statement.json()["balance"] == "1.00"
