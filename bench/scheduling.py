"""Scheduling quality: the same workloads through every provider, beside a fluid reference.

Two traces at 80 % offered CPU load of the paper's testbed (5 nodes × 4 CPUs × 4 GB): Poisson
arrivals, and the same distributions with arrivals in bursts (pex/simulation/workload.py).
Providers, run in the same process on the same trace, with the same simulated users (who
counter-propose over several rounds, pex/simulation/simulate.py): reject-only exact
reservations (what Haizea, Blazar and Slurm do with an advance reservation), the original
OpenPEX (one counter, earliest later start only, all instances on one host), PEX without
re-packing, PEX (with re-packing), and the fluid reference: the pool as one bin of its total
CPUs and memory (pex/simulation/fluid.py).
"""

from __future__ import annotations

from bench.common import FIGURES, ROOT, Section, machine
from pex.bootstrap import build_simulated_application
from pex.simulation.report import plot_results, results_table
from pex.simulation.simulate import PROVIDERS, pool_capacity, simulate
from pex.simulation.workload import generate, offered_load, rate_for_load, write_lwf

RESULTS = ROOT / "bench" / "results"
LOAD, SEED = 0.8, 42
TARGET = 0.95  # PEX's acceptance at least this share of the fluid reference's


def run(quick: bool = False) -> Section:
    requests = 200 if quick else 1000
    cpus = pool_capacity().cpus
    section = Section(
        "Scheduling quality",
        f"pex workload generate --requests {requests} --load {LOAD} [--bursty] --seed {SEED} -o trace.lwf "
        "&& pex simulate trace.lwf --plot scheduling.png",
    )
    FIGURES.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    section.lines += [
        f"{requests} requests a trace on the paper's testbed (5 nodes × 4 CPUs × 4 GB), at {LOAD:.0%} offered CPU load",
        "(CPU time asked, fixed and optional instances, over the pool's CPU time from the first arrival to the last),",
        f"seed {SEED}; sizes, instances, durations, lead times, flexibility (0–48 h) and budgets as documented in",
        "pex/simulation/workload.py. Every provider sees the same users in the same order; a user takes an offer",
        "within their flexibility and budget, else counter-proposes from the provider's offers (several rounds, up to",
        "the provider's five), else walks away. The fluid reference packs the pool as one bin of its 20 CPUs and",
        "20 GB: a request is accepted iff its fixed instances fit, summed with everything accepted before, at some",
        "start within the user's flexibility (nearest first), with as many optional instances as fit and the budget",
        "allows (pex/simulation/fluid.py). It ignores node boundaries, so it is what any placement onto nodes is",
        "measured against; it is no upper bound (it is greedy in arrival order, and PEX may beat it).",
        "Reservation ids are random (ties in placement, and the original OpenPEX's host choice, follow them), so",
        "the counts move by a few from run to run.",
        f"Measured on {machine()}.",
    ]
    for bursty in (False, True):
        name = "bursty" if bursty else "poisson"
        rate = rate_for_load(LOAD, cpus, requests, SEED, bursty)
        trace = generate(requests, rate, SEED, bursty)
        write_lwf(trace, str(RESULTS / f"trace-{name}.lwf"))
        results = [simulate(trace, provider, build_simulated_application) for provider in PROVIDERS]
        by = dict(zip(PROVIDERS, results, strict=True))
        days = trace[-1].arrival.total_seconds() / 86400
        pex, fluid, plain = by["pex"], by["fluid"], by["pex-no-repack"]
        ratio = pex.acceptance_rate / max(fluid.acceptance_rate, 1e-9)
        title = "Arrivals in bursts" if bursty else "Poisson arrivals"
        section.lines += [
            "",
            f"### {title}",
            "",
            f"{rate:.3f} requests an hour over {days:.0f} simulated days ({offered_load(trace, cpus):.0%} offered CPU load);"
            f" the trace is `bench/results/trace-{name}.lwf`. Simulated in "
            + ", ".join(f"{r.seconds:.1f} s" for r in results) + " of wall time.",
            "",
            *results_table(results),
            "",
            f"PEX accepts {pex.acceptance_rate:.1%}, {ratio:.3f}× the fluid reference's {fluid.acceptance_rate:.1%} "
            f"({'within' if ratio >= TARGET else 'short of'} the {TARGET:.0%} asked"
            + ("" if ratio >= TARGET else f", by {TARGET - ratio:.1%} of the reference")
            + f"); without re-packing {plain.acceptance_rate:.1%}; re-packing moved {pex.moves} instances. "
            f"PEX books {pex.booked / max(by['exact'].booked, 1):.2f}× the reservations of reject-only scheduling "
            f"and {pex.booked / max(by['openpex'].booked, 1):.2f}× those of the original OpenPEX.",
        ]
        path = FIGURES / f"scheduling-{name}.png"
        plot_results(results, str(path))
        section.figures.append(str(path))
    return section
