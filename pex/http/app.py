"""create_app: the Falcon WSGI app, wired from the collaborators it is given."""

from __future__ import annotations

import json
import re

import falcon
import falcon.media

from pex.application import PexApplication
from pex.http import accounts, availability, instances, operations, pool, portal, problems, reservations
from pex.http.auth import BasicAuth, ClientAddress, LoginThrottle, OpenPexHeaders, VerificationCache
from pex.http.contract import RequestContract, ResponseContract, openapi
from pex.http.observability import Metrics, MetricsResource, RequestObserver
from pex.http.problems import Problem
from pex.projections.readmodels import ReadModels
from pex.settings import HttpSettings
from pex.wire import PEX_JSON


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


class OneReadOfTheLog:
    """Each request reads what the log held at its start or later, following it once (its
    first load; again after a save): pex.application.core.Core.begin_reads. Falcon runs
    every process_response whose process_request ran, whatever the request raised."""

    def __init__(self, application: PexApplication):
        self.application = application

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        self.application.begin_reads()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        self.application.end_reads()


class SecurityHeaders:
    """Headers on every reply but static files: never stored by a cache (replies carry one
    user's reservations, pages their session), never sniffed as another type; API replies
    also may not be framed nor run anything (the portal sets its own policy for pages)."""

    API_POLICY = "default-src 'none'; frame-ancestors 'none'"

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        if req.path.startswith("/static/"):
            return
        if resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", "no-store")
        if resp.get_header("Content-Security-Policy") is None:
            resp.set_header("Content-Security-Policy", self.API_POLICY)


