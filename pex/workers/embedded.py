"""The embedded default: `pex serve` brings its own worker (and simulated pool), so that one
command runs a whole PEX.

`start_embedded(settings)` prepares the store once, then starts `pex worker` as a child
process of the caller, with the same environment. Without PEX_XEN_URL that worker dispatches
to an in-process simulated pool with the paper's testbed (node1..node5). The child exits when
`stop()` is called, and by itself if its parent dies. A separate process rather than threads,
because gunicorn forks its workers from the serving process, and threads (and open database
connections) do not survive a fork.

Whether it runs is PEX_EMBEDDED_WORKER: auto (the default: only when no PEX_XEN_URL is set,
since a real pool wants its workers run and supervised on their own), y, or n.
"""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """The handle `start_embedded` returns; `running` is False when nothing was started."""

    def __init__(self, process: subprocess.Popen | None):
        self.process = process
        # gunicorn forks its workers from the process that started us; when one of them exits,
        # the stack it inherited unwinds through our caller's `finally`: only the owner stops.
        self.owner = os.getpid()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or os.getpid() != self.owner or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
