"""A node's drain over HTTP, in process (the contract checks every reply): administrators
only, any bad input a problem that changes nothing, and the node showing its drain."""

from __future__ import annotations

from datetime import timedelta

from pex.wire import rfc1123
from tests.http.test_errors import problem
from tests.support import T0

H = timedelta(hours=1)


def drain_from(api, when):
    return api.put("/OpenPEX/nodes/node1/drain", user="root", json={"drainFrom": when})


def test_an_administrator_drains_a_node_sees_it_on_the_node_and_ends_it(api):
    api.user("root", admin=True)
    when = api.application.clock() + 2 * H

    drained = drain_from(api, rfc1123(when))

    assert drained.status_code == 200, drained.text
    assert drained.json["node"] == "node1" and drained.json["drainFrom"] == rfc1123(when)
    assert drained.json["by"] == "root" and drained.json["notMoved"] == [] and drained.json["leaving"] == []
    node = api.get("/OpenPEX/nodes/node1", user="root").json
    assert node["drainFrom"] == rfc1123(when) and node["drain"]["by"] == "root"
    assert api.get("/OpenPEX/nodes/node1/drain", user="root").json["drainFrom"] == rfc1123(when)
    listed = {n["name"]: n["drainFrom"] for n in api.get("/OpenPEX/nodes", user="root").json["nodes"]}
    assert listed["node1"] == rfc1123(when) and listed["node2"] is None

    ended = api.delete("/OpenPEX/nodes/node1/drain", user="root")
    assert ended.status_code == 200 and ended.json["drainFrom"] is None
    problem(api.get("/OpenPEX/nodes/node1/drain", user="root"), 404, "not-found")
    assert api.get("/OpenPEX/nodes/node1", user="root").json["drain"] is None


def test_a_drain_re_places_a_booking_that_lasts_until_it_and_says_where_it_went(api):
    api.user("root", admin=True)
    reply = api.propose(size="XLARGE", fixed=1, start=T0 + 3 * H, hours=2).json
    assert api.step(reply["proposal"]["id"], "CONFIRM").json["reply"] == "REQUEST_SUCCESS"
    booked = next(n for n in ("node1", "node2", "node3", "node4", "node5")
                  if api.get(f"/OpenPEX/nodes/{n}", user="root").json["allocations"])

    drained = api.put(f"/OpenPEX/nodes/{booked}/drain", user="root", json={"drainFrom": rfc1123(T0 + 4 * H)}).json

    [moved] = drained["moved"]
    assert moved["reservationId"] == reply["proposal"]["id"] and moved["movedTo"] not in (None, booked)
    assert api.get(f"/OpenPEX/nodes/{booked}", user="root").json["allocations"] == []
    assert api.get(f"/OpenPEX/nodes/{moved['movedTo']}", user="root").json["allocations"][0]["instances"] == 1


def test_only_an_administrator_drains_and_bad_input_is_a_problem_that_changes_nothing(api):
    api.user("root", admin=True)
    problem(api.put("/OpenPEX/nodes/node1/drain", json={"drainFrom": rfc1123(T0 + H)}), 403)
    problem(drain_from(api, "soon"), 422, "invalid-drain")
    problem(drain_from(api, "2026-08-17T10:00:00"), 422, "invalid-drain")  # no zone
    problem(api.put("/OpenPEX/nodes/node1/drain", user="root", json={}), 400)
    problem(api.put("/OpenPEX/nodes/node1/drain", user="root", json={"drainFrom": rfc1123(T0), "by": "x"}), 400)
    problem(api.put("/OpenPEX/nodes/node9/drain", user="root", json={"drainFrom": rfc1123(T0 + H)}), 404, "not-found")
    problem(api.delete("/OpenPEX/nodes/node9/drain", user="root"), 404, "not-found")
    assert all(n["drainFrom"] is None for n in api.get("/OpenPEX/nodes", user="root").json["nodes"])
