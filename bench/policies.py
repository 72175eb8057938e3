"""Policies compared (the paper's §5): PEX's negotiation on one workload under every placement
policy (PEX_PLACEMENT), each with flat and market pricing (PEX_PRICING), in the same process
through the real application. The trace is drawn from the distributions documented in
pex/simulation/workload.py (seed 42, as the scheduling benchmark's, but shorter)."""

from __future__ import annotations

from bench.common import ROOT, Section
from pex.bootstrap import build_simulated_application
from pex.simulation.report import results_table
from pex.simulation.simulate import compare_policies
from pex.simulation.workload import generate, write_lwf

RESULTS = ROOT / "bench" / "results"


def run(quick: bool = False) -> Section:
    requests, rate = (200, 2.0) if quick else (1000, 2.0)
    section = Section(
        "Policies compared",
        f"pex workload generate --requests {requests} --rate {rate} --seed 42 -o policies.lwf && "
        "pex simulate policies.lwf --compare-policies",
    )
    trace = generate(requests, rate, seed=42)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_lwf(trace, str(RESULTS / "policies.lwf"))
    results = compare_policies(trace, build_simulated_application)
    days = trace[-1].arrival.total_seconds() / 86400
    by = {r.provider: r for r in results}
    best, market = by["PEX, best-fit, flat"], by["PEX, best-fit, market"]
    def name(r) -> str:
        return r.provider.removeprefix("PEX, ")

    most = max(results, key=lambda r: r.booked)
    fullest = max(results, key=lambda r: r.utilization)
    richest = max(results, key=lambda r: r.revenue)
    least = min(results, key=lambda r: r.booked)
    section.lines += [
        f"{requests} requests over {days:.0f} simulated days on the paper's testbed (5 nodes × 4 CPUs × 4 GB), about "
        f"{rate:g} requests an hour; the same simulated users as above (they take an offer within their flexibility "
        "and budget). Each row is PEX's negotiation with one placement policy and one pricing policy; "
        f"{sum(r.seconds for r in results):.0f} s of wall time in all.",
        "",
        *results_table(results),
        "",
        f"Most reservations booked: {name(most)} ({most.booked}); the fullest pool: {name(fullest)} "
        f"({fullest.utilization:.1%}); the most revenue: {name(richest)} ({richest.revenue}); the fewest bookings: "
        f"{name(least)} ({least.booked}). A policy that books more reservations than best fit at a lower utilization "
        "books smaller ones on average: spreading instances leaves fewer whole nodes for the large requests, which best "
        "fit keeps free. Market pricing with best fit books "
        f"{market.booked} against flat's {best.booked} and earns {float(market.revenue) / max(float(best.revenue), 0.01):.2f}× "
        f"the revenue, at a mean start delay of {market.mean_start_delay_hours:.2f} h against "
        f"{best.mean_start_delay_hours:.2f} h: idle hours sell at half the flat rate and busy ones at up to twice it, so "
        "users with a budget are countered into quieter hours or walk away.",
    ]
    return section
