"""Every refusal is a designed RFC 9457 problem, and a refused request changes nothing."""

import json
from datetime import timedelta

import pytest
from eventsourcing.persistence import OperationalError

from pex.application import Contention
from tests.support.api import proposal

H = timedelta(hours=1)


def problem(response, status: int, kind: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= set(body)
    assert body["status"] == status and body["request_id"] == response.headers["X-Request-ID"]
    if kind:
        assert body["type"] == f"/OpenPEX/problems/{kind}"
    return body


def pointers(body: dict) -> set[str]:
    return {e["pointer"] for e in body.get("errors", [])}


def nothing_recorded(api) -> bool:
    return api.application.list_reservations() == []


@pytest.mark.parametrize(
    "change, pointer",
    [
        ({"duration": "an hour"}, "/duration"),
        ({"duration": -5}, "/duration"),
        ({"duration": 0}, "/duration"),
        ({"duration": 10**16}, "/duration"),
        ({"numInstancesFixed": 1.5}, "/numInstancesFixed"),
        ({"numInstancesFixed": True}, "/numInstancesFixed"),
        ({"numInstancesOption": -1}, "/numInstancesOption"),
        ({"type": 7}, "/type"),
        ({"type": ""}, "/type"),
        ({"startTime": None}, "/startTime"),
        ({"price": -1}, "/price"),
        ({"price": "cheap"}, "/price"),
        ({"numInstancesOptions": 2}, "/numInstancesOptions"),
    ],
)
def test_malformed_fields_are_400_with_a_pointer_to_each(api, change, pointer):
    body = problem(api.post("/OpenPEX/reservations", json={**proposal(), **change}), 400, "invalid-request")
    assert pointer in pointers(body)
    assert nothing_recorded(api)


def test_missing_fields_are_all_reported_at_once(api):
    body = problem(api.post("/OpenPEX/reservations", json={"type": "SMALL"}), 400)
    assert {"/duration", "/numInstancesFixed", "/startTime", "/template"} <= pointers(body)


@pytest.mark.parametrize(
    "change, pointer",
    [
        ({"type": "HUGE"}, "/type"),
        ({"template": "Windows 95"}, "/template"),
        ({"startTime": "Mon, 02 Mar 2026 07:00:00 GMT"}, "/startTime"),  # an hour ago
        ({"startTime": "yesterday-ish"}, "/startTime"),
        ({"startTime": "2026-03-02T10:00:00"}, "/startTime"),  # no time zone
        ({"duration": 400 * 24 * 3600 * 1000}, "/duration"),  # over a year
        ({"numInstancesFixed": 0, "numInstancesOption": 0}, "/numInstancesFixed"),
    ],
)
def test_proposals_that_cannot_be_negotiated_are_422_and_leave_no_reservation(api, change, pointer):
    body = problem(api.post("/OpenPEX/reservations", json={**proposal(), **change}), 422, "invalid-proposal")
    assert pointer in pointers(body)
    assert nothing_recorded(api)


def test_malformed_json_is_400(api):
    response = api.post(
        "/OpenPEX/reservations", body='{"duration": 36', headers={"Content-Type": "application/json"}
    )
    problem(response, 400, "malformed-body")
    assert nothing_recorded(api)


@pytest.mark.parametrize("body", ["[]", '"text"', "42", "null"])
def test_a_body_that_is_not_an_object_is_400(api, body):
    problem(api.post("/OpenPEX/reservations", body=body, headers={"Content-Type": "application/json"}), 400)


def test_a_body_in_another_media_type_is_415(api):
    response = api.post("/OpenPEX/reservations", body="duration=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    problem(response, 415)


def test_an_oversize_body_is_413_before_it_is_read(api):
    huge = json.dumps({**proposal(), "template": "x" * 100_000})
    problem(api.post("/OpenPEX/reservations", body=huge, headers={"Content-Type": "application/json"}), 413, "payload-too-large")
    assert nothing_recorded(api)


def test_unknown_and_malformed_ids_are_404(api):
    problem(api.get("/OpenPEX/reservations/5D0FA0EB-90A8-F4E6-1DFF-61B2CEC6AD91"), 404, "not-found")
    problem(api.get("/OpenPEX/reservations/not-a-guid"), 404)
    problem(api.get("/OpenPEX/instances/5D0FA0EB-90A8-F4E6-1DFF-61B2CEC6AD91"), 404)
    problem(api.put("/OpenPEX/reservations/12/activate"), 404)


def test_an_unknown_path_and_method_are_problems_too(api):
    problem(api.get("/OpenPEX/nothing-here"), 404)
    response = api.client.simulate_patch("/OpenPEX/reservations", headers=api.user("alice"))
    problem(response, 405)
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]


def test_an_illegal_protocol_move_is_409_and_changes_nothing(api):
    rid = api.propose().json["proposal"]["id"]
    version = api.get(f"/OpenPEX/reservations/{rid}").json["version"]
    problem(api.put(f"/OpenPEX/reservations/{rid}/activate"), 409, "illegal-move")  # not confirmed yet
    problem(api.step(rid, "ACCEPT"), 409, "illegal-move")  # nothing to accept: the provider accepted
    assert api.get(f"/OpenPEX/reservations/{rid}").json["version"] == version


def test_a_step_needs_a_known_reply_and_a_counter_needs_its_proposal(api):
    rid = api.propose().json["proposal"]["id"]
    problem(api.step(rid, "MAYBE"), 400)
    problem(api.step(rid, "REQUEST_SUCCESS"), 400)
    body = problem(api.step(rid, "COUNTER"), 422)
    assert "/proposal" in pointers(body)
    body = problem(api.step(rid, "COUNTER", proposal_body={"type": "SMALL"}), 422)
    assert "/proposal/duration" in pointers(body)


def test_a_counter_with_bad_terms_points_into_the_proposal(api):
    api.propose(user="filler", size="XLARGE", fixed=5, hours=2)
    api.step(api.get("/OpenPEX/reservations", user="filler").json["reservations"][0]["id"], "CONFIRM", user="filler")
    rid = api.propose().json["proposal"]["id"]
    body = problem(api.step(rid, "COUNTER", proposal_body=proposal(size="HUGE")), 422)
    assert pointers(body) == {"/proposal/type"}


def test_a_proposal_id_other_than_the_urls_is_refused(api):
    rid = api.propose().json["proposal"]["id"]
    other = "5D0FA0EB-90A8-F4E6-1DFF-61B2CEC6AD91"
    body = problem(api.step(rid, "CONFIRM", proposal_body={"id": other}), 422)
    assert pointers(body) == {"/proposal/id"}
    assert api.get(f"/OpenPEX/reservations/{rid}").json["state"] == "ACCEPTED"


def test_confirming_a_lapsed_offer_is_409_offer_expired(api):
    rid = api.propose().json["proposal"]["id"]
    api.clock.advance(api.application.policy.offer_ttl + timedelta(seconds=1))
    problem(api.step(rid, "CONFIRM"), 409, "offer-expired")
    assert 'pex_offers_expired_total 1.0' in api.client.simulate_get("/metrics").text


def test_contention_is_503_with_retry_after(api, monkeypatch):
    def contended(*args, **kwargs):
        raise Contention("too many concurrent changes; retry later")

    monkeypatch.setattr(api.application, "_answer", contended)
    response = api.propose()
    problem(response, 503, "contention")
    assert response.headers["Retry-After"] == "1"


def test_an_unreachable_store_is_503_with_retry_after_and_names_no_address(api, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError('connection to server at "10.1.2.3", port 5432 failed: Connection refused')

    monkeypatch.setattr(api.application, "_answer", unreachable)
    response = api.propose()
    body = problem(response, 503, "store-unavailable")
    assert response.headers["Retry-After"] == "5"
    assert "10.1.2.3" not in json.dumps(body)


def test_an_unexpected_failure_is_a_500_problem_that_leaks_nothing(api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.read_models, "reservations", broken)
    body = problem(api.get("/OpenPEX/reservations"), 500, "internal")
    assert "secret" not in json.dumps(body)


def test_deleting_an_activated_reservation_is_409(api):
    rid = api.propose().json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    api.put(f"/OpenPEX/reservations/{rid}/activate")
    problem(api.delete(f"/OpenPEX/reservations/{rid}"), 409, "illegal-move")


def test_an_unknown_query_parameter_is_400_not_ignored(api):
    body = problem(api.get("/OpenPEX/reservations?stat=CONFIRMED"), 400, "invalid-request")
    assert pointers(body) == {"#query/stat"}
    body = problem(api.get("/OpenPEX/reservations?state=MAYBE"), 400)
    assert pointers(body) == {"#query/state"}


@pytest.mark.parametrize(
    "start",
    ["9999-12-31T23:59:59-23:59", "Fri, 31 Dec 9999 23:59:59 GMT", "0001-01-01T00:00:00+23:59", "2026-02-30T10:00:00Z"],
)
def test_start_times_at_the_edges_of_the_calendar_are_422_not_500(api, start):
    problem(api.post("/OpenPEX/reservations", json={**proposal(), "startTime": start}), 422, "invalid-proposal")
    assert nothing_recorded(api)


def test_no_generated_proposal_makes_the_server_fail(api):
    """Hypothesis throws arbitrary JSON values at every field: always a 201 or a 4xx problem."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )
    fields = ["duration", "numInstancesFixed", "numInstancesOption", "startTime", "template", "type", "price", "autoStart"]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.dictionaries(st.sampled_from(fields), json_values, max_size=4))
    def post(changes):
        response = api.post("/OpenPEX/reservations", json={**proposal(), **changes})
        assert response.status_code in (201, 400, 422), response.text
        assert response.status_code == 201 or response.headers["Content-Type"] == "application/problem+json"

    post()
