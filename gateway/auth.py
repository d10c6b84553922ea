"""The API key: which paths need it and how a request presents it.

One place, so every way a client can present the key (the ``Authorization`` header; a
WebSocket subprotocol, which browsers can set where they cannot set headers) is read alike;
``gateway/keys.py`` says whose key it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from werkzeug.datastructures import Headers

from gateway.errors import ApiError

__all__ = [
    "KEY_SUBPROTOCOL",
    "PUBLIC_PATHS",
    "bearer_token",
    "is_public",
    "is_websocket",
    "presented_key",
    "subprotocol_key",
    "subprotocols",
    "unauthorized",
]

KEY_SUBPROTOCOL = "openai-insecure-api-key."
"""A browser's WebSocket cannot set headers, so OpenAI's browser clients offer the key as a
subprotocol, ``openai-insecure-api-key.<key>``, beside ``realtime``."""

HeaderMap = Headers | Mapping[str, str]

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/api/interface")
"""Path prefixes served without a key (and without a rate limit): probes, the metrics (which
hold no key, tenant or raw path), this API's document, the browser's page."""


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PATHS)


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None for another scheme."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def is_websocket(headers: HeaderMap) -> bool:
    """Whether the request asks to be upgraded to a WebSocket."""
    connection = {v.strip().lower() for v in headers.get("Connection", "").split(",")}
    return "upgrade" in connection and headers.get("Upgrade", "").lower() == "websocket"


def subprotocols(headers: HeaderMap) -> list[str]:
    """The subprotocols a WebSocket upgrade offers, in its order."""
    offered = headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in offered.split(",") if p.strip()]


def subprotocol_key(headers: HeaderMap) -> str | None:
    """The key a WebSocket upgrade offers as ``openai-insecure-api-key.<key>``, or None."""
    for protocol in subprotocols(headers):
        if protocol.startswith(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


def presented_key(headers: HeaderMap) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>``, or, on a WebSocket upgrade
    without that header, the subprotocol form browsers use. Checked before any upgrade."""
    token = bearer_token(headers.get("Authorization", ""))
    if token is None and is_websocket(headers):
        token = subprotocol_key(headers)
    return token


def unauthorized() -> ApiError:
    return ApiError(
        401, "missing or invalid API key (Authorization: Bearer <key>)", "invalid_api_key"
    )
