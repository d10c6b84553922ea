"""TTS service settings, read from ``CHORUS_TTS_*`` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.catalog import BY_NAME
from services.tts.backends import SettingsBase

_CATALOG = BY_NAME["tts"]


# ``backend`` and each backend's own section (CHORUS_TTS_PIPER__SPIN_WAIT...) come from the
# registry, BACKENDS in services/tts/backends/__init__.py.
class TtsSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix=_CATALOG.env_prefix, extra="ignore")

    port: int = Field(default=_CATALOG.port, ge=0, le=65535)
    voice: str = ""
    """Default voice id. Empty: piper's offline en_US-joe-medium, the Coqui model's first voice,
    or the first of the openai-api backend's ``voices``."""

    max_text_chars: int = Field(default=5000, ge=1, le=1_000_000)
    max_sentence_chars: int = Field(default=400, ge=20, le=10_000)
    """Longer sentences are cut at word breaks before synthesis."""
    min_speed: float = Field(default=0.25, gt=0)
    max_speed: float = Field(default=4.0, gt=0)
    min_sample_rate_hz: int = Field(default=8000, ge=1000)
    max_sample_rate_hz: int = Field(default=48000, ge=1000, le=192_000)
