"""``/v1/models``: every model of the STT, LLM and image services, and the TTS voices."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
from chorus.v1 import common_pb2, tts_pb2
from flask import Blueprint, Response, jsonify

from gateway.context import call_options, settings_of, stubs_of
from gateway.errors import ApiError, from_rpc_error
from gateway.openapi import documented
from gateway.responses import ModelCard, ModelList
from gateway.settings import ALIAS_KINDS

__all__ = ["blueprint"]

log = logging.getLogger(__name__)
blueprint = Blueprint("models", __name__)


def _card(model_id: str, kind: str, loaded: bool) -> ModelCard:
    return ModelCard(
        id=model_id, object="model", created=0, owned_by=f"chorus-{kind}", loaded=loaded
    )


@blueprint.get("/models")
@documented("listModels", "models", ModelList, errors=(503,))
def list_models() -> Response:
    """List the models of every service

    In OpenAI's list shape; a service that does not answer is left out (503 when none answers).
    TTS voices are listed as models too, since OpenAI clients pick a voice by name, and so are
    the aliases that OpenAI clients send (``whisper-1``, ``tts-1``, ...), under their service.
    """
    stubs = stubs_of()
    options = call_options(settings_of().ready_timeout * 5)
    data: list[ModelCard] = []
    answered = 0
    listings: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("stt", stubs.stt.ListModels),
        ("llm", stubs.llm.ListModels),
        ("image", stubs.image.ListModels),
    )
    for kind, method in listings:
        try:
            listing = method(common_pb2.ListModelsRequest(), **options)
        except grpc.RpcError as error:
            log.warning("%s ListModels failed: %s", kind, from_rpc_error(error).message)
            continue
        answered += 1
        data.extend(_card(m.id, kind, m.loaded) for m in listing.models)
    try:
        voices = stubs.tts.ListVoices(tts_pb2.ListVoicesRequest(), **options)
        answered += 1
        data.extend(_card(v.id, "tts", True) for v in voices.voices)
    except grpc.RpcError as error:
        log.warning("tts ListVoices failed: %s", from_rpc_error(error).message)
    if not answered:
        raise ApiError(503, "no model service answered", "unavailable")
    listed = {card.id for card in data}
    data.extend(
        _card(alias, ALIAS_KINDS.get(alias, "alias"), True)
        for alias in settings_of().model_aliases
        if alias not in listed
    )
    return jsonify(ModelList(object="list", data=data).body())
