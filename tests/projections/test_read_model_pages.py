"""Pages of the read models' lists (`limit`, `after`: keyset pagination) and their `not_in`
filter, on every store: the pages of any size, read one after another, are the whole list in
its order, and exclusions leave out exactly what they name."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pex.domain.values import Terms
from pex.projections.readmodels import INSTANCE_ORDER, RESERVATION_ORDER, ReadModels
from tests.support import T0

ETCH = "PEX Debian Etch 4.0 Template"
H = timedelta(hours=1)


@pytest.fixture
def read_models(app):
    models = ReadModels(app)
    yield models
    models.close()


def book(app, user: str, instances: int, start) -> None:
    rid = app.initiate_reservation(user)
    app.submit_proposal(rid, Terms("SMALL", ETCH, instances, 0, start, start + 2 * H))
    app.confirm(rid)


def key(row, order) -> tuple:
    return tuple(getattr(row, column) for column in order)


def test_pages_of_any_size_are_the_whole_list_in_order_on_every_store(app, read_models):
    # Several reservations at one start, so that the instances' order goes to the id and index.
    for k in range(6):
        book(app, "alice", 1 + k % 3, T0 + (k % 2 + 1) * H)
    app.cancel(read_models.reservations("alice")[2].id)
    for query, order in ((read_models.reservations, RESERVATION_ORDER), (read_models.instances, INSTANCE_ORDER)):
        whole = query("alice")
        assert len(whole) >= 6
        for limit in (1, 2, 3, 5, len(whole), len(whole) + 1):
            pages, after = [], None
            while True:
                page = query("alice", limit=limit, after=after)
                pages.append(page)
                if len(page) < limit:
                    break
                after = page[-1].id if order == RESERVATION_ORDER else key(page[-1], order)
            assert [row for page in pages for row in page] == whole, (query.__name__, limit)
            assert all(len(page) == limit for page in pages[:-1])


def test_not_in_leaves_out_exactly_the_states_and_statuses_it_names(app, read_models):
    for k in range(3):
        book(app, "alice", 2, T0 + (k + 1) * H)
    cancelled = read_models.reservations("alice")[1].id
    app.cancel(cancelled)
    kept = read_models.reservations("alice", not_in=[read_models.reservations("alice")[1].state])
    assert cancelled not in [r.id for r in kept] and len(kept) == 2
    statuses = {i.status for i in read_models.instances("alice")}
    assert statuses == {"SCHEDULED", "CANCELLED"}
    assert {i.status for i in read_models.instances("alice", not_in=["CANCELLED"])} == {"SCHEDULED"}
    assert read_models.instances("alice", not_in=["CANCELLED", "SCHEDULED"]) == []
