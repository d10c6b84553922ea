"""Failures of OpenAI-compatible APIs (the official ``openai`` client), mapped onto Chorus errors.

One table for every backend that calls such an API (speech to text, text to speech, text
generation), so a refused key, a rate limit or an outage reads the same whatever the service.
The API key is redacted from anything the remote echoes back.
"""

from __future__ import annotations

import openai

from services.common.errors import (
    ChorusError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)

__all__ = ["remote_error"]

_MAX_REMOTE_MESSAGE = 300


def remote_error(exc: openai.OpenAIError, secret: str, what: str = "API") -> ChorusError:
    """Map a client failure onto the Chorus error (and so the gRPC status) it stands for.

    401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 400/413/415/422
    INVALID_ARGUMENT, 429 RESOURCE_EXHAUSTED, timeouts DEADLINE_EXCEEDED, 5xx, connection
    failures and anything else UNAVAILABLE (the caller may retry, possibly elsewhere).
    """
    if isinstance(exc, openai.APITimeoutError):
        return DeadlineExceeded(f"the {what} did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return Unavailable(f"the {what} cannot be reached: {_redact(str(exc), secret)}")
    if not isinstance(exc, openai.APIStatusError):
        return Unavailable(f"the {what} failed: {_redact(str(exc), secret)}")
    status = exc.status_code
    detail = _redact(_remote_message(exc), secret)
    kinds: dict[int, tuple[type[ChorusError], str]] = {
        401: (Unauthenticated, "refused the API key"),
        403: (PermissionDenied, "denied access"),
        404: (NotFound, "does not know the model or endpoint"),
        429: (Overloaded, "is rate-limiting or out of quota"),
    }
    if status in kinds:
        kind, summary = kinds[status]
        return kind(f"the {what} {summary} ({status}): {detail}")
    if status in (400, 413, 415, 422):
        return InvalidArgument(f"the {what} rejected the request ({status}): {detail}")
    return Unavailable(f"the {what} failed ({status}): {detail}")


def _remote_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:_MAX_REMOTE_MESSAGE]
        if isinstance(error, str):
            return error[:_MAX_REMOTE_MESSAGE]
    return (exc.message or "")[:_MAX_REMOTE_MESSAGE]


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "[redacted]") if secret else text
