"""Placement search time as the pool grows and as future bookings grow.

PEX searches the capacity timeline (pex.projections.capacity): per node a step function of
booked demand, so a query touches only what overlaps the interval asked about. The baseline,
measured in the same run on the same bookings, is what a system without the timeline does:
sweep each node's whole list of allocations (the Node aggregate's own check, applied to every
node). The ratio baseline/PEX is the figure to read.

Issue 12's target 3 is measured on its own shape: one negotiation (`evaluate`, which runs
`place` best fit over the pool, and the alternatives when that fails) at 1,000 nodes ×
100,000 future bookings, p50 over many proposals at different starts; then the same as
future bookings grow 10× at a time (1,000 nodes) and as nodes grow 10× at a time (100,000
future bookings), with the ratio from one row to the next.
"""

from __future__ import annotations

import gc
import random
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from uuid import uuid4

from bench.common import FIGURES, Section, fmt_ms, median, timed
from pex.domain.negotiation import NegotiationPolicy, evaluate
from pex.domain.node import Node, NodeAllocation, node_id, peak_demand
from pex.domain.pricing import FlatRatePricing
from pex.domain.values import Resources, Size, Terms
from pex.projections.capacity import CapacityTimeline

T0 = datetime(2027, 1, 4, tzinfo=UTC)
SMALL = Size("SMALL", 1, 768, 10)
CAPACITY = Resources(4, 4096, 200)


class NaiveView:
    """The baseline CapacityView: every query sweeps all of a node's allocations."""

    def __init__(self, allocations: dict[str, list[NodeAllocation]]):
        self.allocations = allocations

    def node_names(self):
        return list(self.allocations)

    def capacity(self, node):
        return CAPACITY

    def free(self, node, start, end, at, excluding=None):
        return CAPACITY - peak_demand(self.allocations[node], start, end)

    def change_points(self, after, until, at):
        points = {t for allocations in self.allocations.values() for a in allocations for t in (a.start, a.end)}
        return sorted(p for p in points if after < p <= until)


def build(nodes: int, bookings: int, seed: int = 7, baseline: bool = True) -> tuple[CapacityTimeline, NaiveView]:
    """`bookings` future bookings spread over `nodes` nodes and a year: 1–3 SMALL each, 1–12 h."""
    rng = random.Random(seed)
    timeline, naive = CapacityTimeline(), NaiveView({})
    for i in range(nodes):
        name = f"n{i}"
        timeline.apply(Node.Registered(originator_id=node_id(name), originator_version=1, timestamp=T0, originator_topic="", name=name, capacity=CAPACITY, at=T0))
        naive.allocations[name] = []
    per_node = bookings // nodes
    span = timedelta(days=365).total_seconds()
    for i in range(nodes):
        name, nid = f"n{i}", node_id(f"n{i}")
        # Consecutive bookings that never overlap more than the node holds: one lane of 4 CPUs
        # split into up to 3 + 1 instances.
        cursor = 0.0
        step = span / max(per_node, 1)
        for _ in range(per_node):
            start = T0 + timedelta(seconds=cursor + rng.uniform(0, step * 0.1))
            end = start + timedelta(seconds=step * rng.uniform(0.3, 0.9))
            cursor += step
            a = NodeAllocation(uuid4(), start, end, rng.randint(1, 3), SMALL.resources)
            timeline.apply(
                Node.CapacityBooked(
                    originator_id=nid, originator_version=2, timestamp=T0, reservation_id=a.reservation_id,
                    start=a.start, end=a.end, instances=a.instances, per_instance=a.per_instance, at=T0,
                )
            )
            if baseline:
                naive.allocations[name].append(a)
    return timeline, naive


def query_all_nodes(view, start: datetime) -> int:
    end = start + timedelta(hours=2)
    return sum(SMALL.resources.how_many_fit_in(view.free(n, start, end, T0)) for n in view.node_names())


def query_each(view, starts: list[datetime]) -> list[int]:
    return [query_all_nodes(view, s) for s in starts]


NEGOTIATIONS = 31  # proposals per shape; the p50 is their median


