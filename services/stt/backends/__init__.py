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

    def load_openai_whisper() -> SpeechToTextBackend:
        from services.stt.backends.openai_whisper import OpenAIWhisperBackend

        return OpenAIWhisperBackend(model, device=settings.device)

    return load_openai_whisper
