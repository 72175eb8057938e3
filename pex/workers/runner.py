"""One worker process: the timer and the monitors, on one application and one dispatcher, and
the follower that keeps the persisted read models and the ledger current.

`WorkerProcess.build(settings, worker_settings)` is the workers' composition root: it builds
the application (pex.bootstrap), the XenDispatcher for PEX_XEN_URL or, when no pool is
configured, for an in-process simulated pool with the paper's testbed, attaches the
dispatcher to the application, wires the timer and the monitors around one shared index
of the log, and builds the read models (pex.projections.readmodels). `start()` runs them on
threads; `stop()` ends them and closes everything.

Every read model of the process (the application's timeline and pending index, the dispatch
index, the persisted views and the ledger) is registered with the application's one follower
(pex.projections.follower), and is caught up every tick interval on a thread of its own from
one read of the log; the timer and the monitors fold the dispatch index before they select, and
the commands the timeline, through the same follower. Not inside the timer's tick: folding a long backlog (the first start after an upgrade) must not delay a due
start or end. The same thread keeps the start-up checkpoints current (the application's
timeline and index, and the dispatch index; pex.projections.checkpoints), at most every
CHECKPOINT_INTERVAL, so that a process that starts folds at most that much of the log. Catching up when nothing is new costs two small queries; several processes
may catch up at once (each batch is applied by exactly one).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from pex.projections.readmodels import ReadModels
from pex.settings import WorkerSettings
from pex.workers.dispatch import Dispatch
from pex.workers.index import DispatchIndex
from pex.workers.monitors import Monitors
from pex.workers.timer import TimerWorker
from pex.workers.webhooks import Notifier

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 10.0  # seconds

# The simulator's demo credentials (pex.adapters.xen.simulator.testbed.SimulatorConfig).
SIMULATOR_USERNAME, SIMULATOR_PASSWORD = "root", "xenroot"


class WorkerProcess:
    def __init__(
        self,
        app: Any,
        dispatcher: Any,
        settings: WorkerSettings,
        dispatch: Dispatch,
        simulator: Any = None,
        read_models: ReadModels | None = None,
        *,
        pool_configured: bool = False,
    ):
        """`pool_configured`: the dispatcher's pool is the truth about nodes (PEX_XEN_URL): it is
        synced at start and whenever its hosts change (pex.application.pool's sync_pool)."""
        self.app = app
        self.pool_configured = pool_configured
        self.dispatch = dispatch
        self.dispatcher = dispatcher
        self.settings = settings
        self.simulator = simulator
        self.read_models = read_models
        # This process dispatches and watches one pool's instances (`pex worker --pool`; without
        # PEX_POOLS, every instance is the one pool's, `default`).
        self.index = DispatchIndex(prepare_lead=settings.prepare_lead, pool=settings.pool)
        # The one follower of the process feeds every read model it keeps; the read-model
        # thread's tick folds them all from one read of the log (catch_up_read_models).
        app.follower.register(self.index.read_model(app))
        if read_models is not None:
            app.follower.register(read_models)
        self.timer = TimerWorker(
            app, self.index, dispatch=dispatch, node_grace=settings.node_grace, threads=settings.threads
        )
        self.watcher = dispatcher.watcher(timeout=settings.watch_timeout, retry_delay=1.0)
        self.monitors = Monitors(
            app, self.watcher, self.index, guest_timeout=settings.guest_timeout, resync_interval=settings.resync,
            dispatcher=dispatcher, sync_pool=self.sync_pool if pool_configured else None,
            pool=settings.pool, unreachable_after=settings.node_grace.total_seconds(),
        )
        # Users are told on threads of their own: a receiver that is down or slow holds only them.
        self.notifier = Notifier(app)
        self._notifier_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._checkpointed = float("-inf")

    def sync_pool(self) -> None:
        """Make the pool's hosts the nodes (logged, not raised: the monitors' next change, or
        the next start, tries again)."""
        try:
            self.app.sync_pool(self.dispatch.enactment.inventory(), self.settings.pool_reserve, self.settings.pool)
        except Exception as error:
            log.warning("could not sync the pool %s: %s", self.settings.pool, error, exc_info=log.isEnabledFor(logging.DEBUG))

    def start(self) -> WorkerProcess:
        if self.pool_configured:
            self.sync_pool()
        self._threads = [
            threading.Thread(target=self.timer.run, args=(self._stop, self.settings.tick), name="pex-timer", daemon=True),
            threading.Thread(target=self.monitors.run, args=(self._stop,), name="pex-monitors", daemon=True),
        ]
        if self.read_models is not None:
            self._threads.append(
                threading.Thread(target=self.follow_read_models, name="pex-read-models", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        self._notifier_thread = threading.Thread(target=self.notifier.run, args=(self._stop,), name="pex-webhooks",
                                                 daemon=True)
        self._notifier_thread.start()
        log.info("worker %s running (%s)", self.dispatch.worker_id, self.dispatcher.url)
        return self

    def catch_up_read_models(self) -> int | None:
        """Fold what is new into the read models and seal it in the ledger; the position they
        reached, or None when they could not (logged: the next tick tries again)."""
        if self.read_models is None:
            return None
        try:
            self.app.follower.follow()  # the timeline, the dispatch index and the views, at once
            return self.read_models.catch_up()
        except Exception as error:
            log.warning("read models could not catch up: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))
            return None

    def keep_checkpoints(self) -> None:
        """Save the start-up checkpoints if the log moved and the last save is old enough."""
        if time.monotonic() - self._checkpointed < CHECKPOINT_INTERVAL:
            return
        self._checkpointed = time.monotonic()
        try:
            self.app.follow()
            self.app.save_checkpoint()
            self.index.follow(self.app)
            self.index.save_checkpoint(self.app)
        except Exception as error:
            log.warning("checkpoints could not be saved: %s", error, exc_info=log.isEnabledFor(logging.DEBUG))

    def follow_read_models(self) -> None:
        while not self._stop.is_set():
            self.catch_up_read_models()
            self.keep_checkpoints()
            self._stop.wait(self.settings.tick)

    def stop(self) -> None:
        self._stop.set()
        timer, monitors, *followers = self._threads or (None, None)
        if timer is not None:
            # Let the dispatches under way finish and record their outcome; one that hangs is
            # abandoned, and its claim lapses for another worker to repeat.
            timer.join(timeout=30.0)
        if monitors is not None:
            # It may sit in event.from for up to watch_timeout, waiting for news it would no
            # longer record: a daemon thread, it goes with the process.
            monitors.join(timeout=1.0)
        self.timer.close(wait=timer is None or not timer.is_alive())
        if monitors is None or not monitors.is_alive():
            self.watcher.close()  # its session is the monitor thread's while that runs
        for follower in followers:
            follower.join(timeout=30.0)  # a batch in flight commits or rolls back
        if self._notifier_thread is not None:
            # An attempt under way takes at most the webhook timeout; one abandoned is tried again.
            self._notifier_thread.join(timeout=self.notifier.settings.timeout + 5.0)
        self.notifier.close(wait=self._notifier_thread is None or not self._notifier_thread.is_alive())
        if self.read_models is not None and not any(f.is_alive() for f in followers):
            self.read_models.close()
        self.dispatcher.close()
        self.app.close()
        if self.simulator is not None:
            self.simulator.stop()

    def run_until_signalled(self, extra_stop: threading.Event | None = None) -> None:
        """Run until SIGTERM or SIGINT (or `extra_stop`), then stop cleanly."""
        stopping = extra_stop or threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            stopping.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        self.start()
        try:
            while not stopping.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()
