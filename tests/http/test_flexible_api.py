"""Flexible proposals over HTTP (issue 14, item 2): `latestStart` and `minDuration` in a
proposal, the chosen terms in the ACCEPT, a COUNTER only outside the freedom, every malformed
freedom a problem that changes nothing, and the original's form of the reply unchanged."""

from datetime import timedelta

import pytest

from pex.wire import rfc1123
from tests.http import jsonlib
from tests.http.jsonlib import RESERVATION_REPLY, to_java
from tests.support import T0
from tests.support.api import basic, proposal

DAY, H = timedelta(days=1), timedelta(hours=1)
DAY_10 = T0 + DAY + 2 * H
HOUR_MS = 3_600_000


def fill(api, start, hours):
    filler = api.propose(user="filler", size="XLARGE", fixed=5, start=start, hours=hours)
    assert api.step(filler.json["proposal"]["id"], "CONFIRM", user="filler").json["reply"] == "REQUEST_SUCCESS"


def test_a_flexible_proposal_is_accepted_with_the_terms_the_provider_chose(api):
    fill(api, DAY_10, 2)
    asked = proposal(fixed=5, start=DAY_10, hours=4, latestStart=rfc1123(DAY_10 + 3 * H), minDuration=HOUR_MS)
    created = api.post("/OpenPEX/reservations", json=asked)
    assert created.status_code == 201
    reply = created.json
    assert reply["reply"] == "ACCEPT"
    chosen = reply["proposal"]
    assert chosen["startTime"] == rfc1123(DAY_10 + 2 * H)  # the earliest start that fits
    assert chosen["duration"] == 4 * HOUR_MS  # and there the longest duration
    assert (chosen["latestStart"], chosen["minDuration"]) == (None, None)  # an offer's terms are firm
    assert any("chosen, within the starts up to" in c for c in chosen["changes"])
    asked_back = reply["asked"]  # the proposal as asked, beside the chosen terms
    assert (asked_back["startTime"], asked_back["latestStart"], asked_back["minDuration"]) == (
        rfc1123(DAY_10), rfc1123(DAY_10 + 3 * H), HOUR_MS,
    )
    read = api.get(f"/OpenPEX/reservations/{chosen['id']}").json
    assert read["asked"]["latestStart"] == rfc1123(DAY_10 + 3 * H) and read["proposal"]["latestStart"] is None
    confirmed = api.step(chosen["id"], "CONFIRM")
    assert confirmed.json["reply"] == "REQUEST_SUCCESS"
    assert confirmed.json["proposal"]["startTime"] == rfc1123(DAY_10 + 2 * H)


def test_outside_the_freedom_a_counter_offers_a_shorter_duration(api):
    fill(api, DAY_10 + 2 * H, 3)
    asked = proposal(fixed=5, start=DAY_10, hours=4, latestStart=rfc1123(DAY_10 + H), minDuration=3 * HOUR_MS)
    reply = api.post("/OpenPEX/reservations", json=asked).json
    assert reply["reply"] == "COUNTER"
    offers = [reply["proposal"], *reply["alternatives"]]
    assert [o["duration"] for o in offers if o["startTime"] == rfc1123(DAY_10)] == [2 * HOUR_MS]
    assert any("duration cut from 4 hours to 2 hours" in o["changes"] for o in offers)


@pytest.mark.parametrize(
    ("extra", "pointer", "status", "detail"),
    [
        ({"latestStart": rfc1123(DAY_10 - H)}, "/latestStart", 422, "is before the start"),
        ({"minDuration": 2 * HOUR_MS}, "/minDuration", 422, "is longer than the duration 1 hour"),
        ({"minDuration": 0}, "/minDuration", 400, "0 is less than the minimum of 1"),  # the schema's 1 ms
        ({"minDuration": 1.5}, "/minDuration", 400, "is not of type 'integer', 'null'"),
        ({"latestStart": "tomorrow"}, "/latestStart", 422, "is not an RFC 1123 or RFC 3339 time"),
        ({"latestStart": "2026-03-04T10:00:00"}, "/latestStart", 422, "has no time zone"),
    ],
)
def test_a_malformed_freedom_is_a_problem_that_changes_nothing(api, extra, pointer, status, detail):
    answer = api.post("/OpenPEX/reservations", json=proposal(start=DAY_10, hours=1, **extra))
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    problem = answer.json
    assert any(e["pointer"] == pointer and detail in e["detail"] for e in problem["errors"]), problem["errors"]
    assert problem["instance"] and problem["request_id"]
    assert api.get("/OpenPEX/reservations").json["reservations"] == []


def test_a_users_counter_may_be_flexible_too(api):
    fill(api, DAY_10, 2)
    countered = api.propose(fixed=5, start=DAY_10, hours=1).json
    assert countered["reply"] == "COUNTER"
    rid = countered["proposal"]["id"]
    mine = proposal(fixed=5, start=DAY_10, hours=3, minDuration=HOUR_MS, latestStart=rfc1123(DAY_10 + 5 * H))
    answered = api.step(rid, "COUNTER", proposal_body=mine)
    assert answered.json["reply"] == "ACCEPT"
    assert answered.json["proposal"]["startTime"] == rfc1123(DAY_10 + 2 * H)
    assert answered.json["proposal"]["duration"] == 3 * HOUR_MS


def test_the_originals_form_of_a_flexible_reply_is_figure_8_as_before(api):
    """A client of the original may send the new fields (scalars, which its json-lib writes);
    the reply it reads holds only Figure 8's fields, with the chosen terms."""
    fill(api, DAY_10, 2)
    asked = proposal(fixed=5, start=DAY_10, hours=1, latestStart=rfc1123(DAY_10 + 3 * H))
    api.user("alice")
    answer = api.client.simulate_post("/OpenPEX/reservations", json=asked, headers={**basic("alice"), "Accept": "*/*"})
    assert answer.status_code == 201
    assert answer.headers["Content-Type"].startswith("application/json")
    bean = to_java(answer.text, RESERVATION_REPLY)
    assert bean["reply"] == "ACCEPT"
    assert set(answer.json["proposal"]) == {
        "duration", "id", "numInstancesFixed", "numInstancesOption", "startTime", "template", "type", "userid",
    }
    assert answer.json["proposal"]["startTime"] == rfc1123(DAY_10 + 2 * H)
    assert jsonlib.parse(answer.text)["proposal"]["duration"] == HOUR_MS


def test_the_freedom_asked_is_kept_with_the_proposal_in_the_read_model(api):
    """The list is read from the persisted read model: it keeps the freedom the user gave
    beside the chosen terms (the CLI and the portal show both)."""
    asked = proposal(fixed=1, start=DAY_10, hours=2, minDuration=HOUR_MS, latestStart=rfc1123(DAY_10 + H))
    assert api.post("/OpenPEX/reservations", json=asked).json["reply"] == "ACCEPT"
    listed = api.get("/OpenPEX/reservations").json["reservations"]
    assert [(r["proposal"]["duration"], r["proposal"]["minDuration"]) for r in listed] == [(2 * HOUR_MS, None)]
    [row] = api.read_models.reservations("alice")
    assert (row.proposal.min_duration, row.proposal.latest_start) == (H, DAY_10 + H)
    assert row.offer.terms.min_duration is None
