"""The paper's negotiation over HTTP, in process: Table 2's reservation endpoints as stories."""

from datetime import timedelta

from tests.support import T0
from tests.support.api import basic, proposal

DAY, H = timedelta(days=1), timedelta(hours=1)


def test_post_accept_confirm_activate_is_the_reference_clients_flow(api):
    created = api.propose(size="XLARGE")
    assert created.status_code == 201
    reply = created.json
    assert reply["reply"] == "ACCEPT"
    rid = reply["proposal"]["id"]
    assert rid == rid.upper() and len(rid) == 36
    assert created.headers["Location"] == f"/OpenPEX/reservations/{rid}"
    assert reply["proposal"]["startTime"] == "Mon, 02 Mar 2026 10:00:00 GMT"
    confirmed = api.step(rid, "CONFIRM", proposal_body=reply["proposal"])
    assert confirmed.status_code == 200
    assert confirmed.json["reply"] == "REQUEST_SUCCESS"
    activated = api.put(f"/OpenPEX/reservations/{rid}/activate")
    assert activated.status_code == 200 and activated.json["state"] == "ACTIVATED"
    again = api.put(f"/OpenPEX/reservations/{rid}/activate")
    assert again.status_code == 200 and again.json["version"] == activated.json["version"]


def test_counter_accept_confirm_request_confirm_activate(api):
    api.propose(user="filler", size="XLARGE", fixed=5, hours=2)
    api.step(api.get("/OpenPEX/reservations", user="filler").json["reservations"][0]["id"], "CONFIRM", user="filler")
    countered = api.propose(size="SMALL", fixed=1)
    assert countered.json["reply"] == "COUNTER"
    rid = countered.json["proposal"]["id"]
    assert countered.json["proposal"]["changes"]
    accepted = api.step(rid, "ACCEPT", proposal_body=countered.json["proposal"])
    assert accepted.json["reply"] == "CONFIRM_REQUEST"
    confirmed = api.step(rid, "CONFIRM")
    assert confirmed.json["reply"] == "REQUEST_SUCCESS"
    assert api.put(f"/OpenPEX/reservations/{rid}/activate").json["state"] == "ACTIVATED"


def test_the_papers_example_the_counter_moves_only_the_start_time(api):
    day = T0 + DAY + 2 * H  # 10:00 on a given day
    filler = api.propose(user="filler", size="XLARGE", fixed=5, start=day, hours=48)
    assert api.step(filler.json["proposal"]["id"], "CONFIRM", user="filler").json["reply"] == "REQUEST_SUCCESS"
    asked = proposal(size="SMALL", fixed=5, start=day, hours=6 * 24)
    reply = api.post("/OpenPEX/reservations", json=asked).json
    assert reply["reply"] == "COUNTER"
    offered = reply["proposal"]
    assert offered["startTime"] == "Thu, 05 Mar 2026 10:00:00 GMT"  # two days later
    for name in ("duration", "numInstancesFixed", "numInstancesOption", "template", "type"):
        assert offered[name] == asked[name], name
    assert api.step(offered["id"], "ACCEPT").json["reply"] == "CONFIRM_REQUEST"
    assert api.step(offered["id"], "CONFIRM").json["reply"] == "REQUEST_SUCCESS"


def test_a_user_can_counter_the_providers_counter(api):
    api.propose(user="filler", size="XLARGE", fixed=5, hours=2)
    api.step(api.get("/OpenPEX/reservations", user="filler").json["reservations"][0]["id"], "CONFIRM", user="filler")
    countered = api.propose(size="SMALL").json
    mine = proposal(size="SMALL", start=T0 + 5 * H)
    answer = api.step(countered["proposal"]["id"], "COUNTER", proposal_body=mine)
    assert answer.status_code == 200
    assert answer.json["reply"] == "ACCEPT"
    assert answer.json["proposal"]["startTime"] == "Mon, 02 Mar 2026 13:00:00 GMT"


def test_reject_ends_the_negotiation(api):
    api.propose(user="filler", size="XLARGE", fixed=5, hours=2)
    api.step(api.get("/OpenPEX/reservations", user="filler").json["reservations"][0]["id"], "CONFIRM", user="filler")
    rid = api.propose().json["proposal"]["id"]
    assert api.step(rid, "REJECT").json["reply"] == "REJECT"
    assert api.get(f"/OpenPEX/reservations/{rid}").json["state"] == "REJECTED"


def test_more_than_the_pool_can_hold_is_a_reject_and_still_a_reservation(api):
    created = api.propose(size="XLARGE", fixed=6)
    assert created.status_code == 201
    assert created.json["reply"] == "REJECT" and created.json["reason"]
    assert api.get(created.headers["Location"]).json["state"] == "REJECTED"


