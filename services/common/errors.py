"""Domain errors and their one mapping onto gRPC status codes.

Backends and servicers raise these; the server interceptor turns them into a status with a
clear message and, when a request field is at fault, a ``google.rpc.BadRequest`` detail.

RESOURCE_EXHAUSTED has two meanings that a caller must treat differently, told apart by one
detail: ``ResourceExhausted`` is a limit on the request itself (too long, too large, too many
items), which no retry can pass; ``Overloaded`` is a lack of capacity (a full queue, too many
turns or sessions), which carries a ``google.rpc.RetryInfo`` saying when to try again. The
gateway answers the first 400 and the second 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "ChorusError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UpstreamError",
    "from_rpc_error",
    "retry_after_of",
    "to_rpc_status",
]


class ChorusError(Exception):
    """Base class: an error whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retry_after: float | None = None
    """Seconds after which the same call may succeed (sent as ``google.rpc.RetryInfo``)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        message = _clipped(message)
        super().__init__(message)
        self.message = message
        self.field = field


MAX_ERROR_MESSAGE_BYTES = 800
"""Most UTF-8 bytes of an error message; longer ones are cut. A message that quotes the
request (an unknown voice, a model id) can be as long as the request, and a status travels in
the trailing metadata three times (``grpc-message``, percent-encoded, and the rich status's
message and field description, base64); peers refuse trailers over 8 KiB, so a NOT_FOUND for a
100,000-character voice name reached the caller as RESOURCE_EXHAUSTED "received metadata size
exceeds hard limit" (found by tests/test_fuzz_grpc.py)."""


def _clipped(message: str) -> str:
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_ERROR_MESSAGE_BYTES:
        return message
    kept = data[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore")
    return f"{kept}... ({len(message) - len(kept)} more characters)"


class InvalidArgument(ChorusError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ChorusError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ChorusError):
    """A limit on the request (size, length, duration, count): the same request never passes."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Overloaded(ResourceExhausted):
    """No capacity now (a full queue, too many turns or sessions): retry after ``retry_after``."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FailedPrecondition(ChorusError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ChorusError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ChorusError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(ChorusError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ChorusError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(ChorusError):
    code = grpc.StatusCode.UNIMPLEMENTED


class UpstreamError(ChorusError):
    """A downstream service's failure, passed on with that service's status code."""

    def __init__(
        self, code: grpc.StatusCode, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError, service: str) -> UpstreamError:
    """Wrap a failed downstream call, naming the service so the caller knows where it failed
    (a ``RetryInfo`` is kept, so an overloaded service stays "retry later" upstream).

    A stream reset under the call (a replica killed mid-stream, seen through Envoy) reaches
    the caller as INTERNAL "Stream removed (RST_STREAM ...)": that is the service's loss, which
    a retry may pass, not a bug in it, so it is UNAVAILABLE and says what happened."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else str(error)) or ""
    if code == grpc.StatusCode.INTERNAL and "RST_STREAM" in details:
        return UpstreamError(
            grpc.StatusCode.UNAVAILABLE,
            f"{service}: the call was cut off mid-stream (its replica went away); try again",
        )
    return UpstreamError(code, f"{service}: {details}", retry_after=retry_after_of(error))


_STATUS_DETAILS_KEY = "grpc-status-details-bin"


def retry_after_of(error: grpc.RpcError) -> float | None:
    """The seconds of a failed call's ``google.rpc.RetryInfo``; None when it has none.

    Both kinds of failed call: a synchronous one (a ``grpc.Call``) and grpc.aio's
    ``AioRpcError`` (not a ``grpc.Call``: its status details are read from its trailers here,
    or an asyncio caller such as the orchestrator would lose them)."""
    status: status_pb2.Status | None = None
    if isinstance(error, grpc.Call):
        try:
            status = rpc_status.from_call(error)
        except ValueError:  # inconsistent status details
            return None
    elif isinstance(error, grpc.aio.AioRpcError):
        trailers = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
        value = dict(trailers).get(_STATUS_DETAILS_KEY)
        if isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def to_rpc_status(error: ChorusError) -> status_pb2.Status:
    """The rich ``google.rpc.Status`` for an error (a BadRequest detail when a field is named,
    a RetryInfo when a retry may succeed)."""
    status = status_pb2.Status(code=_CODE_NUMBERS[error.code], message=error.message)
    if error.field:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=error.message
                    )
                ]
            )
        )
        status.details.append(detail)
    if error.retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(timedelta(seconds=error.retry_after))
        detail = any_pb2.Any()
        detail.Pack(retry)
        status.details.append(detail)
    return status


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    code: getattr(code_pb2, code.name) for code in grpc.StatusCode
}
