"""Speech-to-text backends: the registry ``BACKENDS``, picked by ``CHORUS_STT_BACKEND``.

A backend is a module here implementing ``SpeechToTextBackend`` (``base.py``), plus, below, its
settings section (if it has knobs: ``CHORUS_STT_<NAME>__<FIELD>``), a loader that imports the
module lazily (a replica imports only the engine it runs) and one line in ``BACKENDS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from services.common.registry import Backend, Factory, Registry
from services.common.settings import ApiSettings, BackendServiceSettings
from services.stt.backends.base import SpeechToTextBackend
from services.stt.backends.ct2_kernels import DEFAULT_CPU_ISA, CpuIsa

if TYPE_CHECKING:
    from services.stt.settings import SttSettings

__all__ = ["BACKENDS", "SettingsBase", "FasterWhisperSettings", "OpenAIApiSettings"]


class FasterWhisperSettings(BaseModel):
    """``CHORUS_STT_FASTER_WHISPER__*``."""

    compute_type: str = "int8"
    """Quantization: int8 on CPU, float16 or int8_float16 on GPU."""
    cpu_isa: CpuIsa = DEFAULT_CPU_ISA
    """The CPU kernels every replica computes with, so that one audio clip gets one answer on
    any x86-64 machine: CTranslate2's own kernels use this instruction set
    (``CT2_FORCE_CPU_ISA``; a CPU without it fails at load, naming it), Intel MKL is off, and
    oneDNN's matrix products stay at AVX (``ONEDNN_MAX_CPU_ISA``; SSE4.1 under GENERIC), the
    highest level at which they computed bit-identically on an AMD EPYC and an Intel Xeon.
    The price is speed: whisper-base takes about 1.55 times as long (a 9.7 s clip, beam 5, 2
    threads, AMD EPYC: 2.4 s instead of 1.55 s). ``native`` leaves the choice to the libraries
    and the ``CT2_*``/``ONEDNN_*`` environment: faster, but whisper-base's words and language
    probabilities then change with the CPU (an espeak Spanish clip translated to "a book" on one
    kernel set and "a lemon" on another). Details: ``services/stt/backends/ct2_kernels.py``."""


class OpenAIApiSettings(ApiSettings):
    """``CHORUS_STT_OPENAI_API__*``: an OpenAI-compatible transcription API (the base URL is
    the part before ``/audio/...``). Retrying is safe: transcription has no side effects."""

    languages: list[str] | None = None
    """ISO 639-1 codes the remote model accepts. Unset: Whisper's languages."""


def _faster_whisper(
    settings: SttSettings, options: FasterWhisperSettings, model: str
) -> SpeechToTextBackend:
    from services.stt.backends.faster_whisper import FasterWhisperBackend
    from services.stt.weights import resolve_faster_whisper_model

    path = resolve_faster_whisper_model(model, Path(settings.cache_dir))
    return FasterWhisperBackend(
        model,
        path,
        settings.device,
        options.compute_type,
        settings.cpu_threads,
        cpu_isa=options.cpu_isa,
    )


def _openai_whisper(settings: SttSettings, options: None, model: str) -> SpeechToTextBackend:
    from services.stt.backends.openai_whisper import OpenAIWhisperBackend

    return OpenAIWhisperBackend(model, device=settings.device)


def _openai_api(
    settings: SttSettings, options: OpenAIApiSettings, model: str
) -> SpeechToTextBackend:
    from services.stt.backends.openai_api import OpenAIApiBackend

    key = options.api_key()
    return OpenAIApiBackend(
        model,
        options.base_url,
        key.get_secret_value() if key is not None else None,
        timeout=options.timeout_seconds,
        max_retries=options.max_retries,
        languages=options.languages,
    )


BACKENDS: Registry[Factory[SpeechToTextBackend]] = Registry(
    "stt",
    [
        Backend("faster-whisper", Factory(_faster_whisper), FasterWhisperSettings),
        Backend("openai-whisper", Factory(_openai_whisper)),
        Backend("openai-api", Factory(_openai_api), OpenAIApiSettings),
    ],
)

# What ``SttSettings`` inherits: ``backend`` (checked against BACKENDS) and one section
# per backend with knobs. Type checkers see the static base (see BackendServiceSettings).
if TYPE_CHECKING:
    SettingsBase = BackendServiceSettings
else:
    SettingsBase = BACKENDS.settings_base(BackendServiceSettings, default="faster-whisper")
