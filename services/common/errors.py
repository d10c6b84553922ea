"""Domain errors and their one mapping onto gRPC status codes.

Backends and servicers raise these; the server interceptor turns them into a status with a
clear message and, when a request field is at fault, a ``google.rpc.BadRequest`` detail.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "ChorusError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UpstreamError",
    "from_rpc_error",
    "to_rpc_status",
]


class ChorusError(Exception):
    """Base class: an error whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(ChorusError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ChorusError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ChorusError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


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

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def from_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError, service: str) -> UpstreamError:
    """Wrap a failed downstream call, naming the service so the caller knows where it failed."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return UpstreamError(code, f"{service}: {details}")


def to_rpc_status(error: ChorusError) -> status_pb2.Status:
    """The rich ``google.rpc.Status`` for an error (a BadRequest detail when a field is named)."""
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
    return status


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    code: getattr(code_pb2, code.name) for code in grpc.StatusCode
}
