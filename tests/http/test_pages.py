"""The API's lists come in pages (pex.http.paging): `?limit=N`, the next page's URL in a
`Link: <…>; rel="next"` header, the reply itself still the bare array the original client
parses. Following the links from any limit gives every item exactly once, in the list's
order, on every store; a malformed limit or cursor is a 400 problem."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pex.http.paging import DEFAULT_LIMIT, MAX_LIMIT, encode_cursor
from tests.support import T0
from tests.support.api import make_api

H = timedelta(hours=1)
NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


def next_link(result) -> str | None:
    link = result.headers.get("Link")
    if link is None:
        return None
    match = NEXT.match(link)
    assert match, link
    return match.group(1)


def every_page(api, path: str, user: str = "alice", original: bool = False) -> list[list]:
    """The pages of a list, following its Link headers from `path`."""
    pages = []
    target: str | None = path
    while target is not None:
        headers = {"Accept": "application/json"} if original else {}
        result = api.get(target, user=user, headers=headers)
        assert result.status_code == 200, result.text
        body = result.json
        pages.append(body if original else next(iter(body.values())))
        target = next_link(result)
        assert len(pages) <= 100, "the links go round in circles"
    return pages


@pytest.fixture(scope="module")
def booked():
    """alice's 7 reservations (3 of them of 2 instances, one deleted) and bob's one."""
    api = make_api()
    for k in range(7):
        rid = api.propose(start=T0 + (k % 3 + 1) * H, fixed=2 if k % 2 else 1).json["proposal"]["id"]
        api.step(rid, "CONFIRM")
        if k == 4:
            api.delete(f"/OpenPEX/reservations/{rid}")
    api.propose(user="bob", start=T0 + H)
    yield api
    api.read_models.close()
    api.application.close()
    assert api.contract.violations == [], "\n".join(api.contract.violations)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(min_value=1, max_value=9), original=st.booleans())
def test_following_the_links_gives_every_item_once_in_order(booked, limit, original):
    for path in ("/OpenPEX/reservations", "/OpenPEX/instances"):
        whole = every_page(booked, path, original=original)
        assert len(whole) == 1
        pages = every_page(booked, f"{path}?limit={limit}", original=original)
        assert all(len(p) == limit for p in pages[:-1]) and 1 <= len(pages[-1]) <= limit
        assert [item for page in pages for item in page] == whole[0]
    assert len(every_page(booked, "/OpenPEX/reservations")[0]) == 6  # the deleted one only with state=CANCELLED
    assert len(every_page(booked, "/OpenPEX/instances")[0]) == 10


def test_a_page_of_a_filtered_list_links_to_the_next_page_of_the_same_filter(booked):
    first = booked.get("/OpenPEX/reservations?state=CONFIRMED&limit=4")
    assert [r["state"] for r in first.json["reservations"]] == ["CONFIRMED"] * 4
    link = next_link(first)
    assert "state=CONFIRMED" in link and "limit=4" in link
    rest = booked.get(link)
    assert [r["state"] for r in rest.json["reservations"]] == ["CONFIRMED"] * 2 and next_link(rest) is None


def test_the_original_form_stays_a_bare_array_with_the_cursor_in_the_link_header(booked):
    result = booked.get("/OpenPEX/instances?limit=3", headers={"Accept": "application/json"})
    assert result.status_code == 200 and isinstance(result.json, list) and len(result.json) == 3
    assert next_link(result).startswith("/OpenPEX/instances?limit=3&cursor=")


def test_the_last_page_and_a_short_list_have_no_link(booked):
    assert next_link(booked.get("/OpenPEX/reservations", user="bob")) is None
    assert next_link(booked.get(f"/OpenPEX/reservations?limit={MAX_LIMIT}")) is None
    assert next_link(booked.get("/OpenPEX/reservations?limit=6")) is None


def test_rows_added_between_pages_do_not_shift_the_next_page():
    api = make_api()
    try:
        ids = [api.propose(start=T0 + H).json["proposal"]["id"] for _ in range(4)]
        first = api.get("/OpenPEX/reservations?limit=2")
        ids.append(api.propose(start=T0 + H).json["proposal"]["id"])  # after the first page was read
        second = api.get(next_link(first))
        assert [r["id"] for r in first.json["reservations"] + second.json["reservations"]] == ids[:4]
        assert [r["id"] for r in api.get(next_link(second)).json["reservations"]] == ids[4:]
    finally:
        api.read_models.close()
        api.application.close()


def test_without_a_limit_a_page_holds_the_default_number(booked, monkeypatch):
    assert DEFAULT_LIMIT == 100  # as docs/api.md and the OpenAPI document say
    monkeypatch.setattr("pex.http.paging.DEFAULT_LIMIT", 4)
    pages = every_page(booked, "/OpenPEX/reservations")
    assert [len(p) for p in pages] == [4, 2]


@pytest.mark.parametrize("query, pointer", [
    ("limit=0", "#query/limit"), ("limit=-1", "#query/limit"), (f"limit={MAX_LIMIT + 1}", "#query/limit"),
    ("limit=ten", "#query/limit"), ("limit=", "#query/limit"),
    ("cursor=%21%21", "#query/cursor"), ("cursor=bm90IGpzb24", "#query/cursor"),
    ("cursor=" + "A" * 300, "#query/cursor"),
    ("cursor=" + encode_cursor("instances", (T0, "00000000-0000-0000-0000-000000000000", 0)), "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'["reservations","1"]').decode().rstrip("="), "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'["reservations"]').decode().rstrip("="), "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'{"a": 1}').decode().rstrip("="), "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'["reservations",100000000000000000000000]').decode().rstrip("="),
     "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'["reservations",1.5]').decode().rstrip("="), "#query/cursor"),
    ("cursor=" + base64.urlsafe_b64encode(b'["reservations",true]').decode().rstrip("="), "#query/cursor"),
])
def test_a_bad_limit_or_cursor_is_a_400_problem(booked, query, pointer):
    result = booked.get(f"/OpenPEX/reservations?{query}")
    assert result.status_code == 400, result.text
    assert result.headers["Content-Type"].startswith("application/problem+json")
    assert pointer in [e["pointer"] for e in result.json["errors"]], result.json


@pytest.mark.parametrize("start", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-03-02T08:00:00",
                                   "yesterday", 5])
def test_an_instances_cursor_with_a_time_out_of_this_world_is_a_400(booked, start):
    raw = json.dumps(["instances", start, "00000000-0000-0000-0000-000000000000", 0]).encode()
    result = booked.get("/OpenPEX/instances?cursor=" + base64.urlsafe_b64encode(raw).decode().rstrip("="))
    assert result.status_code == 400 and result.json["type"].endswith("/invalid-cursor"), result.text


@given(cursor=st.text(min_size=1, max_size=200))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_cursor_is_a_page_or_a_400_never_a_500(booked, cursor):
    from urllib.parse import quote

    result = booked.get(f"/OpenPEX/instances?cursor={quote(cursor)}")
    assert result.status_code in (200, 400), result.text


def test_an_instances_cursor_is_no_reservations_cursor(booked):
    link = next_link(booked.get("/OpenPEX/instances?limit=1"))
    cursor = link.split("cursor=")[1]
    result = booked.get(f"/OpenPEX/reservations?cursor={cursor}")
    assert result.status_code == 400 and result.json["type"].endswith("/invalid-cursor")
