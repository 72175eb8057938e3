"""What one provider got from one workload (pex.simulation.simulate, pex.simulation.fluid)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PROVIDERS = {
    "exact": "reject-only exact (Haizea, Blazar, Slurm)",
    "openpex": "original OpenPEX",
    "pex-no-repack": "PEX without re-packing",
    "pex": "PEX",
    "fluid": "fluid reference (the pool as one bin)",
}


@dataclass(frozen=True)
class Result:
    provider: str
    requests: int
    booked: int
    utilization: float
    mean_start_delay_hours: float
    mean_rounds: float
    revenue: Decimal
    seconds: float
    moves: int = 0  # bookings re-packed (instances moved to other nodes)

    @property
    def acceptance_rate(self) -> float:
        return self.booked / self.requests if self.requests else 0.0
