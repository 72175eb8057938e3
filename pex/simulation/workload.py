"""Workloads: requests that users send, generated from documented distributions, and stored
in Haizea's Lease Workload Format (LWF) with PEX's extra terms in their own XML namespace.

Distributions of `generate` (every draw from one seeded random.Random, so a seed is a trace):

| what | distribution |
|---|---|
| arrivals | Poisson process, `rate_per_hour` requests an hour on average (exponential gaps); `bursty`: the rate switches between bursts and calm (see `generate`) |
| size | SMALL 40 %, MEDIUM 30 %, LARGE 20 %, XLARGE 10 % |
| instances needed (`numInstancesFixed`) | 1 + geometric(p = 0.5), at most 5 |
| optional instances | 0 (60 %), 1 (25 %), 2 (15 %) |
| duration | log-normal, median 4 h, σ = 1; between 30 minutes and 7 days |
| lead time (start − arrival) | exponential, mean 24 h, at least 5 minutes |
| flexibility (the start shift a user accepts) | 0 (30 %), 2 h (30 %), 12 h (25 %), 48 h (15 %) |
| budget (`price`) | none (50 %), else 1.0–1.5 × the flat price of the fixed instances |

An LWF lease has `<nodes><node-set numnodes=N>` with CPU (100 = one CPU) and Memory (MB),
`<start><exact time=…/></start>` relative to the trace's start, `<duration time=…/>`; the
`pex:` attributes add the size name, template, optional instances, flexibility and budget.
"""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from pex.domain.catalogue import TABLE_1_SIZES

PEX_NS = "https://github.com/openpex/pex/lwf"
ET.register_namespace("pex", PEX_NS)
SIZES = {s.name: s for s in TABLE_1_SIZES}
TEMPLATE = "PEX Debian Etch 4.0 Template"


@dataclass(frozen=True)
class Request:
    """One user's request, times relative to the start of the trace."""

    id: int
    arrival: timedelta
    size: str
    fixed: int
    optional: int
    start: timedelta
    duration: timedelta
    flexibility: timedelta
    max_price: Decimal | None = None
    template: str = TEMPLATE


BURST_SHARE, BURST_FACTOR, CALM_FACTOR, BURST_MEAN_HOURS = 0.2, 4.0, 0.25, 4.0


def generate(requests: int, rate_per_hour: float = 2.0, seed: int = 1, bursty: bool = False) -> list[Request]:
    """`requests` requests drawn from the distributions above. `bursty`: arrivals come from
    a Poisson process whose rate switches between bursts (BURST_FACTOR = 4 × the rate, a fifth
    of the time) and calm (CALM_FACTOR = ¼ × the rate), each phase lasting an exponential
    time (bursts 4 h on average, calm 16 h): the same mean rate, in bursts."""
    rng = random.Random(seed)
    phases = random.Random(seed + 1_000_003)  # its own stream: every other draw stays as without bursts
    out, clock = [], 0.0
    burst, phase_end = False, phases.expovariate(1 / (BURST_MEAN_HOURS * (1 - BURST_SHARE) / BURST_SHARE)) * 3600
    for i in range(1, requests + 1):
        gap = rng.expovariate(1.0)  # in units of mean gaps at the phase's rate
        if not bursty:
            clock += gap / rate_per_hour * 3600
        else:
            while True:
                rate = rate_per_hour * (BURST_FACTOR if burst else CALM_FACTOR)
                step = gap / rate * 3600
                if clock + step <= phase_end:
                    clock += step
                    break
                gap -= (phase_end - clock) / 3600 * rate  # the rest of the gap, in the next phase
                clock, burst = phase_end, not burst
                mean = BURST_MEAN_HOURS if burst else BURST_MEAN_HOURS * (1 - BURST_SHARE) / BURST_SHARE
                phase_end = clock + phases.expovariate(1 / mean) * 3600
        size = rng.choices(list(SIZES), weights=[40, 30, 20, 10])[0]
        fixed = 1
        while fixed < 5 and rng.random() < 0.5:
            fixed += 1
        optional = rng.choices([0, 1, 2], weights=[60, 25, 15])[0]
        hours = min(max(math.exp(rng.gauss(math.log(4), 1.0)), 0.5), 168)
        duration = timedelta(minutes=round(hours * 60))
        lead = timedelta(minutes=max(5, round(rng.expovariate(1 / 24) * 60)))
        flexibility = timedelta(hours=rng.choices([0, 2, 12, 48], weights=[30, 30, 25, 15])[0])
        max_price = None
        if rng.random() < 0.5:
            flat = SIZES[size].hourly_price * fixed * Decimal(duration.total_seconds() / 3600)
            max_price = (flat * Decimal(str(round(rng.uniform(1.0, 1.5), 2)))).quantize(Decimal("0.01"))
        arrival = timedelta(seconds=round(clock))
        out.append(Request(i, arrival, size, fixed, optional, arrival + lead, duration, flexibility, max_price))
    return out


