"""The embedded default: `pex serve` brings its own worker (and simulated pool), so that one
command runs a whole PEX.

`start_embedded(settings)` prepares the store once, then starts `pex worker` as a child
process of the caller, with the same environment. Without PEX_XEN_URL that worker dispatches
to an in-process simulated pool with the paper's testbed (node1..node5). The child exits when
`stop()` is called, and by itself if its parent dies. A separate process rather than threads,
because gunicorn forks its workers from the serving process, and threads (and open database
connections) do not survive a fork.

Whether it runs is PEX_EMBEDDED_WORKER: auto (the default: only when no PEX_XEN_URL is set,
since a real pool wants its workers run and supervised on their own), y, or n. With PEX_POOLS
and y, one worker runs for each pool (`pex worker --pool NAME`).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Sequence

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """The handle `start_embedded` returns: the worker processes it started, one per pool
    (none when disabled); `running` is False when none runs."""

    def __init__(self, processes: Sequence[subprocess.Popen] = ()):
        self.processes = list(processes)
        # gunicorn forks its workers from the process that started us; when one of them exits,
        # the stack it inherited unwinds through our caller's `finally`: only the owner stops.
        self.owner = os.getpid()

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self.processes)

    def stop(self, timeout: float = 20.0) -> None:
        if os.getpid() != self.owner:
            return
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
