"""TTS service settings, read from ``CHORUS_TTS_*`` environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class TtsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHORUS_TTS_", extra="ignore")

    port: int = Field(default=50052, ge=0, le=65535)
    backend: Literal["piper", "coqui"] = "piper"
    voice: str = ""
    """Default voice id. Empty: piper's offline en_US-joe-medium, or the Coqui model's first voice."""
    voices_dir: Path | None = None
    """Piper: a folder of ``<voice>.onnx`` + ``<voice>.onnx.json`` files, offered beside the
    offline default voice."""
    use_cuda: bool = False
    """Piper: run voices with onnxruntime's CUDA provider."""
    coqui_model: str = ""
    """Coqui: a checkpoint path (with ``coqui_config``) or a Coqui model name such as
    ``tts_models/en/ljspeech/vits`` (downloaded by Coqui on first use)."""
    coqui_config: Path | None = None
    coqui_voice_id: str = "coqui"
    coqui_language: str = "en"
    device: str = "cpu"
    """Coqui: torch device (cpu, cuda, mps)."""

    max_text_chars: int = Field(default=5000, ge=1, le=1_000_000)
    max_sentence_chars: int = Field(default=400, ge=20, le=10_000)
    """Longer sentences are cut at word breaks before synthesis."""
    min_speed: float = Field(default=0.25, gt=0)
    max_speed: float = Field(default=4.0, gt=0)
    min_sample_rate_hz: int = Field(default=8000, ge=1000)
    max_sample_rate_hz: int = Field(default=48000, le=192_000)
