"""Orchestrator settings, read from ``CHORUS_ORCH_*`` environment variables."""

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.common.settings import ServerSettings
from services.orchestrator.limits import TurnLimits

_CATALOG = BY_NAME["orchestrator"]


class OrchestratorSettings(ServerSettings, TurnLimits):
    """The orchestrator's knobs; its turn limits (text, history) come from ``TurnLimits``,
    the one definition the gateway reads too."""

    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    stt_address: str = BY_NAME["stt"].loopback
    tts_address: str = BY_NAME["tts"].loopback
    llm_address: str = BY_NAME["llm"].loopback
    image_address: str = BY_NAME["image"].loopback
    """Model service addresses: host:port, or dns:///name:port to spread over every address a
    (headless) Kubernetes Service resolves to."""
    envoy_address: str | None = None
    """When set, every model service is reached through this Envoy instead (it routes by the
    gRPC service name), and the four addresses above are ignored."""
    max_attempts: int = Field(default=4, ge=1, le=5)
    """Tries per downstream call on UNAVAILABLE (gRPC retry policy with exponential backoff)."""

    system_prompt: str = ""
    """Instructions for every reply; empty: the text generation service's own default (which
    carries a worked example that small base models need)."""
    max_tokens: int = Field(default=96, ge=1, le=8192)
    """Default reply length in tokens."""
    max_turns: int = Field(default=64, ge=1, le=100_000)
    """Turns handled at once by this replica; more get RESOURCE_EXHAUSTED."""
    max_audio_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Most audio bytes one turn may send."""
    max_audio_seconds: float = Field(default=300.0, gt=0)
    """Longest raw (PCM) speech input; container input is bounded by the STT service."""

    transcription_timeout: float = Field(default=60.0, gt=0)
    reply_timeout: float = Field(default=120.0, gt=0)
    speech_timeout: float = Field(default=60.0, gt=0)
    """Per sentence."""
    image_timeout: float = Field(default=300.0, gt=0)
    turn_timeout: float = Field(default=300.0, gt=0)
    """Used when the caller sets no deadline; a caller's deadline always bounds the turn."""
    sentence_max_chars: int = Field(default=300, ge=20)
    """A reply sentence longer than this is spoken in pieces."""

    artifact_sweep_seconds: float = Field(default=3600.0, ge=0, le=7 * 24 * 3600.0)
    """How often this replica applies the artifact store's retention policy
    (``CHORUS_ARTIFACTS_MAX_AGE_SECONDS``, ``..._MAX_TOTAL_BYTES``); 0: never (another replica
    or a cron job sweeps). At least 1 s otherwise: each pass lists the whole store."""

    # Live sessions (the Session RPC).
    max_sessions: int = Field(default=32, ge=1, le=100_000)
    """Sessions open at once on this replica; more get RESOURCE_EXHAUSTED."""
    max_session_seconds: float = Field(default=3600.0, gt=0, le=24 * 3600)
    """Longest session; it then ends with a fatal error event and DEADLINE_EXCEEDED."""
    max_input_buffer_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Most uncommitted input audio without server VAD (and the longest audio of one item)."""
    session_max_chunk_bytes: int = Field(default=1024 * 1024, ge=320)
    """Largest audio chunk in one session request."""
    max_session_items: int = Field(default=500, ge=2, le=100_000)
    """Conversation items a session keeps; the oldest are deleted beyond it."""
    session_max_queued_events: int = Field(default=2000, ge=16, le=1_000_000)
    """Events waiting for a client that does not read; beyond it the session is ended."""
    session_stream_seconds: float = Field(default=300.0, ge=10, le=3600)
    """A session's speech-to-text call is renewed at the next quiet moment after this much
    audio (inside the speech service's per-call limit, max_audio_seconds)."""
    session_audio_lead_ms: int = Field(default=1000, ge=0, le=60_000)
    """A response's audio is sent at most this far ahead of real time (the client's playback),
    in slices of at most ``SLICE_SECONDS``. A reply is made faster than it is spoken; sent
    all at once, it would be over on the server while the client still plays it, so speech
    over it could no longer interrupt it (its response ends ``interrupted``, nothing more is
    sent). The lead covers network jitter; 0 sends audio as soon as it is made."""
    session_vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    session_silence_ms: int = Field(default=500, ge=100, le=10_000)
    """Server VAD defaults: speech probability threshold, and the pause that ends a turn (500 ms,
    OpenAI's default: every voice-to-voice reply waits this long at least)."""
    session_speculate_ms: int = Field(default=150, ge=0, le=10_000)
    """After this much pause the turn's transcript is decoded and its reply started, held back
    until the pause reaches silence_duration_ms (then sent at once) or dropped if the user goes
    on. 0: no speculation."""

    @field_validator("artifact_sweep_seconds")
    @classmethod
    def _sweep_off_or_sane(cls, seconds: float) -> float:
        if 0 < seconds < 1:
            raise ValueError("must be 0 (never) or at least 1 second")
        return seconds
