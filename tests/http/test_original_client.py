"""The original OpenPEX reference client works unchanged.

`OriginalClient` re-creates the original implementation's RESTfulClientTest (2009): the same
paths (with their trailing slashes), the headers its HttpURLConnection sends (its own
OpenPEX-User and OpenPEX-Pass, Java's default Accept), and the bodies its json-lib writes:
Figure 7 for the create call, the reply object it was given, with its reply replaced, for
each negotiation step. Every reply is read as its json-lib would read it into the original's
beans (tests/http/jsonlib.py): one field too many of the wrong kind, a `userid` that is not a
number, a state the original did not know, and the client fails where the original failed.
The only change made to the client is the one the paper's text calls for: HTTP basic
credentials. It runs against a real gunicorn on loopback over PostgreSQL.
"""

from __future__ import annotations

import base64
import http.client
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from pex.settings import HttpSettings
from pex.wire import PEX_JSON, prefers_pex_form
from tests.http import jsonlib
from tests.http.jsonlib import (
    RESERVATION_ENTITY,
    RESERVATION_PROPOSAL,
    RESERVATION_REPLY,
    VM_INSTANCE,
    JsonLibError,
    to_collection,
    to_java,
    to_json,
)
from tests.support.api import ETCH, PASSWORD, basic, make_api, proposal
from tests.support.server import serving

JAVA_ACCEPT = "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"  # HttpURLConnection's own
JAVA_AGENT = "Java/1.6.0_16"


class OriginalClient:
    """RESTfulClientTest's calls, as its HttpURLConnection makes them. `basic` adds HTTP basic
    credentials (the paper's); without it the client is exactly the original."""

    def __init__(self, base_url: str, user: str, password: str = PASSWORD, *, basic: bool = True):
        self.netloc = urlsplit(base_url).netloc
        self.user, self.password, self.basic = user, password, basic

    def _call(self, method: str, path: str, body: str | None = None) -> tuple[str, str]:
        """(the response message, the body as the client's readLine loop rebuilds it)."""
        connection = http.client.HTTPConnection(self.netloc, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("OpenPEX-User", self.user)
            connection.putheader("OpenPEX-Pass", self.password)
            if self.basic:
                token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
                connection.putheader("Authorization", f"Basic {token}")
            if body is not None:
                connection.putheader("Content-Type", "application/json")
            connection.putheader("User-Agent", JAVA_AGENT)
            connection.putheader("Host", self.netloc)
            connection.putheader("Accept", JAVA_ACCEPT)
            connection.putheader("Connection", "keep-alive")
            data = None
            if body is not None:  # DataOutputStream.writeBytes: one byte per char
                data = body.encode("latin-1")
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data)  # a PUT it writes nothing to goes without a Content-Length
            response = connection.getresponse()
            text = response.read().decode("utf-8")
            if response.status >= 400:  # getInputStream() throws
                raise OSError(f"Server returned HTTP response code: {response.status} for URL: {path}\n{text}")
            return response.reason, "".join(line + "\n" for line in text.splitlines())
        finally:
            connection.close()

    def create_reservation_call(self, params: str) -> str:
        return self._call("POST", "/OpenPEX/reservations/", params)[1]

    def update_reservation_call(self, reply: dict) -> str:
        path = f"/OpenPEX/reservations/{reply['proposal']['id']}"
        return self._call("PUT", path, create_reservation_reply_json(reply))[1]

    def activate_reservation_call(self, res_id: str) -> str:
        return self._call("PUT", f"/OpenPEX/reservations/{res_id}/activate")[0]

    def list_reservations_call(self) -> str:
        return self._call("GET", "/OpenPEX/reservations/")[1]

    def list_instances_call(self) -> str:
        return self._call("GET", "/OpenPEX/instances/")[1]


def create_reservation_json(proposal: dict) -> str:
    return to_json(proposal, RESERVATION_PROPOSAL, leave_out=frozenset({"id", "userid"}))


def create_reservation_reply_json(reply: dict) -> str:
    return to_json(reply, RESERVATION_REPLY)


