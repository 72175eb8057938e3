"""Extension by negotiation over HTTP, in process (every response checked against the
OpenAPI document): PUT …/extend answers ACCEPT, COUNTER or REJECT with the extension offered,
the user's CONFIRM (PUT on the reservation) books it, a REJECT leaves it as it was, and every
bad request is a problem that changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.wire import rfc1123
from tests.support import T0

H = timedelta(hours=1)


def confirmed(api, user="alice", **terms):
    rid = api.propose(user=user, **terms).json["proposal"]["id"]
    assert api.step(rid, "CONFIRM", user=user).json["reply"] == "REQUEST_SUCCESS"
    return rid


def extend(api, rid, end, user="alice", **kw):
    return api.put(f"/OpenPEX/reservations/{rid}/extend", user=user, json={"endTime": rfc1123(end)}, **kw)


def test_an_extension_is_offered_then_confirmed_and_the_end_moves(api):
    rid = confirmed(api, size="XLARGE", fixed=2, start=T0 + H, hours=4)  # 09:00-13:00, 1.60
    api.put(f"/OpenPEX/reservations/{rid}/activate")
    got = api.get(f"/OpenPEX/reservations/{rid}").json
    assert got["links"]["extend"] == f"/OpenPEX/reservations/{rid}/extend" and got["extension"] is None

    offered = extend(api, rid, T0 + 7 * H)
    assert offered.status_code == 200
    body = offered.json
    assert (body["reply"], body["state"]) == ("ACCEPT", "ACTIVATED")
    assert body["proposal"]["endTime"] == "Mon, 02 Mar 2026 13:00:00 GMT"  # as agreed until CONFIRM
    assert body["extension"]["endTime"] == "Mon, 02 Mar 2026 15:00:00 GMT"
    assert (body["extension"]["price"], body["extension"]["currency"]) == ("0.80", "USD")
    now = api.get(f"/OpenPEX/reservations/{rid}")
    assert offered.headers["ETag"] == now.headers["ETag"] == f'"{now.json["version"]}"'
    assert now.json["extension"]["validUntil"] == rfc1123(api.clock() + 5 * H / 60)

    booked = api.step(rid, "CONFIRM")
    assert booked.status_code == 200 and booked.json["reply"] == "REQUEST_SUCCESS"
    assert booked.json["proposal"]["endTime"] == "Mon, 02 Mar 2026 15:00:00 GMT"
    assert booked.json["proposal"]["price"] == "2.40"
    assert "extension" not in booked.json
    instances = api.get("/OpenPEX/instances").json["instances"]
    assert {i["endTime"] for i in instances} == {"Mon, 02 Mar 2026 15:00:00 GMT"}


def test_a_blocked_extension_is_countered_and_a_reject_leaves_the_reservation(api):
    rid = confirmed(api, size="XLARGE", fixed=5, start=T0 + H, hours=4)
    confirmed(api, user="bob", size="XLARGE", fixed=5, start=T0 + 7 * H, hours=2)
    countered = extend(api, rid, T0 + 10 * H).json
    assert countered["reply"] == "COUNTER"
    assert countered["extension"]["endTime"] == "Mon, 02 Mar 2026 15:00:00 GMT"
    assert countered["extension"]["askedEndTime"] == "Mon, 02 Mar 2026 18:00:00 GMT"
    assert countered["extension"]["changes"]
    declined = api.step(rid, "REJECT").json
    assert (declined["reply"], declined["state"]) == ("REJECT", "CONFIRMED")
    after = api.get(f"/OpenPEX/reservations/{rid}").json
    assert (after["state"], after["proposal"]["endTime"], after["extension"]) == ("CONFIRMED", "Mon, 02 Mar 2026 13:00:00 GMT", None)
    refused = extend(api, rid, T0 + 12 * H)  # bob's from 15:00 on, and nobody freed 13:00-15:00 yet
    assert refused.json["reply"] == "COUNTER"


def test_an_instance_not_started_moves_to_another_node_for_the_end_asked(api):
    rid = confirmed(api, size="XLARGE", fixed=1, start=T0 + H, hours=4)  # 09:00-13:00 on one node
    [old] = [a["node"] for a in api.get(f"/OpenPEX/reservations/{rid}").json["proposal"]["placement"]]
    other = confirmed(api, user="bob", size="SMALL", fixed=1, start=T0 + 5 * H, hours=2)
    assert [a["node"] for a in api.get(f"/OpenPEX/reservations/{other}", user="bob").json["proposal"]["placement"]] == [old]

    offered = extend(api, rid, T0 + 7 * H).json
    assert offered["reply"] == "ACCEPT"
    [new] = [a["node"] for a in offered["extension"]["placement"]]
    assert new != old and any("move" in change for change in offered["extension"]["changes"])
    assert [a["node"] for a in offered["proposal"]["placement"]] == [old]  # where it stands until CONFIRM

    booked = api.step(rid, "CONFIRM").json
    assert booked["reply"] == "REQUEST_SUCCESS"
    assert [a["node"] for a in booked["proposal"]["placement"]] == [new]
    assert booked["proposal"]["endTime"] == "Mon, 02 Mar 2026 15:00:00 GMT"


def test_no_room_after_the_end_is_a_reject(api):
    rid = confirmed(api, size="XLARGE", fixed=5, start=T0 + H, hours=4)
    confirmed(api, user="bob", size="XLARGE", fixed=5, start=T0 + 5 * H, hours=2)
    rejected = extend(api, rid, T0 + 6 * H).json
    assert (rejected["reply"], rejected["state"]) == ("REJECT", "CONFIRMED") and rejected["reason"]


@pytest.mark.parametrize(
    "body, status, pointer",
    [
        ({}, 400, None),  # the contract's: endTime is required
        ({"endTime": "tomorrow"}, 422, "/endTime"),
        ({"endTime": rfc1123(T0 + 5 * H)}, 422, "/endTime"),  # not after the agreed end
        ({"endTime": rfc1123(T0 + 9 * H), "price": 3}, 400, None),
    ],
)
def test_bad_extension_requests_are_problems_that_change_nothing(api, body, status, pointer):
    rid = confirmed(api, size="SMALL", start=T0 + H, hours=4)
    version = api.get(f"/OpenPEX/reservations/{rid}").json["version"]
    reply = api.put(f"/OpenPEX/reservations/{rid}/extend", json=body)
    assert reply.status_code == status, reply.json
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert {"instance", "request_id"} <= set(reply.json)
    if pointer:
        assert pointer in [e["pointer"] for e in reply.json["errors"]]
    assert api.get(f"/OpenPEX/reservations/{rid}").json["version"] == version


def test_only_a_standing_reservation_of_ones_own_is_extended(api):
    rid = api.propose(size="SMALL", start=T0 + H, hours=2).json["proposal"]["id"]
    offered = extend(api, rid, T0 + 5 * H)
    assert offered.status_code == 409 and offered.json["type"].endswith("/illegal-move")
    api.step(rid, "CONFIRM")
    assert extend(api, rid, T0 + 5 * H, user="mallory").status_code == 404
    assert extend(api, rid, T0 + 5 * H, headers={"If-Match": '"1"'}).status_code == 412
    api.user("root", admin=True)
    assert extend(api, rid, T0 + 5 * H, user="root").json["reply"] == "ACCEPT"
    api.clock.advance(6 * H)
    over = extend(api, rid, T0 + 9 * H)
    assert over.status_code == 409