class JsonBodies:
    """API bodies must say they are JSON (415 otherwise). Falcon would parse a body without a
    Content-Type as JSON: a cross-site `fetch(..., {mode: "no-cors"})` can send such a body
    (or text/plain) with the browser's cached Basic credentials, and only application/json
    needs a CORS preflight, which PEX never grants. The portal's forms have CSRF tokens."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource, params) -> None:
        if resource is None or getattr(resource, "portal", False) or not req.content_length:
            return
        media_type = (req.content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not re.fullmatch(r"application/[a-z0-9.+-]+\+json", media_type):
            raise Problem(
                415, "unsupported-media-type", "Unsupported media type",
                "Send the body as JSON, with Content-Type: application/json.",
            )


MAX_JSON_DEPTH = 16  # the deepest body of the API (a reply carrying a proposal) is 3
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
JSON_BRACKET = re.compile(r"[\[\]{}]")


def strict_json(text: str):
    """json.loads, refusing (ValueError, so a 400) what it would take but PEX cannot store or
    echo back: nesting deeper than MAX_JSON_DEPTH (deep enough, Python's recursive decoder
    fails outright), and lone UTF-16 surrogates ("\\ud800"), which no UTF-8 encoder accepts."""
    depth = deepest = 0
    for bracket in JSON_BRACKET.findall(JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    value = json.loads(text)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


def create_app(
    application: PexApplication,
    settings: HttpSettings | None = None,
    *,
    read_models: ReadModels | None = None,
    metrics: Metrics | None = None,
    response_contract: ResponseContract | None = None,
) -> falcon.App:
    """The API over `application` (which also carries the clock every command reads).

    The list endpoints and the portal's lists, welcome page and calendar read `read_models`
    (persisted views, caught up before each query); commands and GET-by-id use the
    application's aggregates. Without `read_models`, ReadModels(application) is built here,
    making its tables if the application's CREATE_TABLE setting allows (tests).

    Middleware order matters: the observer first (request id, timing), the security headers
    (their process_response runs after the portal's, which set a page's own), then the body
    limit, then authentication (so an anonymous caller gets 401 before any 400 about its
    body), then the media type of bodies (415), then the OpenAPI request contract. A
    `response_contract` (or settings.validate_responses) checks every response against the
    OpenAPI document too (tests)."""
    settings = settings or HttpSettings()
    metrics = metrics or Metrics(settings.metrics_dir)
    read_models = read_models if read_models is not None else ReadModels(application)
    spec = openapi()
    # One throttle for the API and the portal, counting in the store (shared by every worker).
    throttle = LoginThrottle(
        application.login_state, settings.login_failures_allowed, settings.login_lockout_seconds,
        settings.login_client_failures_allowed, clock=lambda: application.clock().timestamp(),
    )
    middleware: list = [
        RequestObserver(metrics, settings.log_requests),
        OneReadOfTheLog(application),
        SecurityHeaders(),
        BodyLimit(settings.max_body_bytes),
        ClientAddress(settings.trusted_proxies, settings.forwarded_header),
        *([OpenPexHeaders()] if settings.openpex_headers else []),  # taken as basic credentials
        BasicAuth(application.authenticate, VerificationCache(settings.auth_cache_seconds), throttle, application.get_user),
        JsonBodies(),
        RequestContract(spec),
    ]
    if response_contract is None and settings.validate_responses:
        response_contract = ResponseContract(spec)
    if response_contract:
        middleware.insert(1, response_contract)  # its process_response runs after the others'
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(loads=strict_json)
    app.resp_options.secure_cookies_by_default = False
    # PEX's form of a reply (pex.http.reservations.represent) is JSON under its own media type.
    app.resp_options.media_handlers[PEX_JSON] = app.resp_options.media_handlers[falcon.MEDIA_JSON]
    problems.install(app)

    routes = {
        "/healthz": operations.Health(),
        "/readyz": operations.Ready(application),
        "/metrics": MetricsResource(metrics, admin_only=settings.metrics_auth),
        "/OpenPEX/openapi.json": operations.OpenApiDocument(),
        "/OpenPEX/users": accounts.Users(application, settings.registration),
        "/OpenPEX/users/{username}": accounts.User(application),
        "/OpenPEX/users/{username}/ssh-keys": accounts.SshKeys(application),
        "/OpenPEX/users/{username}/credit": accounts.Credit(application),
        "/OpenPEX/users/{username}/credit/grants": accounts.CreditGrants(application),
        "/OpenPEX/users/{username}/webhook": accounts.Webhook(application),
        "/OpenPEX/users/{username}/webhook/deliveries": accounts.WebhookDeliveries(application),
        "/OpenPEX/reservations": reservations.Reservations(application, read_models),
        "/OpenPEX/reservations/{reservation_id:uuid}": reservations.Reservation(application),
        "/OpenPEX/reservations/{reservation_id:uuid}/activate": reservations.Activation(application),
        "/OpenPEX/reservations/{reservation_id:uuid}/release": reservations.Release(application),
        "/OpenPEX/reservations/{reservation_id:uuid}/extend": reservations.Extension(application),
        "/OpenPEX/availability": availability.Availability(application),
        "/OpenPEX/instances": instances.Instances(read_models, application),
        "/OpenPEX/instances/{vm_id:uuid}": instances.Instance(application),
        "/OpenPEX/instances/{vm_id:uuid}/start": instances.InstanceAction(application, "start"),
        "/OpenPEX/instances/{vm_id:uuid}/stop": instances.InstanceAction(application, "stop"),
        "/OpenPEX/instances/{vm_id:uuid}/reboot": instances.InstanceAction(application, "reboot"),
        "/OpenPEX/sizes": pool.Sizes(application),
        "/OpenPEX/sizes/{name}": pool.SizeResource(application),
        "/OpenPEX/templates": pool.Templates(application),
        "/OpenPEX/templates/{name}": pool.Template(application),
        "/OpenPEX/nodes": pool.Nodes(application),
        "/OpenPEX/nodes/{name}": pool.NodeResource(application),
        "/OpenPEX/nodes/{name}/drain": pool.NodeDrain(application),
        "/OpenPEX/quotas": pool.QuotasResource(application),
        "/OpenPEX/policies": pool.PoliciesResource(application),
        "/OpenPEX/quotas/users/{username}": pool.UserQuotas(application),
    }
    for template, resource in routes.items():
        app.add_route(template, resource)
    # The web portal at / (paper §3.4): session cookies, not Basic auth; outside the contract.
    portal.install(
        app, application, read_models, settings.portal,
        registration=settings.registration,
        throttle=throttle,
    )
    return app
