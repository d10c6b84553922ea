"""What the OpenAI-compatible resources share: model aliases and calls that fail as HTTP errors."""

from __future__ import annotations

import re
from typing import Any

import grpc

from gateway.context import call_options, settings_of
from gateway.errors import ApiError, from_rpc_error
from gateway.settings import ALIAS_KINDS
from gateway.streams import End, Pump

__all__ = ["DEFAULT_MODEL", "call", "model_id", "realtime_model", "speech_model", "started"]

DEFAULT_MODEL = "chorus"
"""The realtime model a session is of when the client names none (and the browser's name)."""
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
"""OpenAI's dated snapshots: ``gpt-realtime-2025-08-28`` is ``gpt-realtime``."""


def model_id(name: str | None) -> str:
    """A Chorus model id for an OpenAI model name ("" means the service's default): names that
    OpenAI clients send by default (``whisper-1``, ``tts-1``, ...) map through the settings'
    alias table."""
    name = name or ""
    return settings_of().model_aliases.get(name, name)


def speech_model(name: str) -> None:
    """404 ``model_not_found`` unless ``name`` is a TTS alias (``tts-1``, ...) or a configured
    alias of no known kind: the TTS service picks voices, not models, so nothing else could be
    meant, and an unchecked name would look accepted."""
    if name in settings_of().model_aliases and ALIAS_KINDS.get(name, "tts") == "tts":
        return
    raise ApiError(
        404,
        f"the model {name!r} does not exist for speech; use one of: "
        + ", ".join(n for n in settings_of().model_aliases if ALIAS_KINDS.get(n, "tts") == "tts"),
        "model_not_found",
        "model",
    )


def realtime_model(name: str) -> None:
    """404 ``model_not_found`` unless ``name`` is ``chorus``, a realtime alias (``gpt-realtime``,
    ``gpt-4o-realtime-preview``, ..., dated or not) or a configured alias of no known kind: a
    session runs Chorus's own pipeline whatever the name, so only names that mean that pass."""
    aliases = settings_of().model_aliases

    def realtime(alias: str) -> bool:
        return alias in aliases and ALIAS_KINDS.get(alias, "realtime") == "realtime"

    if name == DEFAULT_MODEL or realtime(name) or realtime(_DATED.sub("", name)):
        return
    raise ApiError(
        404,
        f"the model {name!r} does not exist for realtime sessions; use one of: "
        + ", ".join([DEFAULT_MODEL, *(n for n in aliases if realtime(n))]),
        "model_not_found",
        "model",
    )


def call(method: Any, message: Any, service: str) -> Any:
    """A unary call with the gateway's deadline; a failure becomes the matching HTTP error."""
    try:
        return method(message, **call_options())
    except grpc.RpcError as error:
        raise from_rpc_error(error, service) from None


def started(call: Any, name: str) -> tuple[Pump, Any]:
    """Start reading a server stream and wait for its first message, so a failure before any
    output (bad field, unknown model, service down) is a proper HTTP status, not a broken stream."""
    pump = Pump(call, name)
    first = pump.get()
    if isinstance(first, End):
        if first.error is not None:
            raise from_rpc_error(first.error, name)
        raise ApiError(502, f"the {name} service returned no output", "empty_response")
    return pump, first
