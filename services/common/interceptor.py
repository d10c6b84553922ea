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
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from services.common import metrics
from services.common.errors import ChorusError, InvalidArgument, to_rpc_status
from services.common.logs import request_id

__all__ = ["REQUEST_ID_KEY", "ServiceInterceptor"]

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"


Context = grpc.aio.ServicerContext[Any, Any]
"""A call's context: the interceptor wraps every method, whatever its message types."""
UnaryHandler = Callable[[Any, Context], Awaitable[Any]]
StreamHandler = Callable[[Any, Context], AsyncIterator[Any]]
if TYPE_CHECKING:  # generic in grpc-stubs only: subscripting it fails at run time
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def _request_id_from(context: Context) -> str:
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
        # grpc.aio's context has abort_with_status (grpc >= 1.38); grpc-stubs 1.53 lacks it.
        await scope.context.abort_with_status(  # type: ignore[attr-defined]
            rpc_status.to_status(to_rpc_status(exc))
        )
    await scope.context.abort(code, message)


def _status_name(context: Context) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


class ServiceInterceptor(_Interceptor):
    """Wraps each handler: sets the request id, maps errors to statuses and records metrics."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method (the stubs say it cannot be; grpc says it can)
            return handler
        method = handler_call_details.method
        if method.startswith("/grpc.health") or method.startswith("/grpc.reflection"):
            return handler
        # grpc-stubs types a handler's behaviours as the synchronous API's; under grpc.aio they
        # are coroutine functions (unary responses) and async generators (streamed ones).
        unary = handler.unary_unary or handler.stream_unary
        stream = handler.unary_stream or handler.stream_stream
        wrapped: Callable[..., Any]
        if unary is not None:
            wrapped = _wrap_unary(method, cast(UnaryHandler, unary))
            factory = (
                grpc.unary_unary_rpc_method_handler
                if handler.unary_unary
                else grpc.stream_unary_rpc_method_handler
            )
        elif stream is not None:
            wrapped = _wrap_stream(method, cast(StreamHandler, stream))
            factory = (
                grpc.unary_stream_rpc_method_handler
                if handler.unary_stream
                else grpc.stream_stream_rpc_method_handler
            )
        else:
            return handler
        return factory(
            wrapped,
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Malformed:
    """A request whose bytes are not its message: the handler refuses it with
    INVALID_ARGUMENT. A deserializer that raised made grpc answer UNKNOWN "Unexpected
    DecodeError" before any handler ran (found by tests/test_fuzz_grpc.py)."""

    def __init__(self, name: str, error: Exception) -> None:
        self.error = InvalidArgument(f"the request is not a valid {name}: {error}")


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    owner = getattr(deserialize, "__self__", None)
    name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "message")

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as error:
            return _Malformed(name, error)

    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream's requests, refused at the first malformed one."""
    async for request in requests:
        if isinstance(request, _Malformed):
            raise request.error
        yield request


def _check(request: Any) -> Any:
    """A unary request as it is, or a stream's requests checked as they arrive."""
    if isinstance(request, _Malformed):
        raise request.error
    if hasattr(request, "__aiter__"):
        return _checked(request)
    return request


class _CallScope:
    """Per-call bookkeeping shared by the unary and streaming wrappers."""

    def __init__(self, method: str, context: Context) -> None:
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


def _wrap_unary(method: str, inner: UnaryHandler) -> UnaryHandler:
    async def handle(request: Any, context: Context) -> Any:
        scope = _CallScope(method, context)
        try:
            return await inner(_check(request), context)
        except _PASS_THROUGH as exc:
            scope.close(None if isinstance(exc, grpc.aio.AbortError) else "CANCELLED")
            raise
        except Exception as exc:  # every error must become a status
            await _abort_for(exc, scope)
        finally:
            scope.close()

    return handle


def _wrap_stream(method: str, inner: StreamHandler) -> StreamHandler:
    async def handle(request: Any, context: Context) -> AsyncIterator[Any]:
        scope = _CallScope(method, context)
        try:
            async for response in inner(_check(request), context):
                yield response
        except _STREAM_PASS_THROUGH as exc:
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
_STREAM_PASS_THROUGH: tuple[type[BaseException], ...] = (*_PASS_THROUGH, GeneratorExit)
