"""gunicorn configuration for PEX: `gunicorn -c python:pex.http.gunicorn_conf`.

The same settings and hooks as `pex serve` (PEX_BIND, PEX_WORKERS, PEX_THREADS). gunicorn
reads every public name here as a setting, so helpers are imported under private names.
Set PROMETHEUS_MULTIPROC_DIR in the environment for metrics across workers.
"""

from pex.http.server import gunicorn_options as _options
from pex.settings import Settings as _Settings

wsgi_app = "pex.http.wsgi:application"
globals().update(_options(_Settings.from_env().http))
