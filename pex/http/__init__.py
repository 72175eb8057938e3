"""PEX's REST API (the paper's Table 2, under /OpenPEX/) on Falcon, served by gunicorn.

`pex.http.app.create_app(application, settings)` builds the WSGI app from its collaborators;
`pex.http.wsgi:application` is what gunicorn loads; `pex serve` runs gunicorn. Nothing
happens at import time, and importing this package imports no submodule (prometheus_client
must see PROMETHEUS_MULTIPROC_DIR before its first import, which `pex serve` arranges).
"""
