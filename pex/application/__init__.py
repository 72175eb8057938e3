"""The service layer: PexApplication, its ports, errors and the plain values it returns.

    core         the retry on a lost race, the save, the loaders, the in-process read models
    negotiation  proposals, replies, confirmation, activation, cancellation, expiry
    pool         the catalogue and the nodes (operators)
    quotas       the quotas in force, and checking terms against them
    instances    the VMs' lifecycle: the user's requests, dispatch claims and records,
                 the monitors' observations, re-placement after a lost node
    drain        a node's maintenance: its bookings re-placed, its running VMs live-migrated
    accounts     users, passwords, portal sessions
    queries      reservations as plain values
    views        one type per read shape         errors   NotFound, VersionConflict, Contention
    ports        the enactment and the clock     service  PexApplication, all of the above

Imports only the domain and the projections: never the edges (http, workers, cli), the
adapters or the simulation."""

from pex.application.errors import Contention, NotFound, VersionConflict
from pex.application.service import PexApplication
from pex.application.views import InstanceView, NodeView, Outcome, ReservationView

__all__ = [
    "Contention", "InstanceView", "NodeView", "NotFound", "Outcome", "PexApplication", "ReservationView", "VersionConflict",
]  # fmt: skip