def test_rfc3339_start_times_are_accepted_and_rfc1123_written(api):
    body = proposal()
    body["startTime"] = "2026-03-02T10:00:00Z"
    reply = api.post("/OpenPEX/reservations", json=body).json
    assert reply["proposal"]["startTime"] == "Mon, 02 Mar 2026 10:00:00 GMT"


def test_deleting_releases_the_reservation_and_it_is_gone(api):
    rid = api.propose(size="XLARGE", fixed=5).json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    deleted = api.delete(f"/OpenPEX/reservations/{rid}")
    assert deleted.status_code == 200 and deleted.json["state"] == "CANCELLED"
    assert api.get(f"/OpenPEX/reservations/{rid}").status_code == 410
    assert rid not in [r["id"] for r in api.get("/OpenPEX/reservations").json["reservations"]]
    assert rid in [r["id"] for r in api.get("/OpenPEX/reservations?state=CANCELLED").json["reservations"]]
    assert api.propose(size="XLARGE", fixed=5).json["reply"] == "ACCEPT"  # the capacity is free again


def test_instances_of_a_confirmed_reservation_are_listed_and_readable(api):
    rid = api.propose(size="MEDIUM", fixed=2).json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    listed = api.get("/OpenPEX/instances").json["instances"]
    assert len(listed) == 2 and {i["reservationId"] for i in listed} == {rid}
    one = api.get(f"/OpenPEX/instances/{listed[0]['id']}")
    assert one.status_code == 200 and one.headers["ETag"] == '"1"'
    assert (one.json["type"], one.json["status"], one.json["startTime"]) == ("MEDIUM", "SCHEDULED", "Mon, 02 Mar 2026 10:00:00 GMT")


def test_instance_actions_answer_409_while_there_is_no_xen_dispatcher(api, monkeypatch):
    rid = api.propose().json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    vm = api.get("/OpenPEX/instances").json["instances"][0]["id"]
    for action in ("stop", "reboot", "delete"):
        monkeypatch.setattr(api.application, f"{action}_instance", None, raising=False)
    for response in (
        api.put(f"/OpenPEX/instances/{vm}/stop"),
        api.put(f"/OpenPEX/instances/{vm}/reboot"),
        api.delete(f"/OpenPEX/instances/{vm}"),
    ):
        assert response.status_code == 409
        assert response.json["type"] == "/OpenPEX/problems/dispatcher-unavailable"


def test_instance_actions_are_relayed_to_the_application(api, monkeypatch):
    rid = api.propose().json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    vm = api.get("/OpenPEX/instances").json["instances"][0]["id"]
    calls = []
    for action in ("start", "stop", "reboot", "delete"):
        monkeypatch.setattr(api.application, f"{action}_instance", lambda i, a=action: calls.append((a, str(i))), raising=False)
    # PEX's form: 202, what was requested (the worker carries it out), and the instance now
    for action in ("start", "stop", "reboot"):
        answer = api.put(f"/OpenPEX/instances/{vm}/{action}")
        assert answer.status_code == 202 and answer.json["requested"] == action
        assert answer.json["instance"]["id"] == vm and answer.json["instance"]["status"] == "SCHEDULED"
    deleted = api.delete(f"/OpenPEX/instances/{vm}")
    assert deleted.status_code == 202 and deleted.json["requested"] == "delete" and deleted.json["instance"]["id"] == vm
    assert calls == [("start", vm), ("stop", vm), ("reboot", vm), ("delete", vm)]
    # the original's form: 200 and the VMInstance, as Table 2 has it
    original = api.client.simulate_put(f"/OpenPEX/instances/{vm}/stop", headers=basic("alice"))
    assert original.status_code == 200 and original.json["vmID"] == vm and "requested" not in original.json
    assert api.put(f"/OpenPEX/instances/{vm}/stop", user="bob").status_code == 404
    assert len(calls) == 5


def test_replies_and_reservations_link_to_where_a_client_goes_next(api):
    auto = api.propose().json["proposal"]["id"]
    assert "activate" not in api.step(auto, "CONFIRM").json["links"]  # it starts by itself: nothing to activate
    created = api.propose(autoStart=False).json
    rid = created["proposal"]["id"]
    assert created["links"] == {"self": f"/OpenPEX/reservations/{rid}"}
    confirmed = api.step(rid, "CONFIRM").json
    assert confirmed["links"]["activate"] == f"/OpenPEX/reservations/{rid}/activate"
    assert confirmed["links"]["instances"] == "/OpenPEX/instances"
    assert "activate" not in api.put(confirmed["links"]["activate"]).json["links"]
