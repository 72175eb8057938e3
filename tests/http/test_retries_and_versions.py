"""ETag / If-Match against the aggregate version, Idempotency-Key for POST, read-your-writes."""

import json

from tests.support.api import proposal


def test_get_carries_the_aggregate_version_as_etag_and_writes_move_it(api):
    created = api.propose()
    rid = created.json["proposal"]["id"]
    read = api.get(f"/OpenPEX/reservations/{rid}")
    assert read.headers["ETag"] == created.headers["ETag"] == f'"{read.json["version"]}"'
    confirmed = api.step(rid, "CONFIRM")
    assert confirmed.headers["ETag"] != read.headers["ETag"]
    assert api.get(f"/OpenPEX/reservations/{rid}").headers["ETag"] == confirmed.headers["ETag"]


def test_if_match_with_a_stale_etag_is_412_and_changes_nothing(api):
    rid = api.propose().json["proposal"]["id"]
    stale = api.get(f"/OpenPEX/reservations/{rid}").headers["ETag"]
    api.step(rid, "CONFIRM")
    current = api.get(f"/OpenPEX/reservations/{rid}")
    for response in (
        api.delete(f"/OpenPEX/reservations/{rid}", headers={"If-Match": stale}),
        api.put(f"/OpenPEX/reservations/{rid}/activate", headers={"If-Match": stale}),
        api.put(f"/OpenPEX/reservations/{rid}/activate", headers={"If-Match": f"W/{current.headers['ETag']}"}),
    ):
        assert response.status_code == 412
        assert response.json["type"] == "/OpenPEX/problems/precondition-failed"
    assert api.get(f"/OpenPEX/reservations/{rid}").json == current.json


def test_if_match_with_the_current_etag_or_a_star_goes_through(api):
    rid = api.propose().json["proposal"]["id"]
    etag = api.get(f"/OpenPEX/reservations/{rid}").headers["ETag"]
    confirmed = api.step(rid, "CONFIRM", headers={"If-Match": etag})
    assert confirmed.status_code == 200
    activated = api.put(f"/OpenPEX/reservations/{rid}/activate", headers={"If-Match": '"999", ' + confirmed.headers["ETag"]})
    assert activated.status_code == 200
    rid2 = api.propose().json["proposal"]["id"]
    assert api.delete(f"/OpenPEX/reservations/{rid2}", headers={"If-Match": "*"}).status_code == 200


