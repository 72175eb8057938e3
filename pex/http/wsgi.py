"""The WSGI entry gunicorn loads: `pex.http.wsgi:application`.

Importing this module does nothing. The PexApplication (and its database pool) and the read
models the lists are served from are built on first use in each process, that is after
gunicorn forked the worker (eventsourcing notes, gotcha 1); the gunicorn hooks
(pex.http.server) build them right after the fork.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import falcon

from pex.bootstrap import build_application
from pex.http.app import create_app
from pex.http.settings import HttpSettings
from pex.projections.readmodels import ReadModels
from pex.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_app: falcon.App | None = None
_application = None
_read_models: ReadModels | None = None


def get_app() -> falcon.App:
    """This process's Falcon app, built from the environment on first call.

    Workers never create tables nor install the demo pool: the master did that once before
    forking (pex.http.server.prepare_store), and concurrent DDL from many workers fails."""
    global _app, _application, _read_models
    if _app is None:
        with _lock:
            if _app is None:
                settings = replace(Settings.from_env(), create_tables=False, install_demo_pool=False)
                _application = build_application(settings)
                # Load the start-up checkpoint and fold the tail now, before the first request;
                # a store that does not answer yet must not fail the worker's boot (the first
                # request that needs the timeline tries again).
                try:
                    _application.follow()
                except Exception as error:
                    log.warning("could not follow the log at start: %s", error)
                _read_models = ReadModels(_application, create_tables=False)
                _app = create_app(_application, HttpSettings.from_env(), read_models=_read_models)
    return _app


def close() -> None:
    """Close this process's read models and application (its database pool), if built."""
    global _app, _application, _read_models
    with _lock:
        if _read_models is not None:
            _read_models.close()
        if _application is not None:
            _application.close()
        _app = _application = _read_models = None


def application(environ, start_response):
    return get_app()(environ, start_response)
