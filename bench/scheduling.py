"""Scheduling quality: the same workload through three providers.

Baselines, run in the same process on the same trace: reject-only exact reservations (what
Haizea, Blazar and Slurm do with an advance reservation), and the original OpenPEX (one
counter, earliest later start only, all instances on one host). The trace is drawn from the
distributions documented in pex/simulation/workload.py.
"""

from __future__ import annotations

from bench.common import FIGURES, ROOT, Section
from pex.bootstrap import build_simulated_application
from pex.simulation.report import plot_results, results_table
from pex.simulation.simulate import PROVIDERS, simulate
from pex.simulation.workload import generate, write_lwf

RESULTS = ROOT / "bench" / "results"


def run(quick: bool = False) -> Section:
    requests, rate = (300, 2.0) if quick else (3000, 2.0)
    section = Section("Scheduling quality", f"pex workload generate --requests {requests} --rate {rate} --seed 42 -o trace.lwf && pex simulate trace.lwf --plot scheduling.png")
    trace = generate(requests, rate, seed=42)
    FIGURES.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_lwf(trace, str(RESULTS / "trace.lwf"))
    results = [simulate(trace, name, build_simulated_application) for name in PROVIDERS]
    days = trace[-1].arrival.total_seconds() / 86400
    exact, pex = results[0], results[-1]
    section.lines += [
        f"{requests} requests over {days:.0f} simulated days on the paper's testbed (5 nodes × 4 CPUs × 4 GB),",
        f"about {rate:g} requests an hour; the trace is written to `bench/results/trace.lwf` (seed 42). Simulated in "
        + ", ".join(f"{r.seconds:.1f} s" for r in results) + " of wall time.",
        "",
        *results_table(results),
        "",
        f"PEX books {pex.booked / max(exact.booked, 1):.2f}× the reservations of reject-only scheduling and earns "
        f"{float(pex.revenue) / max(float(exact.revenue), 0.01):.2f}× its revenue, at a mean start delay of "
        f"{pex.mean_start_delay_hours:.1f} h that every user accepted within their own flexibility.",
    ]
    path = FIGURES / "scheduling.png"
    plot_results(results, str(path))
    section.figures.append(str(path))
    return section
