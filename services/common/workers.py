"""A bounded worker pool: model work runs off the event loop, and excess work is refused.

gRPC's own thread pool would queue without limit; here a call that finds every worker busy
and the queue full is answered RESOURCE_EXHAUSTED at once, so memory stays bounded and the
caller (or Envoy) can retry elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from services.common import metrics
from services.common.errors import Overloaded

__all__ = ["WorkResult", "WorkerPool"]

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
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The worker threads, for work outside the admission bound (loading the models)."""
        return self._executor

    @property
    def capacity(self) -> int:
        return self._capacity

    def _admit(self, wait: bool) -> asyncio.Future[None] | None:
        """Take a place, or (``wait``) a future that resolves when a place is handed over."""
        with self._lock:
            if self._admitted < self._capacity and not self._waiters:
                self._admitted += 1
                metrics.WORK_ADMITTED.set(self._admitted)
                return None
            if not wait:
                metrics.WORK_REJECTED.inc()
                raise Overloaded(
                    f"server busy: {self._admitted} calls running or queued "
                    f"(limit {self._capacity}); retry later"
                )
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
            return waiter

    async def _admitted_when_free(self, waiter: asyncio.Future[None]) -> None:
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                entry = next((e for e in self._waiters if e[1] is waiter), None)
                if entry is not None:
                    self._waiters.remove(entry)  # never handed a place: nothing to give back
                    raise
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a place, but the caller went away at the same time
            raise  # else the hand-over sees the cancelled waiter and passes the place on

    def _release(self, _: object = None) -> None:
        # Released when the thread finishes, not when the caller stops waiting: a cancelled
        # call's work still occupies its worker until it returns. A waiting caller takes the
        # place over directly, so work refused at once cannot overtake it.
        with self._lock:
            if self._waiters:
                loop, waiter = self._waiters.popleft()
                # Its loop closed (the server stopped): free the place instead.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._hand_over, waiter)
                    return
            self._admitted -= 1
            metrics.WORK_ADMITTED.set(self._admitted)

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            self._release()
        else:
            waiter.set_result(None)

    async def run(self, fn: Callable[..., T], *args: object, wait: bool = False) -> WorkResult[T]:
        """Run ``fn(*args)`` on a worker thread, carrying the caller's context (request id).

        A full pool refuses the call at once (Overloaded), unless ``wait``: then the call
        waits, first come first served, for a place. Waiting is for work that an admitted call
        cannot do without (a stream's final segment, its voice activity detection), where
        refusing would only make the caller retry in a loop.
        """
        submitted = time.perf_counter()
        waiter = self._admit(wait)
        if waiter is not None:
            await self._admitted_when_free(waiter)
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
        raises (after the events it emitted), and Overloaded at once when the queue is
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
