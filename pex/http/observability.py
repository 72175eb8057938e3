"""Request ids, one structured log line per request, and Prometheus metrics.

Logs are JSON lines on stderr (logger "pex.http.access" for requests, "pex.http" for the
rest). They carry the request id, method, route, status, latency and username, and never a
request header or body, so credentials cannot leak into them.

Metrics work with several gunicorn workers through prometheus-client's multiprocess mode:
when PROMETHEUS_MULTIPROC_DIR is set (by `pex serve`, before prometheus_client is imported),
each worker writes its samples there and /metrics merges them.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

import falcon
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector


access_log = logging.getLogger("pex.http.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


class Metrics:
    """PEX's metrics. Each instance has its own registry, so several apps can live in one
    process (tests); in multiprocess mode the samples go to files whatever the registry."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
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
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
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
        elapsed = time.perf_counter() - req.context.get("started", time.perf_counter())
        route = req.uri_template or "(unrouted)"
        status = resp.status_code
        self.metrics.requests.labels(req.method, route, str(status)).inc()
        self.metrics.latency.labels(req.method, route).observe(elapsed)
        resp.set_header("X-Request-ID", req.context.get("request_id", ""))
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
    auth = None
    contract = False

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self.metrics.exposition()
