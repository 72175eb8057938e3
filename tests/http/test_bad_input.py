"""Bad input and cross-site requests against the API in process: each is a designed 4xx that
changes nothing, and nothing a client sends makes the server's state (or /metrics) grow."""

from __future__ import annotations

import json

import pytest

from tests.http.test_errors import nothing_recorded, problem
from tests.support.api import proposal

JSON = {"Content-Type": "application/json"}


@pytest.mark.filterwarnings("ignore:body serialization for multipart")
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_a_body_that_does_not_say_it_is_json_is_415_as_a_cross_site_no_cors_fetch_would_send_it(api, content_type):
    headers = {**api.user("alice"), **({"Content-Type": content_type} if content_type else {})}
    response = api.client.simulate_post("/OpenPEX/reservations", headers=headers, body=json.dumps(proposal()))
    problem(response, 415, "unsupported-media-type")
    assert nothing_recorded(api)


def test_an_administrators_cached_credentials_cannot_create_a_node_with_a_body_without_content_type(api):
    headers = api.user("root", admin=True)
    nodes = api.application.nodes()
    body = json.dumps({"name": "evil", "cpus": 8, "memoryMb": 8192, "diskGb": 200})
    problem(api.client.simulate_post("/OpenPEX/nodes", headers=headers, body=body), 415, "unsupported-media-type")
    assert api.application.nodes() == nodes


def test_json_with_a_charset_parameter_is_still_json(api):
    headers = {**api.user("alice"), "Content-Type": "application/json; charset=utf-8"}
    assert api.client.simulate_post("/OpenPEX/reservations", headers=headers, body=json.dumps(proposal())).status_code == 201


@pytest.mark.parametrize("path, body", [
    ("/OpenPEX/reservations", '{"type": "\\ud800", "template": "t"}'),
    ("/OpenPEX/users", '{"username": "a\\udfffb", "password": "correct horse battery"}'),
    ("/OpenPEX/users", '{"\\ud800": 1}'),
])
def test_a_lone_surrogate_anywhere_in_a_json_body_is_400_malformed(api, path, body):
    response = api.client.simulate_post(path, headers={**api.user("alice"), **JSON}, body=body)
    problem(response, 400, "malformed-body")
    assert nothing_recorded(api) and api.application.get_user("ab") is None


def test_json_nested_ten_thousand_deep_is_400_before_login(api):
    body = "[" * 10_000 + "]" * 10_000
    problem(api.client.simulate_post("/OpenPEX/users", headers=JSON, body=body), 400, "malformed-body")
    deep_object = '{"a":' * 5_000 + "1" + "}" * 5_000
    problem(api.client.simulate_post("/OpenPEX/users", headers=JSON, body=deep_object), 400, "malformed-body")


def test_brackets_inside_strings_do_not_count_as_nesting(api):
    body = {"username": "brackets", "password": "[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{"}
    assert api.client.simulate_post("/OpenPEX/users", headers=JSON, body=json.dumps(body)).status_code == 201


def test_a_stale_if_match_on_an_already_activated_reservation_is_412(api):
    rid = api.propose().json["proposal"]["id"]
    api.step(rid, "CONFIRM")
    activated = api.put(f"/OpenPEX/reservations/{rid}/activate")
    assert activated.status_code == 200
    problem(api.put(f"/OpenPEX/reservations/{rid}/activate", headers={"If-Match": '"1"'}), 412, "precondition-failed")
    again = api.put(f"/OpenPEX/reservations/{rid}/activate", headers={"If-Match": activated.headers["ETag"]})
    assert again.status_code == 200 and again.headers["ETag"] == activated.headers["ETag"]


def series(api) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in api.metrics.exposition().decode().splitlines() if line[:1] != "#"}


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")
def test_made_up_methods_and_paths_add_no_metric_series(api):
    api.client.simulate_request("FOO", "/healthz")
    api.client.simulate_get("/nowhere/0")
    api.client.simulate_get("/OpenPEX/reservations/0", headers=api.user("alice"))
    known = series(api)
    for n in range(1, 50):
        api.client.simulate_request(f"FOO{n}", "/healthz")
        api.client.simulate_get(f"/nowhere/{n}")
        api.client.simulate_get(f"/OpenPEX/reservations/{n}", headers=api.user("alice"))
    assert series(api) == known
    assert not any("FOO" in s or "/nowhere/" in s for s in known)


def test_metrics_can_be_for_administrators_only(tmp_path):
    from pex.settings import HttpSettings
    from tests.support.api import make_api

    api = make_api(HttpSettings(metrics_auth=True))
    try:
        problem(api.client.simulate_get("/metrics"), 401, "unauthorized")
        problem(api.get("/metrics", user="alice"), 403, "forbidden")
        assert api.get("/metrics", user="root", headers={}).status_code == 403  # not an admin either
        api.user("boss", admin=True)
        assert api.get("/metrics", user="boss").status_code == 200
    finally:
        api.read_models.close()
        api.application.close()


def test_api_replies_are_neither_stored_nor_sniffed_nor_framed(api):
    for response in (api.get("/OpenPEX/sizes"), api.client.simulate_get("/OpenPEX/sizes"), api.client.simulate_get("/healthz")):
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
