"""The OpenAPI 3.1 document of the HTTP API, made by spectree from the routes and the models.

Each route says what it takes and returns with ``@documented(...)``, right under its
``@blueprint.get``/``post``: the model it validates its input with (``schemas.py``), the models
its answers are built from (``responses.py``), the media types spectree has no words for
(Server-Sent Events, audio, text), and the errors it answers, all in ``ErrorResponse``'s shape.
spectree walks the app's URL map and writes the document. A route without ``@documented`` is
left out of it (strict mode), and tests/test_gateway.py fails on such a route: the document
keeps up with the code because it is made from it.

spectree documents here and validates nothing: handlers keep their own validation (OpenAI's 400
error naming the field, where spectree would answer 422 in pydantic's shape), and answers pass
through untouched (spectree reads a response's whole body to validate it, which would buffer
every stream until its end).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from spectree import Response, SecurityScheme, SecuritySchemeData, SpecTree, Tag
from spectree.models import SecureType
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.utils import get_model_key, parse_code

from gateway.context import state_of
from gateway.errors import SERVICE_ERRORS
from gateway.responses import ErrorResponse

__all__ = ["BINARY", "OBJECT", "TEXT", "document", "documented", "spec"]

F = TypeVar("F", bound=Callable[..., Any])
MediaSchema = type[BaseModel] | dict[str, Any]
"""A model (its schema goes to the components and is referenced) or a literal JSON schema."""

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}
TEXT: dict[str, Any] = {"type": "string"}
OBJECT: dict[str, Any] = {"type": "object"}

_ERROR_WORDS: dict[int, str] = {
    400: "Invalid input or over a limit on size, length or duration; error.param names the field",
    401: "Missing or wrong API key (when the gateway has one)",
    403: "Refused: by the service, or a WebSocket from a page of another origin",
    404: "Not found: an unknown model (code model_not_found), voice or file",
    409: "Conflict or aborted in the service",
    413: "The body is larger than the upload limit",
    414: "The path and query are longer than the request line's limit",
    415: "The body is not of the route's Content-Type",
    429: (
        "Too many requests: the API key's rate limit (code rate_limit_exceeded), a full gateway "
        "process (too_many_streams, too_many_sessions) or a busy service (resource_exhausted); "
        "retry after the Retry-After header's seconds"
    ),
    431: "Too many headers, or one too long",
    500: "Internal error",
    501: "Not implemented by the backend",
    502: "The service returned no output",
    503: "A service is unavailable",
    504: "Deadline exceeded",
}

_TAGS: dict[str, Tag] = {
    tag.name: tag
    for tag in (
        Tag(name="health", description="Probes and this document (no API key)."),
        Tag(name="browser", description="The browser interface and its conversational turns."),
        Tag(name="audio", description="OpenAI-compatible speech to text and text to speech."),
        Tag(name="images", description="OpenAI-compatible image generation."),
        Tag(name="chat", description="OpenAI-compatible chat completions."),
        Tag(name="models", description="OpenAI-compatible model list."),
        Tag(name="realtime", description="OpenAI-compatible Realtime API (a WebSocket)."),
    )
}


class _DocumentOnly(FlaskPlugin):
    """spectree's Flask plugin minus the validation: see the module docstring for why."""

    def validate(
        self,
        func: Callable[..., Any],
        query: Any,
        json: Any,
        form: Any,
        headers: Any,
        cookies: Any,
        resp: Any,
        before: Any,
        after: Any,
        validation_error_status: int,
        skip_validation: bool,
        force_resp_serialize: bool,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return func(*args, **kwargs)


class _Responses(Response):
    """spectree's ``Response`` plus more media types per status: spectree writes each model as
    ``application/json`` only, and this API also streams events, audio and text."""

    def __init__(self, media: Mapping[str, Mapping[str, MediaSchema]], **code_models: Any) -> None:
        super().__init__(**code_models)
        self._media = media

    @property
    def models(self) -> Iterable[Any]:
        """The JSON models and the models of the other media types, so spectree adds all of
        them to the document's components."""
        extra = [s for types in self._media.values() for s in types.values() if isinstance(s, type)]
        return [*super().models, *extra]

    def generate_spec(
        self, naming_strategy: Callable[[Any], str] = get_model_key
    ) -> dict[str, Any]:
        responses = super().generate_spec(naming_strategy)
        for code, types in self._media.items():
            entry = responses.setdefault(
                parse_code(code), {"description": self.get_code_description(code)}
            )
            content = entry.setdefault("content", {})
            for mime, schema in types.items():
                written = (
                    {"$ref": f"#/components/schemas/{naming_strategy(schema)}"}
                    if isinstance(schema, type)
                    else schema
                )
                if mime == "text/event-stream":
                    written = _event(written)
                content[mime] = {"schema": written}
        return dict(sorted(responses.items()))


def _event(data: dict[str, Any]) -> dict[str, Any]:
    """One Server-Sent Event, as an event stream's schema is read (OpenAPI 3.2 says so with
    ``itemSchema``; schemathesis reads a 3.1 ``schema`` the same way): its ``event`` name and
    its ``data``, the text of ``data`` (JSON, unless ``data`` is plain text)."""
    text = data == TEXT
    payload = dict(TEXT) if text else {**TEXT, "contentMediaType": "application/json"}
    if not text:
        payload["contentSchema"] = data
    return {
        "type": "object",
        "properties": {
            "event": dict(TEXT),
            "data": payload,
            "id": dict(TEXT),
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    }


spec = SpecTree(
    "flask",
    backend=_DocumentOnly,
    mode="strict",
    annotations=False,
    title="Chorus gateway",
    version="1.0.0",
    description=(
        "HTTP front of the Chorus gRPC services: conversational turns as Server-Sent Events for "
        "the browser, and OpenAI-compatible endpoints. Every error has OpenAI's shape "
        "(ErrorResponse); gRPC status codes map to HTTP (INVALID_ARGUMENT 400, UNAUTHENTICATED "
        "401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429 with Retry-After when the service is busy and "
        "400 when a request is over a limit, UNAVAILABLE 503, DEADLINE_EXCEEDED 504)."
    ),
    servers=[{"url": "/"}],
    security_schemes=[
        SecurityScheme(
            name="bearer",
            data=SecuritySchemeData(
                type=SecureType.HTTP,
                scheme="bearer",
                description="The gateway's API key (CHORUS_GATEWAY_API_KEY), when it has one.",
            ),
        )
    ],
    security={"bearer": []},
    validation_error_status=400,
    validation_error_model=ErrorResponse,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
)
"""The one spectree instance: ``documented`` records each route on it."""


def documented(
    operation_id: str,
    tag: str,
    answer: Any,
    *,
    status: int = 200,
    media: Mapping[str, MediaSchema] | None = None,
    events: MediaSchema | None = None,
    other: Mapping[int, Any] | None = None,
    errors: Iterable[int] = SERVICE_ERRORS,
    json: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    public: bool = False,
) -> Callable[[F], F]:
    """Put the decorated route in the document.

    Args:
        operation_id: OpenAI's name for the operation where it has one (``createSpeech``).
        tag: the group it is listed under.
        answer: its success answer: a model, ``None`` (no JSON body) or ``(model or None,
            description)``; ``status`` is that answer's status.
        media: media type -> model or schema, for success bodies other than JSON.
        events: the data of each Server-Sent Event, when it answers with a stream of them
            (and 502 when the stream ends before its first event).
        other: more statuses and their answers (a 503 that is not an error, say).
        errors: what it can answer with an ``ErrorResponse``, besides 400, 413, 414 and 431
            (any route: a bad request, or one over a size limit), 401 and 429 (unless
            ``public``: the key, and its rate limit), 415 (when it takes a body); by default
            every status a failed gRPC call becomes, since most routes make one.
        json, form, query: the models of its JSON body, multipart body or query string.
        public: it needs no API key (``gateway.auth.PUBLIC_PATHS``).
    """
    codes = {400, 413, 414, 431, *errors}
    if not public:
        codes.update((401, 429))
    if json is not None or form is not None:
        codes.add(415)
    if events is not None:
        media = {**(media or {}), "text/event-stream": events}
        codes.add(502)
    answers: dict[str, Any] = {
        f"HTTP_{code}": (ErrorResponse, _ERROR_WORDS.get(code, HTTPStatus(code).phrase))
        for code in sorted(codes)
    }
    answers.update(
        {f"HTTP_{code}": value for code, value in {status: answer, **(other or {})}.items()}
    )
    return spec.validate(
        json=json,
        form=form,
        query=query,
        resp=_Responses({f"HTTP_{status}": media or {}}, **answers),
        tags=[_TAGS.get(tag, Tag(name=tag))],
        security={} if public else None,
        operation_id=operation_id,
    )


_generated = threading.Lock()


def document(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``, as ``/openapi.json`` serves it.

    spectree generates it once per process, from the first app asked (every app ``create_app``
    makes has the same routes); each app then says whether its API key is required: with no key
    configured, calls without one are served too.
    """
    cached: dict[str, Any] | None = app.extensions.get("chorus.openapi")
    if cached is None:
        with _generated, app.app_context():  # spectree's first generation is not thread-safe
            cached = copy.deepcopy(spec.spec)
        if state_of(app).keys.open:
            cached["security"] = [{"bearer": []}, {}]
        app.extensions["chorus.openapi"] = cached
    return cached
