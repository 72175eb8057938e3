"""Many pools: what a first proposal costs when the same 10,000 hosts are 100 pools of 100, or
10 of 1,000, against one pool of 10,000 (the baseline, measured in the same run).

A first proposal is judged in a few pools only (pex.application.negotiation, POOLS_SEARCHED):
one pass over every node finds each pool's room at the asked time, and each pool searched
costs its own nodes. So the cost per proposal should not grow with the number of pools, and
may shrink (a pool searched is smaller than the whole). Measured on the service layer in
memory (the whole `submit_proposal`: quotas, the pass, the negotiation in each pool searched,
the holds saved), p50 over proposals at starts spread over a month, each declined after it is
timed so that holds do not pile up: an ACCEPT (room everywhere) and a COUNTER (the asked hours
full in every pool, so that every pool searched looks for other starts).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

from bench.common import Section, fmt_ms, median
from pex.application.ports import PoolHost, PoolInventory, PoolTemplate
from pex.bootstrap import build_simulated_application
from pex.clock import ManualClock
from pex.domain.negotiation import NegotiationPolicy, evaluate
from pex.domain.pool import DEFAULT_POOL, node_name
from pex.domain.values import Reply, Resources, Terms

T0 = datetime(2027, 1, 4, tzinfo=UTC)
HOSTS = 10_000
HOST = Resources(cpus=4, memory_mb=4096, disk_gb=200)
TEMPLATE = "Debian 12"
PROPOSALS = 41
FULL_HOURS = 6  # the hours every pool is full, for the COUNTER


def build(pools: int):
    """A memory application whose HOSTS hosts are `pools` pools of equal size."""
    clock = ManualClock(T0)
    policy = NegotiationPolicy(horizon=timedelta(days=60))
    app = build_simulated_application(clock, evaluate, policy)
    app.pool_configured = True
    app.install_demo_pool()
    per_pool = HOSTS // pools
    for p in range(pools):
        pool = DEFAULT_POOL if pools == 1 else f"p{p:03d}"
        hosts = tuple(PoolHost(node_name(pool, f"xen-{i}"), f"{pool}-{i}", HOST, True) for i in range(per_pool))
        app.sync_pool(PoolInventory(hosts, (PoolTemplate("t-uuid", TEMPLATE),)), pool=pool)
    app.register_template(TEMPLATE)
    return app, clock


def fill(app, start, hours: int, pools: int) -> None:
    """Book every host over [start, start + hours) with XLARGE (one per host), a pool at a time."""
    left = HOSTS
    while left:
        count = min(left, HOSTS // pools, 1000)  # a reservation lives in one pool
        rid = app.initiate_reservation("filler")
        outcome = app.submit_proposal(rid, Terms("XLARGE", TEMPLATE, count, 0, start, start + timedelta(hours=hours)))
        assert outcome.reply == Reply.ACCEPT, outcome
        app.confirm(rid)
        left -= count


def first_proposals(app, starts, hours: float = 2) -> tuple[float, set[str]]:
    """The p50 of one first proposal of 5 SMALL at each start, and the replies."""
    samples, replies = [], set()
    for i, start in enumerate(starts):
        rid = app.initiate_reservation(f"user{i % 50}")
        terms = Terms("SMALL", TEMPLATE, 5, 0, start, start + timedelta(hours=hours))
        t = time.perf_counter()
        outcome = app.submit_proposal(rid, terms)
        samples.append(time.perf_counter() - t)
        replies.add(outcome.reply.value)
        if outcome.reply != Reply.REJECT:
            app.decline(rid)
    return median(samples), replies


def run(quick: bool = False) -> Section:
    section = Section("Many pools", "make bench  (or: .venv/bin/python -m bench pools)")
    rng = random.Random(5)
    shapes = (1, 10, 100)
    rows = []
    for pools in shapes:
        t = time.perf_counter()
        app, clock = build(pools)
        built = time.perf_counter() - t
        full_at = T0 + timedelta(days=3)
        fill(app, full_at, FULL_HOURS, pools)
        accept_starts = [T0 + timedelta(days=5, hours=rng.uniform(0, 24 * 20)) for _ in range(PROPOSALS)]
        accept, accepted = first_proposals(app, accept_starts)
        counter, countered = first_proposals(app, [full_at + timedelta(minutes=rng.uniform(0, 60)) for _ in range(PROPOSALS)])
        rows.append((pools, accept, counter, built, accepted, countered))
        app.close()
    base_accept, base_counter = rows[0][1], rows[0][2]
    worst = max(max(r[1] / base_accept, r[2] / base_counter) for r in rows[1:])
    section.lines += [
        f"The same {HOSTS:,} hosts (4 CPUs, 4 GiB each) as one pool, 10 pools and 100 pools; a first proposal",
        f"of 5 SMALL for 2 hours, p50 of {PROPOSALS}, on the service layer in memory. The ACCEPT finds room as",
        f"asked; the COUNTER asks for hours booked full in every pool ({FULL_HOURS} h of XLARGE on every host), so",
        "each pool searched looks for other starts. A first proposal is judged in at most 3 pools, chosen by one",
        f"pass over every node: in 10 or 100 pools it costs at most **{worst:.2f}×** what it costs in one pool of",
        f"{HOSTS:,} (the baseline).",
        "",
        "| pools × hosts | ACCEPT, p50 | × one pool | COUNTER, p50 | × one pool | replies (ACCEPT's / COUNTER's proposals) "
        "| syncing the pools |",
        "|---|---:|---:|---:|---:|---|---:|",
        *(f"| {p} × {HOSTS // p:,} | {fmt_ms(a)} | {a / base_accept:.2f}× | {fmt_ms(c)} | {c / base_counter:.2f}× | "
          f"{', '.join(sorted(acc))} / {', '.join(sorted(ctr))} | {b:.1f} s |" for p, a, c, b, acc, ctr in rows),
        "",
    ]
    return section
