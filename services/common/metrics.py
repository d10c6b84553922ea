"""Prometheus metrics shared by all services (one process serves one service)."""

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "IN_FLIGHT",
    "LATENCY",
    "MODEL_LOADED",
    "MODEL_LOAD_SECONDS",
    "QUEUE_WAIT",
    "REQUESTS",
    "WORK_ADMITTED",
    "WORK_REJECTED",
    "serve_metrics",
]

REQUESTS = Counter(
    "chorus_grpc_requests_total",
    "gRPC calls handled, by method and final status code.",
    ["method", "code"],
)
LATENCY = Histogram(
    "chorus_grpc_request_seconds",
    "Time from a call's arrival to its last response.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
IN_FLIGHT = Gauge("chorus_grpc_in_flight", "Calls being handled now.", ["method"])
MODEL_LOAD_SECONDS = Gauge(
    "chorus_model_load_seconds", "Time the last load of each model took.", ["model"]
)
MODEL_LOADED = Gauge("chorus_model_loaded", "1 while the model is in memory.", ["model"])
QUEUE_WAIT = Histogram(
    "chorus_worker_queue_seconds",
    "Time work waited for a free model worker.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
WORK_ADMITTED = Gauge("chorus_worker_admitted", "Work items running or queued for a worker.")
WORK_REJECTED = Counter(
    "chorus_worker_rejected_total",
    "Work refused with RESOURCE_EXHAUSTED because the queue was full.",
)


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics over HTTP on a daemon thread."""
    start_http_server(port, addr=host)
