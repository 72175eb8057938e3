"""The web portal of paper §3.4: server-rendered pages at / beside the API at /OpenPEX/.

Register and log in (a signed session cookie), a welcome page, a new reservation negotiated
until agreement, the reservations and instances screens, and a capacity calendar. Pages are
Jinja2 templates (pex/http/templates/) over plain HTML forms that work without JavaScript
(POST → 303 → GET); pex/http/static/ holds the vendored Pico CSS, the portal's own CSS and a
small script for progressive enhancement (the offer countdown, time-zone detection).

`install(app, application, read_models, ...)` adds the routes, the session middleware and HTML
error pages to the API's Falcon app. Pages that list (the welcome page, reservations,
instances, the calendar) read the persisted read models; a reservation's own page and every
action use the application. Portal resources say `auth = None` and `contract = False`, so the
API's Basic authentication and its OpenAPI contract middleware leave them alone.
"""

from __future__ import annotations

import logging
import os

import falcon

from pex.application import PexApplication
from pex.http import problems
from pex.http.auth import LoginThrottle
from pex.http.portal import resources as pages
from pex.http.portal.pages import Renderer
from pex.http.portal.secret import portal_secret
from pex.http.portal.sessions import CsrfRefused, PortalSessions
from pex.projections.readmodels import ReadModels
from pex.settings import PortalSettings

log = logging.getLogger("pex.http.portal")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
API_PREFIXES = ("/OpenPEX", "/healthz", "/readyz", "/metrics")

# Pages load only this site's own files; inline style attributes carry the calendar's bars.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeaders:
    """Falcon middleware: headers that keep portal pages from being framed or sniffed."""

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        if not is_portal_request(req):
            return
        resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "same-origin")
        if req.scheme == "https":
            resp.set_header("Strict-Transport-Security", "max-age=31536000")


def is_portal_request(req: falcon.Request) -> bool:
    """A page of the portal, or a browser asking for a path outside the API."""
    if req.context.get("portal"):
        return True
    if req.path.startswith(API_PREFIXES):
        return False
    return req.client_prefers(["application/json", "text/html"]) == "text/html"


def error_pages(renderer: Renderer):
    """An error handler for the whole app: HTML pages for the portal, the API's
    problem+json (pex.http.problems.handle) for everything else."""

    def handle(req: falcon.Request, resp: falcon.Response, error: Exception, params) -> None:
        if not is_portal_request(req):
            problems.handle(req, resp, error, params)
            return
        if isinstance(error, CsrfRefused):
            status, title = 403, "This form has expired"
            detail = "The form was sent from an old page or another site. Go back, reload the page and try again."
        elif isinstance(error, falcon.HTTPError):
            status, title = error.status_code, error.title or "Error"
            detail = error.description or ""
            if status == 404:
                title, detail = "Not found", "There is no such page, or it is not yours."
        else:
            problem = problems.to_problem(req, error)
            if problem is None:
                log.error("unhandled error", exc_info=error, extra={"path": req.path})
                status, title = 500, "Something went wrong"
                detail = f"The server failed. Quote the request id {req.context.get('request_id', '')} when reporting it."
            else:
                status, title, detail = problem.status_code, problem.title, problem.description or ""
                if status == 404:
                    title, detail = "Not found", "There is no such page, or it is not yours."
        for name, value in (getattr(error, "headers", None) or {}).items():
            if name.lower() != "www-authenticate":
                resp.set_header(name, value)
        renderer.render(req, resp, "error.html", status=status, title=title, detail=detail)

    return handle


def install(
    app: falcon.App,
    application: PexApplication,
    read_models: ReadModels,
    settings: PortalSettings,
    *,
    registration: bool = True,
    throttle: LoginThrottle,
) -> None:
    """Add the portal to `app` (after the API's routes and middleware are in place); `throttle`
    is the API's, so that failed logins count the same on both."""
    renderer = Renderer(application.currency)
    shared = pages.Portal(application, read_models, renderer, throttle, registration)
    app.add_middleware([PortalSessions(settings, portal_secret(settings), application), SecurityHeaders()])
    routes = {
        "/": pages.Welcome(shared),
        "/register": pages.Register(shared),
        "/login": pages.Login(shared),
        "/logout": pages.Logout(shared),
        "/preferences": pages.Preferences(shared),
        "/preferences/ssh-keys": pages.SshKeys(shared),
        "/preferences/credit": pages.CreditGrant(shared),
        "/preferences/webhook": pages.Webhook(shared),
        "/reservations": pages.Reservations(shared),
        "/reservations/new": pages.NewReservation(shared),
        "/reservations/{reservation_id:uuid}": pages.ReservationPage(shared),
        "/reservations/{reservation_id:uuid}/{action}": pages.ReservationAction(shared),
        "/instances": pages.Instances(shared),
        "/instances/{instance_id:uuid}/{action}": pages.InstanceAction(shared),
        "/calendar": pages.Calendar(shared),
    }
    for template, resource in routes.items():
        app.add_route(template, resource)
    app.add_static_route("/static", STATIC_DIR)
    handler = error_pages(renderer)
    app.add_error_handler(Exception, handler)
    app.add_error_handler(falcon.HTTPError, handler)
