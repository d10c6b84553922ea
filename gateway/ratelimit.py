"""Per-key rate limits: a token bucket per API key name, in each worker process.

The scope is one process (see ``GatewaySettings.rate_limit_rps``): a key's requests spread over
the workers, so it can reach up to ``workers`` times its rate in all; the gateway's global
limit is Envoy's local rate limit in front of it. Buckets are keyed by the key's name (never
the key), and there are at most as many as keys in force, so the table needs no eviction.
The clock is injectable, so tests run on a clock they move themselves.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from gateway.errors import ApiError
from gateway.keys import Principal
from gateway.metrics import metrics_of
from gateway.settings import GatewaySettings

__all__ = ["RateLimiter", "check_rate", "install", "limiter_of"]

_EXTENSION = "chorus.ratelimit"


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets by key name: ``rps`` tokens a second, at most ``burst`` held."""

    def __init__(self, rps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rps = rps
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, rps: float | None = None, burst: int | None = None) -> float:
        """Take a token of ``name``'s bucket: 0 when taken, else the seconds until one is
        there. ``rps`` and ``burst`` override the defaults (a key's own); a rate of 0 is no
        limit."""
        rps = self.rps if rps is None else rps
        burst = self.burst if burst is None else burst
        if rps <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._buckets[name] = _Bucket(float(burst), now)
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rps)
            bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / rps


def install(
    app: Flask, settings: GatewaySettings, clock: Callable[[], float] = time.monotonic
) -> RateLimiter:
    """Give ``app`` its limiter (``create_app`` calls it; a test calls it again with its own
    clock)."""
    limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst, clock)
    app.extensions[_EXTENSION] = limiter
    return limiter


def limiter_of(app: Flask | None = None) -> RateLimiter:
    found: RateLimiter = (app or current_app).extensions[_EXTENSION]
    return found


def check_rate(principal: Principal) -> None:
    """429 ``rate_limit_exceeded`` with ``Retry-After`` (seconds until a token, rounded up)
    when ``principal``'s bucket is empty."""
    wait = limiter_of().take(principal.name, principal.rate_limit_rps, principal.rate_limit_burst)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        metrics_of().rejected.labels("rate_limited").inc()
        raise ApiError(
            429,
            f"rate limit of this API key exceeded; retry in {seconds} s",
            "rate_limit_exceeded",
            retry_after=seconds,
        )
