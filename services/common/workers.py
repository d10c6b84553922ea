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
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common import metrics
from services.common.errors import ResourceExhausted

T = TypeVar("T")
E = TypeVar("E")


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
    def executor(self) -> ThreadPoolExecutor:
        """The worker threads, for work outside the admission bound (loading the models)."""
        return self._executor

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

    async def stream(
        self, fn: Callable[[Callable[[E], None], threading.Event], T]
    ) -> AsyncIterator[E | WorkResult[T]]:
        """Run ``fn(emit, cancelled)`` on a worker; yield each emitted event, then its WorkResult.

        Events (tokens, steps) reach the caller as they are emitted. When the caller goes away
        (the gRPC call was cancelled or its deadline passed) ``cancelled`` is set, the backend
        returns at its next token or step, and its worker is free again. Raises what ``fn``
        raises (after the events it emitted), and ResourceExhausted at once when the queue is
        full.
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[E] = asyncio.Queue()  # bounded by the work itself
        cancelled = threading.Event()

        def emit(event: E) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        work = asyncio.ensure_future(self.run(fn, emit, cancelled))
        try:
            while not work.done():
                getter = asyncio.ensure_future(events.get())
                try:
                    await asyncio.wait({getter, work}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    getter.cancel()
                if getter.done() and not getter.cancelled():
                    yield getter.result()
            # The worker's last events were queued before its result was set (both go through
            # call_soon_threadsafe, in order), so none is lost here.
            while not events.empty():
                yield events.get_nowait()
            yield work.result()
        finally:
            cancelled.set()
            if not work.done():
                work.cancel()
            elif not work.cancelled():
                work.exception()  # mark it retrieved: raised above, or the caller went away

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
