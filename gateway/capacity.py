"""How many long-lived requests one worker process holds: open streams and realtime sockets.

Each holds one of the worker's gthread threads for its whole life, so both are bounded, each
by its own limit (``stream_limit``, ``realtime_session_limit``) and together by the threads
less one: the last thread always stays for plain requests, the probes among them. Past a
limit the request is refused with 429 and ``Retry-After`` before any work starts; the place is
given back when the server closes the response (for a stream, when its last byte is sent or
its client leaves).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Literal

from flask import Flask, Response, current_app, g

from gateway.context import settings_of
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics, metrics_of
from gateway.settings import GatewaySettings

__all__ = [
    "Capacity",
    "Kind",
    "admit_stream",
    "capacity_of",
    "install",
    "release_stream",
    "release_with",
]

Kind = Literal["stream", "socket"]
_EXTENSION = "chorus.capacity"


class Capacity:
    """One process's open streams and sockets (thread-safe), mirrored in the metrics' gauges."""

    def __init__(self, settings: GatewaySettings, metrics: GatewayMetrics) -> None:
        self._total = max(0, settings.threads - 1)
        self._limits: dict[Kind, int] = {
            "stream": settings.stream_limit,
            "socket": settings.realtime_session_limit,
        }
        self._open: dict[Kind, int] = {"stream": 0, "socket": 0}
        self._gauges = {"stream": metrics.open_streams, "socket": metrics.open_sockets}
        self._lock = threading.Lock()

    def limit(self, kind: Kind) -> int:
        return self._limits[kind]

    def open(self, kind: Kind) -> int:
        return self._open[kind]

    def take(self, kind: Kind) -> bool:
        """Take a place of ``kind`` (``release`` gives it back), unless its own limit or the
        threads' are reached."""
        with self._lock:
            if self._open[kind] >= self._limits[kind] or sum(self._open.values()) >= self._total:
                return False
            self._open[kind] += 1
        self._gauges[kind].inc()
        return True

    def release(self, kind: Kind) -> None:
        with self._lock:
            if self._open[kind] == 0:
                return
            self._open[kind] -= 1
        self._gauges[kind].dec()


def install(app: Flask, settings: GatewaySettings, metrics: GatewayMetrics) -> Capacity:
    """Give ``app`` its capacity; ``create_app`` calls it once (one app per worker process)."""
    capacity = Capacity(settings, metrics)
    app.extensions[_EXTENSION] = capacity
    return capacity


def capacity_of(app: Flask | None = None) -> Capacity:
    found: Capacity = (app or current_app).extensions[_EXTENSION]
    return found


def admit_stream() -> None:
    """Admit the current request's stream, or refuse it with 429 ``too_many_streams``: called
    by a route before it starts any work (for a route that streams only when asked, once the
    body says it will). ``release_with`` gives the place back with the response."""
    if g.get("stream_admitted"):
        return
    capacity = capacity_of()
    if not capacity.take("stream"):
        metrics_of().rejected.labels("too_many_streams").inc()
        raise ApiError(
            429,
            f"too many streams open on this gateway process (limit {capacity.limit('stream')}); "
            "retry later",
            "too_many_streams",
            retry_after=settings_of().busy_retry_after,
        )
    g.stream_admitted = True


def release_with(response: Response) -> None:
    """The app's ``after_request``: the request's stream, if it had one, gives its place back
    when the server closes ``response`` (its last byte sent, or its client gone), not when the
    handler returns (a stream is sent after that)."""
    if g.pop("stream_admitted", False):
        response.call_on_close(partial(capacity_of().release, "stream"))


def release_stream() -> None:
    """The app's teardown: a place that no response took over (``release_with`` did not run)
    is given back now."""
    if g.pop("stream_admitted", False):
        capacity_of().release("stream")
