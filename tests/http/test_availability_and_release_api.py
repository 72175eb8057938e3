"""Availability without a hold and early release over HTTP, in process (every response
checked against the OpenAPI document)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.wire import rfc1123
from tests.support import T0

H = timedelta(hours=1)


def windows(api, user="alice", **params):
    query = {"type": "XLARGE", "count": 2, "duration": 3600000, **params}
    return api.get("/OpenPEX/availability", user=user, params={k: str(v) for k, v in query.items()})


def test_availability_answers_windows_earliest_first_and_holds_nothing(api):
    filler = api.propose(user="filler", size="XLARGE", fixed=4, start=T0, hours=3)
    api.step(filler.json["proposal"]["id"], "CONFIRM", user="filler")
    api.user("alice")  # registered before counting what is recorded
    before = api.application.recorder.max_notification_id()
    reply = windows(api, to=rfc1123(T0 + 6 * H), limit=5)
    assert reply.status_code == 200
    assert reply.json == [
        {"startTime": "Mon, 02 Mar 2026 11:00:00 GMT", "endTime": "Mon, 02 Mar 2026 12:00:00 GMT", "available": 5,
         "price": "0.40"},
    ]  # fmt: skip
    one = windows(api, count=1, to=rfc1123(T0 + 6 * H)).json
    assert [(w["startTime"], w["available"]) for w in one] == [
        ("Mon, 02 Mar 2026 08:00:00 GMT", 1), ("Mon, 02 Mar 2026 11:00:00 GMT", 5),
    ]  # fmt: skip
    assert api.application.recorder.max_notification_id() == before


@pytest.mark.parametrize(
    "params, status, pointer",
    [
        ({"count": "two"}, 400, "#query/count"),  # the contract's
        ({"count": 0}, 400, "#query/count"),
        ({"duration": -5}, 400, "#query/duration"),
        ({"limit": 51}, 400, "#query/limit"),
        ({"from": "yesterday"}, 422, "#query/from"),  # the service's: a string, but no time
        ({"type": "HUGE"}, 422, "#query/type"),
        ({"from": rfc1123(T0 + 100 * 24 * H)}, 422, "#query/from"),
        ({"from": rfc1123(T0 + 2 * H), "to": rfc1123(T0 + H)}, 422, "#query/to"),
        ({"to": rfc1123(T0 + 100 * 24 * H)}, 422, "#query/to"),
    ],
)
def test_bad_availability_parameters_are_a_problem_naming_them(api, params, status, pointer):
    reply = windows(api, **params)
    assert reply.status_code == status
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in reply.json["errors"]]


def test_availability_without_a_type_is_a_400_and_anonymous_is_a_401(api):
    reply = api.get("/OpenPEX/availability", params={"count": "1", "duration": "1000"})
    assert reply.status_code == 400 and "#query/type" in [e["pointer"] for e in reply.json["errors"]]
    assert api.client.simulate_get("/OpenPEX/availability", params={"type": "SMALL"}).status_code == 401


def test_release_ends_an_activated_reservation_now_and_frees_its_capacity(api):
    created = api.propose(size="XLARGE", fixed=5, start=T0 + H, hours=4)
    rid = created.json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    api.put(f"/OpenPEX/reservations/{rid}/activate")
    api.clock.advance(2 * H)
    assert windows(api, to=rfc1123(api.clock() + H)).json == []
    released = api.put(f"/OpenPEX/reservations/{rid}/release")
    assert released.status_code == 200
    body = released.json
    assert body["state"] == "EXPIRED"
    assert body["proposal"]["endTime"] == "Mon, 02 Mar 2026 10:00:00 GMT"
    assert body["proposal"]["price"] == "1.00"  # one of four hours of 4.00
    assert released.headers["ETag"] == f'"{body["version"]}"'
    assert windows(api, to=rfc1123(api.clock() + H)).json[0]["startTime"] == "Mon, 02 Mar 2026 10:00:00 GMT"
    again = api.put(f"/OpenPEX/reservations/{rid}/release")
    assert again.status_code == 409 and again.json["type"].endswith("/illegal-move")


def test_only_its_user_or_an_administrator_releases_a_reservation(api):
    rid = api.propose(size="SMALL").json["proposal"]["id"]
    offered = api.put(f"/OpenPEX/reservations/{rid}/release")
    assert offered.status_code == 409  # an offer is not a booking: nothing to release
    api.step(rid, "CONFIRM")
    assert api.put(f"/OpenPEX/reservations/{rid}/release", user="mallory").status_code == 404
    assert api.put(f"/OpenPEX/reservations/{rid}/release", user="mallory", headers={"If-Match": '"1"'}).status_code == 404
    api.user("root", admin=True)
    assert api.put(f"/OpenPEX/reservations/{rid}/release", user="root").json["state"] == "EXPIRED"
    stale = api.put(f"/OpenPEX/reservations/{rid}/release", headers={"If-Match": '"1"'})
    assert stale.status_code == 412
