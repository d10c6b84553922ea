"""STT service settings, read from ``CHORUS_STT_*`` environment variables."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.stt.backends import SettingsBase

_CATALOG = BY_NAME["stt"]


# ``backend`` and each backend's own section (CHORUS_STT_FASTER_WHISPER__COMPUTE_TYPE...) come
# from the registry, BACKENDS in services/stt/backends/__init__.py.
class SttSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    model: str = "whisper-base"
    """Default model. faster-whisper: an offline id (whisper-base, whisper-tiny.en), a hub id
    such as large-v3 (needs the network once), or a CTranslate2 folder. openai-whisper: a
    checkpoint path or an official name (base, large-v3). openai-api: the remote's model name
    (``whisper-1`` at OpenAI)."""
    extra_models: list[str] | None = None
    """More models callers may pick with the request's ``model`` field (loaded on first use).
    Unset: whisper-tiny.en for faster-whisper (the fast option), none for the others."""
    device: str = "cpu"
    """cpu, cuda (faster-whisper and openai-whisper), or auto."""
    beam_size: int = Field(default=5, ge=1, le=10)
    cache_dir: Path = Path.home() / ".cache" / "chorus" / "models"
    """Where split offline weights are joined once."""

    max_audio_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Largest upload accepted by Transcribe (OpenAI's limit)."""
    max_audio_seconds: float = Field(default=600.0, gt=0, le=4 * 3600)
    """Longest audio accepted, by Transcribe and per StreamingTranscribe call."""
    max_prompt_chars: int = Field(default=1000, ge=0, le=100_000)
    max_streams: int = Field(default=16, ge=1, le=10_000)
    """Streaming calls open at once."""
    max_decodes: int = Field(default=4, ge=1, le=64)
    """Audio files decoded at once (decoding runs beside, not inside, the model workers)."""

    partial_interval_ms: int = Field(default=1000, ge=100, le=60_000)
    """Default spacing of partial hypotheses while audio arrives."""
    vad_silence_ms: int = Field(default=600, ge=100, le=10_000)
    """A pause this long after speech closes a streaming segment."""
    vad_speculate_ms: int = Field(default=400, ge=0, le=10_000)
    """After this much silence the segment's final decode starts, while the pause is still being
    confirmed; used if the pause reaches vad_silence_ms, dropped if speech resumes. Saves up to
    vad_silence_ms - vad_speculate_ms of every final. Shorter catches the pauses inside
    sentences (a question mark: ~300 ms), whose wasted decodes hold the worker. 0 (or not under
    vad_silence_ms): off."""
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    max_segment_seconds: float = Field(default=28.0, ge=1, le=30)
    """A streaming segment is closed at this length even without a pause (Whisper sees 30 s)."""
    max_chunk_bytes: int = Field(default=1024 * 1024, ge=320)
    """Largest audio chunk in one StreamingTranscribe message."""

    def all_models(self) -> list[str]:
        extra = self.extra_models
        if extra is None:
            extra = ["whisper-tiny.en"] if self.backend == "faster-whisper" else []
        return list(dict.fromkeys([self.model, *extra]))
