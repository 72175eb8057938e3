"""Request ids, one structured log line per request, and Prometheus metrics.

Logs are JSON lines on stderr (logger "pex.http.access" for requests, "pex.http" for the
rest). They carry the request id, method, route, status, latency and username, and never a
request header or body, so credentials cannot leak into them.

Metrics work with several gunicorn workers through prometheus-client's multiprocess mode:
with a metrics directory (HttpSettings.metrics_dir: PROMETHEUS_MULTIPROC_DIR, or one that
`pex serve` makes), each worker writes its samples there (write_samples_to_the_metrics_dir, after the fork)
and /metrics merges them.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from http import HTTPStatus

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

access_log = logging.getLogger("pex.http.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

# Every label takes one of a known, small set of values, whatever a client sends: each new
# value is a new time series in every worker's file and in /metrics, for ever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUSES = frozenset(str(status.value) for status in HTTPStatus)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def status_label(status: int) -> str:
    return str(status) if str(status) in STATUSES else f"{str(status)[:1]}xx"


def route_label(req: falcon.Request) -> str:
    """The URI template the request was routed to (never a path: ids would be labels)."""
    return req.uri_template or "(unrouted)"


def write_samples_to_the_metrics_dir() -> None:
    """Put this process's metrics in prometheus_client's multiprocess mode, before any is made:
    their samples go to files in the metrics directory, which every worker's /metrics merges.

    The library takes that directory from one place only, the PROMETHEUS_MULTIPROC_DIR of the
    process's environment, which gunicorn gives its workers (its `raw_env` setting:
    pex.http.server.gunicorn_options). And it chooses its kind of value once, when first
    imported, which the serving process did before gunicorn set the variable: so a worker
    chooses again, here, right after the fork (the post_fork hook)."""
    values.ValueClass = values.MultiProcessValue()


class Metrics:
    """PEX's metrics. Each instance has its own registry, so several apps can live in one
    process (tests); in multiprocess mode (a `multiprocess_dir`, where write_samples_to_the_metrics_dir sent
    this process's samples) /metrics merges the samples of every process that wrote there."""

    def __init__(self, multiprocess_dir: str | None = None):
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.requests = Counter(
            "pex_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "pex_http_request_duration_seconds", "Time to answer an HTTP request", ["method", "route"],
            registry=self.registry,
        )
        self.replies = Counter(
            "pex_negotiation_replies", "Provider replies in negotiations, by reply type", ["reply"],
            registry=self.registry,
        )
        self.offers_expired = Counter(
            "pex_offers_expired", "Offers found lapsed when a user tried to accept or confirm them",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestObserver:
    """Falcon middleware, first in the chain: assigns the request id, times the request, logs
    one line and counts it when the response is done."""

    def __init__(self, metrics: Metrics, log_requests: bool = True):
        self.metrics, self.log_requests = metrics, log_requests

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()
        incoming = req.get_header("X-Request-ID")
        req.context.request_id = incoming if incoming and REQUEST_ID.match(incoming) else uuid.uuid4().hex
        req.context.metrics = self.metrics
        resp.set_header("X-Request-ID", req.context.request_id)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource, req_succeeded: bool) -> None:
        elapsed = time.perf_counter() - getattr(req.context, "started", time.perf_counter())
        route = route_label(req)
        status = resp.status_code
        method = method_label(req.method)
        self.metrics.requests.labels(method, route, status_label(status)).inc()
        self.metrics.latency.labels(method, route).observe(elapsed)
        resp.set_header("X-Request-ID", getattr(req.context, "request_id", ""))
        if self.log_requests:
            user = req.context.get("user")
            access_log.info(
                "request",
                extra={
                    "request_id": req.context.get("request_id"),
                    "method": req.method,
                    "route": route,
                    "path": req.path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "user": user.username if user else None,
                    "remote": req.remote_addr,
                },
            )


class MetricsResource:
    """/metrics: open by default (for a scraper on a private network), or only for an
    administrator's Basic credentials (PEX_METRICS_AUTH=on)."""

    contract = False

    def __init__(self, metrics: Metrics, admin_only: bool = False):
        self.metrics = metrics
        self.auth = "admin" if admin_only else None

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self.metrics.exposition()
