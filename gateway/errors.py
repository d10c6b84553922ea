"""The gateway's one error path: gRPC status -> HTTP status, and OpenAI's error JSON shape.

Every failure a client sees, whether found by the gateway (bad JSON, too large, wrong key) or
by a service (a gRPC status, with a ``google.rpc.BadRequest`` naming the field), leaves as
``{"error": {"message", "type", "param", "code"}}`` with the status from ``HTTP_STATUS``.

RESOURCE_EXHAUSTED is the one code with two answers, told apart by its details: with a
``google.rpc.RetryInfo`` (a full queue, too many turns or sessions) it is 429 with
``Retry-After``, the only 429 Chorus sends; without one it is a limit on the request (size,
length, duration), 400 ``limit_exceeded``, which OpenAI's clients do not retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import grpc
from chorus.v1 import orchestrator_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.responses import ErrorDetail, ErrorResponse
from services.common.errors import retry_after_of

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,  # 400 when it carries no RetryInfo (from_rpc_error)
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
"""The single mapping from gRPC status codes to HTTP status codes (Google's API mapping)."""

SERVICE_ERRORS: tuple[int, ...] = tuple(
    sorted(set(HTTP_STATUS.values()) & {s.value for s in HTTPStatus if s >= 400})
)
"""Every status a failed gRPC call can become, for the document (499, a client that left, is
not a standard status and never reaches that client)."""

_ERROR_TYPES: dict[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "server_error" if status >= 500 else "invalid_request_error"


@dataclass
class ApiError(Exception):
    """An error to return to the HTTP client; ``message`` is safe to show."""

    status: int
    message: str
    code: str
    param: str | None = None
    retry_after: float | None = None
    """Seconds for the ``Retry-After`` header of a 429 (every 429 has one; 1 when unset)."""

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate`` on a 401, ``Retry-After`` (whole seconds) on a 429."""
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        if self.status == 429:
            return {"Retry-After": str(max(1, math.ceil(self.retry_after or 1)))}
        return {}

    def body(self) -> dict[str, Any]:
        """The JSON body: ``ErrorResponse``, the shape ``/openapi.json`` gives every error."""
        detail = ErrorDetail(
            message=self.message, type=error_type(self.status), param=self.param, code=self.code
        )
        return ErrorResponse(error=detail).body()


def bad_request(message: str, param: str | None = None, code: str = "invalid_argument") -> ApiError:
    return ApiError(400, message, code, param)


def from_rpc_error(error: grpc.RpcError, service: str | None = None) -> ApiError:
    """Map a failed call, keeping the service's message and the field a BadRequest names;
    ``service`` names the one called, so "unavailable" says which."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or code.name.lower()
    param = None
    try:
        status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    except ValueError:  # inconsistent status details; keep the plain code and message
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    param = bad.field_violations[0].field
                    break
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"the {service or 'requested'} service is unavailable ({message})"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry_after = retry_after_of(error)
        if retry_after is None:
            return ApiError(400, message, "limit_exceeded", param)
        return ApiError(429, message, "resource_exhausted", param, retry_after)
    if code == grpc.StatusCode.NOT_FOUND and param == "model":
        return ApiError(404, message, "model_not_found", param)
    return ApiError(HTTP_STATUS.get(code, 500), message, code.name.lower(), param)


def event_error(error: orchestrator_pb2.TurnError) -> ApiError:
    """An ApiError for a TurnError event (its code is a gRPC status code name), mapped as
    ``from_rpc_error`` maps a status: RESOURCE_EXHAUSTED is 429 with ``Retry-After`` only when
    the event says when to retry (a lack of capacity), else 400 ``limit_exceeded``."""
    code = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        if error.retry_after_seconds > 0:
            return ApiError(
                429, error.message, "resource_exhausted", retry_after=error.retry_after_seconds
            )
        return ApiError(400, error.message, "limit_exceeded")
    return ApiError(HTTP_STATUS.get(code, 500), error.message, code.name.lower())
