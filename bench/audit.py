"""`pex audit` over a log of more than a million events, against the raw read speed of the
same events from the same store.

The log is written straight through the domain (so every event is exactly what PEX writes):
140,000 reservations, each initiated, proposed, accepted with holds, confirmed with bookings
and one scheduled instance (7 events each), spread over 1,000 nodes, in an SQLite file (the
embedded default), and the same log copied into a PostgreSQL database (tests.pg's server on
loopback: the events as stored, in order, 5,000 to a transaction). Then, in the same run and
for each store: the raw read (every notification paged out of the recorder, 2,000 a page,
nothing decoded), the same pages with every event decoded and nothing checked (what any audit
must do at least), the read models and ledger catching up from scratch, and the audit (decode,
rebuild every projection, check every promise, compare read models).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

from bench.common import ROOT, Section, copy_log
from pex.bootstrap import build_application
from pex.domain.instance import Instance, instance_name
from pex.domain.node import Node
from pex.domain.reservation import Reservation
from pex.domain.values import Allocation, Offer, Resources, Terms
from pex.settings import Settings

T0 = datetime(2027, 1, 4, tzinfo=UTC)
NODES = 1000
BATCH = 300
SMALL = Resources(1, 768, 10)


def write_log(app, reservations: int) -> int:
    """Append `reservations` confirmed reservations; returns the number of events written."""
    nodes = [Node(name=f"bench{i}", capacity=Resources(4, 4096, 200), at=T0) for i in range(NODES)]
    app.save(*nodes)
    written = len(nodes)
    cursor = [T0 + timedelta(days=1)] * NODES
    pending: list = []
    dirty: dict[int, Node] = {}
    for i in range(reservations):
        at = T0 + timedelta(seconds=i * 0.1)
        k = i % NODES
        node, start = nodes[k], cursor[k]
        end = start + timedelta(hours=1)
        cursor[k] = end
        terms = Terms("SMALL", "PEX Debian Etch 4.0 Template", 1, 0, start, end, Decimal("0.05"))
        r = Reservation.initiate(f"user{i % 97}", at, uuid4())
        r.submit(terms, SMALL, at)
        valid_until = at + timedelta(minutes=5)
        node.hold(r.id, start, end, 1, SMALL, valid_until, at)
        r.accept(Offer(terms, SMALL, (Allocation(node.name, 1),)), valid_until, at)
        confirmed_at = at + timedelta(seconds=0.05)
        instance = Instance(
            reservation_id=r.id, user_id=r.user_id, index=0, name=instance_name(r.id, 0), size="SMALL",
            template=terms.template, per_instance=SMALL, node=node.name, start=start, end=end, at=confirmed_at,
        )
        node.book(r.id, start, end, 1, SMALL, confirmed_at)
        r.confirm((instance.id,), confirmed_at)
        pending += [r, instance]
        dirty[k] = node
        if len(pending) >= 2 * BATCH:
            written += len(app.save(*pending, *dirty.values()))
            pending, dirty = [], {}
    if pending:
        written += len(app.save(*pending, *dirty.values()))
    return written


def measure(what: str, url: str) -> dict:
    """One pass over the log in this (fresh) process: the raw read or the audit, with the
    process's peak RSS, so neither the writer's nor the other pass's memory is counted."""
    from pex.projections.audit import Auditor
    from pex.projections.readmodels import ReadModels

    app = build_application(Settings(database_url=url, install_demo_pool=False))
    result: dict = {}
    t, cpu = time.perf_counter(), time.process_time()
    if what in ("raw", "decode"):
        events, start = 0, 0
        while True:
            page = app.recorder.select_notifications(start=start, limit=2000, inclusive_of_start=False)
            if not page:
                break
            if what == "decode":  # what any audit must do at least: every event as the domain's
                for notification in page:
                    app.mapper.to_domain_event(notification)
            events += len(page)
            start = page[-1].id
        result["events"] = events
    else:
        read_models = ReadModels(app)
        report = Auditor(app, read_models, source="bench").run()
        read_models.close()
        result.update(events=report.events, ok=report.ok, violations={k: len(v) for k, v in report.by_promise().items()})
    result["seconds"] = time.perf_counter() - t
    result["cpu_seconds"] = time.process_time() - cpu  # steadier than wall time on a shared machine
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    app.close()
    return result


