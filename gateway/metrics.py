"""The gateway's own Prometheus metrics at ``GET /metrics``, summed over every gunicorn worker.

gunicorn runs several worker processes and a scrape reaches one of them, so each worker writes
its values to files in one folder (prometheus_client's multiprocess mode) and ``/metrics``
reads them all: ``prepare_multiprocess`` makes a fresh folder in the master before any worker
forks (counters of an earlier run must not come back), ``child_exit`` drops a dead worker's
gauges. Without that folder (tests, the werkzeug server) the values live in the app's own
registry, so each app counts only its own requests.

Labels are route templates (``/v1/artifacts/<artifact_id>``), methods and statuses, never a raw
path, a key or a tenant: the route is public (no key), like the probes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gateway.openapi import TEXT, documented

__all__ = [
    "MULTIPROCESS_ENV",
    "GatewayMetrics",
    "blueprint",
    "child_exit",
    "install",
    "metrics_of",
    "prepare_multiprocess",
    "route_of",
]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_EXTENSION = "chorus.metrics"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
UNMATCHED = "(unmatched)"
"""The route label of a request no route matched (404, 405): a raw path there would let any
client add series without end."""
REJECTIONS = ("rate_limited", "too_many_streams", "too_many_sessions")
"""The reasons a request is refused with 429 by the gateway itself."""

blueprint = Blueprint("metrics", __name__)


def prepare_multiprocess() -> Path:
    """In the gunicorn master, before the workers fork: a fresh folder for the workers' metric
    files, named by ``PROMETHEUS_MULTIPROC_DIR``, removed when the master exits.

    prometheus_client picks its value class when it is imported, which is before this runs
    (the app's modules import it), so the class is picked again here.
    """
    folder = Path(tempfile.mkdtemp(prefix="chorus-gateway-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(folder)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    master = os.getpid()

    def remove() -> None:
        if os.getpid() == master:  # a forked worker inherits this hook: only the master's runs
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return folder


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook (in the master): a dead worker's gauges stop counting."""
    if os.environ.get(MULTIPROCESS_ENV):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class GatewayMetrics:
    """The gateway's metrics, in one registry that ``/metrics`` serves."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_ENV))
        self.registry = CollectorRegistry()
        owner: CollectorRegistry | None = self.registry
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            owner = None  # each value goes to this process's file instead
        self.requests = Counter(
            "chorus_gateway_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=owner,
        )
        self.latency = Histogram(
            "chorus_gateway_request_seconds",
            "Time until the response starts (a stream's first event), by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=owner,
        )
        self.in_flight = Gauge(
            "chorus_gateway_in_flight",
            "Requests whose handler runs now: a realtime socket's for its whole life, a "
            "stream's until its first event (open streams: chorus_gateway_open_streams).",
            registry=owner,
            multiprocess_mode="livesum",
        )
        self.open_streams = Gauge(
            "chorus_gateway_open_streams",
            "Streamed responses (Server-Sent Events, streamed speech) open now.",
            registry=owner,
            multiprocess_mode="livesum",
        )
        self.open_sockets = Gauge(
            "chorus_gateway_open_sockets",
            "/v1/realtime sockets open now.",
            registry=owner,
            multiprocess_mode="livesum",
        )
        self.rejected = Counter(
            "chorus_gateway_rejected_total",
            "Requests refused with 429 by the gateway itself, by reason.",
            ["reason"],
            registry=owner,
        )
        for reason in REJECTIONS:
            self.rejected.labels(reason)  # every reason is scraped, at 0 until it happens

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)


def install(app: Flask) -> GatewayMetrics:
    """Give ``app`` its metrics; ``create_app`` calls it once."""
    metrics = GatewayMetrics()
    app.extensions[_EXTENSION] = metrics
    return metrics


def metrics_of(app: Flask | None = None) -> GatewayMetrics:
    found: GatewayMetrics = (app or current_app).extensions[_EXTENSION]
    return found


def route_of() -> tuple[str, str]:
    """The current request's labels: its route template (never the raw path) and method."""
    rule = request.url_rule
    method = request.method if request.method in _METHODS else "OTHER"
    return (rule.rule if rule is not None else UNMATCHED), method


@blueprint.get("/metrics")
@documented(
    "getMetrics",
    "health",
    (None, "Prometheus's text format"),
    media={"text/plain": TEXT},
    errors=(),
    public=True,
)
def metrics() -> Response:
    """The gateway's metrics

    Requests by route template, method and status; latency by route; requests in flight, open
    streams and realtime sockets; 429s by reason. Summed over every worker process. No key
    needed, and no label holds a path, key or tenant.
    """
    return Response(metrics_of().exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
