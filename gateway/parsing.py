"""Reading HTTP input: JSON and form bodies validated into the pydantic models of schemas.py."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError, bad_request
from services.common.text import control_character

M = TypeVar("M", bound=BaseModel)


def json_body() -> Any:
    """The request's JSON document; 415 when the Content-Type is not JSON, 400 when the body
    is missing or malformed."""
    require_type("application/json")
    data = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH (413 beyond)
    if not data:
        raise bad_request("the request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(
            f"the request body is not valid JSON: {error}", code="invalid_json"
        ) from None


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; the first failing field becomes OpenAI's ``param``."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise ApiError(400, message, "invalid_value", param) from None


def require_type(*mimetypes: str) -> None:
    """415 unless the request's Content-Type is one of ``mimetypes`` (``+json`` counts as JSON)."""
    mimetype = request.mimetype
    if mimetype in mimetypes or (
        "application/json" in mimetypes
        and mimetype.startswith("application/")
        and mimetype.endswith("+json")
    ):
        return
    raise ApiError(
        415,
        f"Content-Type {mimetype or '(none)'!r} is not accepted here; "
        f"send {' or '.join(mimetypes)}",
        "unsupported_media_type",
    )


def check_text(value: str, limit: int, param: str) -> None:
    """400 when ``value`` is over ``limit`` characters or holds a control character (the rule of
    ``services.common.text.control_character``)."""
    if len(value) > limit:
        raise ApiError(
            400, f"{param} is longer than {limit} characters", "string_above_max_length", param
        )
    bad = control_character(value)
    if bad is not None:
        raise ApiError(
            400, f"{param} holds a control character ({bad})", "invalid_characters", param
        )


def form_fields() -> dict[str, Any]:
    """Form fields as a dict; repeated ``x[]``/``x`` fields become lists (OpenAI sends
    ``timestamp_granularities[]``)."""
    fields: dict[str, Any] = {}
    for key in request.form:
        values = request.form.getlist(key)
        name = key[:-2] if key.endswith("[]") else key
        if key.endswith("[]") or len(values) > 1:
            fields.setdefault(name, [])
            fields[name].extend(values)
        else:
            fields[name] = values[0]
    return fields
