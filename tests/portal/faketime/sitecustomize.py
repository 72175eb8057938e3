"""Imported at start-up by every Python process of a run under libfaketime (the directory is put
on PYTHONPATH by tests/portal/test_at_any_hour.py, and nowhere else).

Those runs fake the wall clock only (FAKETIME_DONT_FAKE_MONOTONIC=1: with a faked monotonic
clock, waits on an absolute monotonic deadline, as threading.Event.wait makes, never end). But
libfaketime 0.9.10 then answers clock_nanosleep on an absolute monotonic deadline, which is how
time.sleep waits, with EINVAL. select() waits the same time and is left alone, so time.sleep is
made of it here.
"""

import os
import select
import time

if os.environ.get("FAKETIME") and "libfaketime" in os.environ.get("LD_PRELOAD", ""):

    def sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = sleep
