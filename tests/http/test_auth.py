"""Accounts and HTTP basic auth: who may call what, and who sees whose reservations."""

import logging

import pytest
import yaml
from click.testing import CliRunner

from pex.http.contract import spec_dict
from pex.settings import HttpSettings
from tests.support.api import PASSWORD, basic, make_api

PUBLIC = {("post", "/OpenPEX/users")}
SOME_ID = "5D0FA0EB-90A8-F4E6-1DFF-61B2CEC6AD91"


def operations():
    for path, item in spec_dict()["paths"].items():
        for method in ("get", "post", "put", "delete"):
            if method in item and (method, path) not in PUBLIC:
                yield method, path.replace("{reservation_id}", SOME_ID).replace("{vm_id}", SOME_ID).replace(
                    "{name}", "node1"
                ).replace("{username}", "alice")


@pytest.mark.parametrize("method, path", list(operations()))
def test_every_endpoint_but_registration_needs_credentials(api, method, path):
    api.user("alice")
    for headers in ({}, basic("alice", "wrong password"), basic("nobody"), {"Authorization": "Bearer abc"}):
        response = api.client.simulate_request(method.upper(), path, headers=headers, json={})
        assert response.status_code == 401, (method, path, headers)
        assert response.headers["WWW-Authenticate"] == 'Basic realm="OpenPEX", charset="UTF-8"'
        assert response.headers["Content-Type"] == "application/problem+json"


def test_the_spec_declares_basic_auth_on_every_operation_but_registration():
    spec = spec_dict()
    assert spec["security"] == [{"basicAuth": []}]
    open_ops = [
        (m, p) for p, item in spec["paths"].items() for m, op in item.items() if isinstance(op, dict) and op.get("security") == []
    ]
    assert open_ops == [("post", "/OpenPEX/users")]


def test_registering_then_calling_with_basic_auth(api):
    registered = api.client.simulate_post("/OpenPEX/users", json={"username": "carol", "password": PASSWORD})
    assert registered.status_code == 201 and registered.headers["Location"] == "/OpenPEX/users/carol"
    assert registered.json["admin"] is False
    me = api.client.simulate_get("/OpenPEX/users/carol", headers=basic("carol"))
    assert me.status_code == 200 and me.json["username"] == "carol"


def test_a_username_can_be_registered_once(api):
    body = {"username": "carol", "password": PASSWORD}
    assert api.client.simulate_post("/OpenPEX/users", json=body).status_code == 201
    again = api.client.simulate_post("/OpenPEX/users", json={**body, "password": "another password"})
    assert again.status_code == 409 and again.json["type"] == "/OpenPEX/problems/username-taken"
    assert api.client.simulate_get("/OpenPEX/users/carol", headers=basic("carol")).status_code == 200


@pytest.mark.parametrize("body", [{"username": "carol", "password": "short"}, {"username": "no spaces", "password": PASSWORD}, {"username": "carol"}])
def test_bad_registrations_are_400(api, body):
    assert api.client.simulate_post("/OpenPEX/users", json=body).status_code == 400


def test_registration_can_be_switched_off():
    api = make_api(HttpSettings(registration=False))
    response = api.client.simulate_post("/OpenPEX/users", json={"username": "carol", "password": PASSWORD})
    assert response.status_code == 403 and response.json["type"] == "/OpenPEX/problems/registration-closed"


def test_only_an_argon2_hash_of_the_password_is_stored(api):
    api.client.simulate_post("/OpenPEX/users", json={"username": "carol", "password": PASSWORD})
    stored = b"".join(item.state for item in api.application.recorder.select_notifications(start=None, limit=100))
    assert PASSWORD.encode() not in stored
    assert b"$argon2id$" in stored


def test_users_see_and_touch_only_their_own_reservations_and_instances(api):
    rid = api.propose(user="alice").json["proposal"]["id"]
    api.step(rid, "CONFIRM", user="alice")
    vm = api.get("/OpenPEX/instances", user="alice").json["instances"][0]["id"]
    assert api.get(f"/OpenPEX/reservations/{rid}", user="bob").status_code == 404
    assert api.step(rid, "REJECT", user="bob").status_code == 404
    assert api.delete(f"/OpenPEX/reservations/{rid}", user="bob").status_code == 404
    assert api.put(f"/OpenPEX/reservations/{rid}/activate", user="bob").status_code == 404
    assert api.get(f"/OpenPEX/instances/{vm}", user="bob").status_code == 404
    assert api.put(f"/OpenPEX/instances/{vm}/stop", user="bob").status_code == 404
    assert api.get("/OpenPEX/reservations", user="bob").json["reservations"] == []
    assert api.get("/OpenPEX/instances", user="bob").json["instances"] == []
    assert api.get("/OpenPEX/users/alice", user="bob").status_code == 404
    assert api.get(f"/OpenPEX/reservations/{rid}", user="alice").json["state"] == "CONFIRMED"


