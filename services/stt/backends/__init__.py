"""Speech-to-text backends, picked by ``CHORUS_STT_BACKEND``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.stt.backends.base import SpeechToTextBackend
from services.stt.settings import SttSettings


def loader_for(settings: SttSettings, model: str) -> Callable[[], SpeechToTextBackend]:
    """A function that loads ``model`` with the configured backend (imports stay lazy so a
    replica only imports the engine it runs)."""
    if settings.backend == "faster-whisper":

        def load_faster_whisper() -> SpeechToTextBackend:
            from services.stt.backends.faster_whisper import FasterWhisperBackend
            from services.stt.weights import resolve_faster_whisper_model

            path = resolve_faster_whisper_model(model, Path(settings.cache_dir))
            return FasterWhisperBackend(
                model, path, settings.device, settings.compute_type, settings.cpu_threads
            )

        return load_faster_whisper

    if settings.backend == "openai-api":

        def load_openai_api() -> SpeechToTextBackend:
            from services.stt.backends.openai_api import OpenAIApiBackend

            return OpenAIApiBackend(
                model,
                settings.api_base_url,
                api_key(settings),
                timeout=settings.api_timeout_seconds,
                max_retries=settings.api_max_retries,
                languages=settings.api_languages,
            )

        return load_openai_api

    def load_openai_whisper() -> SpeechToTextBackend:
        from services.stt.backends.openai_whisper import OpenAIWhisperBackend

        return OpenAIWhisperBackend(model, device=settings.device)

    return load_openai_whisper


def api_key(settings: SttSettings) -> str | None:
    """The openai-api key: from ``api_key_file`` (a mounted secret) if set, else ``api_key``."""
    if settings.api_key_file is not None:
        return Path(settings.api_key_file).read_text().strip() or None
    return settings.api_key.get_secret_value() if settings.api_key is not None else None
