"""The `pex` command (also installed as `openpex`): run the service and its workers, operate
the pool, negotiate from a terminal, audit and replay the log. Every click command of PEX
lives in this package, and every one builds PEX through pex.bootstrap."""

from pex.cli.availability import availability_command, extend_command, release_command
from pex.cli.http import serve, users, webhook
from pex.cli.read_side import audit_command, history_command, replay_command
from pex.cli.root import main
from pex.cli.simulation import simulate_command, workload_command
from pex.cli.workers import worker, xen_sim

for command in (serve, users, webhook, simulate_command, workload_command, worker, xen_sim):
    main.add_command(command)
for command in (availability_command, release_command, extend_command):
    main.add_command(command)
for command in (audit_command, history_command, replay_command):
    main.add_command(command)

__all__ = ["main"]
