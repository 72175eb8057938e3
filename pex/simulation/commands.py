"""`pex simulate` and `pex workload`: scheduling quality for operators."""

from __future__ import annotations

import click

from pex.simulation.simulate import PROVIDERS, Result, simulate
from pex.simulation.workload import WorkloadError, generate, read_lwf, write_lwf


def results_table(results: list[Result]) -> list[str]:
    lines = [
        "| provider | requests | booked | acceptance | utilization | mean start delay | proposals per request | revenue |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.provider} | {r.requests} | {r.booked} | {r.acceptance_rate:.1%} | {r.utilization:.1%} "
            f"| {r.mean_start_delay_hours:.2f} h | {r.mean_rounds:.2f} | {r.revenue} |"
        )
    return lines


def plot_results(results: list[Result], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.provider.replace(" (", "\n(") for r in results]
    metrics = [
        ("acceptance rate", [r.acceptance_rate * 100 for r in results], "%"),
        ("utilization", [r.utilization * 100 for r in results], "%"),
        ("revenue", [float(r.revenue) for r in results], ""),
        ("mean start delay", [r.mean_start_delay_hours for r in results], "h"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(14, 3.8))
    for ax, (title, values, unit) in zip(axes, metrics, strict=True):
        ax.bar(range(len(values)), values, color=["#999", "#c96", "#369"][: len(values)])
        ax.set_xticks(range(len(values)), names, fontsize=7)
        ax.set_title(f"{title}{' (' + unit + ')' if unit else ''}")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}", (i, v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command("simulate")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--provider", "providers", multiple=True, type=click.Choice([*PROVIDERS, "all"]), default=["all"], show_default=True
)
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of the comparison.")
def simulate_command(trace, providers, plot) -> None:
    """Replay a workload (Haizea LWF, with pex: extensions) and report acceptance rate,
    utilization, start delay, proposals per request and revenue for each provider."""
    try:
        requests = read_lwf(trace)
    except WorkloadError as error:
        raise click.ClickException(str(error)) from None
    if not requests:
        raise click.ClickException(f"{trace} holds no advance-reservation leases")
    names = list(PROVIDERS) if "all" in providers else list(providers)
    results = [simulate(requests, name) for name in names]
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
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
def generate_command(requests, rate, seed, output) -> None:
    """Write a trace drawn from the documented distributions (see pex/simulation/workload.py)."""
    write_lwf(generate(requests, rate, seed), output)
    click.echo(f"{requests} requests written to {output}")
