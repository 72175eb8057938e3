"""Read models built from the event log: the capacity timeline placement searches, and the
indexes behind the list queries. Rebuildable from the log at any time; never the authority.

- capacity:     CapacityTimeline, the in-memory node-capacity timeline placement searches
- reservations: ReservationIndex, the application's in-memory index (timers, lists)
- readmodels:   ReadModels, the persisted views for the list endpoints and the portal,
                and the follower that keeps them (and the ledger) up to date
- views, store: those views as folds into table rows, and where the rows live
- ledger:       tamper evidence: every stored event's digest, chained
- audit:        the auditor (`pex audit`), history (`pex history`), commands (`pex replay`)
"""
