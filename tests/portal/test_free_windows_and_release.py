"""The portal's new-reservation form shows the next free windows for what is typed (nothing
held), and a reservation's page releases it early."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from tests.support import T0
from tests.support.portal import local

H = timedelta(hours=1)


def windows_of(html: str) -> list[str]:
    section = re.search(r'<section id="free-windows".*?</section>', html, re.DOTALL)
    assert section, "no free-windows section"
    return [re.sub(r"<[^>]+>", "", li).strip() for li in re.findall(r"<li>(.*?)</li>", section.group(0), re.DOTALL)]


def test_the_form_shows_the_next_free_windows_for_what_is_typed_and_holds_nothing(portal):
    portal.book("bob", "XLARGE", 4, T0 + H, 3)  # 09:00-12:00: one node left free
    v = portal.user("alice")
    before = portal.application.recorder.max_notification_id()
    page = v.get("/reservations/new", params={
        "size": "XLARGE", "start": local(T0 + H), "duration": "1", "instances_fixed": "2", "template": "",
    })  # fmt: skip
    assert page.status_code == 200
    shown = windows_of(page.text)
    assert len(shown) == 1 and "Mon 2 Mar 2026, 12:00 UTC – 13:00" in shown[0] and "5 would fit" in shown[0]
    assert 'aria-live="polite"' in page.text
    link = re.search(r'<a href="([^"]+)">use this start</a>', page.text).group(1).replace("&amp;", "&")
    query = parse_qs(urlsplit(link).query)
    assert query["start"] == ["2026-03-02T12:00"] and query["end"] == ["2026-03-02T13:00"]
    assert "2026-03-02T12:00" in v.get(link).text  # the form, with that start filled in
    assert portal.application.recorder.max_notification_id() == before


def test_a_reservations_page_releases_it_and_its_capacity_is_free_again(portal):
    v = portal.user("alice")
    rid = portal.book("alice", "XLARGE", 5, T0 + H, 4)
    page = v.get(f"/reservations/{rid}")
    assert f'action="/reservations/{rid}/release"' in page.text
    portal.clock.advance(2 * H)
    released = v.follow(v.post(f"/reservations/{rid}/release"))
    assert "Released: its capacity is free from now" in released.text and "you pay 1.00" in released.text
    assert "EXPIRED" in released.text and f'action="/reservations/{rid}/release"' not in released.text
    assert portal.application.get_reservation(rid).state.value == "EXPIRED"
    again = v.follow(v.post(f"/reservations/{rid}/release"))
    assert "That is not possible now" in again.text
    mallory = portal.user("mallory")
    assert mallory.post(f"/reservations/{rid}/release").status_code == 404
