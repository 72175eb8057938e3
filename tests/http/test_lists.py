"""The list endpoints are served from the persisted read models (pex.projections.readmodels),
not from the aggregates: every list item is the resource exactly as GET shows it, a list right
after a write shows that write (in another process too), and rebuilding the read models with
`pex replay` changes no list."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from click.testing import CliRunner

from pex.cli import main
from pex.wire import reservation_json
from tests.support import T0
from tests.support.api import make_api, proposal

H = timedelta(hours=1)


def negotiate_everything(api) -> None:
    """Every state a reservation can be listed in, alternatives and a long history included."""
    filler = api.propose(user="filler", size="XLARGE", fixed=3, start=T0 + 2 * H).json
    api.step(filler["proposal"]["id"], "CONFIRM", user="filler")  # two nodes stay free at T0+2h
    countered = api.propose(size="XLARGE", fixed=1, option=4, start=T0 + 2 * H).json
    assert countered["reply"] == "COUNTER" and countered["alternatives"]  # stays COUNTERED
    walked = api.propose(size="XLARGE", fixed=1, option=4, start=T0 + 2 * H).json
    api.step(walked["proposal"]["id"], "REJECT")  # REJECTED by the user, the alternatives kept
    haggled = api.propose(size="XLARGE", fixed=1, option=4, start=T0 + 2 * H).json
    mine = proposal(size="MEDIUM", fixed=2, start=T0 + 5 * H)
    assert api.step(haggled["proposal"]["id"], "COUNTER", proposal_body=mine).json["reply"] == "ACCEPT"
    booked = api.propose(start=T0 + 3 * H).json["proposal"]["id"]
    api.step(booked, "CONFIRM")
    api.put(f"/OpenPEX/reservations/{booked}/activate")
    deleted = api.propose(start=T0 + 4 * H).json["proposal"]["id"]
    api.delete(f"/OpenPEX/reservations/{deleted}")
    assert api.propose(user="bob", size="SMALL", fixed=99).json["reply"] == "REJECT"


def listed(api, user: str) -> list[dict]:
    items = api.get("/OpenPEX/reservations", user=user).json["reservations"]
    return items + api.get("/OpenPEX/reservations?state=CANCELLED", user=user).json["reservations"]


@pytest.fixture
def stored_api(database_url):
    api = make_api(database_url=database_url)
    api.user("root", admin=True)
    yield api
    api.read_models.close()
    api.application.close()
    assert api.contract.violations == [], "responses broke the OpenAPI contract:\n" + "\n".join(api.contract.violations)


def test_a_listed_reservation_or_instance_is_the_resource_as_get_shows_it(stored_api):
    api = stored_api
    negotiate_everything(api)

    everything = listed(api, "root")
    assert {r["state"] for r in everything} == {"CONFIRMED", "COUNTERED", "REJECTED", "ACCEPTED", "ACTIVATED", "CANCELLED"}
    for item in everything:
        view = api.application.get_reservation(UUID(item["id"]))
        assert item == reservation_json(view, api.application.reservation_phase(view), api.application.currency)
        if item["state"] != "CANCELLED":
            one = api.get(f"/OpenPEX/reservations/{item['id']}", user="root")
            assert one.json == item and one.headers["ETag"] == f'"{item["version"]}"'
    assert [r["id"] for r in listed(api, "alice")] == [r["id"] for r in everything if r["userid"] == "alice"]

    instances = api.get("/OpenPEX/instances", user="root").json["instances"]
    assert len(instances) == 3 + 1
    for item in instances:
        assert api.get(f"/OpenPEX/instances/{item['id']}", user="root").json == item


def test_the_lists_come_from_the_read_models_and_show_a_write_at_once(api, monkeypatch):
    def not_the_aggregates(*args, **kwargs):
        raise AssertionError("a list loaded the aggregates")

    monkeypatch.setattr(api.application, "list_reservations", not_the_aggregates)
    monkeypatch.setattr(api.application, "list_instances", not_the_aggregates)
    rid = api.propose().json["proposal"]["id"]
    assert [r["id"] for r in api.get("/OpenPEX/reservations").json["reservations"]] == [rid]
    api.step(rid, "CONFIRM")
    [listed_one] = api.get("/OpenPEX/reservations").json["reservations"]
    assert listed_one["state"] == "CONFIRMED" and len(listed_one["instances"]) == 1
    assert api.get("/OpenPEX/instances").json["instances"][0]["reservationId"] == rid
    head = api.application.recorder.max_notification_id()
    assert set(api.read_models.positions().values()) == {head}  # the ledger sealed it too


def test_a_list_in_one_process_shows_what_another_process_just_wrote(tmp_path):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    writer, reader = make_api(database_url=url), make_api(database_url=url)  # two gunicorn workers
    try:
        writer.user("alice")
        reader.users.add("alice")
        for n in range(3):
            rid = writer.propose(start=T0 + (n + 2) * H).json["proposal"]["id"]
            assert reader.get("/OpenPEX/reservations").json["reservations"][-1]["id"] == rid
            writer.step(rid, "CONFIRM")
            assert reader.get("/OpenPEX/reservations").json["reservations"][-1]["state"] == "CONFIRMED"
            assert len(reader.get("/OpenPEX/instances").json["instances"]) == n + 1
    finally:
        for api in (writer, reader):
            api.read_models.close()
            api.application.close()


def test_pex_replay_rebuilds_the_read_models_and_the_lists_stay_the_same(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/pex.sqlite3"
    api = make_api(database_url=url)
    try:
        api.user("root", admin=True)
        negotiate_everything(api)
        before = listed(api, "root"), api.get("/OpenPEX/instances", user="root").json

        monkeypatch.setenv("PEX_DATABASE_URL", url)
        replayed = CliRunner().invoke(main, ["replay"], catch_exceptions=False)
        assert replayed.exit_code == 0 and "rebuilt reservations, instances, calendar" in replayed.output
        audited = CliRunner().invoke(main, ["audit"], catch_exceptions=False)
        assert audited.exit_code == 0 and "✓ read models" in audited.output, audited.output

        assert (listed(api, "root"), api.get("/OpenPEX/instances", user="root").json) == before
    finally:
        api.read_models.close()
        api.application.close()
