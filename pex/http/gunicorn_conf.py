"""gunicorn configuration for PEX: `gunicorn -c python:pex.http.gunicorn_conf`.

The same settings and hooks as `pex serve` (PEX_BIND, PEX_WORKERS, PEX_THREADS). gunicorn
reads every public name here as a setting, so helpers are imported under private names.
Set PROMETHEUS_MULTIPROC_DIR in the environment for metrics across workers. The settings are
read once, here (pex.http.wsgi.settings), and the hooks and the forked workers use the same.
"""

from pex.http import wsgi as _wsgi
from pex.http.server import gunicorn_options as _options

wsgi_app = "pex.http.wsgi:application"
globals().update(_options(_wsgi.settings().http))
