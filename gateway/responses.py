"""Response bodies of the HTTP API, as pydantic models.

The handlers build their JSON from these models and ``/openapi.json`` describes the same
models, so the document cannot promise a field the code does not send (the hand-written
document they replace had lost ``ModelList.data[].loaded`` and ``Transcription.usage``).

One rule decides which members appear: a field without a default is always sent; a field with a
default is sent only when the handler sets it (``body()`` dumps with ``exclude_unset``). That is
how OpenAI's optional members come and go (``words``, ``url`` or ``b64_json``, a chunk's
``usage``) while ``null`` members OpenAI always sends (``refusal``, ``finish_reason``) stay.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import SkipJsonSchema

from services.orchestrator.limits import TurnLimits

__all__ = [
    "ChatChoice",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatDelta",
    "ChatMessageOut",
    "ChunkChoice",
    "ClientConfig",
    "DurationUsage",
    "ErrorDetail",
    "ErrorResponse",
    "Image",
    "ArtifactLink",
    "Conversation",
    "ConversationDeleted",
    "ConversationItem",
    "ConversationList",
    "ImagesResponse",
    "ModelCard",
    "ModelList",
    "Notice",
    "Readiness",
    "Reply",
    "Status",
    "TokenUsage",
    "Transcription",
    "TranscriptionSegment",
    "TranscriptionWord",
    "Voice",
    "VoiceList",
]


class Reply(BaseModel):
    """A response body; ``body()`` is what the client receives."""

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _sometimes(description: str | None = None) -> Any:
    """A member sent only when the handler sets it. Typed ``X | SkipJsonSchema[None]``: the
    document shows ``X``, optional, never ``null`` (an unset member is left out, not sent null)."""
    return Field(default=None, description=description, json_schema_extra=_drop_default)


# --- errors -----------------------------------------------------------------------------------


class ErrorDetail(Reply):
    message: str = Field(description="What went wrong, safe to show.")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error.")
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str | None = Field(description="Machine-readable code, e.g. invalid_value, not_found.")


class ErrorResponse(Reply):
    """Every error, whoever found it (gateway or service), in OpenAI's shape."""

    error: ErrorDetail


# --- health and the browser's endpoints -------------------------------------------------------


class Status(Reply):
    status: Literal["ok"]


class Readiness(Reply):
    status: Literal["ready", "unavailable"]
    orchestrator: str = Field(description="The orchestrator's health status, or the gRPC code.")


class Voice(Reply):
    """A TTS voice (``chorus.v1.Voice``, field for field)."""

    id: str
    name: str
    language: str = Field(description='BCP-47 tag, e.g. "en-US".')
    sample_rate_hz: int
    backend: str
    is_default: bool


class VoiceList(Reply):
    voices: list[Voice]


class ArtifactLink(Reply):
    """Media an item references, fetched at ``url`` (``GET /v1/artifacts/{id}``)."""

    id: str
    url: str


class ConversationItem(Reply):
    """One stored message of a conversation."""

    id: str
    role: Literal["user", "assistant", "system"]
    text: str
    transcript: str = Field(description="What was heard, for speech input; else empty.")
    status: str = Field(description="completed, incomplete or failed.")
    created_at: float = Field(description="Unix seconds.")
    artifacts: list[ArtifactLink] = Field(description="Its audio and images, in order.")
    timings_ms: dict[str, float] = Field(description="Stage timings of the turn that made it.")


class Conversation(Reply):
    """A stored conversation; ``items`` only when one conversation is asked for."""

    id: str
    object: Literal["conversation"]
    title: str
    created_at: float = Field(description="Unix seconds.")
    updated_at: float
    items: list[ConversationItem] | SkipJsonSchema[None] = _sometimes(
        "Its items, oldest first (GET /v1/conversations/{id})."
    )


class ConversationList(Reply):
    object: Literal["list"]
    data: list[Conversation]
    next_page_token: str | None = Field(description="Pass as page_token; null on the last page.")


