"""The persisted views' stores, below the views: a batch gives back every kind of value as it
was put, on every store, whether its rows were written one statement each (SQLite) or one
statement per table (PostgreSQL's arrays), and rows read ahead for a batch (`preload`) are the
rows `get` would have read, its own earlier changes included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid5

import pytest

from pex.projections.readmodels import store_for
from pex.projections.store import PositionsMoved, Table

EVERY_KIND = Table(
    "pex_test_every_kind",
    (
        ("node_id", "uuid"),
        ("name", "text"),
        ("count", "int"),
        ("available", "bool"),
        ("at", "time"),
        ("price", "money"),
        ("other", "uuid"),
        ("details", "json"),
    ),
    key=("node_id", "name"),
)
BY_ID = Table("pex_test_by_id", (("id", "uuid"), ("note", "text")), key=("id",))
VIEW = "test-view"
NAMESPACE = UUID("6f1f5f3e-0d4c-4bb8-9a51-6d3f2a8c7e10")


def ids(n: int) -> list[UUID]:
    return [uuid5(NAMESPACE, str(i)) for i in range(n)]


@pytest.fixture
def store(app):
    store = store_for(app)
    store.create([EVERY_KIND, BY_ID], [VIEW])
    yield store
    store.close()


def row(node_id: UUID, name: str, **values) -> dict:
    return {"node_id": node_id, "name": name, "count": None, "available": None, "at": None, "price": None,
            "other": None, "details": None, **values}


def test_a_batch_gives_back_every_kind_of_value_as_put_and_deletes_by_its_whole_key(store):
    a, b = ids(2)
    at = datetime(2026, 12, 4, 21, 30, tzinfo=UTC)
    first = [
        row(a, "one", count=2**40, available=True, at=at, price=Decimal("12.50"), other=b,
            details={"steps": [{"party": "user", "reply": "PROPOSE"}], "n": 3}),
        row(a, "two", available=False, details=[]),
        row(b, "one"),  # every column but the key empty
    ]
    with store.batch({VIEW: 0}) as batch:
        for r in first:
            batch.put(EVERY_KIND, r)
        batch.track(VIEW, 7)
    assert sorted(store.select(EVERY_KIND), key=lambda r: (str(r["node_id"]), r["name"])) == sorted(
        (EVERY_KIND.normalize(r) for r in first), key=lambda r: (str(r["node_id"]), r["name"]))
    assert store.positions([VIEW]) == {VIEW: 7}

    # One batch that overwrites a row, deletes one of two rows sharing a key column, and adds one.
    changed = row(a, "one", count=-1, available=None, at=at + timedelta(hours=1), price=Decimal("0"), details="text")
    with store.batch({VIEW: 7}) as batch:
        batch.put(EVERY_KIND, changed)
        batch.delete(EVERY_KIND, (a, "two"))
        batch.put(EVERY_KIND, row(b, "two", count=0))
        batch.track(VIEW, 9)
    assert {(r["node_id"], r["name"]): r for r in store.select(EVERY_KIND)} == {
        (a, "one"): EVERY_KIND.normalize(changed),
        (b, "one"): EVERY_KIND.normalize(row(b, "one")),
        (b, "two"): EVERY_KIND.normalize(row(b, "two", count=0)),
    }
    with pytest.raises(PositionsMoved), store.batch({VIEW: 7}):
        pass


def test_rows_read_ahead_for_a_batch_are_the_rows_get_would_read(store):
    keys = ids(1_200)  # more than one statement's worth of keys on SQLite
    with store.batch({VIEW: 0}) as batch:
        for i, key in enumerate(keys[:1_000]):
            batch.put(BY_ID, {"id": key, "note": f"note {i}"})
        batch.track(VIEW, 1)
    with store.batch({VIEW: 1}) as batch:
        batch.put(BY_ID, {"id": keys[0], "note": "changed in this batch"})
        batch.delete(BY_ID, (keys[1],))
        batch.preload(BY_ID, [(k,) for k in keys])
        ahead = {k: batch.get(BY_ID, (k,)) for k in keys}
        batch.track(VIEW, 2)
    assert ahead[keys[0]] == {"id": keys[0], "note": "changed in this batch"}
    assert ahead[keys[1]] is None  # deleted in this batch, not read back from the store
    assert all(ahead[k] == {"id": k, "note": f"note {i}"} for i, k in enumerate(keys[:1_000]) if i > 1)
    assert all(ahead[k] is None for k in keys[1_000:])  # not in the store
    with store.batch({VIEW: 2}) as batch:
        assert {k: batch.get(BY_ID, (k,)) for k in keys[1:]} == {k: ahead[k] for k in keys[1:]}
