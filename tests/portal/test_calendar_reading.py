"""A calendar people can read: bars named after their reservation (their tooltip too), free
memory beside free CPUs in every cell, a last row for the pool's totals, and free cells that
carry what the range-selecting script needs. The chart's totals are checked as an invariant
of calendar.build over random bookings."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from pex.domain.values import Resources
from pex.http.portal import calendar
from pex.projections.readmodels import CalendarEntry
from tests.support import T0

H = timedelta(hours=1)
START = T0 + 2 * H


def test_a_bar_and_its_tooltip_name_the_reservation_and_what_it_takes(portal):
    v = portal.user("alice")
    mine = portal.book("alice", "MEDIUM", 2, START)
    portal.book("bob", "XLARGE", 1, START)
    page = v.get("/calendar?view=day&date=2026-03-02").text
    name = str(mine)[:8].upper()
    assert f"yours: 2 × MEDIUM · {name}</a>" in page
    assert f'title="Reservation {name}, yours: 2 × MEDIUM (4 CPU, 3 GB), Mon 2 Mar 10:00 – Mon 2 Mar 12:00 UTC"' in page
    assert 'title="busy (4 CPU, 3.5 GB), Mon 2 Mar 10:00' in page and "bob" not in page


def test_every_free_cell_gives_cpus_and_memory_and_the_pool_has_a_row_of_totals(portal):
    v = portal.user("alice")
    portal.book("bob", "XLARGE", 5, START)  # 10:00–12:00 the pool is full
    page = v.get("/calendar?view=day&date=2026-03-02").text
    assert page.count('data-node="node') == 5 and page.count('data-node="pool"') == 1
    assert "4 CPUs, 4 GB free on node1 from Mon 2 Mar 08:00" in page
    assert "<strong>Pool</strong><small>20 CPU · 20 GB</small>" in page
    assert "20 CPUs, 20 GB free in the pool from Mon 2 Mar 08:00" in page
    assert "0 CPUs, 2.5 GB free in the pool from Mon 2 Mar 10:00" in page  # the XLARGEs leave memory, no CPU
    cell = re.search(r'<a class="slot free"[^>]*>', page).group(0)
    assert 'data-start="2026-03-02T08:00"' in cell and 'data-end="2026-03-02T09:00"' in cell
    assert 'data-cpus="4"' in cell and 'data-memory="4096"' in cell
    sizes = json.loads(html.unescape(re.search(r'data-sizes="([^"]*)"', page).group(1)))
    assert [s["name"] for s in sizes] == ["XLARGE", "LARGE", "MEDIUM", "SMALL"]  # the script picks the first that fits


class Node:
    def __init__(self, name: str, capacity: Resources, available: bool = True):
        self.name, self.capacity, self.available = name, capacity, available


@settings(max_examples=40, deadline=None)
@given(
    bookings=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40), st.integers(1, 12), st.integers(1, 2)), max_size=8),
    lost=st.integers(-1, 2),
    view=st.sampled_from(list(calendar.VIEWS)),
)
def test_the_pools_row_is_the_sum_of_its_nodes_in_every_column(bookings, lost, view):
    nodes = [Node(f"node{i}", Resources(4, 4096, 100), available=i != lost) for i in range(3)]
    entries = {n.name: [] for n in nodes}
    for node, start_hour, hours, instances in bookings:
        start = T0 + start_hour * H
        entries[f"node{node}"].append(CalendarEntry(f"node{node}", None, "booking", start, start + hours * H, instances,
                                                    Resources(1, 768, 10), None, T0))
    chart = calendar.build(view, date(2026, 3, 2), UTC, T0, nodes, lambda n: entries[n], lambda rid: None, "alice")
    assert len(chart.totals) == len(chart.columns)
    for k, total in enumerate(chart.totals):
        assert total.free == sum((row.slots[k].free for row in chart.rows), Resources())
        assert total.capacity == Resources(4, 4096, 100) * sum(n.available for n in nodes)
        assert total.past == chart.rows[0].slots[k].past
