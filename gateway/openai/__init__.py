"""OpenAI-compatible endpoints under ``/v1``, so existing OpenAI clients work unchanged.

One module per resource, each with its own blueprint nested in this one: ``audio``
(transcriptions, translations, speech), ``images``, ``chat``, ``models``, ``realtime`` (a
WebSocket over one bidirectional call), and Chorus's ``artifacts`` (media by URL) and
``conversations`` (stored ones). A new resource is one module and one entry in ``RESOURCES``.
Each route is a translation: OpenAI's request shape -> one gRPC call -> OpenAI's response
shape; ``common`` holds what they share.
"""

from __future__ import annotations

from flask import Blueprint

from gateway.openai import artifacts, audio, chat, conversations, images, models, realtime

__all__ = ["RESOURCES", "blueprint"]

RESOURCES = (audio, images, chat, models, realtime, artifacts, conversations)

blueprint = Blueprint("openai", __name__, url_prefix="/v1")
for _resource in RESOURCES:
    blueprint.register_blueprint(_resource.blueprint)
