"""Shared helpers: timing, percentiles, the machine's description, result sections."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "docs" / "bench"


@dataclass
class Section:
    """One benchmark's results: a title, markdown body lines, and figure files."""

    title: str
    command: str
    lines: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        body = "\n".join(self.lines)
        pictures = "\n".join(f"![{Path(f).stem}](bench/{Path(f).name})" for f in self.figures)
        return f"## {self.title}\n\nReproduce: `{self.command}`\n\n{body}\n\n{pictures}\n".rstrip() + "\n"


class ShiftedClock:
    """PEX's clock for a bench: real time plus an offset that the bench moves forward (to just
    before a start an hour ahead), so it need not wait; the simulator keeps real time."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move_to(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)


def copy_log(source: Any, target: Any, batch: int = 5000) -> int:
    """Every event of `source`'s log into `target`'s empty store, in order, `batch` to a
    transaction: the same history, as if it had been recorded there."""
    position, copied = 1, 0
    while True:
        notifications = source.recorder.select_notifications(position, batch)
        if not notifications:
            return copied
        target.recorder.insert_events([
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in notifications
        ])
        copied += len(notifications)
        position = notifications[-1].id + 1


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall-clock seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return samples


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def seconds_row(name: str, samples: list[float]) -> str:
    """A markdown table row: how many samples, and the first, median, p99 and last of them."""
    if not samples:
        return f"| {name} | 0 | | | | |"
    return (f"| {name} | {len(samples)} | {min(samples):.2f} s | {median(samples):.2f} s | "
            f"{percentile(samples, 99):.2f} s | {max(samples):.2f} s |")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} × {cpu}{mem}, Python {platform.python_version()}, {platform.system()} {platform.release()}"
