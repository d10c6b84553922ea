"""The Flask application: ``create_app(settings)`` wires settings, channels, routes and errors.

No model code and no business logic live here: each route validates the HTTP input, makes one
gRPC call on the orchestrator or a model service, and translates the answer back.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, redirect, request, send_from_directory
from werkzeug.exceptions import HTTPException

from gateway.channels import Channels
from gateway.errors import ApiError
from gateway.settings import GatewaySettings
from services.common.logs import request_id

log = logging.getLogger(__name__)

FRONTEND_DIR = Path(__file__).resolve().parent.parent / "frontend"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PUBLIC = ("/healthz", "/readyz", "/openapi.json", "/api/interface")


def create_app(settings: GatewaySettings | None = None, channels: Channels | None = None) -> Flask:
    """The gateway app. ``channels`` may be injected (tests); by default each process opens its
    own on first use."""
    settings = settings or GatewaySettings()
    app = Flask(__name__, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_upload_bytes,
        JSON_SORT_KEYS=False,
    )
    app.extensions["chorus"] = {
        "settings": settings,
        "channels": channels or Channels(settings),
    }

    from gateway import health, openai_api, turns  # noqa: PLC0415 - routes need the app first

    app.register_blueprint(health.blueprint)
    app.register_blueprint(turns.blueprint)
    app.register_blueprint(openai_api.blueprint)
    _register_hooks(app, settings)
    _register_frontend(app)
    return app


def settings_of() -> GatewaySettings:
    from flask import current_app  # noqa: PLC0415

    return current_app.extensions["chorus"]["settings"]


def stubs_of():
    from flask import current_app  # noqa: PLC0415

    return current_app.extensions["chorus"]["channels"].stubs()


def metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata of a downstream call: the request id, so a turn is one id in every log."""
    return (("x-request-id", request_id.get()),)


def _register_hooks(app: Flask, settings: GatewaySettings) -> None:
    key = settings.api_key.get_secret_value().encode() if settings.api_key else None

    @app.before_request
    def _start() -> Response | None:
        incoming = request.headers.get("X-Request-Id", "")
        rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id.set(rid)
        g.request_id = rid
        g.started = time.perf_counter()
        if key is None or request.method == "OPTIONS" or request.path.startswith(_PUBLIC):
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        # Constant-time comparison; the key and the header are never logged.
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
            raise ApiError(
                401, "missing or invalid API key (Authorization: Bearer <key>)", "invalid_api_key"
            )
        return None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "-")
        started = g.get("started")
        if started is not None:
            log.info(
                "%s %s -> %d (%.1f ms%s)",
                request.method,
                request.path,
                response.status_code,
                (time.perf_counter() - started) * 1000,
                ", streaming" if response.is_streamed else "",
            )
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> tuple[Response, int, dict[str, str]]:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        return jsonify(error.body()), error.status, headers

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}.get(
            status, (error.name or "error").lower().replace(" ", "_")
        )
        message = error.description or error.name
        if status == 413:
            message = f"request body is larger than the limit of {settings.max_upload_bytes} bytes"
        return jsonify(ApiError(status, message, code).body()), status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return jsonify(ApiError(500, "internal error in the gateway", "internal").body()), 500


def _register_frontend(app: Flask) -> None:
    @app.get("/")
    @app.get("/api/interface")
    def _to_interface() -> Any:
        return redirect("/api/interface/", code=302)

    @app.get("/api/interface/")
    def _index() -> Response:
        return _static("index.html")

    @app.get("/api/interface/<path:name>")
    def _static(name: str) -> Response:
        response = send_from_directory(FRONTEND_DIR, name, max_age=0)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data: blob:; media-src 'self' data: blob:; "
            "connect-src 'self'; style-src 'self'; script-src 'self'"
        )
        return response
