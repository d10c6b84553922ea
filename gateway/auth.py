"""The API key: which paths need it and how a presented key is checked.

One place, so every way a client can present the key (the ``Authorization`` header today; a
WebSocket subprotocol, which browsers can set where they cannot set headers) is checked alike.
"""

from __future__ import annotations

import hmac

from gateway.errors import ApiError
from gateway.settings import GatewaySettings

__all__ = ["PUBLIC_PATHS", "bearer_token", "is_public", "key_matches", "unauthorized"]

PUBLIC_PATHS = ("/healthz", "/readyz", "/openapi.json", "/api/interface")
"""Path prefixes served without a key: probes, this API's document, the browser's page."""


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PATHS)


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None for another scheme."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def key_matches(settings: GatewaySettings, token: str | None) -> bool:
    """Whether ``token`` is the gateway's key (any token is, when it has none).

    Constant-time, so the time taken says nothing about how much of a guess was right; neither
    the key nor the token is ever logged.
    """
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value().encode()
    return token is not None and hmac.compare_digest(token.encode(), expected)


def unauthorized() -> ApiError:
    return ApiError(
        401, "missing or invalid API key (Authorization: Bearer <key>)", "invalid_api_key"
    )
