"""Serving the API with gunicorn: `pex serve`, or `gunicorn -c python:pex.http.gunicorn_conf`.

The master prepares the store once (the event store's tables, the demo pool, the read models'
tables, caught up to the head of the log) and closes all of it before forking; each worker
builds its own application and read models after the fork, with CREATE_TABLE=n. Several
workers, and several hosts, share one PostgreSQL: the event store's optimistic concurrency
keeps them consistent. Prometheus metrics are merged across workers (multiprocess mode).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace

from pex.http.logs import GUNICORN_LOGCONFIG
from pex.http.settings import HttpSettings
from pex.settings import Settings

log = logging.getLogger("pex.http")


def prepare_store(settings: Settings) -> int:
    """Create the tables (the read models' too, caught up to the head of the log, so that no
    worker's first request folds a backlog) and, on an empty store, the demo pool; bring the
    start-up checkpoints to the head of the log, so that every process that starts next folds
    nothing more; return the number of nodes. Each step costs what was recorded since the
    last process followed the log, not the history. Closes every connection it opened: the
    caller may fork next."""
    from pex.bootstrap import build_application
    from pex.projections.readmodels import prepare_read_models
    from pex.workers.index import DispatchIndex

    application = build_application(replace(settings, create_tables=True))
    try:
        progress = prepare_read_models(application)
        if progress.events:
            log.info("read models caught up", extra={"events": progress.events, "position": progress.position})
        nodes = len(application.nodes())  # from the checkpoint, and the tail after it
        application.save_checkpoint()
        # The workers keep theirs current; one left far behind (no worker ran) is brought up here.
        if DispatchIndex.lag(application) >= application.checkpoint_every:
            dispatch = DispatchIndex()
            dispatch.follow(application)
            dispatch.save_checkpoint(application)
        return nodes
    finally:
        application.close()


def reset_metrics_dir() -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR: samples of a previous run must not be merged in."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


# --- gunicorn hooks (also used by pex.http.gunicorn_conf) ---------------------------------


def on_starting(server) -> None:
    from pex.http.logs import configure_logging

    configure_logging()
    reset_metrics_dir()
    nodes = prepare_store(Settings.from_env())
    os.environ["PEX_CREATE_TABLES"] = "n"  # for the workers, whatever was set before
    log.info("store ready", extra={"nodes": nodes})


def post_fork(server, worker) -> None:
    from pex.http.logs import configure_logging

    configure_logging()


def post_worker_init(worker) -> None:
    """Build this worker's application before it takes requests. Not in post_fork: until the
    worker has installed its signal handlers, a SIGTERM that arrives during the (slowish)
    build would be lost and the stop would wait out the graceful timeout."""
    from pex.http import wsgi

    wsgi.get_app()


def worker_exit(server, worker) -> None:
    from pex.http import wsgi

    wsgi.close()


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def gunicorn_options(http: HttpSettings) -> dict:
    return {
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


def serve(http: HttpSettings) -> None:
    """Run gunicorn in this process until it is stopped."""
    from gunicorn.app.base import BaseApplication

    class PexServer(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_options(http).items():
                self.cfg.set(key, value)

        def load(self):
            from pex.http import wsgi

            return wsgi.application

    PexServer().run()