def test_a_retried_post_with_an_idempotency_key_returns_the_first_answer_and_one_reservation(api):
    key = {"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"}
    first = api.post("/OpenPEX/reservations", json=proposal(size="XLARGE", fixed=3), headers=key)
    again = api.post("/OpenPEX/reservations", json=proposal(size="XLARGE", fixed=3), headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert len(api.get("/OpenPEX/reservations").json["reservations"]) == 1
    # The pool still holds only one 3-instance offer: 2 XLARGE remain.
    assert api.propose(user="bob", size="XLARGE", fixed=2).json["reply"] == "ACCEPT"


def test_a_retry_after_the_negotiation_moved_on_still_answers_the_first_reply(api):
    key = {"Idempotency-Key": '"retry-1"'}
    first = api.post("/OpenPEX/reservations", json=proposal(), headers=key)
    api.step(first.json["proposal"]["id"], "CONFIRM")
    again = api.post("/OpenPEX/reservations", json=proposal(), headers=key)
    assert again.status_code == 201 and again.json["reply"] == "ACCEPT"
    assert again.json["state"] == "CONFIRMED"


def test_a_retried_post_whose_first_answer_was_a_counter_replays_the_counter(api):
    assert api.propose(user="bob", size="XLARGE", fixed=5).json["reply"] == "ACCEPT"
    key = {"Idempotency-Key": "counter-1"}
    first = api.post("/OpenPEX/reservations", json=proposal(size="XLARGE", fixed=5), headers=key)
    again = api.post("/OpenPEX/reservations", json=proposal(size="XLARGE", fixed=5), headers=key)
    assert first.json["reply"] == "COUNTER"
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["ETag"] == first.headers["ETag"]
    # The same offer, still in its first round (the reason given with a COUNTER is not recorded).
    assert {k: v for k, v in again.json.items() if k != "reason"} == {k: v for k, v in first.json.items() if k != "reason"}


def test_keys_are_per_user(api):
    key = {"Idempotency-Key": "same-key"}
    alice = api.post("/OpenPEX/reservations", json=proposal(), headers=key, user="alice")
    bob = api.post("/OpenPEX/reservations", json=proposal(), headers=key, user="bob")
    assert alice.json["proposal"]["id"] != bob.json["proposal"]["id"]


def test_a_key_reused_for_another_proposal_is_422(api):
    key = {"Idempotency-Key": "k-1"}
    api.post("/OpenPEX/reservations", json=proposal(fixed=1), headers=key)
    reused = api.post("/OpenPEX/reservations", json=proposal(fixed=2), headers=key)
    assert reused.status_code == 422 and reused.json["type"] == "/OpenPEX/problems/idempotency-key-reused"
    assert len(api.get("/OpenPEX/reservations").json["reservations"]) == 1


def test_a_malformed_key_is_400(api):
    response = api.post("/OpenPEX/reservations", json=proposal(), headers={"Idempotency-Key": "has spaces in it"})
    assert response.status_code == 400
    assert api.get("/OpenPEX/reservations").json["reservations"] == []


def test_reads_right_after_writes_see_them(api):
    for n in range(5):
        created = api.propose(fixed=1)
        rid = created.json["proposal"]["id"]
        assert api.get(created.headers["Location"]).json["state"] == "ACCEPTED"
        assert rid in [r["id"] for r in api.get("/OpenPEX/reservations").json["reservations"]]
        api.step(rid, "CONFIRM")
        assert len(api.get("/OpenPEX/instances").json["instances"]) == n + 1


def test_request_ids_are_echoed_or_made(api):
    given = api.get("/OpenPEX/reservations", headers={"X-Request-ID": "trace-42"})
    assert given.headers["X-Request-ID"] == "trace-42"
    made = api.get("/OpenPEX/reservations", headers={"X-Request-ID": "bad id with spaces\n"})
    assert made.headers["X-Request-ID"] != "bad id with spaces\n" and len(made.headers["X-Request-ID"]) == 32
    failed = api.get("/OpenPEX/reservations/5D0FA0EB-90A8-F4E6-1DFF-61B2CEC6AD91", headers={"X-Request-ID": "trace-43"})
    assert failed.json["request_id"] == "trace-43"


def test_health_readiness_and_metrics(api):
    assert api.client.simulate_get("/healthz").text == "ok\n"
    assert api.client.simulate_get("/readyz").status_code == 200
    rid = api.propose().json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    metrics = api.client.simulate_get("/metrics").text
    assert 'pex_negotiation_replies_total{reply="ACCEPT"} 1.0' in metrics
    assert 'pex_negotiation_replies_total{reply="REQUEST_SUCCESS"} 1.0' in metrics
    assert 'pex_http_request_duration_seconds_count{method="POST",route="/OpenPEX/reservations"} 1.0' in metrics
    assert 'route="/OpenPEX/reservations/{reservation_id:uuid}"' in metrics  # templates, never ids


def test_readiness_fails_when_the_store_does_not_answer(api, monkeypatch):
    def down():
        raise OSError("connection refused")

    monkeypatch.setattr(api.application.recorder, "max_notification_id", down)
    response = api.client.simulate_get("/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"]


def test_request_logs_are_json_lines_with_the_request_id(api, caplog):
    from pex.http.logs import JsonFormatter

    with caplog.at_level("INFO", logger="pex.http.access"):
        api.get("/OpenPEX/reservations", headers={"X-Request-ID": "trace-44"})
    record = [r for r in caplog.records if r.name == "pex.http.access"][-1]
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-44" and line["status"] == 200 and line["user"] == "alice"
    assert line["route"] == "/OpenPEX/reservations" and line["duration_ms"] >= 0
