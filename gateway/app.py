"""The Flask application: ``create_app(settings)`` wires settings, channels, routes and errors.

No model code and no business logic live here: each route validates the HTTP input, makes one
gRPC call on the orchestrator or a model service, and translates the answer back. Routes find
the settings and stubs through ``gateway.context``, never through this module, so the
blueprints are imported here at the top and nothing imports back.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from functools import partial
from pathlib import Path

from flask import Flask, Response, g, jsonify, redirect, request, send_from_directory
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gateway import capacity, headers, health, metrics, openai, ratelimit, turns
from gateway.auth import is_public, presented_key, unauthorized
from gateway.channels import Channels
from gateway.context import install, state_of
from gateway.errors import ApiError
from gateway.openapi import TEXT, document, documented
from gateway.settings import GatewaySettings
from services.common.logs import request_id

__all__ = ["BLUEPRINTS", "FRONTEND_DIR", "create_app"]

log = logging.getLogger(__name__)

FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"
BLUEPRINTS = (health.blueprint, metrics.blueprint, turns.blueprint, openai.blueprint)
"""Every group of routes; a new one is registered here (and documented with ``documented``)."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(settings: GatewaySettings | None = None, channels: Channels | None = None) -> Flask:
    """The gateway app. ``channels`` may be injected (tests); by default each process opens its
    own on first use."""
    settings = settings or GatewaySettings()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_upload_bytes,
        MAX_FORM_PARTS=settings.max_form_parts,
    )
    install(app, settings, channels or Channels(settings))
    capacity.install(app, settings, metrics.install(app))
    ratelimit.install(app, settings)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    _register_hooks(app, settings)
    _register_frontend(app)
    document(app)  # made before the first request (spectree's first generation takes ~50 ms)
    return app


def _sizes(settings: GatewaySettings) -> None:
    """The limits on a request's size, checked before a handler reads anything: a body that
    says it is over the limit (413, on every route, read or not; a chunked one is read here, up
    to the limit and one byte, so no handler sees a body cut short), a path and query over the
    request line's limit (414), too many or too long headers (431). gunicorn enforces the last
    two before the app under the same settings; these answer in the API's error shape wherever
    the app runs."""
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    if request.content_length is None and "chunked" in request.headers.get("Transfer-Encoding", ""):
        # werkzeug stops a body without a length at the limit and hands over what it read, so
        # it is read here, one byte past the limit, to tell a body that is larger.
        request.max_content_length = settings.max_upload_bytes + 1
        if len(request.get_data(cache=True)) > settings.max_upload_bytes:
            raise RequestEntityTooLarge()
    uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
    if len(uri) > settings.max_request_line_bytes:
        raise ApiError(
            414,
            f"the path and query are longer than {settings.max_request_line_bytes} bytes",
            "uri_too_long",
        )
    if len(request.headers) > settings.max_header_count or any(
        len(name) + len(value) > settings.max_header_bytes for name, value in request.headers
    ):
        raise ApiError(
            431,
            f"more than {settings.max_header_count} headers, or one longer than "
            f"{settings.max_header_bytes} bytes",
            "headers_too_large",
        )


def _register_hooks(app: Flask, settings: GatewaySettings) -> None:
    measured = metrics.metrics_of(app)

    @app.before_request
    def _start() -> ResponseReturnValue | None:
        measured.in_flight.inc()
        g.in_flight = True
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id.set(rid)
        g.request_id = rid
        g.started = time.perf_counter()
        _sizes(settings)
        answer = headers.preflight(request, settings)
        if answer is not None:
            return answer
        if request.method == "OPTIONS" or is_public(request.path):
            return None
        principal = state_of().keys.authenticate(presented_key(request.headers))
        if principal is None:
            raise unauthorized()
        g.principal = principal  # whose conversations and artifacts this request reaches
        if not state_of().keys.open:  # an open gateway has no keys, so no per-key bucket
            ratelimit.check_rate(principal)
        return None

    @app.teardown_request
    def _end(_: BaseException | None) -> None:
        capacity.release_stream()
        if g.pop("in_flight", False):
            measured.in_flight.dec()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        capacity.release_with(response)
        headers.secure(response)
        headers.cors(request, response, settings)
        route, method = metrics.route_of()
        measured.requests.labels(route, method, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            measured.latency.labels(route).observe(time.perf_counter() - started)
            principal = g.get("principal")
            log.info(
                "%s %s -> %d (%.1f ms%s%s)",
                request.method,
                request.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
                ", streaming" if response.is_streamed else "",
                f", key {principal.name} of {principal.tenant}" if principal else "",
            )
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int, dict[str, str]]:
        return jsonify(error.body()), error.status, error.headers()

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            status, (error.name or "error").lower().replace(" ", "_")
        )
        message = error.description or error.name
        if status == 413:
            message = (
                f"request body is larger than the limit of {settings.max_upload_bytes} bytes, "
                f"or has more than {settings.max_form_parts} form parts"
            )
        return jsonify(ApiError(status, message, code).body()), status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return jsonify(ApiError(500, "internal error in the gateway", "internal").body()), 500


_documented_page = partial(
    documented,
    tag="browser",
    answer=(None, "The file"),
    media=dict.fromkeys(("text/html", "text/javascript", "text/css"), TEXT),
    public=True,
)
_documented_redirect = partial(
    documented, tag="browser", answer=(None, "To /api/interface/"), status=302, errors=()
)


def _register_frontend(app: Flask) -> None:
    @app.get("/")
    @_documented_redirect("openRoot")
    def _root() -> ResponseReturnValue:
        """The browser interface's address

        Outside the public paths: with an API key configured, it answers 401 like any other.
        """
        return redirect("/api/interface/", code=302)

    @app.get("/api/interface")
    @_documented_redirect("openInterface", public=True)
    def _to_interface() -> ResponseReturnValue:
        """The browser interface's address"""
        return redirect("/api/interface/", code=302)

    @app.get("/api/interface/")
    @_documented_page("getInterface", errors=())
    def _index() -> Response:
        """The browser interface"""
        return _static("index.html")

    @app.get("/api/interface/<path:name>")
    @_documented_page("getInterfaceFile", errors=(404,))
    def _static(name: str) -> Response:
        """A file of the browser interface"""
        response = send_from_directory(FRONTEND_DIR, name, max_age=0)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; "
            "connect-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response
