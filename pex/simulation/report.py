"""The tables and plots of `pex simulate`: scheduling quality for operators."""

from __future__ import annotations

from pex.simulation.result import Result


def results_table(results: list[Result]) -> list[str]:
    lines = [
        "| provider | requests | booked | acceptance | utilization | mean start delay | proposals per request "
        "| instances re-packed | revenue |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.provider} | {r.requests} | {r.booked} | {r.acceptance_rate:.1%} | {r.utilization:.1%} "
            f"| {r.mean_start_delay_hours:.2f} h | {r.mean_rounds:.2f} | {r.moves} | {r.revenue} |"
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
        ax.bar(range(len(values)), values, color=["#999", "#c96", "#69c", "#369", "#6a6"][: len(values)])
        ax.set_xticks(range(len(values)), names, fontsize=7)
        ax.set_title(f"{title}{' (' + unit + ')' if unit else ''}")
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1f}", (i, v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
