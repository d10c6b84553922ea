"""The one server interceptor: request ids, metrics and the error-to-status mapping.

Every servicer method of every service goes through it, so no servicer has to remember to
count, log or translate errors itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from services.common import metrics
from services.common.errors import ChorusError, to_rpc_status
from services.common.logs import request_id

__all__ = ["REQUEST_ID_KEY", "ServiceInterceptor"]

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"


def _request_id_from(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and value:
            return str(value)[:128]
    return uuid.uuid4().hex


def _status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ChorusError):
        return exc.code, exc.message
    log.error("unhandled error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error; see the service log"


async def _abort_for(exc: BaseException, scope: _CallScope) -> None:
    """Record the call's outcome, then send the status (metrics first: a client that reads
    them right after its error must see it counted)."""
    code, message = _status_for(exc)
    scope.close(code.name)
    if isinstance(exc, ChorusError):
        await scope.context.abort_with_status(rpc_status.to_status(to_rpc_status(exc)))
    await scope.context.abort(code, message)


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler: sets the request id, maps errors to statuses and records metrics."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.health") or method.startswith("/grpc.reflection"):
            return handler
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary
            wrapped = _wrap_unary(method, inner)
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        else:
            inner = handler.unary_stream or handler.stream_stream
            wrapped = _wrap_stream(method, inner)
            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _CallScope:
    """Per-call bookkeeping shared by the unary and streaming wrappers."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self.context = context
        self.started = time.perf_counter()
        rid = _request_id_from(context)
        # Each call runs in its own task (its own context copy), so the id never leaks into
        # another call and needs no reset; a stream may even be finalized in another context.
        request_id.set(rid)
        self.closed = False
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        metrics.IN_FLIGHT.labels(method).inc()

    def close(self, code: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        code = code or _status_name(self.context)
        metrics.IN_FLIGHT.labels(self.method).dec()
        metrics.REQUESTS.labels(self.method, code).inc()
        metrics.LATENCY.labels(self.method).observe(time.perf_counter() - self.started)


def _wrap_unary(method: str, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        scope = _CallScope(method, context)
        try:
            return await inner(request, context)
        except _PASS_THROUGH as exc:
            scope.close(None if isinstance(exc, grpc.aio.AbortError) else "CANCELLED")
            raise
        except Exception as exc:  # every error must become a status
            await _abort_for(exc, scope)
        finally:
            scope.close()

    return handle


def _wrap_stream(method: str, inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        scope = _CallScope(method, context)
        try:
            async for response in inner(request, context):
                yield response
        except (*_PASS_THROUGH, GeneratorExit) as exc:
            scope.close(None if isinstance(exc, grpc.aio.AbortError) else "CANCELLED")
            raise
        except Exception as exc:  # every error must become a status
            await _abort_for(exc, scope)
        finally:
            scope.close()

    return handle


_PASS_THROUGH: tuple[type[BaseException], ...] = (
    grpc.aio.AbortError,
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
)
