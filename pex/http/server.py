"""Serving the API with gunicorn: `pex serve`, or `gunicorn -c python:pex.http.gunicorn_conf`.

The master prepares the store once (the event store's tables, the demo pool, the read models'
tables, caught up to the head of the log) and closes all of it before forking; each worker
builds its own application and read models after the fork, with CREATE_TABLE=n. Several
workers, and several hosts, share one PostgreSQL: the event store's optimistic concurrency
keeps them consistent. Prometheus metrics are merged across workers (multiprocess mode, in
HttpSettings.metrics_dir, which gunicorn hands its workers as PROMETHEUS_MULTIPROC_DIR).

The workers build from the settings of the process that forked them (pex.http.wsgi.configure,
or read once by pex.http.wsgi.settings under a bare gunicorn): nothing is passed to them by
writing the environment, but for the one variable prometheus_client reads, which gunicorn's
own `raw_env` sets.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from dataclasses import replace

from prometheus_client import multiprocess

from pex import bootstrap
from pex.http import observability, wsgi
from pex.http.logs import GUNICORN_LOGCONFIG, configure_logging
from pex.settings import HttpSettings, Settings

log = logging.getLogger("pex.http")


def reset_metrics_dir(directory: str | None) -> None:
    """Empty the metrics directory: samples of a previous run must not be merged in."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


# --- gunicorn hooks (also used by pex.http.gunicorn_conf) ---------------------------------


def on_starting(server) -> None:
    configure_logging()
    reset_metrics_dir(wsgi.settings().http.metrics_dir)
    # The workers build without creating tables or the demo pool (bootstrap.build_http_app).
    nodes = bootstrap.prepare_store(wsgi.settings())
    log.info("store ready", extra={"nodes": nodes})


def post_fork(server, worker) -> None:
    configure_logging()
    if wsgi.settings().http.metrics_dir:
        observability.write_samples_to_the_metrics_dir()


def post_worker_init(worker) -> None:
    """Build this worker's application before it takes requests. Not in post_fork: until the
    worker has installed its signal handlers, a SIGTERM that arrives during the (slowish)
    build would be lost and the stop would wait out the graceful timeout.

    Each worker takes equally good nodes in a tie order of its own (gunicorn numbers its
    workers from 1 as it starts them; the first keeps order 0, by name): workers deciding
    side by side then seldom take the same free node (pex.domain.placement.tie_order)."""
    wsgi.configure(replace(wsgi.settings(), placement_ties=worker.age - 1))
    wsgi.get_app()
    # What the build loaded (the start-up checkpoint's models, the tail folded after it, the
    # modules) stays for the worker's life: kept out of the collector's full passes, each of
    # which would walk it again. At 670,000 objects (a store of 420,000 events) a full pass
    # took 225 ms, a pause in whichever request met it; frozen, it takes none.
    gc.freeze()


def worker_exit(server, worker) -> None:
    wsgi.close()


def child_exit(server, worker) -> None:
    directory = wsgi.settings().http.metrics_dir
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)


def gunicorn_options(http: HttpSettings) -> dict:
    return {
        # prometheus_client's only way to learn the directory (observability.write_samples_to_the_metrics_dir).
        "raw_env": [f"PROMETHEUS_MULTIPROC_DIR={http.metrics_dir}"] if http.metrics_dir else [],
        "bind": http.bind,
        "workers": http.workers,
        # gthread whose threads only ever see requests that have fully arrived (pex.http.worker)
        "worker_class": "pex.http.worker.BufferingThreadWorker",
        "threads": http.threads,
        "timeout": 30,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,  # the app logs one JSON line per request itself
        "logconfig_dict": GUNICORN_LOGCONFIG,
        "control_socket_disable": True,  # one fixed socket path would clash between servers
        "on_starting": on_starting,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
    }


def serve(settings: Settings) -> None:
    """Run gunicorn in this process until it is stopped; its workers build from these settings."""
    wsgi.configure(settings)
    http = settings.http
    from gunicorn.app.base import BaseApplication

    class PexServer(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_options(http).items():
                self.cfg.set(key, value)

        def load(self):
            return wsgi.application

    PexServer().run()
