"""The WSGI entry gunicorn loads: `pex.http.wsgi:application`.

Importing this module does nothing. The PexApplication (and its database pool) and the read
models the lists are served from are built on first use in each process, that is after
gunicorn forked the worker (eventsourcing notes, gotcha 1); the gunicorn hooks
(pex.http.server) build them right after the fork.

"""

from __future__ import annotations

import logging
import threading

import falcon

from pex.bootstrap import build_http_app
from pex.projections.readmodels import ReadModels
from pex.settings import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_app: falcon.App | None = None
_application = None
_read_models: ReadModels | None = None
# Set by the process that runs gunicorn (pex.http.server.serve): its workers are forked from
# it and build from these. Under a bare `gunicorn pex.http.wsgi:application`, the environment.
_settings: Settings | None = None


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def settings() -> Settings:
    """The settings this process serves with: the serving process's, or read once."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def get_app() -> falcon.App:
    """This process's Falcon app, built by pex.bootstrap from the environment on first call."""
    global _app, _application, _read_models
    if _app is None:
        with _lock:
            if _app is None:
                _app, _application, _read_models = build_http_app(settings())
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
