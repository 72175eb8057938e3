"""create_app: the Falcon WSGI app, wired from the collaborators it is given."""

from __future__ import annotations

import falcon

from pex.application import PexApplication
from pex.http import accounts, instances, operations, pool, problems, reservations
from pex.http.auth import BasicAuth, LoginThrottle, VerificationCache
from pex.http.contract import RequestContract, ResponseContract, openapi
from pex.http.observability import Metrics, MetricsResource, RequestObserver
from pex.http.problems import Problem
from pex.http.settings import HttpSettings
from pex.http import portal
from pex.http.portal.settings import PortalSettings
from pex.projections.readmodels import ReadModels


class BodyLimit:
    """Refuses bodies over the limit (413) before anything reads them; bodies without a
    Content-Length (chunked) get 411, so the limit cannot be sidestepped."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        length = req.content_length
        if length is None:
            if req.get_header("Transfer-Encoding"):
                raise Problem(411, "length-required", "Length required", "Send a Content-Length header.")
            return
        if length > self.max_bytes:
            raise Problem(
                413, "payload-too-large", "Request body too large",
                f"The body has {length} bytes; at most {self.max_bytes} are accepted.",
            )


def create_app(
    application: PexApplication,
    settings: HttpSettings | None = None,
    *,
    read_models: ReadModels | None = None,
    metrics: Metrics | None = None,
    response_contract: ResponseContract | None = None,
    portal_settings: PortalSettings | None = None,
) -> falcon.App:
    """The API over `application` (which also carries the clock every command reads).

    The list endpoints and the portal's lists, welcome page and calendar read `read_models`
    (persisted views, caught up before each query); commands and GET-by-id use the
    application's aggregates. Without `read_models`, ReadModels(application) is built here,
    making its tables if the application's CREATE_TABLE setting allows (tests).

    Middleware order matters: the observer first (request id, timing), then the body limit,
    then authentication (so an anonymous caller gets 401 before any 400 about its body),
    then the OpenAPI request contract. A `response_contract` (or settings.validate_responses)
    checks every response against the OpenAPI document too (tests)."""
    settings = settings or HttpSettings()
    metrics = metrics or Metrics()
    read_models = read_models if read_models is not None else ReadModels(application)
    spec = openapi()
    middleware: list = [
        RequestObserver(metrics, settings.log_requests),
        BodyLimit(settings.max_body_bytes),
        BasicAuth(
            application.authenticate,
            VerificationCache(settings.auth_cache_seconds),
            LoginThrottle(settings.login_failures_allowed, settings.login_lockout_seconds),
        ),
        RequestContract(spec),
    ]
    if response_contract is None and settings.validate_responses:
        response_contract = ResponseContract(spec)
    if response_contract:
        middleware.insert(1, response_contract)  # its process_response runs after the others'
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.resp_options.secure_cookies_by_default = False
    problems.install(app)

    routes = {
        "/healthz": operations.Health(),
        "/readyz": operations.Ready(application),
        "/metrics": MetricsResource(metrics),
        "/OpenPEX/openapi.json": operations.OpenApiDocument(),
        "/OpenPEX/users": accounts.Users(application, settings.registration),
        "/OpenPEX/users/{username}": accounts.User(application),
        "/OpenPEX/reservations": reservations.Reservations(application, read_models),
        "/OpenPEX/reservations/{reservation_id:uuid}": reservations.Reservation(application),
        "/OpenPEX/reservations/{reservation_id:uuid}/activate": reservations.Activation(application),
        "/OpenPEX/instances": instances.Instances(read_models),
        "/OpenPEX/instances/{vm_id:uuid}": instances.Instance(application),
        "/OpenPEX/instances/{vm_id:uuid}/stop": instances.InstanceAction(application, "stop"),
        "/OpenPEX/instances/{vm_id:uuid}/reboot": instances.InstanceAction(application, "reboot"),
        "/OpenPEX/sizes": pool.Sizes(application),
        "/OpenPEX/sizes/{name}": pool.SizeResource(application),
        "/OpenPEX/templates": pool.Templates(application),
        "/OpenPEX/templates/{name}": pool.Template(application),
        "/OpenPEX/nodes": pool.Nodes(application),
        "/OpenPEX/nodes/{name}": pool.NodeResource(application),
        "/OpenPEX/quotas": pool.QuotasResource(application),
        "/OpenPEX/quotas/users/{username}": pool.UserQuotas(application),
    }
    for template, resource in routes.items():
        app.add_route(template, resource)
    # The web portal at / (paper §3.4): session cookies, not Basic auth; outside the contract.
    portal.install(
        app, application, read_models, portal_settings or PortalSettings.from_env(),
        registration=settings.registration,
        login_failures_allowed=settings.login_failures_allowed,
        login_lockout_seconds=settings.login_lockout_seconds,
    )
    return app
