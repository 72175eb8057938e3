"""What a reply means to the person reading it (issue 16): auto-start by default, a phase that
says whether anything runs, one way to write a time, prices with their currency."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from pex.bootstrap import build_application
from pex.domain.lifecycle import Phase
from pex.settings import Settings, SettingsError
from tests.support import T0
from tests.support.api import basic

RFC1123 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")
H = timedelta(hours=1)


def phase(api, rid: str) -> str:
    return api.get(f"/OpenPEX/reservations/{rid}").json["phase"]


def test_a_new_reservation_starts_by_itself_and_says_so_at_each_phase(api):
    offer = api.propose(start=T0 + 2 * H, hours=1).json  # no autoStart: the default
    rid = offer["proposal"]["id"]
    assert offer["proposal"]["autoStart"] is True and offer["phase"] == "offered"
    confirmed = api.step(rid, "CONFIRM").json
    assert confirmed["phase"] == "booked" and "activate" not in confirmed["links"]
    listed = {r["id"]: r for r in api.get("/OpenPEX/reservations").json["reservations"]}
    assert listed[rid]["phase"] == "booked"
    api.clock.advance(2 * H)  # its start: no worker here, so its VMs wait to be created
    assert phase(api, rid) == "starting"
    api.clock.advance(2 * H)
    assert phase(api, rid) == "ended"


def test_a_reservation_asked_without_auto_start_waits_for_its_activation_and_says_so(api):
    rid = api.propose(autoStart=False).json["proposal"]["id"]
    confirmed = api.step(rid, "CONFIRM").json
    assert confirmed["proposal"]["autoStart"] is False
    assert confirmed["phase"] == "awaiting-activation" and "activate" in confirmed["links"]
    activated = api.put(f"/OpenPEX/reservations/{rid}/activate").json
    assert (activated["state"], activated["phase"]) == ("ACTIVATED", "booked")


def test_activating_an_auto_start_reservation_before_its_start_succeeds_as_the_original_client_does_it(api):
    api.user("alice")
    offer = api.client.simulate_post("/OpenPEX/reservations/", json={
        "duration": 3600000, "numInstancesFixed": 1, "numInstancesOption": 0, "template": "PEX Debian Etch 4.0 Template",
        "type": "XLARGE", "startTime": (T0 + 2 * H).strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }, headers=basic("alice"))  # fmt: skip
    rid = offer.json["proposal"]["id"]
    confirm = {"proposal": offer.json["proposal"], "reply": "CONFIRM"}
    assert api.client.simulate_put(f"/OpenPEX/reservations/{rid}", json=confirm, headers=basic("alice")).json["reply"] == "REQUEST_SUCCESS"
    for _ in range(2):  # and again: a no-op
        activated = api.client.simulate_put(f"/OpenPEX/reservations/{rid}/activate", headers=basic("alice"))
        assert activated.status_code == 200
        assert (activated.json["status"], activated.json["activatedInstances"]) == ("ACTIVATED", 1)
        assert set(activated.json) == {"activatedInstances", "endTime", "numInstancesFixed", "numInstancesOption",
                                       "requestId", "startTime", "status", "template", "type", "userid"}


def test_every_time_in_a_reply_is_rfc_1123_and_every_price_carries_its_currency(api):
    offer = api.propose().json
    rid = offer["proposal"]["id"]
    reservation = api.get(f"/OpenPEX/reservations/{rid}").json
    times = [offer["validUntil"], offer["proposal"]["validUntil"], offer["proposal"]["startTime"], offer["proposal"]["endTime"],
             reservation["validUntil"], *(step["at"] for step in reservation["history"])]
    assert all(RFC1123.match(t) for t in times), times
    assert offer["proposal"]["price"] == "0.05" and offer["proposal"]["currency"] == "USD"
    assert all(s["currency"] == "USD" for s in api.get("/OpenPEX/sizes").json["sizes"])
    assert RFC1123.match(api.get("/OpenPEX/users/alice").json["registeredAt"])


def test_a_counters_changes_say_why_in_the_texts_time_form(api):
    api.step(api.propose(size="XLARGE", fixed=5, start=T0 + 3 * H, hours=2, user="filler").json["proposal"]["id"], "CONFIRM", user="filler")
    countered = api.propose(size="SMALL", fixed=1, start=T0 + 2 * H, hours=4).json
    assert countered["reply"] == "COUNTER"
    assert countered["proposal"]["changes"][-1] == "why: the pool is full from 2026-03-02 11:00 UTC to 2026-03-02 13:00 UTC"
    assert "+00:00" not in " ".join(countered["proposal"]["changes"])


def test_the_currency_is_a_setting_of_three_letters():
    assert Settings.from_env({"PEX_CURRENCY": "eur"}).currency == "EUR"
    assert Settings.from_env({}).currency == "USD"
    for wrong in ("euro", "€", "E1R", ""):
        with pytest.raises(SettingsError, match="PEX_CURRENCY"):
            Settings.from_env({"PEX_CURRENCY": wrong})
    app = build_application(Settings(database_url="memory:", currency="AUD"))
    try:
        assert app.currency == "AUD"
    finally:
        app.close()


def test_the_phase_of_a_reservation_whose_vms_cannot_be_placed_is_failed():
    from pex.domain.lifecycle import phase_of
    from pex.domain.values import State

    start, end = T0, T0 + H
    inside = T0 + H / 2
    assert phase_of(State.CONFIRMED, True, start, end, inside, ["STRANDED"]) == Phase.FAILED
    # Starts that keep failing (Instance.Failed): nothing runs, and the phase says so.
    assert phase_of(State.CONFIRMED, True, start, end, inside, ["FAILED"]) == Phase.FAILED
    assert phase_of(State.ACTIVATED, False, start, end, inside, ["FAILED", "RUNNING"]) == Phase.RUNNING
    assert phase_of(State.ACTIVATED, False, start, end, inside, ["RUNNING", "SCHEDULED"]) == Phase.STARTING
    assert phase_of(State.ACTIVATED, False, start, end, inside, ["RUNNING", "HALTED"]) == Phase.RUNNING
    assert phase_of(State.ACTIVATED, False, start, end, inside, ["HALTED"]) == Phase.STOPPED
    assert phase_of(State.CONFIRMED, False, start, end, inside, ["SCHEDULED"]) == Phase.AWAITING_ACTIVATION
    assert phase_of(State.EXPIRED, True, start, end, end, ["RUNNING"]) == Phase.ENDING
    assert phase_of(State.CANCELLED, True, start, end, inside, ["RUNNING"]) == Phase.ENDING
    assert phase_of(State.CANCELLED, True, start, end, inside, ["CANCELLED"]) == Phase.DELETED
    assert phase_of(State.EXPIRED, True, start, end, end, []) == Phase.LAPSED
