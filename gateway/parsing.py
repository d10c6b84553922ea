"""Reading HTTP input: JSON and form bodies validated into the pydantic models of schemas.py."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from gateway.errors import ApiError, bad_request

M = TypeVar("M", bound=BaseModel)


def json_body() -> Any:
    """The request's JSON document; 400 when it is missing or malformed."""
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


def check_text(value: str, limit: int, param: str) -> None:
    if len(value) > limit:
        raise ApiError(
            400, f"{param} is longer than {limit} characters", "string_above_max_length", param
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
