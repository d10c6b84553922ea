"""Request bodies of the HTTP API, validated with pydantic.

The same models produce the request schemas of ``/openapi.json``, so the document and the
validation cannot drift apart. Unknown fields are ignored, as OpenAI's API does. The ``*Upload``
models describe multipart bodies for the document: their file parts are read from
``request.files``, the rest is validated with the model they extend.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, Json

UINT32_MAX = 2**32 - 1
LANGUAGE_PATTERN = r"^([a-z]{2,3}(-[A-Za-z0-9]{2,8})?)?$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HistoryMessage(_Body):
    """One earlier message of the conversation (the browser keeps the history)."""

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class TurnOptions(_Body):
    """Options of a conversational turn (POST /api/turns)."""

    history: list[HistoryMessage] = Field(default_factory=list)
    conversation_id: str = Field(
        default="",
        max_length=64,
        description="A stored conversation (POST /v1/conversations): its history is read from "
        "the store (history must then be empty) and this turn is appended to it, with its audio "
        "and images kept as artifacts (their ids in the events).",
    )
    language: str = Field(
        default="",
        pattern=LANGUAGE_PATTERN,
        description="ISO 639-1 code of the speech; empty: detect.",
    )
    voice: str = Field(
        default="", max_length=200, description="Voice id from GET /api/voices; empty: the default."
    )
    image_mode: Literal["off", "on", "auto"] = "off"
    text_only: bool = Field(default=False, description="Reply in text only (no speech).")
    audio_format: Literal["wav", "mp3", "opus", "flac"] = Field(
        default="wav",
        description="Encoding of the reply's audio chunks (one playable file per sentence).",
    )
    system_prompt: str = Field(default="", max_length=8000)
    max_tokens: int = Field(default=0, ge=0, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=UINT32_MAX)
    image_width: int = Field(default=0, ge=0, le=4096)
    image_height: int = Field(default=0, ge=0, le=4096)
    image_steps: int = Field(default=0, ge=0, le=1000)
    image_seed: int | None = Field(default=None, ge=0, le=UINT32_MAX)


class TextTurnRequest(TurnOptions):
    """A typed turn: JSON body with the text and the turn options."""

    text: str = Field(min_length=1)


class SpeechRequest(_Body):
    """OpenAI's POST /v1/audio/speech."""

    model: str = Field(default="tts-1", max_length=200)
    input: str = Field(min_length=1)
    voice: str = Field(default="", max_length=200)
    response_format: Literal["mp3", "opus", "wav", "pcm", "flac"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)


class ImageRequest(_Body):
    """OpenAI's POST /v1/images/generations (``seed`` and ``steps`` are Chorus extensions)."""

    prompt: str = Field(min_length=1)
    model: str | None = Field(default=None, max_length=200)
    n: int = Field(default=1, ge=1, le=16)
    size: str = Field(default="auto", pattern=r"^(auto|[0-9]{1,5}x[0-9]{1,5})$")
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = Field(default=None, ge=0, le=UINT32_MAX)
    steps: int = Field(default=0, ge=0, le=1000)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionRequest(_Body):
    """OpenAI's POST /v1/chat/completions (text messages only; n must be 1)."""

    model: str = Field(default="", max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=UINT32_MAX)
    n: int = Field(default=1, ge=1, le=1)


class TranscriptionForm(_Body):
    """The non-file fields of OpenAI's POST /v1/audio/transcriptions and /translations."""

    model: str = Field(default="whisper-1", max_length=200)
    language: str = Field(
        default="",
        pattern=LANGUAGE_PATTERN,
        description="ISO 639-1 code of the speech; empty: detect. Translations ignore it.",
    )
    prompt: str = Field(default="", max_length=8000)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float = Field(default=0.0, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(
        default_factory=lambda: ["segment"]  # type: ignore[arg-type]  # mypy sees list[str]
    )


class TranscriptionUpload(TranscriptionForm):
    """The multipart body of /v1/audio/transcriptions and /translations."""

    file: bytes = Field(description="The audio: WAV, FLAC, MP3, Ogg/Opus, WebM/Opus, MP4/AAC.")


class TurnUpload(_Body):
    """The multipart body of a spoken turn (POST /api/turns)."""

    audio: bytes = Field(description="The speech: WebM/Opus (what browsers record), WAV, ...")
    options: Json[TurnOptions] = Field(
        default_factory=TurnOptions, description="TurnOptions as JSON; absent: the defaults."
    )


class VoicesQuery(_Body):
    """The query of GET /api/voices."""

    language: str = Field(default="", max_length=35, description="Only voices of this language.")


class ConversationCreate(_Body):
    """The body of POST /v1/conversations."""

    title: str = Field(default="", max_length=200, description="Empty: untitled.")


class ConversationsQuery(_Body):
    """The query of GET /v1/conversations."""

    page_size: int = Field(default=0, ge=0, le=100, description="0: the store's default.")
    page_token: str = Field(default="", max_length=64)
