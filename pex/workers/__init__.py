"""The workers: loops around a `tick(now)` that is safe to run twice, in several processes.

`timer` (the paper's event queue: starts, ends, offer expiry, re-placement), `monitors` (the
Node and VM Monitors on XAPI's event feed), `dispatch` (the Dispatcher: actions carried out
through the Xen adapter), `index` (the workers' view of the log), `runner` (one worker
process), `embedded` (the worker `pex serve` brings along), `commands` (`pex worker`,
`pex xen-sim`). See docs/operations.md.
"""