def in_child(what: str, url: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.audit", what, url], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def catch_up(url: str) -> float:
    """Seconds for the read models and the ledger to catch up from scratch on `url`'s log
    (the audit compares the stored read models and checks the ledger)."""
    from pex.projections.readmodels import ReadModels

    app = build_application(Settings(database_url=url, install_demo_pool=False))
    read_models = ReadModels(app)
    t = time.perf_counter()
    read_models.catch_up()
    seconds = time.perf_counter() - t
    read_models.close()
    app.close()
    return seconds


def rows(store: str, events: int, catch_up_s: float, raw: dict, decode: dict, audit: dict) -> list[str]:
    raw_s, decode_s, audit_s = raw["seconds"], decode["seconds"], audit["seconds"]
    return [
        f"| {store} | raw read (baseline: pages of 2,000 notifications, not decoded) | {raw_s:.1f} | "
        f"{raw['events'] / raw_s:,.0f} | 1.00× | {raw['cpu_seconds']:.1f} | 1.00× | {raw['peak_rss_mb']:,.0f} MB |",
        f"| {store} | the same pages, each event decoded (eventsourcing's mapper), nothing checked | {decode_s:.1f} | "
        f"{decode['events'] / decode_s:,.0f} | {raw_s / decode_s:.2f}× | {decode['cpu_seconds']:.1f} | "
        f"{raw['cpu_seconds'] / decode['cpu_seconds']:.2f}× | {decode['peak_rss_mb']:,.0f} MB |",
        f"| {store} | read models and ledger, built from scratch | {catch_up_s:.1f} | "
        f"{events / catch_up_s:,.0f} | {raw_s / catch_up_s:.2f}× | | | |",
        f"| {store} | `pex audit`: decode, rebuild, check every promise, compare | {audit_s:.1f} | "
        f"{audit['events'] / audit_s:,.0f} | {raw_s / audit_s:.2f}× | {audit['cpu_seconds']:.1f} | "
        f"{raw['cpu_seconds'] / audit['cpu_seconds']:.2f}× | {audit['peak_rss_mb']:,.0f} MB |",
    ]


def run(quick: bool = False) -> Section:
    from tests.pg import start_postgres

    reservations = 15_000 if quick else 143_000
    section = Section("Audit", "make bench  (or: .venv/bin/python -m bench audit)")
    workdir = Path(tempfile.mkdtemp(prefix="pex-bench-audit-"))
    url = f"sqlite:///{workdir}/pex.sqlite3"
    app = build_application(Settings(database_url=url, install_demo_pool=False))
    t = time.perf_counter()
    events = write_log(app, reservations)
    write_s = time.perf_counter() - t
    server = start_postgres()
    try:
        pg_url = server.create_database()
        pg = build_application(Settings(database_url=pg_url, install_demo_pool=False))
        t = time.perf_counter()
        copied = copy_log(app, pg)
        copy_s = time.perf_counter() - t
        pg.close()
        app.close()
        assert copied == events, (copied, events)
        passes = {}
        for store, store_url in (("SQLite", url), ("PostgreSQL", pg_url)):
            catch_up_s = catch_up(store_url)
            passes[store] = (catch_up_s, in_child("raw", store_url), in_child("decode", store_url), in_child("audit", store_url))
    finally:
        server.stop()

    section.lines += [
        f"{events:,} events ({reservations:,} confirmed reservations on {NODES:,} nodes) in an SQLite file, written in "
        f"{write_s:.0f} s ({events / write_s:,.0f} events/s), and copied into a PostgreSQL database on loopback in "
        f"{copy_s:.0f} s. The raw read, the decoding and the audit each run in a fresh process, so the peak RSS is that pass's alone.",
        "",
        "| store | pass over the whole log | seconds | events/s | vs raw read | CPU seconds (process) | vs raw read | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for store, (catch_up_s, raw, decode, audit) in passes.items():
        section.lines += rows(store, events, catch_up_s, raw, decode, audit)
    section.lines.append("")
    ratios, decoded = {}, {}
    for store, (_, raw, decode, audit) in passes.items():
        decoded[store] = raw["seconds"] / decode["seconds"]
        ratios[store] = raw["seconds"] / audit["seconds"]
        section.lines.append(
            f"- {store}: the audit {'passed' if audit['ok'] else 'FAILED'} ("
            + (", ".join(f"{k} {n}" for k, n in audit["violations"].items()) or "no violation")
            + f"); it runs at {ratios[store]:.0%} of the speed at which the store can merely hand the events over, "
            f"with a peak RSS {(audit['peak_rss_mb'] - raw['peak_rss_mb']) * 1024 / events:.1f} KB an event above the raw "
            "read's."
        )
    reached = [store for store, ratio in ratios.items() if ratio >= 0.5]
    section.lines += [
        "",
        "Issue 12's target is 0.5× the raw read over 1,000,000 events on SQLite and on PostgreSQL: "
        + ("reached on both." if len(reached) == len(ratios) else
           "not reached (" + ", ".join(f"{ratio:.2f}× on {store}" for store, ratio in ratios.items()) + ")."),
        "",
        "Decoding alone, every event through eventsourcing's mapper and nothing checked, runs at "
        + " and ".join(f"{ratio:.2f}× on {store}" for store, ratio in decoded.items())
        + " of the raw read"
        + (": an audit that reads the events as the domain's, as this one must to check promises stated in their"
           " terms, cannot reach 0.5× of a read that decodes nothing" if max(decoded.values()) < 0.5 else
           ", what is left of the target's time for everything else is small")
        + " (a bare json.loads of each",
        "event's state is some 0.67× on its own, measured on SQLite at 421,000 events). The rest is spread out (py-spy over 106,000 events, 2026-12-04): folding the",
        "three read models again, into memory, about 18 %; the promise checks about 14 %; decoding about 11 %; reading",
        "the stored read models about 11 % and digesting rows about 11 %; comparing them about 8 %; the ledger about 6 %.",
        "The collector's full passes used to walk the whole growing heap again and again (a third of the audit's time",
        "at 420,000 events); the audit now keeps what it has rebuilt out of them (gc.freeze after each page). The peak",
        "RSS grows with the log: the rebuilt read models and the promises' state are kept whole in memory until the end.",
    ]
    return section


if __name__ == "__main__":  # one measured pass, in a child process of run()
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
