"""Endpoints for operators and machines: liveness, readiness, the OpenAPI document."""

from __future__ import annotations

import falcon

from pex.application import PexApplication
from pex.http.contract import spec_json
from pex.http.problems import Problem


class Health:
    """/healthz: the process is up and answering."""

    auth = None
    contract = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class Ready:
    """/readyz: the event store answers a query."""

    auth = None
    contract = False

    def __init__(self, application: PexApplication):
        self.application = application

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self.application.recorder.max_notification_id()
        except Exception as error:
            raise Problem(
                503, "not-ready", "The event store is not reachable", type(error).__name__,
                headers={"Retry-After": "5"},
            ) from None
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ready\n"


class OpenApiDocument:
    """/OpenPEX/openapi.json: the contract, public so clients and tools can fetch it."""

    auth = None
    contract = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.text = spec_json()
