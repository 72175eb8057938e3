"""A cold start on a long history: how long from launching `pex serve` until every gunicorn
worker has answered a negotiation, on an empty log and on logs of 100,000 and 1,000,000 events.

The server is the embedded default (`pex serve`: 2 gunicorn workers on loopback, the embedded
worker with its simulated pool, SQLite) on a copy of a database that bench/history.py wrote
and PEX itself then prepared, as a PEX that ran for months leaves it: the read models caught
up and the start-up checkpoint saved. The databases are cached under var/bench/, keyed by
the history's version, and made again when they are a week old (their future reservations
would begin).

From the launch, client threads POST proposals (a negotiation each) on fresh connections,
with a request id of their own; the server's request log says which worker (pid) answered
which id. The time of a worker is that of the first negotiation it answered; the time of a
start is that of the slowest worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from bench.common import ROOT, Section, machine
from bench.history import VERSION, write_history
from pex.wire import rfc1123

SIZES = (0, 100_000, 1_000_000)
QUICK_SIZES = (0, 20_000, 100_000)
RUNS = 5
WORKERS = 2
CLIENTS = 4
USERNAME, PASSWORD = "bench", "bench-password-1"
CACHE = ROOT / "var" / "bench"
MAX_AGE = timedelta(days=7)  # the history's future reservations begin 8 days after it was made
START_TIMEOUT = 600.0
LIMIT = 1.5
# The same benchmark on PEX before the checkpoints (commit 86b1503), once, on the same machine
# and databases, just after the figures this page was written with.
BEFORE = "every worker answered after 3.2 s on the empty log, 13.3 s on 98,069 events and 112 s on 979,040 (34×; one start each, at a load average of 3 to 4)"


def database(events: int) -> Path:
    """The cached database with about `events` events of history, made if missing or stale."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"coldstart-v{VERSION}-{events}.sqlite3"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        made = datetime.fromisoformat(json.loads(meta.read_text())["made"])
        if datetime.now(UTC) - made < MAX_AGE:
            return path
    print(f"[bench] coldstart: writing a history of {events:,} events (cached in {path.relative_to(ROOT)}) …", file=sys.stderr, flush=True)
    t = time.perf_counter()
    made, written = make_database(path, events)
    meta.write_text(json.dumps({"made": made.isoformat(), "events": written, "seconds": round(time.perf_counter() - t, 1)}))
    print(f"[bench] coldstart: {written:,} events written and prepared in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return path


def make_database(path: Path, events: int) -> tuple[datetime, int]:
    from pex.bootstrap import build_application, prepare_store
    from pex.domain.user import User
    from pex.settings import Settings

    partial = path.with_suffix(".partial")
    for p in CACHE.glob(partial.name + "*"):
        p.unlink()
    settings = Settings(database_url=f"sqlite:///{partial}", install_demo_pool=False)
    app = build_application(settings)
    now = datetime.now(UTC)
    try:
        written = write_history(app, events, now)
        user = User.register(USERNAME, app.password_hasher.hash(PASSWORD), False, now)
        app.save(user)
        written += 1
    finally:
        app.close()
    # What a PEX that served this history did at its last start: PEX's own preparation.
    prepare_store(replace(settings, install_demo_pool=True))
    with sqlite3.connect(partial) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(partial, path)
    for p in CACHE.glob(partial.name + "-*"):
        p.unlink()
    return now, written


def proposal(rng: random.Random) -> dict:
    # Inside the week before the history's future reservations: the testbed has room.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=rng.uniform(2, 24 * 6))
    return {
        "duration": 3600 * 1000,
        "numInstancesFixed": 1,
        "numInstancesOption": 0,
        "startTime": rfc1123(start),
        "template": "PEX Debian Etch 4.0 Template",
        "type": "SMALL",
    }


def answered_by(log: Path) -> dict[str, int]:
    """request id -> pid of the worker that logged answering it (negotiations only)."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "request" and record.get("route") == "/OpenPEX/reservations" and record.get("status") == 201:
            found[record["request_id"]] = record["pid"]
    return found


def cold_start(db: Path, workdir: Path) -> dict[int, float]:
    """Launch `pex serve` on a copy of `db`; seconds from the launch to the first answered
    negotiation of each worker (by pid)."""
    copy = workdir / "pex.sqlite3"
    shutil.copyfile(db, copy)
    with copy.open("rb+") as f:
        os.fsync(f.fileno())  # not timed: the copy's writeback must not fall into the start
    port = 20080 + random.randint(0, 2000)
    log = workdir / f"serve-{port}.log"
    env = {
        **os.environ,
        "PEX_DATABASE_URL": f"sqlite:///{copy}",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
    }
    for name in ("PEX_XEN_URL", "PEX_WORKERS", "PEX_THREADS", "PEX_EMBEDDED_WORKER", "PEX_PASSWORD_PROFILE"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}/OpenPEX/reservations"
    answered: dict[str, float] = {}  # request id -> seconds after launch
    lock, done = threading.Lock(), threading.Event()
    cmd = [sys.executable, "-m", "pex.cli", "serve", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
    launched = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            request_id = uuid.uuid4().hex
            try:
                r = requests.post(
                    url, json=proposal(rng), auth=(USERNAME, PASSWORD), timeout=START_TIMEOUT,
                    headers={"X-Request-ID": request_id, "Connection": "close"},
                )
            except requests.ConnectionError:
                done.wait(0.05)  # not listening yet
                continue
            if r.status_code == 201:
                with lock:
                    answered[request_id] = time.perf_counter() - launched
                # Decline the offer: one user holds at most 5 live offers (the quotas), and
                # the clients must go on being answered by negotiations, not by 409s.
                with contextlib.suppress(requests.RequestException):
                    requests.put(
                        f"{url}/{r.json()['proposal']['id']}", json={"reply": "REJECT"}, auth=(USERNAME, PASSWORD),
                        timeout=START_TIMEOUT, headers={"Connection": "close"},
                    )
            else:
                done.wait(0.05)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        deadline = launched + START_TIMEOUT
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"pex serve exited: {log.read_text()[-3000:]}")
            firsts: dict[int, float] = {}
            with lock:
                seen = dict(answered)
            for request_id, pid in answered_by(log).items():
                if request_id in seen:
                    firsts[pid] = min(firsts.get(pid, float("inf")), seen[request_id])
            if len(firsts) >= WORKERS:
                return firsts
            time.sleep(0.1)
        raise RuntimeError(f"not every worker answered within {START_TIMEOUT:.0f} s: {log.read_text()[-3000:]}")
    finally:
        done.set()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for thread in threads:
            thread.join(timeout=START_TIMEOUT)


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def run(quick: bool = False) -> Section:
    sizes = QUICK_SIZES if quick else SIZES
    loads = [load_average()]
    runs = 1 if quick else RUNS
    section = Section("Cold start on a long history", "make bench  (or: .venv/bin/python -m bench coldstart)")
    databases = {events: database(events) for events in sizes}
    slowest: dict[int, list[float]] = {events: [] for events in sizes}
    fastest: dict[int, list[float]] = {events: [] for events in sizes}
    # Round robin: a load that other work puts on the machine falls on every size alike.
    for _ in range(runs):
        for events, db in databases.items():
            workdir = Path(tempfile.mkdtemp(prefix="pex-bench-coldstart-"))
            try:
                firsts = cold_start(db, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            slowest[events].append(max(firsts.values()))
            fastest[events].append(min(firsts.values()))
            print(f"[bench] coldstart: {events:,} events: workers answered after {', '.join(f'{s:.2f} s' for s in sorted(firsts.values()))}", file=sys.stderr, flush=True)
            loads.append(load_average())
    rows, setup = [], []
    for events, db in databases.items():
        meta = json.loads(db.with_suffix(".json").read_text())
        setup.append(meta["seconds"])
        rows.append((events, meta["events"], statistics.median(fastest[events]), statistics.median(slowest[events]), db.stat().st_size))
    empty = rows[0][3]
    section.lines += [
        f"`pex serve` as `make run` starts it ({WORKERS} gunicorn workers, the embedded worker on its simulated pool,",
        "SQLite), on a copy of a database holding a history written by bench/history.py (reservations negotiated,",
        "confirmed, run and expired on the paper's five nodes, with lapsed offers, cancellations and rejections, and",
        "a few hundred reservations still to come) and prepared by PEX. From the launch,",
        f"{CLIENTS} clients POST proposals; a worker is ready when it answered its first negotiation.",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Median of {runs} start{'s' if runs > 1 else ''} of each, taken in turn. The databases were written and prepared once, in "
        + ", ".join(f"{seconds:.0f} s" for seconds in setup) + " (cached under var/bench/).",
        "",
        "| log | database | first worker answered | every worker answered | vs empty log |",
        "|---:|---:|---:|---:|---:|",
    ]
    for events, recorded, first, every, size in rows:
        label = "empty" if events == 0 else f"{recorded:,} events"
        section.lines.append(f"| {label} | {size / 2**20:,.1f} MiB | {first:.2f} s | {every:.2f} s | {every / empty:.2f}× |")
    ratio = rows[-1][3] / empty
    verdict = "within" if ratio <= LIMIT else "ABOVE"
    section.lines += [
        "",
        f"The start on {rows[-1][1]:,} events takes {ratio:.2f}× the start on an empty log ({verdict} the {LIMIT}×",
        "this benchmark allows). A process loads the start-up checkpoints (docs/architecture.md, \"Starting",
        "without folding the history\") and folds only the tail of the log after them; before them, every",
        "process folded the whole log: " + BEFORE + ".",
        "",
        f"The machine's load average was {min(loads):.1f} to {max(loads):.1f} during the run (2 cores: above 2, other work",
        "shared them, and every time above is longer than on a quiet machine; the ratio is what to compare).",
    ]
    return section