def test_an_administrator_sees_everyones_reservations_and_manages_the_pool(api):
    rid = api.propose(user="alice").json["proposal"]["id"]
    api.user("root", admin=True)
    assert [r["id"] for r in api.get("/OpenPEX/reservations", user="root").json["reservations"]] == [rid]
    assert api.get(f"/OpenPEX/reservations/{rid}", user="root").status_code == 200
    assert len(api.get("/OpenPEX/nodes", user="root").json["nodes"]) == 5
    node = api.post("/OpenPEX/nodes", user="root", json={"name": "node6", "cpus": 8, "memoryMb": 8192, "diskGb": 100})
    assert node.status_code == 201 and node.json["cpus"] == 8
    assert api.post("/OpenPEX/nodes", user="root", json={"name": "node6", "cpus": 8, "memoryMb": 8192, "diskGb": 100}).status_code == 409
    resized = api.put("/OpenPEX/nodes/node6", user="root", json={"cpus": 16, "memoryMb": 8192, "diskGb": 100})
    assert resized.status_code == 200 and resized.json["cpus"] == 16
    detail = api.get("/OpenPEX/nodes/node1", user="root").json
    assert detail["allocations"][0]["reservationId"] == rid and detail["allocations"][0]["kind"] == "hold"
    size = api.post("/OpenPEX/sizes", user="root", json={"name": "TINY", "cpus": 1, "memoryMb": 256, "diskGb": 5, "hourlyPrice": "0.01"})
    assert size.status_code == 201
    assert "TINY" in [s["name"] for s in api.get("/OpenPEX/sizes", user="alice").json["sizes"]]
    template = api.post("/OpenPEX/templates", user="root", json={"name": "Alpine 3.20", "description": "small"})
    assert template.status_code == 201
    assert api.get("/OpenPEX/templates/Alpine 3.20", user="alice").json["description"] == "small"
    assert api.propose(user="alice", size="TINY").json["reply"] == "ACCEPT"
    assert api.delete("/OpenPEX/sizes/TINY", user="root").status_code == 200
    assert api.delete("/OpenPEX/templates/Alpine 3.20", user="root").status_code == 200
    assert api.get("/OpenPEX/sizes/TINY", user="alice").status_code == 404


def test_a_user_reads_the_catalogue_but_cannot_change_the_pool(api):
    assert [s["name"] for s in api.get("/OpenPEX/sizes").json["sizes"]] == ["SMALL", "MEDIUM", "LARGE", "XLARGE"]
    assert "PEX Debian Etch 4.0 Template" in [t["name"] for t in api.get("/OpenPEX/templates").json["templates"]]
    for response in (
        api.get("/OpenPEX/nodes"),
        api.post("/OpenPEX/nodes", json={"name": "mine", "cpus": 64, "memoryMb": 65536, "diskGb": 1}),
        api.post("/OpenPEX/sizes", json={"name": "HUGE", "cpus": 64, "memoryMb": 65536, "diskGb": 1}),
        api.delete("/OpenPEX/templates/Ubuntu 24.04 LTS"),
    ):
        assert response.status_code == 403


def test_repeated_failed_logins_are_slowed_down_per_username_and_address(api):
    api.user("alice")
    wrong = basic("alice", "not the password")
    statuses = [api.client.simulate_get("/OpenPEX/reservations", headers=wrong).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    refused = api.client.simulate_get("/OpenPEX/reservations", headers=basic("alice"))
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    other_address = api.client.simulate_get("/OpenPEX/reservations", headers=basic("alice"), remote_addr="10.9.8.7")
    assert other_address.status_code == 200


def test_a_successful_check_is_cached_so_argon2_runs_once(api, monkeypatch):
    api.user("alice")
    verify, verified = api.application._verify, []
    monkeypatch.setattr(api.application, "_verify", lambda h, p: verified.append(1) or verify(h, p))
    for _ in range(5):
        assert api.get("/OpenPEX/reservations").status_code == 200
    assert len(verified) == 1


def test_credentials_never_reach_the_logs(api, caplog):
    api.user("alice")
    with caplog.at_level(logging.DEBUG):
        api.get("/OpenPEX/reservations")
        api.client.simulate_get("/OpenPEX/reservations", headers=basic("alice", "a wrong guess"))
        api.client.simulate_post("/OpenPEX/users", json={"username": "dave", "password": "dave's secret"})
    text = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert caplog.records, "requests are logged"
    for secret in (PASSWORD, "a wrong guess", "dave's secret", basic("alice")["Authorization"].split()[1]):
        assert secret not in text


def test_pex_users_add_creates_an_administrator_from_the_cli(tmp_path, monkeypatch):
    from pex.cli import main

    monkeypatch.setenv("PEX_DATABASE_URL", f"sqlite:///{tmp_path}/pex.sqlite3")
    monkeypatch.setenv("PEX_PASSWORD_PROFILE", "cheapest")
    result = CliRunner().invoke(main, ["users", "add", "root", "--admin", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "administrator" in result.output
    prompted = CliRunner().invoke(main, ["users", "add", "eve"], input="pw-eve-123\npw-eve-123\n")
    assert prompted.exit_code == 0 and "pw-eve-123" not in prompted.output
    from pex.cli.common import build

    application = build()
    assert application.authenticate("root", PASSWORD).is_admin
    assert not application.authenticate("eve", "pw-eve-123").is_admin
    application.close()


def test_the_openapi_document_is_served_and_valid(api):
    from openapi_spec_validator import validate

    response = api.client.simulate_get("/OpenPEX/openapi.json")
    assert response.status_code == 200
    validate(response.json)
    assert yaml.safe_load(yaml.safe_dump(response.json))["openapi"].startswith("3.1")