class ConversationDeleted(Reply):
    id: str
    object: Literal["conversation.deleted"]
    deleted: Literal[True]
    items_deleted: int
    artifacts_deleted: int


class Notice(Reply):
    """Something the page should tell its user about the suite, e.g. a placeholder model."""

    service: Literal["image", "text-generation"] = Field(description="The service it is about.")
    message: str = Field(description="One line for a user: what is wrong and what fixes it.")
    setting: str = Field(
        description="The environment variable that fixes it, e.g. CHORUS_IMAGE_MODEL."
    )


_TURN_LIMITS: dict[str, Any] = {
    name: (field.annotation, ...) for name, field in TurnLimits.model_fields.items()
}
ClientConfig = create_model(
    "ClientConfig",
    __base__=Reply,
    __doc__="Limits the browser applies before sending: the orchestrator's turn limits "
    "(``TurnLimits``, field for field) and the gateway's upload limit; and notices to show, "
    "such as a service serving a placeholder model.",
    max_upload_bytes=(int, ...),
    notices=(
        list[Notice],
        Field(description="Placeholder models the user should know of; empty when none."),
    ),
    **_TURN_LIMITS,
)


# --- OpenAI: audio ----------------------------------------------------------------------------


class DurationUsage(Reply):
    type: Literal["duration"]
    seconds: float = Field(description="Seconds of audio transcribed.")


class TranscriptionSegment(Reply):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float


class TranscriptionWord(Reply):
    word: str
    start: float
    end: float


class Transcription(Reply):
    """``json`` has ``text`` and ``usage``; ``verbose_json`` adds the rest (``words`` only with
    the ``word`` timestamp granularity)."""

    text: str
    usage: DurationUsage
    task: Literal["transcribe", "translate"] | SkipJsonSchema[None] = _sometimes()
    language: str | SkipJsonSchema[None] = _sometimes("The language spoken, detected or given.")
    duration: float | SkipJsonSchema[None] = _sometimes("Seconds of audio.")
    segments: list[TranscriptionSegment] | SkipJsonSchema[None] = _sometimes()
    words: list[TranscriptionWord] | SkipJsonSchema[None] = _sometimes()


# --- OpenAI: images ---------------------------------------------------------------------------


class Image(Reply):
    revised_prompt: str
    seed: int = Field(description="The seed that reproduces this image (Chorus extension).")
    b64_json: str | SkipJsonSchema[None] = _sometimes("The PNG, base64 (response_format b64_json).")
    url: str | SkipJsonSchema[None] = _sometimes("The PNG as a data: URL (response_format url).")


class ImagesResponse(Reply):
    created: int
    data: list[Image]


# --- OpenAI: chat -----------------------------------------------------------------------------


class TokenUsage(Reply):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatMessageOut(Reply):
    role: Literal["assistant"]
    content: str
    refusal: None


class ChatChoice(Reply):
    index: int
    message: ChatMessageOut
    logprobs: None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(Reply):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: TokenUsage


class ChatDelta(Reply):
    role: Literal["assistant"] | SkipJsonSchema[None] = _sometimes("In the first chunk only.")
    content: str | SkipJsonSchema[None] = _sometimes()


class ChunkChoice(Reply):
    index: int
    delta: ChatDelta
    logprobs: None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(Reply):
    """One event of a streamed completion; with ``include_usage`` a last chunk has no choices
    and the ``usage``; the stream ends with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: TokenUsage | SkipJsonSchema[None] = _sometimes("In the last chunk, with include_usage.")


# --- OpenAI: models ---------------------------------------------------------------------------


class ModelCard(Reply):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str = Field(description="chorus-stt, chorus-llm, chorus-image or chorus-tts.")
    loaded: bool = Field(description="Whether the weights are in memory now (Chorus extension).")


class ModelList(Reply):
    object: Literal["list"]
    data: list[ModelCard]