def offered_load(requests: list[Request], pool_cpus: int) -> float:
    """The CPU load the requests offer: CPU time asked (fixed and optional instances) over the
    pool's CPU time from the first arrival to the last."""
    if len(requests) < 2:
        return 0.0
    asked = sum(SIZES[r.size].cpus * (r.fixed + r.optional) * r.duration.total_seconds() for r in requests)
    span = (max(r.arrival for r in requests) - min(r.arrival for r in requests)).total_seconds()
    return asked / (pool_cpus * max(span, 1))


def rate_for_load(load: float, pool_cpus: int, requests: int, seed: int, bursty: bool = False) -> float:
    """The arrival rate (requests an hour) at which `generate` offers `load` of the pool's CPUs."""
    rate = 1.0
    for _ in range(6):  # bursts last hours whatever the rate, so the load is not quite proportional to it
        offered = offered_load(generate(requests, rate, seed, bursty), pool_cpus)
        if not offered:
            break
        rate *= load / offered
    return rate


def _hms(span: timedelta) -> str:
    seconds = span.total_seconds()
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def _span(text: str | None) -> timedelta:
    if text is None:
        raise ValueError("a time attribute is missing")
    hours, minutes, seconds = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(seconds))


def write_lwf(requests: list[Request], path: str, name: str = "pex-workload", nodes: int = 5) -> None:
    root = ET.Element("lease-workload", name=name)
    ET.SubElement(root, "description").text = "Generated by pex.simulation.workload (distributions in its docstring)."
    site = ET.SubElement(root, "site")
    ET.SubElement(site, "resource-types", names="CPU Memory")
    node_set = ET.SubElement(ET.SubElement(site, "nodes"), "node-set", numnodes=str(nodes))
    ET.SubElement(node_set, "res", type="CPU", amount="400")
    ET.SubElement(node_set, "res", type="Memory", amount="4096")
    leases = ET.SubElement(root, "lease-requests")
    for r in requests:
        size = SIZES[r.size]
        request = ET.SubElement(leases, "lease-request", arrival=_hms(r.arrival))
        attrs = {
            "id": str(r.id), "preemptible": "false", f"{{{PEX_NS}}}type": r.size, f"{{{PEX_NS}}}template": r.template,
            f"{{{PEX_NS}}}optional": str(r.optional), f"{{{PEX_NS}}}flexibility": _hms(r.flexibility),
        }
        if r.max_price is not None:
            attrs[f"{{{PEX_NS}}}max-price"] = str(r.max_price)
        lease = ET.SubElement(request, "lease", attrs)
        ns = ET.SubElement(ET.SubElement(lease, "nodes"), "node-set", numnodes=str(r.fixed))
        ET.SubElement(ns, "res", amount=str(size.cpus * 100), type="CPU")
        ET.SubElement(ns, "res", amount=str(size.memory_mb), type="Memory")
        ET.SubElement(ET.SubElement(lease, "start"), "exact", time=_hms(r.start))
        ET.SubElement(lease, "duration", time=_hms(r.duration))
        ET.SubElement(ET.SubElement(lease, "software"), "disk-image", id=r.template, size=str(size.disk_gb * 1024))
    ET.indent(root)
    ET.ElementTree(root).write(path, xml_declaration=True, encoding="unicode")


class WorkloadError(ValueError):
    pass


def read_lwf(path: str) -> list[Request]:
    """Read an LWF file. Leases without pex: attributes are read as Haizea wrote them: the
    size is the smallest of Table 1 that holds the node-set's CPU and memory."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise WorkloadError(f"{path}: {error}") from None
    out: list[Request] = []
    for request in root.iter("lease-request"):
        lease = request.find("lease")
        exact = lease.find("start/exact") if lease is not None else None
        node_set = lease.find("nodes/node-set") if lease is not None else None
        duration = lease.find("duration") if lease is not None else None
        if lease is None or exact is None or node_set is None or duration is None:
            continue  # best-effort leases (no exact start) are not advance reservations
        try:
            size = lease.get(f"{{{PEX_NS}}}type") or _size_for(node_set)
            price = lease.get(f"{{{PEX_NS}}}max-price")
            out.append(
                Request(
                    id=int(lease.get("id", len(out) + 1)),
                    arrival=_span(request.get("arrival", "00:00:00")),
                    size=size,
                    fixed=int(node_set.get("numnodes", "1")),
                    optional=int(lease.get(f"{{{PEX_NS}}}optional", "0")),
                    start=_span(exact.get("time")),
                    duration=_span(duration.get("time")),
                    flexibility=_span(lease.get(f"{{{PEX_NS}}}flexibility", "00:00:00")),
                    max_price=Decimal(price) if price else None,
                    template=lease.get(f"{{{PEX_NS}}}template", TEMPLATE),
                )
            )
        except (ValueError, TypeError, ArithmeticError) as error:
            raise WorkloadError(f"{path}: lease {lease.get('id')}: {error}") from None
    return out


def _size_for(node_set: ET.Element) -> str:
    need = {r.get("type"): int(r.get("amount", "0")) for r in node_set.findall("res")}
    for size in sorted(SIZES.values(), key=lambda s: s.cpus):
        if size.cpus * 100 >= need.get("CPU", 0) and size.memory_mb >= need.get("Memory", 0):
            return size.name
    raise ValueError(f"no size holds {need}")
