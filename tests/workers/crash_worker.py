"""A worker process for the crash tests: `python -m tests.workers.crash_worker DB_URL XAPI_URL CLOCK_FILE ID`.

It runs the real worker (timer and monitors) on a clock that the test moves by writing a
file, prints "ready" once built, and ticks fast until it is killed."""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

from pex.bootstrap import build_worker_process
from pex.settings import Settings, WorkerSettings

LEASE = timedelta(seconds=30)


class FileClock:
    """The time written in a file (ISO 8601); the test process moves it."""

    def __init__(self, path: str):
        self.path = Path(path)

    def __call__(self) -> datetime:
        return datetime.fromisoformat(self.path.read_text().strip())

    def set(self, when: datetime) -> None:
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(when.isoformat())
        os.replace(temporary, self.path)


def main(database_url: str, xapi_url: str, clock_file: str, worker_id: str) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{worker_id} %(levelname)s %(name)s %(message)s")
    settings = WorkerSettings(
        xen_url=xapi_url, xen_username="root", xen_password="xenroot", xen_timeout=5.0, xen_task_timeout=10.0,
        worker_id=worker_id, tick=0.02, threads=2, lease=LEASE, node_grace=timedelta(minutes=10),
        guest_timeout=timedelta(days=1), resync=0.5, watch_timeout=0.2,
    )
    process = build_worker_process(Settings(database_url=database_url, create_tables=False), settings, FileClock(clock_file))
    process.dispatcher.poll_interval = 0.01
    print("ready", flush=True)
    process.run_until_signalled(threading.Event())


if __name__ == "__main__":
    main(*sys.argv[1:5])
