"""What every response carries for the browser's sake: security headers, and CORS.

Security headers go on every answer (errors, 404s, streams, the interface's files), each only
where the route has not set its own: the interface keeps its Content-Security-Policy, an
artifact its immutable caching, a stream its own ``no-store``.

CORS is closed unless ``cors_origins`` lists the page's origin: then that origin (never ``*``)
is allowed, a preflight gets the methods, headers (``Authorization`` among them) and max-age;
any other origin gets no allow header at all. Keys travel in ``Authorization``, not cookies,
so no credentials are allowed. A WebSocket is not covered by CORS, so an upgrade from a page
of another origin is refused here (403, cross-site WebSocket hijacking) unless listed.
Hand-written because it is this small; flask-cors would be a new dependency for it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Request, Response

from gateway.errors import ApiError
from gateway.settings import GatewaySettings

__all__ = [
    "ALLOWED_HEADERS",
    "ALLOWED_METHODS",
    "API_CSP",
    "SECURITY_HEADERS",
    "check_socket_origin",
    "cors",
    "preflight",
    "secure",
]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every response unless the route set its own: no sniffing, no referrer, no framing, no
cross-origin embedding, and nothing of a user's data kept by a cache."""
API_CSP = "default-src 'none'; frame-ancestors 'none'"
"""The Content-Security-Policy of every answer that sets none (the API's JSON, audio, errors):
nothing it holds may load or run anything, nor be framed."""
ALLOWED_METHODS = "GET, POST, DELETE"
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id, OpenAI-Beta, Range, If-None-Match"
"""What a listed origin's page may send: the key, a JSON or form body, a request id, OpenAI's
beta header, and an artifact's range and revalidation."""
EXPOSED_HEADERS = "Retry-After, X-Request-Id, Content-Range, ETag"


def secure(response: Response) -> None:
    """Add the security headers the route has not set itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Content-Security-Policy", API_CSP)


def _listed(request: Request, settings: GatewaySettings) -> str | None:
    origin = request.headers.get("Origin")
    return origin if origin is not None and origin in settings.cors_origins else None


def cors(request: Request, response: Response, settings: GatewaySettings) -> None:
    """Allow a listed origin to read ``response``; any other gets nothing."""
    if not settings.cors_origins:
        return
    response.vary.add("Origin")  # the answer differs by origin: caches must keep them apart
    origin = _listed(request, settings)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


def preflight(request: Request, settings: GatewaySettings) -> Response | None:
    """The answer to a CORS preflight (an ``OPTIONS`` with ``Access-Control-Request-Method``),
    or None for any other request. Allow headers only for a listed origin (``cors`` adds the
    origin itself)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    response = Response(status=204)
    if _listed(request, settings) is not None:
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = str(settings.cors_max_age)
    return response


def check_socket_origin(request: Request, settings: GatewaySettings) -> None:
    """403 ``origin_not_allowed`` for a WebSocket upgrade that a browser sent from a page of
    another origin: not the gateway's own host (the ``Host`` the page reached) nor listed.
    Clients that are not browsers send no ``Origin`` and pass."""
    origin = request.headers.get("Origin")
    if origin is None or origin in settings.cors_origins:
        return
    parts = urlsplit(origin)
    if (
        parts.scheme in ("http", "https")
        and parts.netloc
        and parts.netloc.lower() == request.host.lower()
    ):
        return
    raise ApiError(
        403,
        "a WebSocket from this page's origin is not allowed (CHORUS_GATEWAY_CORS_ORIGINS)",
        "origin_not_allowed",
    )
