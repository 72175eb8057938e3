"""Quotas and an administrator's end of a reservation over HTTP, in process."""

from datetime import timedelta

from tests.http.test_errors import nothing_recorded, problem
from tests.support import T0
from tests.support.api import proposal

DAY, H = timedelta(days=1), timedelta(hours=1)


def test_every_user_reads_the_quotas_in_force_and_their_usage(api):
    api.propose(size="XLARGE", fixed=2, hours=10)
    body = api.get("/OpenPEX/quotas").json
    assert body == {
        "maxDurationHours": 336,
        "horizonDays": 60,
        "maxCpuHours": 3600,
        "maxLiveOffers": 5,
        "defaults": ["maxDurationHours", "horizonDays", "maxCpuHours", "maxLiveOffers"],
        "usage": {"cpuHours": 80, "liveOffers": 1},
    }


def test_only_an_administrator_changes_the_quotas_and_null_restores_a_default(api):
    api.user("root", admin=True)
    assert api.put("/OpenPEX/quotas", json={"maxLiveOffers": 1}).status_code == 403
    changed = api.put("/OpenPEX/quotas", user="root", json={"maxLiveOffers": 1, "maxCpuHours": 50, "horizonDays": 7})
    assert changed.status_code == 200
    assert changed.json["maxLiveOffers"] == 1 and changed.json["maxCpuHours"] == 50 and changed.json["horizonDays"] == 7
    assert changed.json["defaults"] == ["maxDurationHours"]
    restored = api.put("/OpenPEX/quotas", user="root", json={"maxCpuHours": None}).json
    assert restored["maxCpuHours"] == 3600 and "maxCpuHours" in restored["defaults"] and restored["maxLiveOffers"] == 1


def test_quotas_out_of_range_are_a_problem_and_change_nothing(api):
    api.user("root", admin=True)
    for body in ({"maxLiveOffers": -1}, {"maxDurationHours": 0}, {"horizonDays": "soon"}, {}, {"maxOffers": 3}):
        problem(api.put("/OpenPEX/quotas", user="root", json=body), 400)
    assert api.get("/OpenPEX/quotas").json["defaults"] == ["maxDurationHours", "horizonDays", "maxCpuHours", "maxLiveOffers"]


def test_a_start_beyond_the_horizon_is_a_problem_naming_the_horizon(api):
    body = problem(api.propose(start=T0 + 61 * DAY), 422, "quota-exceeded")
    assert (body["limit"], body["allowed"]) == ("horizon", 60)
    assert body["errors"][0]["pointer"] == "/startTime"
    assert nothing_recorded(api)


def test_fixed_instances_over_the_cpu_hours_are_a_problem_naming_the_limit(api):
    body = problem(api.propose(size="XLARGE", fixed=5, hours=366 * 24), 422, "quota-exceeded")
    assert (body["limit"], body["allowed"]) == ("cpu-hours", 3600)
    assert "6720 CPU-hours" in body["detail"]
    assert nothing_recorded(api)


def test_a_year_of_optional_instances_is_countered_within_the_quotas(api):
    reply = api.propose(size="XLARGE", fixed=1, option=4, hours=366 * 24).json
    assert reply["reply"] == "COUNTER"
    offered = reply["proposal"]
    assert offered["duration"] == 14 * 24 * 3600 * 1000 and offered["numInstancesOption"] == 1
    assert "duration cut from 366 days to 14 days" in offered["changes"]


def test_a_sixth_live_offer_is_409_naming_live_offers(api):
    for _ in range(5):
        assert api.propose().json["reply"] == "ACCEPT"
    body = problem(api.propose(), 409, "quota-exceeded")
    assert (body["limit"], body["allowed"]) == ("live-offers", 5)
    assert "errors" not in body and body["detail"].startswith("you hold 5 live offers")
    assert len(api.application.list_reservations("alice")) == 5  # a refused POST changes nothing
    assert api.propose(user="bob").json["reply"] == "ACCEPT"


def test_a_replayed_post_is_answered_again_even_at_the_live_offer_quota(api):
    key = {"Idempotency-Key": "first-of-five"}
    first = api.post("/OpenPEX/reservations", json=proposal(), headers=key)
    for _ in range(4):
        api.propose()
    again = api.post("/OpenPEX/reservations", json=proposal(), headers=key)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["proposal"]["id"] == first.json["proposal"]["id"]
    api.step(first.json["proposal"]["id"], "CONFIRM")
    api.propose()  # five live offers again, none of them the first
    replayed = api.post("/OpenPEX/reservations", json=proposal(), headers=key)
    assert replayed.status_code == 201 and replayed.json["reply"] == "ACCEPT"


def test_the_readme_tour_five_xlarge_for_two_hours_still_works(api):
    reply = api.propose(size="XLARGE", fixed=5, hours=2).json
    assert reply["reply"] == "ACCEPT"
    assert api.step(reply["proposal"]["id"], "CONFIRM").json["reply"] == "REQUEST_SUCCESS"


def test_an_administrator_deletes_an_activated_reservation_with_a_reason(api):
    api.user("root", admin=True)
    rid = api.propose(user="mallory", size="XLARGE", fixed=5, hours=2).json["proposal"]["id"]
    api.step(rid, "CONFIRM", user="mallory")
    api.clock.advance(2 * H)
    assert api.put(f"/OpenPEX/reservations/{rid}/activate", user="mallory").status_code == 200
    problem(api.delete(f"/OpenPEX/reservations/{rid}", user="mallory"), 409, "illegal-move")
    ended = api.delete(f"/OpenPEX/reservations/{rid}?reason=took%20the%20pool", user="root")
    assert ended.status_code == 200 and ended.json["state"] == "CANCELLED"
    problem(api.get(f"/OpenPEX/reservations/{rid}", user="mallory"), 410, "deleted")
    events = api.application.reservation_events(api.application.list_reservations("mallory")[0].id)
    assert (type(events[-1]).__name__, events[-1].by, events[-1].reason) == ("Terminated", "root", "took the pool")
    assert api.propose(size="XLARGE", fixed=5, start=api.clock() + H, hours=1).json["reply"] == "ACCEPT"


def test_a_reason_too_long_is_a_problem_and_ends_nothing(api):
    api.user("root", admin=True)
    rid = api.propose().json["proposal"]["id"]
    problem(api.delete(f"/OpenPEX/reservations/{rid}?reason={'x' * 501}", user="root"), 400)
    assert api.get(f"/OpenPEX/reservations/{rid}").json["state"] == "ACCEPTED"


def test_an_administrator_gives_one_user_quotas_of_their_own_and_takes_them_back(api):
    api.user("root", admin=True)
    api.user("bob")
    assert api.get("/OpenPEX/quotas/users/bob").status_code == 403
    own = api.put("/OpenPEX/quotas/users/bob", user="root", json={"maxLiveOffers": 1})
    assert own.status_code == 200 and own.json["own"] is True and own.json["maxLiveOffers"] == 1
    assert api.get("/OpenPEX/quotas", user="bob").json["maxLiveOffers"] == 1  # what bob sees is his
    assert api.propose(user="bob").json["reply"] == "ACCEPT"
    assert problem(api.propose(user="bob"), 409, "quota-exceeded")["allowed"] == 1
    assert api.propose(user="alice").json["reply"] == "ACCEPT"  # everyone else keeps five
    back = api.delete("/OpenPEX/quotas/users/bob", user="root")
    assert back.json["own"] is False and back.json["maxLiveOffers"] == 5
    assert api.propose(user="bob").json["reply"] == "ACCEPT"
    problem(api.get("/OpenPEX/quotas/users/nobody", user="root"), 404)
