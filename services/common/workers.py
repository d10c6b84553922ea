"""A bounded worker pool: model work runs off the event loop, and excess work is refused.

gRPC's own thread pool would queue without limit; here a call that finds every worker busy
and the queue full is answered RESOURCE_EXHAUSTED at once, so memory stays bounded and the
caller (or Envoy) can retry elsewhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common import metrics
from services.common.errors import ResourceExhausted

T = TypeVar("T")


@dataclass(frozen=True)
class WorkResult(Generic[T]):
    value: T
    queue_seconds: float
    run_seconds: float


class WorkerPool:
    """``max_workers`` threads with at most ``max_queue`` items waiting behind them."""

    def __init__(self, max_workers: int, max_queue: int, name: str = "model") -> None:
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=name)
        self._capacity = max_workers + max_queue
        self._admitted = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def _admit(self) -> None:
        with self._lock:
            if self._admitted >= self._capacity:
                metrics.WORK_REJECTED.inc()
                raise ResourceExhausted(
                    f"server busy: {self._admitted} calls running or queued "
                    f"(limit {self._capacity}); retry later"
                )
            self._admitted += 1
            metrics.WORK_ADMITTED.set(self._admitted)

    def _release(self, _: Future[object]) -> None:
        # Released when the thread finishes, not when the caller stops waiting: a cancelled
        # call's work still occupies its worker until it returns.
        with self._lock:
            self._admitted -= 1
            metrics.WORK_ADMITTED.set(self._admitted)

    async def run(self, fn: Callable[..., T], *args: object) -> WorkResult[T]:
        """Run ``fn(*args)`` on a worker thread, carrying the caller's context (request id)."""
        self._admit()
        submitted = time.perf_counter()
        timing: dict[str, float] = {}
        ctx = contextvars.copy_context()

        def call() -> T:
            timing["start"] = time.perf_counter()
            try:
                return ctx.run(fn, *args)
            finally:
                timing["end"] = time.perf_counter()

        try:
            future = self._executor.submit(call)
        except BaseException:
            self._release(Future())
            raise
        future.add_done_callback(self._release)
        value = await asyncio.wrap_future(future)
        queue_seconds = timing["start"] - submitted
        metrics.QUEUE_WAIT.observe(queue_seconds)
        return WorkResult(value, queue_seconds, timing["end"] - timing["start"])

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
