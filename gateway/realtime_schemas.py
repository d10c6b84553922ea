"""The client events of ``/v1/realtime`` (OpenAI Realtime, GA names), validated with pydantic.

Each event type is one model; the first failing field becomes the ``param`` of the ``error``
event, as ``gateway.parsing`` does for HTTP bodies. Unknown members are ignored, as OpenAI's API
does, and so are members Chorus has no use for (``noise_reduction``, ``tracing``, ``include``,
``speed``...). Whether a member was sent at all matters (``turn_detection: null`` turns the
detection off, a missing one keeps it): ``model_fields_set`` tells.

The beta protocol (``OpenAI-Beta: realtime=v1``) lays its session out differently; ``from_beta``
rewrites a beta event into this layout first, so there is one set of models and one mapping.
The official models (``openai.types.realtime``) are not used here because ``openai`` is not a
dependency of the gateway image; tests/fast/test_realtime_events.py checks the server events
against them instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.schemas import LANGUAGE_PATTERN, UINT32_MAX

__all__ = [
    "CLIENT_EVENTS",
    "UNSUPPORTED_EVENTS",
    "AudioFormat",
    "ClientEvent",
    "ContentPart",
    "ConversationItemCreate",
    "ConversationItemDelete",
    "ConversationItemTruncate",
    "InputAudioBufferAppend",
    "Item",
    "RealtimeQuery",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseParams",
    "Session",
    "SessionUpdate",
    "TurnDetection",
    "from_beta",
]

Tokens = Annotated[int, Field(ge=1, le=UINT32_MAX)] | Literal["inf"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RealtimeQuery(_Part):
    """The query string of the ``/v1/realtime`` handshake."""

    model: str | None = Field(
        default=None,
        max_length=200,
        description="Any name (the official clients always send one); shown in the session.",
    )
    intent: Literal["transcription"] | None = Field(
        default=None, description="Start as a transcription session (the beta protocol's way)."
    )


class AudioFormat(_Part):
    """``audio/pcm`` (16-bit little-endian, mono; 24 kHz unless ``rate`` says otherwise) or
    G.711 at 8 kHz."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: int | None = Field(default=None, ge=8000, le=192_000)


