"""Failures of OpenAI-compatible APIs (the official ``openai`` client), mapped onto Chorus errors.

One table for every backend that calls such an API (speech to text, text to speech, text
generation), so a refused key, a rate limit or an outage reads the same whatever the service.
The API key is redacted from anything the remote echoes back.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

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
_MAX_RETRY_AFTER = 3600.0
"""A remote's Retry-After is passed on up to an hour (a longer one is a quota, not a wait)."""


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
    if status == 429:
        return Overloaded(
            f"the {what} is rate-limiting or out of quota ({status}): {detail}",
            retry_after=_retry_after(exc),
        )
    kinds: dict[int, tuple[type[ChorusError], str]] = {
        401: (Unauthenticated, "refused the API key"),
        403: (PermissionDenied, "denied access"),
        404: (NotFound, "does not know the model or endpoint"),
    }
    if status in kinds:
        kind, summary = kinds[status]
        return kind(f"the {what} {summary} ({status}): {detail}")
    if status in (400, 413, 415, 422):
        return InvalidArgument(f"the {what} rejected the request ({status}): {detail}")
    return Unavailable(f"the {what} failed ({status}): {detail}")


def _retry_after(exc: openai.APIStatusError) -> float:
    """When the remote says to try again: its ``retry-after-ms`` or ``retry-after`` header
    (seconds, or an HTTP date), bounded to ``_MAX_RETRY_AFTER``; 1 s when it says nothing."""
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000
        elif "retry-after" in headers:
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                when = parsedate_to_datetime(value)
                seconds = (when - datetime.now(when.tzinfo or UTC)).total_seconds()
        else:
            return 1.0
    except (TypeError, ValueError, IndexError):
        return 1.0
    if not math.isfinite(seconds):
        return 1.0
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


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