def negotiation_p50(nodes: int, bookings: int) -> float:
    """The median time of one `evaluate` of a 5-instance, 6-hour proposal, at starts spread
    over the year the bookings cover (each proposal run alone, on the same timeline)."""
    timeline, _ = build(nodes, bookings, baseline=False)
    gc.freeze()  # out of the collector's passes, as an HTTP worker holds it (pex.http.server.post_worker_init)
    rng = random.Random(3)
    policy, pricing = NegotiationPolicy(horizon=timedelta(days=400)), FlatRatePricing()
    samples = []
    for _ in range(NEGOTIATIONS):
        start = T0 + timedelta(hours=rng.uniform(24, 8000))
        terms = Terms("SMALL", "t", 3, 2, start, start + timedelta(hours=6))
        samples += timed(partial(evaluate, terms, SMALL, timeline, T0, pricing, policy), 1)
    return median(samples)


def growth(rows: list[tuple[int, int, float]], by: int) -> list[str]:
    """Table rows with the ratio of each p50 to the one before it (column `by` grows)."""
    lines = []
    for i, (nodes, bookings, p50) in enumerate(rows):
        ratio = f"{p50 / rows[i - 1][2]:.2f}×" if i else ""
        lines.append(f"| {nodes:,} | {bookings:,} | {fmt_ms(p50)} | {ratio} |")
    return lines