def create_reservation_reply(params: str) -> dict:
    return to_java(params, RESERVATION_REPLY)


def create_reservations_call(client: OriginalClient, start: datetime) -> list[tuple[str, dict | str]]:
    """testCreateReservationsCall, step by step: each call with the reply the client read.

    The original prints the replies to the steps it does not read again; here they are read
    too, into the same bean, so that every reply is held to json-lib."""
    re = {
        "template": ETCH, "type": "XLARGE", "startTime": start, "duration": 3600000,
        "numInstancesFixed": 1, "numInstancesOption": 0,
    }  # fmt: skip
    reply = create_reservation_reply(client.create_reservation_call(create_reservation_json(re)))
    steps: list[tuple[str, dict | str]] = [("POST", dict(reply))]
    if reply["reply"] == "ACCEPT":
        reply["reply"] = "CONFIRM"
        steps.append(("PUT CONFIRM", create_reservation_reply(client.update_reservation_call(reply))))
    elif reply["reply"] == "COUNTER":
        reply["reply"] = "ACCEPT"
        reply = create_reservation_reply(client.update_reservation_call(reply))
        steps.append(("PUT ACCEPT", dict(reply)))
        reply["reply"] = "CONFIRM"
        steps.append(("PUT CONFIRM", create_reservation_reply(client.update_reservation_call(reply))))
    else:
        return steps  # "Reservation not accepted"
    steps.append(("PUT activate", client.activate_reservation_call(reply["proposal"]["id"])))
    return steps


def replies(steps: list[tuple[str, dict | str]]) -> list[tuple[str, str]]:
    return [(call, answer if isinstance(answer, str) else answer["reply"]) for call, answer in steps]


def java_start() -> datetime:
    """`Calendar.getInstance()` plus 5 minutes, plus 480000 ms."""
    return datetime.now(UTC) + timedelta(minutes=5, milliseconds=480000)


def whole_second(when: datetime) -> datetime:
    return when.replace(microsecond=0)


