"""The instances page stays usable with history: the current VMs by default, grouped by their
reservation, a filter by status, pages of INSTANCES_PER_PAGE; and an action sends the user
back to the page they acted from."""

from __future__ import annotations

import re
from datetime import timedelta

from pex.http.portal.resources import INSTANCES_PER_PAGE
from tests.support import T0

H = timedelta(hours=1)
ROW = re.compile(r'<tr data-instance="([0-9a-f-]{36})">')
GROUP = re.compile(r'<tbody data-reservation="([0-9a-f-]{36})">(.*?)</tbody>', re.S)
NEXT = re.compile(r'<a href="([^"]+)" rel="next">')


def shown(html: str) -> list[str]:
    return ROW.findall(html)


def all_pages(visitor, path: str) -> list[list[str]]:
    pages = []
    target: str | None = path
    while target is not None:
        html = visitor.get(target.replace("&amp;", "&")).text
        pages.append(shown(html))
        found = NEXT.search(html)
        target = found.group(1) if found else None
        assert len(pages) < 20
    return pages


def test_ended_instances_leave_the_default_list_and_stay_under_all(portal):
    v = portal.user("alice")
    kept = portal.book("alice", "SMALL", 2, T0 + H)
    gone = portal.book("alice", "SMALL", 3, T0 + 2 * H)
    portal.application.cancel(gone)  # its instances are CANCELLED
    ids = {rid: [str(i) for i in portal.application.get_reservation(rid).instance_ids] for rid in (kept, gone)}

    current = v.get("/instances").text
    assert sorted(shown(current)) == sorted(ids[kept])
    assert sorted(shown(v.get("/instances?show=all").text)) == sorted(ids[kept] + ids[gone])
    assert sorted(shown(v.get("/instances?show=CANCELLED").text)) == sorted(ids[gone])
    assert shown(v.get("/instances?show=RUNNING").text) == []
    assert shown(v.get("/instances?show=nonsense").text) == shown(current)  # an unknown filter: the default
    assert '<option value="current" selected>' in current


def test_instances_are_grouped_under_their_reservation_with_its_times_once(portal):
    v = portal.user("alice")
    first = portal.book("alice", "SMALL", 2, T0 + H)
    second = portal.book("alice", "MEDIUM", 3, T0 + 3 * H)
    html = v.get("/instances").text
    groups = GROUP.findall(html)
    assert [g[0] for g in groups] == [str(first), str(second)]
    for (rid, body), count in zip(groups, (2, 3), strict=True):
        assert len(ROW.findall(body)) == count
        assert f'href="/reservations/{rid}"' in body and body.count("<time") == 2  # the start and end, once


def test_the_pages_hold_every_current_instance_once_in_order(portal):
    v = portal.user("alice")
    for k in range(7):  # 35 instances, more than a page
        portal.book("alice", "SMALL", 5, T0 + (k + 1) * 3 * H, hours=2)
    expected = [str(i.id) for i in portal.read_models.instances("alice")]
    pages = all_pages(v, "/instances")
    assert len(expected) == 35 and [len(p) for p in pages] == [INSTANCES_PER_PAGE, 35 - INSTANCES_PER_PAGE]
    assert [i for p in pages for i in p] == expected
    second = v.get(NEXT.search(v.get("/instances").text).group(1).replace("&amp;", "&")).text
    assert 'href="/instances?show=current">← First page' in second
    assert v.get("/instances?cursor=garbage").status_code == 400


def test_an_action_sends_the_user_back_to_the_page_they_acted_from(portal):
    v = portal.user("alice")
    rid = portal.book("alice", "SMALL", 1, T0 + H)
    instance = portal.application.get_reservation(rid).instance_ids[0]
    v.get("/instances?show=SCHEDULED")
    r = v.post(f"/instances/{instance}/stop", {"back": "/instances?show=SCHEDULED"})
    assert r.status_code == 303 and r.headers["location"] == "/instances?show=SCHEDULED"
    elsewhere = v.post(f"/instances/{instance}/stop", {"back": "//evil.example/instances"})
    assert elsewhere.headers["location"] == "/instances"


def test_a_disabled_button_looks_no_more_clickable_than_an_enabled_one(portal):
    v = portal.user("alice")
    portal.book("alice", "SMALL", 1, T0 + H)
    html = v.get("/instances").text
    classes = set(re.findall(r'<button type="submit" class="([^"]*)"[^>]*>(?:Start|Stop|Reboot)</button>', html))
    assert classes == {"small secondary"}, classes  # the same look; disabled ones are dimmed by portal.css
    assert re.search(r"button:disabled[^{]*\{[^}]*opacity: \.35", open("pex/http/static/portal.css").read())
