"""Read models built from the event log: the capacity timeline placement searches, and the
indexes behind the list queries. Rebuildable from the log at any time; never the authority."""