def rfc1123(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def filler_books_the_pool(server, start: datetime, end: datetime) -> None:
    """Five XLARGE (the whole demo pool) from `start` to `end`, booked by a PEX client."""
    session = server.session(server.register("filler"))
    body = {
        "duration": int((end - start).total_seconds() * 1000), "numInstancesFixed": 5, "numInstancesOption": 0,
        "startTime": rfc1123(start), "template": ETCH, "type": "XLARGE",
    }  # fmt: skip
    offer = session.post(f"{server.url}/OpenPEX/reservations", json=body, timeout=30).json()
    assert offer["reply"] == "ACCEPT", offer
    url = f"{server.url}/OpenPEX/reservations/{offer['proposal']['id']}"
    confirmed = session.put(url, json={"reply": "CONFIRM"}, timeout=30)
    assert confirmed.json()["reply"] == "REQUEST_SUCCESS", confirmed.text


def check_booked(client: OriginalClient, steps: list[tuple[str, dict | str]], start: datetime) -> None:
    """What the client holds at the end, and what its two list calls read, agree."""
    proposal = steps[-2][1]["proposal"]
    assert len(proposal["id"]) == 36 and proposal["id"] == proposal["id"].upper()
    assert (proposal["type"], proposal["template"], proposal["duration"]) == ("XLARGE", ETCH, 3600000)
    assert proposal["startTime"] == start
    userid = proposal["userid"]
    assert userid != 0  # a number: json-lib reads a name as 0
    assert all(answer["proposal"]["userid"] == userid for _, answer in steps[:-1])

    [entity] = to_collection(client.list_reservations_call(), RESERVATION_ENTITY)
    assert (entity["requestId"], entity["status"], entity["activatedInstances"]) == (proposal["id"], "ACTIVATED", 1)
    assert (entity["type"], entity["template"], entity["numInstancesFixed"], entity["userid"]) == ("XLARGE", ETCH, 1, userid)
    assert (entity["startTime"], entity["endTime"]) == (start, start + timedelta(hours=1))

    raw = client.list_instances_call()
    [vm] = to_collection(raw, VM_INSTANCE)
    assert (vm["start_time"], vm["end_time"], vm["userID"]) == (start, start + timedelta(hours=1), userid)
    assert vm["vmID"] and vm["name"]
    # json-lib skips VMInstance.status (its setter is protected); it is still the original's VMStatus.
    assert [item["status"] for item in jsonlib.parse(raw)] == ["NOT_PROVISIONED"]


@pytest.mark.gunicorn
@pytest.mark.postgres
def test_the_original_reference_client_books_an_accepted_reservation_activates_it_and_lists_it(live_server):
    live_server.register("test")
    client = OriginalClient(live_server.url, "test")
    start = java_start()

    steps = create_reservations_call(client, start)

    assert replies(steps) == [("POST", "ACCEPT"), ("PUT CONFIRM", "REQUEST_SUCCESS"), ("PUT activate", "OK")]
    check_booked(client, steps, whole_second(start))


@pytest.mark.gunicorn
@pytest.mark.postgres
def test_the_original_reference_client_takes_a_counter_offer_through_confirm_request(live_server):
    asked = java_start()
    busy_until = whole_second(asked + timedelta(hours=2))
    filler_books_the_pool(live_server, whole_second(datetime.now(UTC) + timedelta(minutes=2)), busy_until)
    live_server.register("test")
    client = OriginalClient(live_server.url, "test")

    steps = create_reservations_call(client, asked)

    assert replies(steps) == [
        ("POST", "COUNTER"), ("PUT ACCEPT", "CONFIRM_REQUEST"), ("PUT CONFIRM", "REQUEST_SUCCESS"), ("PUT activate", "OK"),
    ]  # fmt: skip
    offered = steps[0][1]["proposal"]["startTime"]
    assert offered >= busy_until  # the provider's terms: the start moved past the full pool
    check_booked(client, steps, offered)


@pytest.mark.gunicorn
@pytest.mark.postgres
def test_the_unchanged_original_client_signs_in_with_its_own_headers_once_they_are_enabled(postgres_url, tmp_path):
    with serving(postgres_url, tmp_path, workers=2, extra_env={"PEX_OPENPEX_HEADERS": "on"}) as server:
        server.register("test")
        client = OriginalClient(server.url, "test", basic=False)
        start = java_start()
        steps = create_reservations_call(client, start)
        assert replies(steps) == [("POST", "ACCEPT"), ("PUT CONFIRM", "REQUEST_SUCCESS"), ("PUT activate", "OK")]
        check_booked(client, steps, whole_second(start))
        with pytest.raises(OSError, match="401"):
            OriginalClient(server.url, "test", "a wrong password", basic=False).list_reservations_call()


# --- in process: which form, and the original's headers -------------------------------------


@pytest.mark.parametrize(
    "accept, pex_form",
    [
        (None, False),
        ("", False),
        (JAVA_ACCEPT, False),
        ("*/*", False),
        ("application/json", False),
        ("application/*", False),
        (PEX_JSON, True),
        ("Application/VND.PEX+JSON; charset=utf-8", True),
        (f"application/json;q=0.5, {PEX_JSON}", True),
        (f"{PEX_JSON};q=0.5, */*;q=0.1", True),
        (f"{PEX_JSON};q=0.5, application/json", False),
        (f"{PEX_JSON};q=0", False),
        (f"{PEX_JSON};q=nan", False),
        (f"{PEX_JSON};q=2", False),
        (f"garbage;;;=, {PEX_JSON}", True),
        (",,;q=,", False),
    ],
)
def test_only_a_client_that_names_pex_media_type_prefers_pex_form(accept, pex_form):
    assert prefers_pex_form(accept) is pex_form


def test_the_paper_endpoints_answer_in_the_originals_form_unless_pex_form_is_named(api):
    created = api.client.simulate_post("/OpenPEX/reservations/", json=proposal(), headers=api.user("alice"))
    rid = created.json["proposal"]["id"]
    for path in ("/OpenPEX/reservations", f"/OpenPEX/reservations/{rid}", "/OpenPEX/instances"):
        for accept in (None, JAVA_ACCEPT, "application/json"):
            headers = {**basic("alice"), **({"Accept": accept} if accept else {})}
            original = api.client.simulate_get(path, headers=headers)
            assert original.status_code == 200
            assert (original.headers["Content-Type"], original.headers["Vary"]) == ("application/json", "Accept")
        rich = api.client.simulate_get(path, headers={**basic("alice"), "Accept": PEX_JSON})
        assert (rich.headers["Content-Type"], rich.headers["Vary"]) == (PEX_JSON, "Accept")
    assert created.headers["Content-Type"] == "application/json"
    assert set(created.json) == {"proposal", "reply"} and created.json["reply"] == "ACCEPT"
    assert set(created.json["proposal"]) == set(RESERVATION_PROPOSAL.properties)
    # PEX's own endpoints have one form, whatever the Accept.
    assert api.client.simulate_get("/OpenPEX/sizes", headers={**basic("alice"), "Accept": PEX_JSON}).json["sizes"]


def test_every_original_form_reply_reads_into_the_originals_beans(api):
    """Each Table 2 reply in the original's form, json-lib-read: reservations, one and all,
    activation, delete (the original's delete answered a reply object), instances."""
    headers = api.user("alice")

    def call(method: str, path: str, **kw) -> str:
        response = api.client.simulate_request(method, path, headers={**headers, **kw.pop("headers", {})}, **kw)
        assert response.status_code < 300, response.text
        return response.text

    offer = to_java(call("POST", "/OpenPEX/reservations", json=proposal(fixed=2)), RESERVATION_REPLY)
    rid = offer["proposal"]["id"]
    body = create_reservation_reply_json({**offer, "reply": "CONFIRM"})
    confirmed = call("PUT", f"/OpenPEX/reservations/{rid}", body=body, headers={"Content-Type": "application/json"})
    assert to_java(confirmed, RESERVATION_REPLY)["reply"] == "REQUEST_SUCCESS"
    one = to_java(call("GET", f"/OpenPEX/reservations/{rid}"), RESERVATION_ENTITY)
    assert (one["status"], one["activatedInstances"], one["userid"]) == ("CONFIRMED", 0, offer["proposal"]["userid"])
    assert to_java(call("PUT", f"/OpenPEX/reservations/{rid}/activate"), RESERVATION_ENTITY)["activatedInstances"] == 2
    vms = to_collection(call("GET", "/OpenPEX/instances"), VM_INSTANCE)
    assert len(vms) == 2
    assert to_java(call("GET", f"/OpenPEX/instances/{vms[0]['vmID']}"), VM_INSTANCE) == vms[0]

    other = to_java(call("POST", "/OpenPEX/reservations", json=proposal()), RESERVATION_REPLY)
    deleted = to_java(call("DELETE", f"/OpenPEX/reservations/{other['proposal']['id']}"), RESERVATION_REPLY)
    assert deleted == {"proposal": other["proposal"], "reply": "REQUEST_SUCCESS"}
    assert [r["requestId"] for r in to_collection(call("GET", "/OpenPEX/reservations"), RESERVATION_ENTITY)] == [rid]


def test_pex_form_is_what_json_lib_cannot_read(api):
    """PEX's form has PEX's additions (arrays, objects, nulls) and a userid that is a name:
    what the original's client cannot read, which is why it is not the default."""
    created = api.post("/OpenPEX/reservations", json=proposal())  # the helpers ask for PEX's form
    assert created.headers["Content-Type"] == PEX_JSON
    with pytest.raises(JsonLibError, match="Unknown property"):
        to_java(created.text, RESERVATION_REPLY)
    assert jsonlib.to_bean({"userid": created.json["proposal"]["userid"]}, RESERVATION_PROPOSAL)["userid"] == 0


def the_originals_headers(user: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    return {"OpenPEX-User": user, "OpenPEX-Pass": password}


def test_the_originals_headers_are_not_credentials_unless_enabled(api):
    api.user("alice")
    refused = api.client.simulate_get("/OpenPEX/reservations", headers=the_originals_headers())
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")


def test_once_enabled_the_originals_headers_are_checked_as_basic_credentials_and_basic_wins():
    api = make_api(HttpSettings(log_requests=False, login_failures_allowed=2, login_lockout_seconds=30, openpex_headers=True))
    try:
        api.user("alice")
        api.user("bob")
        assert api.client.simulate_get("/OpenPEX/reservations", headers=the_originals_headers()).status_code == 200
        # Not "alice" with the password "x:…", as basic credentials would have it: nobody.
        colon = the_originals_headers(user="alice:x", password="correct horse battery")
        assert api.client.simulate_get("/OpenPEX/reservations", headers=colon).status_code == 401
        wrong = the_originals_headers(password="a wrong guess")
        assert [api.client.simulate_get("/OpenPEX/reservations", headers=wrong).status_code for _ in range(3)] == [401, 401, 429]
        both = {**the_originals_headers(), **basic("bob")}
        created = api.client.simulate_post("/OpenPEX/reservations", json=proposal(), headers={**both, "Accept": PEX_JSON})
        assert created.json["proposal"]["userid"] == "bob"
        assert api.client.simulate_get("/OpenPEX/reservations", headers=the_originals_headers("bob", "")).status_code == 401
    finally:
        api.read_models.close()
        api.application.close()
    assert api.contract.violations == []


# --- the model of json-lib itself ------------------------------------------------------------


def test_the_jsonlib_model_skips_unknown_scalars_and_throws_on_unknown_arrays_objects_and_nulls():
    known = {"reply": "ACCEPT", "proposal": {"id": "X", "userid": 7, "startTime": "Mon, 17 Aug 2009 04:49:03 GMT"}}
    read = to_java(json.dumps({**known, "state": "ACCEPTED", "validUntil": "soon", "round": 1, "held": True}), RESERVATION_REPLY)
    assert read["proposal"]["startTime"] == datetime(2009, 8, 17, 4, 49, 3, tzinfo=UTC)
    assert (read["reply"], read["proposal"]["userid"], read["proposal"]["duration"]) == ("ACCEPT", 7, 0)
    for extra in ({"links": {}}, {"alternatives": []}, {"reason": None}):
        with pytest.raises(JsonLibError, match="Unknown property"):
            to_java(json.dumps({**known, **extra}), RESERVATION_REPLY)
    with pytest.raises(JsonLibError, match="ClassCastException"):
        to_java("[]", RESERVATION_REPLY)
    with pytest.raises(JsonLibError, match="ClassCastException"):
        to_collection(json.dumps({"reservations": []}), RESERVATION_ENTITY)


def test_the_jsonlib_model_converts_as_ezmorph_does():
    def userid(value):
        return jsonlib.to_bean({"userid": value}, RESERVATION_PROPOSAL)["userid"]

    assert [userid(v) for v in (7, "7", "7.9", 7.9, "alice", True, 2**32 + 5, " 7")] == [7, 7, 7, 7, 0, 0, 5, 0]
    assert jsonlib.to_bean({"userid": 40000}, RESERVATION_ENTITY)["userid"] == 40000 - 65536  # a short
    with pytest.raises(JsonLibError, match="null for a int"):
        userid(None)
    with pytest.raises(JsonLibError, match="No enum const"):
        jsonlib.to_bean({"type": "TINY"}, RESERVATION_PROPOSAL)
    with pytest.raises(JsonLibError, match="No enum const"):
        jsonlib.to_bean({"status": "CANCELLED"}, RESERVATION_ENTITY)
    assert jsonlib.to_bean({"startTime": "2009-08-17T04:49:03Z"}, RESERVATION_PROPOSAL)["startTime"] is None
    assert "status" not in jsonlib.to_bean({"status": ["no setter: skipped"]}, VM_INSTANCE)