class TurnDetection(_Part):
    """``server_vad``; ``semantic_vad`` is served by the same detector, its ``eagerness``
    choosing the pause that ends a turn."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float | None = Field(default=None, gt=0, lt=1)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(default=None, ge=100, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None


class Transcription(_Part):
    model: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)


class AudioInput(_Part):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class VoiceId(_Part):
    id: str = Field(max_length=200)


Voice = Annotated[str, Field(max_length=200)] | VoiceId


class AudioOutput(_Part):
    format: AudioFormat | None = None
    voice: Voice | None = None


class SessionAudio(_Part):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class ChorusOptions(_Part):
    """Chorus's own knobs, under a vendor key OpenAI's clients pass through untouched."""

    image_mode: Literal["off", "on", "auto"] | None = None
    llm_model: str | None = Field(default=None, max_length=200)
    conversation_id: str | None = Field(default=None, max_length=64)
    """A stored conversation (``POST /v1/conversations``): the session starts from its items
    and keeps its own there. Only in the first ``session.update``; it cannot change later."""


class Session(_Part):
    """``session`` of ``session.update``: the members it names change, the others stay."""

    type: Literal["realtime", "transcription"] | None = None
    model: str | None = Field(default=None, max_length=200)
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(default=None, min_length=1)
    audio: SessionAudio | None = None
    max_output_tokens: Tokens | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[Any] | None = None
    chorus: ChorusOptions | None = None


class ClientEvent(_Part):
    type: str
    event_id: str | None = Field(default=None, max_length=200)


class SessionUpdate(ClientEvent):
    session: Session


class InputAudioBufferAppend(ClientEvent):
    audio: str


class ContentPart(_Part):
    type: Literal[
        "input_text", "input_audio", "input_image", "text", "output_text", "audio", "output_audio"
    ]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None


class Item(_Part):
    id: str | None = Field(default=None, min_length=1, max_length=64)
    type: Literal["message", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentPart] = Field(default_factory=list)


class ConversationItemCreate(ClientEvent):
    previous_item_id: str | None = Field(default=None, max_length=64)
    item: Item


class ConversationItemTruncate(ClientEvent):
    item_id: str = Field(min_length=1, max_length=64)
    content_index: int = Field(default=0, ge=0)
    audio_end_ms: int = Field(ge=0, le=UINT32_MAX)


class ConversationItemDelete(ClientEvent):
    item_id: str = Field(min_length=1, max_length=64)


class ResponseAudioOutput(_Part):
    voice: Voice | None = None
    format: AudioFormat | None = None


class ResponseAudio(_Part):
    output: ResponseAudioOutput | None = None


class ResponseParams(_Part):
    """``response`` of ``response.create``: knobs of this response only."""

    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(default=None, min_length=1)
    audio: ResponseAudio | None = None
    max_output_tokens: Tokens | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    conversation: str | None = None
    input: list[Any] | None = None
    tools: list[Any] | None = None
    chorus: ChorusOptions | None = None


class ResponseCreate(ClientEvent):
    response: ResponseParams | None = None


class ResponseCancel(ClientEvent):
    response_id: str | None = Field(default=None, max_length=64)


CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdate,
    "input_audio_buffer.append": InputAudioBufferAppend,
    "input_audio_buffer.commit": ClientEvent,
    "input_audio_buffer.clear": ClientEvent,
    "conversation.item.create": ConversationItemCreate,
    "conversation.item.truncate": ConversationItemTruncate,
    "conversation.item.delete": ConversationItemDelete,
    "response.create": ResponseCreate,
    "response.cancel": ResponseCancel,
}
"""Every client event served, by type."""

UNSUPPORTED_EVENTS = frozenset(
    {"conversation.item.retrieve", "output_audio_buffer.clear", "transcription_session.update"}
)
"""Client events of OpenAI's protocol that Chorus answers with an error naming them (the
last one is served in the beta protocol only, where it exists)."""

_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


def _beta_format(value: Any) -> Any:
    """``"pcm16"`` -> ``{"type": "audio/pcm", "rate": 24000}``; anything else is left for the
    model to refuse."""
    if isinstance(value, str) and value in _BETA_FORMATS:
        return {"type": _BETA_FORMATS[value], **({"rate": 24000} if value == "pcm16" else {})}
    return value


def _beta_modalities(value: Any) -> Any:
    """Beta ``modalities`` (``["text", "audio"]``: speak) -> GA ``output_modalities``."""
    if isinstance(value, list) and value:
        return ["audio"] if "audio" in value else ["text"]
    return value


def _beta_session(beta: dict[str, Any], transcription: bool) -> dict[str, Any]:
    session: dict[str, Any] = {"type": "transcription" if transcription else "realtime"}
    for key in ("instructions", "temperature", "tools", "chorus"):
        if key in beta:
            session[key] = beta[key]
    if "modalities" in beta:
        session["output_modalities"] = _beta_modalities(beta["modalities"])
    if "max_response_output_tokens" in beta:
        session["max_output_tokens"] = beta["max_response_output_tokens"]
    audio_in: dict[str, Any] = {}
    audio_out: dict[str, Any] = {}
    if "input_audio_format" in beta:
        audio_in["format"] = _beta_format(beta["input_audio_format"])
    if "input_audio_transcription" in beta:
        audio_in["transcription"] = beta["input_audio_transcription"]
    if "turn_detection" in beta:
        audio_in["turn_detection"] = beta["turn_detection"]
    if "output_audio_format" in beta:
        audio_out["format"] = _beta_format(beta["output_audio_format"])
    if "voice" in beta:
        audio_out["voice"] = beta["voice"]
    if audio_in or audio_out:
        session["audio"] = {"input": audio_in, "output": audio_out}
    return session


def from_beta(event: dict[str, Any]) -> dict[str, Any]:
    """A beta client event in the GA layout (events the two share are returned as they are)."""
    kind = event.get("type")
    if kind in ("session.update", "transcription_session.update") and isinstance(
        event.get("session"), dict
    ):
        transcription = kind == "transcription_session.update"
        return {
            **event,
            "type": "session.update",
            "session": _beta_session(event["session"], transcription),
        }
    if kind == "response.create" and isinstance(event.get("response"), dict):
        beta = event["response"]
        response = {k: v for k, v in beta.items() if k not in ("modalities", "voice")}
        if "modalities" in beta:
            response["output_modalities"] = _beta_modalities(beta["modalities"])
        if "max_response_output_tokens" in beta:
            response["max_output_tokens"] = beta["max_response_output_tokens"]
        if "voice" in beta:
            response["audio"] = {"output": {"voice": beta["voice"]}}
        return {**event, "response": response}
    return event