def run(quick: bool = False) -> Section:
    section = Section("Placement search", "make bench  (or: .venv/bin/python -m bench placement)")
    rng = random.Random(1)
    policy, pricing = NegotiationPolicy(horizon=timedelta(days=400)), FlatRatePricing()
    rows_pool, rows_book = [], []

    # 1. The pool grows: 10 → 10,000 nodes, 20 future bookings each.
    for nodes in (10, 100, 1000, 10000):
        timeline, naive = build(nodes, nodes * 20)
        starts = [T0 + timedelta(hours=rng.uniform(0, 8000)) for _ in range(20)]
        ours = median(timed(partial(query_each, timeline, starts), 3)) / len(starts)
        base = median(timed(partial(query_each, naive, starts), 3)) / len(starts)
        terms = Terms("SMALL", "t", 3, 2, T0 + timedelta(days=100), T0 + timedelta(days=100, hours=6))
        negotiation = median(timed(partial(evaluate, terms, SMALL, timeline, T0, pricing, policy), 3))
        rows_pool.append((nodes, ours, base, negotiation))

    # 2. Future bookings grow: 1,000 → 1,000,000 on 100 nodes.
    sizes = (1_000, 10_000, 100_000) if quick else (1_000, 10_000, 100_000, 1_000_000)
    for bookings in sizes:
        t = time.perf_counter()
        timeline, naive = build(100, bookings)
        build_s = time.perf_counter() - t
        starts = [T0 + timedelta(hours=rng.uniform(0, 8000)) for _ in range(50)]
        ours = median(timed(partial(query_each, timeline, starts), 3)) / len(starts)
        base = median(timed(partial(query_each, naive, starts[:5]), 1)) / 5
        rows_book.append((bookings, ours, base, build_s))

    # 3. The past costs nothing: 100,000 bookings that ended, forgotten, vs. an empty pool.
    timeline, _ = build(100, 100_000)
    timeline.forget_before(T0 + timedelta(days=366))
    later = T0 + timedelta(days=370)
    past = median(timed(lambda: query_all_nodes(timeline, later), 20))
    empty, _ = build(100, 0)
    fresh = median(timed(lambda: query_all_nodes(empty, later), 20))

    # 4. Issue 12's target: 1,000 nodes × 100,000 future bookings, then 10× more of either.
    shapes: dict[tuple[int, int], float] = {}
    by_bookings = [(1000, b) for b in ((10_000, 100_000) if quick else (10_000, 100_000, 1_000_000))]
    by_nodes = [(n, 100_000) for n in ((100, 1000) if quick else (100, 1000, 10_000))]
    for shape in by_bookings + by_nodes:
        if shape not in shapes:
            shapes[shape] = negotiation_p50(*shape)
    target = shapes[(1000, 100_000)]
    rows_bookings = [(n, b, shapes[(n, b)]) for n, b in by_bookings]
    rows_nodes = [(n, b, shapes[(n, b)]) for n, b in by_nodes]
    worst_bookings = max(r[2] / q[2] for q, r in zip(rows_bookings, rows_bookings[1:], strict=False))
    worst_nodes = max(r[2] / q[2] for q, r in zip(rows_nodes, rows_nodes[1:], strict=False))
    held = target <= 0.005 and worst_bookings <= 2 and worst_nodes <= 10

    section.lines += [
        f"**Issue 12, target 3** ({'met' if held else 'NOT met'}): one negotiation at 1,000 nodes × 100,000 future",
        f"bookings takes **{fmt_ms(target)} p50** (target ≤ 5 ms; {NEGOTIATIONS} proposals of 5 SMALL instances for",
        "6 hours at starts spread over the year). Per 10× more future bookings it grows at most",
        f"**{worst_bookings:.2f}×** (target ≤ 2×); per 10× more nodes at most **{worst_nodes:.2f}×** (target ≤ 10×,",
        "linear). The pool-wide scan (`CapacityTimeline.fitting_counts`) reads each node's step function from",
        "plain lists with one bisect in C, instead of a `free` call per node; it stays linear in nodes, and",
        "tests/projections/test_capacity_timeline.py checks that it chooses exactly what the node-by-node",
        "scan chooses. These proposals are accepted (the pool has room); a COUNTER, which walks other starts",
        "(`CapacityTimeline.placeable_from`), is not part of this figure. Measured as an HTTP worker",
        "holds the timeline once it has followed the log: out of the garbage collector's passes (gc.freeze in",
        "post_worker_init; measured without, it cost a quarter more at 10,000 nodes), one compact NodeTimeline per node (slots), and best fit picks its",
        "nodes without sorting the pool. The ratios move by some 20% from run to run (10,000 nodes: 28 to 39 ms in",
        "five runs of 2026-12-04, evening), so one run meets or misses the targets of 2× and 10× by noise alone.",
        "",
        "| nodes | future bookings | one negotiation, p50 | × the row above |",
        "|---:|---:|---:|---:|",
        *growth(rows_bookings, 1),
        "",
        "| nodes | future bookings | one negotiation, p50 | × the row above |",
        "|---:|---:|---:|---:|",
        *growth(rows_nodes, 0),
        "",
        "A query asks every node for its free capacity over a 2-hour window; a negotiation is",
        "`evaluate()` of a 5-instance request (best fit plus alternatives).",
        "",
        "**As the pool grows** (20 future bookings per node):",
        "",
        "| nodes | query, PEX timeline | query, baseline sweep | baseline / PEX | one negotiation |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {n:,} | {fmt_ms(o)} | {fmt_ms(b)} | {b / o:.1f}× | {fmt_ms(e)} |" for n, o, b, e in rows_pool),
        "",
        "**As future bookings grow** (100 nodes):",
        "",
        "| future bookings | query, PEX timeline | query, baseline sweep | baseline / PEX | timeline build |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {n:,} | {fmt_ms(o)} | {fmt_ms(b)} | {b / o:.1f}× | {s:.1f} s |" for n, o, b, s in rows_book),
        "",
        f"**The past costs nothing**: after 100,000 bookings ended and were forgotten, a query takes "
        f"{fmt_ms(past)}, against {fmt_ms(fresh)} on a pool that never had any ({past / fresh:.2f}×).",
        "",
    ]
    section.figures.append(plot(rows_pool, rows_book))
    return section


def plot(rows_pool, rows_book) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog([r[0] for r in rows_pool], [r[1] * 1000 for r in rows_pool], "o-", label="PEX timeline")
    left.loglog([r[0] for r in rows_pool], [r[2] * 1000 for r in rows_pool], "s--", label="baseline sweep")
    left.set_xlabel("nodes (20 future bookings each)")
    left.set_ylabel("query over all nodes (ms)")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    right.loglog([r[0] for r in rows_book], [r[1] * 1000 for r in rows_book], "o-", label="PEX timeline")
    right.loglog([r[0] for r in rows_book], [r[2] * 1000 for r in rows_book], "s--", label="baseline sweep")
    right.set_xlabel("future bookings (100 nodes)")
    right.set_ylabel("query over all nodes (ms)")
    right.legend()
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = FIGURES / "placement.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
