"""`pex simulate` and `pex workload`: scheduling quality for operators."""

from __future__ import annotations

import click

from pex.domain.placement_policies import PLACEMENT_POLICIES
from pex.simulation.report import plot_results, results_table
from pex.simulation.simulate import PRICINGS, PROVIDERS, compare_policies, pool_capacity, simulate
from pex.simulation.workload import WorkloadError, generate, offered_load, rate_for_load, read_lwf, write_lwf


@click.command("simulate")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--provider", "providers", multiple=True, type=click.Choice([*PROVIDERS, "all"]), default=["all"], show_default=True
)
@click.option("--placement", type=click.Choice(PLACEMENT_POLICIES), default="best-fit", show_default=True,
              help="The placement policy (PEX_PLACEMENT) every provider places with.")
@click.option("--pricing", type=click.Choice(list(PRICINGS)), default="flat", show_default=True,
              help="The pricing policy (PEX_PRICING) every provider quotes with.")
@click.option("--seed", type=int, default=0, show_default=True, help="The random placement's seed (PEX_PLACEMENT_SEED).")
@click.option("--compare-policies", "compare", is_flag=True,
              help="Instead: PEX under every placement policy, each with flat and market pricing.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the comparison.")
def simulate_command(trace, providers, placement, pricing, seed, compare, plot) -> None:
    """Replay a workload (Haizea LWF, with pex: extensions) and report acceptance rate,
    utilization, start delay, proposals per request and revenue for each provider, or (with
    --compare-policies) for each placement and pricing policy of PEX."""
    try:
        requests = read_lwf(trace)
    except WorkloadError as error:
        raise click.ClickException(str(error)) from None
    if not requests:
        raise click.ClickException(f"{trace} holds no advance-reservation leases")
    names = list(PROVIDERS) if "all" in providers else list(providers)
    # Built late, as every command builds: importing the system must not come before `pex
    # serve` sets up the metrics' multiprocess mode (prometheus_client decides at its import).
    from pex.bootstrap import build_simulated_application

    if compare:
        results = compare_policies(requests, build_simulated_application, seed=seed)
    else:
        results = [simulate(requests, name, build_simulated_application, placement, pricing, seed) for name in names]
    click.echo("\n".join(results_table(results)))
    if plot:
        plot_results(results, plot)
        click.echo(f"plot written to {plot}")


@click.group("workload")
def workload_command() -> None:
    """Generate workloads for `pex simulate`."""


@workload_command.command("generate")
@click.option("--requests", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--rate", type=click.FloatRange(0.001), default=2.0, show_default=True, help="Requests an hour.")
@click.option(
    "--load", type=click.FloatRange(0.01, 100), default=None,
    help="Offered CPU load of the paper's testbed (0.8 = 80 %): sets the rate, instead of --rate.",
)
@click.option("--bursty", is_flag=True, help="Arrivals in bursts (same mean rate; see pex/simulation/workload.py).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
def generate_command(requests, rate, load, bursty, seed, output) -> None:
    """Write a trace drawn from the documented distributions (see pex/simulation/workload.py)."""
    if load is not None:
        rate = rate_for_load(load, pool_capacity().cpus, requests, seed, bursty)
    trace = generate(requests, rate, seed, bursty)
    write_lwf(trace, output)
    click.echo(f"{requests} requests written to {output} ({rate:.3f} an hour, "
               f"{offered_load(trace, pool_capacity().cpus):.0%} offered CPU load of the paper's testbed)")
