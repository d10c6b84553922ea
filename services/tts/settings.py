"""TTS service settings, read from ``CHORUS_TTS_*`` environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.common.settings import ServiceSettings

_CATALOG = BY_NAME["tts"]


class TtsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    backend: Literal["piper", "coqui", "openai-api"] = "piper"
    """Engine; ``openai-api`` asks an OpenAI-compatible speech API (``api_base_url``)."""
    voice: str = ""
    """Default voice id. Empty: piper's offline en_US-joe-medium, the Coqui model's first voice,
    or the first of ``api_voices``."""
    voices_dir: Path | None = None
    """Piper: a folder of ``<voice>.onnx`` + ``<voice>.onnx.json`` files, offered beside the
    offline default voice."""
    use_cuda: bool = False
    """Piper: run voices with onnxruntime's CUDA provider."""
    spin_wait: bool = False
    """Piper: let ONNX Runtime's threads busy-wait between operators. Slightly faster alone;
    off because the TTS shares cores with the LLM during a turn (see backends/piper.py)."""
    coqui_model: str = ""
    """Coqui: a checkpoint path (with ``coqui_config``) or a Coqui model name such as
    ``tts_models/en/ljspeech/vits`` (downloaded by Coqui on first use)."""
    coqui_config: Path | None = None
    coqui_voice_id: str = "coqui"
    coqui_language: str = "en"
    device: str = "cpu"
    """Coqui: torch device (cpu, cuda, mps)."""

    api_base_url: str = "https://api.openai.com/v1"
    """openai-api: base URL of the OpenAI-compatible API (the part before ``/audio/speech``)."""
    api_key: SecretStr | None = None
    """openai-api: the API key. Never logged; prefer ``api_key_file`` in deployments."""
    api_key_file: Path | None = None
    """openai-api: a file holding the API key (a mounted secret); read at start, stripped."""
    api_model: str = "tts-1"
    """openai-api: the remote's speech model name."""
    api_voices: list[str] = [
        "alloy",
        "ash",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
    ]
    """openai-api: the remote voices callers may pick (the remote has no voice listing)."""
    api_voice_language: str = "en"
    """openai-api: language tag ListVoices reports for those voices."""
    api_response_format: Literal["pcm", "wav"] = "pcm"
    """openai-api: what to ask for: ``pcm`` (raw 16-bit, at ``api_sample_rate_hz``; OpenAI's is
    24 kHz) or ``wav`` (its header names the rate). Either is streamed, not buffered whole."""
    api_sample_rate_hz: int = Field(default=24_000, ge=8000, le=48_000)
    """openai-api: the voices' native rate: pcm arrives at it; wav at another rate is resampled."""
    api_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    """openai-api: limit on one remote request (one sentence), connecting included."""
    api_max_retries: int = Field(default=2, ge=0, le=10)
    """openai-api: retries, with backoff, of a request that failed to connect or got 408, 409,
    429 or 5xx (safe: speech synthesis has no side effects); other errors are never retried."""

    max_text_chars: int = Field(default=5000, ge=1, le=1_000_000)
    max_sentence_chars: int = Field(default=400, ge=20, le=10_000)
    """Longer sentences are cut at word breaks before synthesis."""
    min_speed: float = Field(default=0.25, gt=0)
    max_speed: float = Field(default=4.0, gt=0)
    min_sample_rate_hz: int = Field(default=8000, ge=1000)
    max_sample_rate_hz: int = Field(default=48000, le=192_000)
