"""Server-streamed gRPC calls as HTTP streams: a reader thread, heartbeats, cancellation.

A ``Pump`` reads a server-streaming call on its own thread into a queue, so the HTTP side can
wait for the next message with a timeout (sending an SSE heartbeat instead) and notice a client
that went away at the next write: the response generator's ``close()`` then cancels the call,
and the cancellation travels down to every model service working on it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class End:
    """The call finished: ``error`` is None on success."""

    error: grpc.RpcError | None = None


HEARTBEAT = object()
"""Returned by ``Pump.get`` when nothing arrived within the timeout."""


class Pump:
    def __init__(self, call: Any, name: str) -> None:
        self._call = call
        self._name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self.finished = False
        context = contextvars.copy_context()  # keeps the request id on the reader's log lines
        self._thread = threading.Thread(
            target=context.run, args=(self._read,), name=f"pump-{name}", daemon=True
        )
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self._call:
                self._queue.put(message)
        except grpc.RpcError as error:
            self._queue.put(End(error))
        except Exception as error:  # noqa: BLE001 - a bug here must still end the HTTP stream
            log.exception("reading %s failed", self._name)
            self._queue.put(End(_Internal(str(error))))
        else:
            self._queue.put(End())

    def get(self, timeout: float | None = None) -> Any:
        """The next message, an ``End``, or ``HEARTBEAT`` after ``timeout`` seconds."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return HEARTBEAT
        if isinstance(item, End):
            self.finished = True
        return item

    def messages(self, heartbeat: float | None = None) -> Iterator[Any]:
        """Messages (and heartbeats) until the end; the ``End`` is yielded last."""
        while True:
            item = self.get(heartbeat)
            yield item
            if isinstance(item, End):
                return

    def cancel(self, reason: str = "the HTTP client went away") -> None:
        """Cancel the call if it is still running (client disconnect, generator closed)."""
        if not self.finished:
            self._call.cancel()
            log.info("%s cancelled: %s", self._name, reason)
            self.finished = True


class _Internal(grpc.RpcError, grpc.Call):
    """A local failure dressed as a gRPC error, so one error path handles both."""

    def __init__(self, message: str) -> None:
        self._message = message

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.INTERNAL

    def details(self) -> str:
        return self._message

    def initial_metadata(self) -> tuple[()]:  # pragma: no cover - grpc.Call interface
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:  # pragma: no cover
        return False

    def time_remaining(self) -> float:  # pragma: no cover - the call is over: none remains
        return 0.0

    def cancel(self) -> bool:  # pragma: no cover
        return False

    def add_callback(self, callback: Any) -> bool:  # pragma: no cover
        return False


def sse(event: str | None, data: Any) -> str:
    """One Server-Sent Event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in payload.split("\n")) + "\n"


SSE_HEARTBEAT = ": keep-alive\n\n"
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
