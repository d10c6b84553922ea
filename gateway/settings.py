"""Gateway settings, read once from ``CHORUS_GATEWAY_*`` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.catalog import BY_NAME
from services.orchestrator.limits import TurnLimits

_CATALOG = BY_NAME["gateway"]

# OpenAI model and voice names that existing clients send; each maps to a Chorus id ("" means the
# service's default), so `client.audio.speech.create(model="tts-1", voice="alloy")` works unchanged.
ALIAS_KINDS: dict[str, str] = {
    **dict.fromkeys(("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"), "stt"),
    **dict.fromkeys(("tts-1", "tts-1-hd", "gpt-4o-mini-tts"), "tts"),
    **dict.fromkeys(("dall-e-2", "dall-e-3", "gpt-image-1"), "image"),
    **dict.fromkeys(
        ("gpt-3.5-turbo", "gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"), "llm"
    ),
    **dict.fromkeys(
        (
            "gpt-realtime",
            "gpt-realtime-mini",
            "gpt-4o-realtime-preview",
            "gpt-4o-mini-realtime-preview",
        ),
        "realtime",
    ),
}
"""The service each default alias stands for: ``/v1/models`` lists it under that service,
``/v1/audio/speech`` (whose service has voices, not models) accepts only TTS aliases, and
``/v1/realtime`` only realtime ones (with their dated variants, ``gpt-realtime-2025-08-28``)."""
DEFAULT_MODEL_ALIASES: dict[str, str] = dict.fromkeys(ALIAS_KINDS, "")
DEFAULT_VOICE_ALIASES: dict[str, str] = {
    name: ""
    for name in (
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    )
}

Origin = Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", max_length=300)]
"""A browser origin as the ``Origin`` header sends it: scheme, host and port, no path."""


class GatewaySettings(BaseSettings):
    """Where the gRPC services are, what the HTTP API accepts, and how it is served.

    Every limit has bounds, the API key is a ``SecretStr`` (it never appears in a repr or a log).
    """

    model_config = SettingsConfigDict(
        env_prefix=_CATALOG.env_prefix, env_nested_delimiter="__", extra="ignore"
    )

    host: str = "127.0.0.1"
    """Address gunicorn binds; containers set 0.0.0.0."""
    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    workers: int = Field(default=2, ge=1, le=64)
    """gunicorn worker processes (each opens its own gRPC channels after the fork)."""
    threads: int = Field(default=16, ge=1, le=1024)
    """Threads per worker (gthread): each open SSE stream holds one."""
    graceful_timeout: float = Field(default=30.0, ge=0, le=3600)
    """On SIGTERM, how long open requests may take to finish."""

    orchestrator_address: str = BY_NAME["orchestrator"].loopback
    stt_address: str = BY_NAME["stt"].loopback
    tts_address: str = BY_NAME["tts"].loopback
    llm_address: str = BY_NAME["llm"].loopback
    image_address: str = BY_NAME["image"].loopback
    """Service addresses: host:port, or dns:///name:port to spread over every replica."""
    envoy_address: str | None = None
    """When set, every service is reached through this Envoy (it routes by gRPC service name)
    and the five addresses above are ignored."""
    max_attempts: int = Field(default=4, ge=1, le=5)
    """Tries per call on UNAVAILABLE (gRPC retry policy with exponential backoff)."""
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)

    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    """Largest request body (audio upload or JSON) on every route; larger ones get 413: at once
    when ``Content-Length`` says so, and a chunked body as soon as it passes the limit."""
    max_form_parts: int = Field(default=64, ge=4, le=10_000)
    """Most parts (files and fields) of a multipart body; more are 413 (werkzeug's
    ``MAX_FORM_PARTS``). OpenAI's clients send fewer than a dozen."""
    max_request_line_bytes: int = Field(default=4094, ge=256, le=8190)
    """Longest request line (method, path, query string), gunicorn's ``limit_request_line``;
    the app answers a longer path and query 414 itself (gunicorn allows at most 8190)."""
    max_header_bytes: int = Field(default=8190, ge=1024, le=65_536)
    """Longest header (name and value), gunicorn's ``limit_request_field_size``; the app
    answers a longer one 431 itself."""
    max_header_count: int = Field(default=100, ge=16, le=32_768)
    """Most headers in a request, gunicorn's ``limit_request_fields``; more are 431."""
    max_text_chars: int = Field(default=4000, ge=1, le=1_000_000)
    """Longest speech input text, image prompt or chat message of the OpenAI-compatible API.
    A turn's text and history follow ``turn_limits`` instead."""
    max_images: int = Field(default=4, ge=1, le=16)
    """Most images per /v1/images/generations call (``n``)."""

    call_timeout: float = Field(default=120.0, gt=0, le=3600)
    """Deadline of one unary or streamed model call (transcription, speech, image, chat)."""
    turn_timeout: float = Field(default=300.0, gt=0, le=3600)
    """Deadline of one conversational turn."""
    ready_timeout: float = Field(default=1.0, gt=0, le=60)
    """How long /readyz waits for the orchestrator's health answer."""
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=300)
    """An SSE comment is sent after this long without events, so proxies keep the stream open
    and a vanished client is noticed (and its turn cancelled) promptly. /v1/realtime sockets are
    pinged as often, and closed when a ping goes unanswered for as long."""

    max_streams: int = Field(default=12, ge=0, le=10_000)
    """Open streamed responses per worker process (the Server-Sent Events of /api/turns and of
    streamed chat completions, streamed speech); more are refused with 429
    ``too_many_streams`` before any work starts. Each holds one of the worker's ``threads`` for
    its whole life, so streams and realtime sockets together never take the last thread
    (``stream_limit``): it stays for plain requests, the probes among them. 0 refuses every
    stream."""
    busy_retry_after: int = Field(default=2, ge=1, le=3600)
    """``Retry-After`` seconds of a 429 for a full worker (too many streams or sockets): a
    guess, since the stream that frees a place may last a while."""
    realtime_max_sessions: int = Field(default=8, ge=0, le=10_000)
    """Open /v1/realtime sockets per worker process; more are refused with 429 before the
    upgrade. Each socket holds one of the worker's ``threads`` for its whole life, so at most
    ``threads - 1`` are admitted whatever this says (``realtime_session_limit``): one thread
    always stays for plain HTTP requests, the probes among them. 0 turns the route off."""
    realtime_max_message_bytes: int = Field(
        default=16 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024
    )
    """Largest client event (one WebSocket message); a larger one closes the socket with 1009
    before it is buffered whole."""
    realtime_max_append_bytes: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    """Most audio, decoded, in one ``input_audio_buffer.append``; more is refused with an
    ``error`` event and the session goes on. 1 MiB, 21.8 s of 24 kHz PCM16, as the
    orchestrator's ``session_max_chunk_bytes`` (clients send 20 to 100 ms per event). An
    ``input_audio`` item is bounded by ``realtime_max_message_bytes`` and the orchestrator's
    ``max_input_buffer_seconds`` instead."""
    realtime_send_timeout: float = Field(default=10.0, gt=0, le=300)
    """How long one send may wait for a client that stopped reading (``SO_SNDTIMEO``); then
    the session is ended, so a slow reader holds neither a thread nor the orchestrator's work."""
    realtime_session_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)
    """Deadline of one socket's ``Session`` call (the orchestrator's own limit may be shorter)."""

    rate_limit_rps: float = Field(default=20.0, ge=0, le=1_000_000)
    """Requests per second each API key may make, on average: a token bucket per key name, in
    each worker process. The scope is one process: with ``workers`` processes a key can reach
    up to ``workers`` times this in all (nothing is divided behind your back); the global limit
    is Envoy's local rate limit in front of the gateways. An open gateway (no key) has no
    per-key bucket. Probes, /metrics and the browser's page are exempt. Over it: 429
    ``rate_limit_exceeded`` with ``Retry-After`` (seconds until a token is back, rounded up).
    0 turns it off; a key of the keys file may set its own (``rate_limit_rps``)."""
    rate_limit_burst: int = Field(default=40, ge=1, le=1_000_000)
    """The bucket's size: how many requests a key may make at once after being idle."""

    cors_origins: list[Origin] = Field(default_factory=list, max_length=100)
    """Browser origins (``https://app.example.com``) whose pages may call the API; empty (the
    default) allows none: no response carries ``Access-Control-Allow-Origin`` and a preflight
    gets no allow headers. Also the origins, besides the gateway's own, that may open a
    /v1/realtime socket from a browser (others are 403 before the upgrade). As an environment
    variable, a JSON list."""
    cors_max_age: int = Field(default=600, ge=0, le=86_400)
    """How long a browser may keep a preflight's answer (``Access-Control-Max-Age``)."""

    api_key: SecretStr | None = None
    """When set, /api/* and /v1/* demand ``Authorization: Bearer <key>`` (a WebSocket upgrade may
    offer it as the subprotocol ``openai-insecure-api-key.<key>`` instead); never logged."""
    api_key_tenant: str = Field(default="default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    """The tenant of ``api_key``'s callers."""
    api_keys_file: Path | None = None
    """A TOML file of keys, each with a name and a tenant (``gateway/keys.py``), beside or
    instead of ``api_key``; read again when it changes, so keys come and go without a restart.
    It must exist and be valid when the gateway starts."""
    api_keys_reload_seconds: float = Field(default=1.0, gt=0, le=3600)
    """How often a request may check whether the keys file changed (a stat, no read)."""
    model_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))
    voice_aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VOICE_ALIASES))

    log_level: str = "INFO"
    log_json: bool = False

    @property
    def stream_limit(self) -> int:
        """Streams admitted per worker: ``max_streams``, but never all of the worker's threads."""
        return max(0, min(self.max_streams, self.threads - 1))

    @property
    def realtime_session_limit(self) -> int:
        """Realtime sockets admitted per worker: ``realtime_max_sessions``, but never all of the
        worker's threads."""
        return max(0, min(self.realtime_max_sessions, self.threads - 1))

    @cached_property
    def turn_limits(self) -> TurnLimits:
        """The orchestrator's turn limits, read from its own variables
        (``CHORUS_ORCH_MAX_TEXT_CHARS``, ...): the gateway refuses an oversized turn with the
        same values before calling, and serves them to the browser at ``/api/config``. Not a
        field, so no ``CHORUS_GATEWAY_*`` variable can make the two disagree."""
        return TurnLimits()
