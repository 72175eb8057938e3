"""The browser story (test_browser.py) at the hours that broke it or could: the whole run, its
gunicorn, worker and simulated pool, under Debian's libfaketime with the wall clock set to an
awkward instant (all but chromium, which cannot run under it: see the `browser` fixture).
The in-process tests get such instants from an injected clock (test_calendar.py); this is the
check that nothing on the real path depends on the hour.

Each run takes about as long as the story (some 40 s) and is bounded (RUN_WITHIN): four of
them add under three minutes to `make test`. To run the suite, or part of it, at an hour of
your choosing, see docs/operations.md ("Running the tests at another hour").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn, pytest.mark.xen, pytest.mark.slow]

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHIM = os.path.join(os.path.dirname(__file__), "faketime")  # its sitecustomize: see there
# Seconds for one run of the story, then it is interrupted, then killed: some 40 s on a quiet
# machine, but a loaded CI host took over 150, and a hang is what this bound is for.
RUN_WITHIN = 600


def at(instant: datetime, libfaketime: str) -> dict:
    """The environment of a process tree whose wall clock reads `instant` now, and runs on."""
    offset = round((instant - datetime.now(UTC)).total_seconds())
    env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, [libfaketime, os.environ.get("LD_PRELOAD")])),
           "FAKETIME": f"{offset:+d}", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [SHIM, ROOT, os.environ.get("PYTHONPATH")]))}
    env.pop("PEX_UPDATE_PORTAL_DOCS", None)  # the pictures in the docs are not redrawn at 23:59
    return env


def run_bounded(command: list[str], env: dict, within: float) -> subprocess.CompletedProcess:
    """Run `command`; past `within` s, SIGINT (pytest then tears its fixtures down: gunicorn,
    chromium), then SIGKILL. SIGINT is restored to its default in the child, whatever this
    process inherited (a background `make test &` ignores it)."""
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        out, _ = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
        raise AssertionError(f"not done within {within} s:\n{out[-6000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, out)


INSTANTS = [
    # The story's user is in Europe/Berlin (UTC+1 in winter, +2 in summer).
    pytest.param(datetime(2026, 12, 2, 22, 30, tzinfo=UTC), id="23:30-in-Berlin"),  # the day view was all past
    pytest.param(datetime(2026, 12, 31, 22, 59, 30, tzinfo=UTC), id="new-year-in-Berlin"),  # midnight, month, year
    pytest.param(datetime(2027, 3, 28, 0, 59, 30, tzinfo=UTC), id="clocks-go-forward-in-Berlin"),  # 01:59:30 → 03:00
    pytest.param(datetime(2026, 10, 25, 0, 59, 30, tzinfo=UTC), id="clocks-go-back-in-Berlin"),  # 02:59:30 → 02:00
]


@pytest.mark.parametrize("instant", INSTANTS)
def test_the_browser_story_passes_at(instant, libfaketime_path, chromium_path, tmp_path):
    env = at(instant, libfaketime_path)
    env["PEX_PORTAL_ARTIFACTS"] = os.path.join(ROOT, "test-artifacts", f"portal-at-{instant:%Y%m%dT%H%M%SZ}")
    # The fake clock took: a child reads the instant (give or take its start-up), not today.
    probe = subprocess.run([sys.executable, "-c", "import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat())"],
                           env=env, capture_output=True, text=True, timeout=30)
    assert abs((datetime.fromisoformat(probe.stdout.strip()) - instant).total_seconds()) < 60, probe
    run = run_bounded([sys.executable, "-m", "pytest", "tests/portal/test_browser.py", "-q", "-x", "-p", "no:cacheprovider",
                       "--basetemp", str(tmp_path / "run")], env, RUN_WITHIN)
    assert run.returncode == 0, run.stdout[-8000:]


def main(argv: list[str]) -> int:
    """python -m tests.portal.test_at_any_hour 2026-12-02T22:30:00Z [pytest arguments]: run
    pytest (tests/portal by default) with the wall clock at that instant (docs/operations.md)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 2
    instant = datetime.fromisoformat(argv[0].replace("Z", "+00:00"))
    if instant.tzinfo is None:
        raise SystemExit("give the instant with its offset, e.g. 2026-12-02T22:30:00Z")
    from tests.support.portal import LIBFAKETIME

    if not os.path.exists(LIBFAKETIME):
        raise SystemExit(f"{LIBFAKETIME} is missing: apt-get install libfaketime")
    command = [sys.executable, "-m", "pytest", *(argv[1:] or ["tests/portal"])]
    return subprocess.run(command, env=at(instant, LIBFAKETIME), cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
