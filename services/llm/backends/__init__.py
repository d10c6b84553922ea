"""Text generation backends: the registry ``BACKENDS``, picked by ``CHORUS_LLM_BACKEND``.

A backend is a module here implementing ``TextGenerationBackend`` (``base.py``), plus, below,
its settings section (if it has knobs: ``CHORUS_LLM_<NAME>__<FIELD>``), a loader that imports
the module lazily (a replica imports only the engine it runs), what ListModels says of a model
before it is loaded, and one line in ``BACKENDS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from services.common.registry import Backend, Factory, Registry
from services.common.settings import ApiSettings, BackendServiceSettings
from services.llm.backends.base import TextGenerationBackend

if TYPE_CHECKING:
    from services.llm.settings import LlmSettings

__all__ = [
    "BACKENDS",
    "SettingsBase",
    "LlamaCppSettings",
    "OpenAISettings",
    "is_placeholder",
]


class LlamaCppSettings(BaseModel):
    """``CHORUS_LLM_LLAMA_CPP__*``: llama.cpp in-process."""

    chat_format: str = ""
    """How a conversation becomes a prompt. Empty: the GGUF's own chat template, or
    ``transcript`` when it has none (the offline Gemma base model has none). ``transcript``: a
    plain "User:/Assistant:" dialogue that base (not instruction-tuned) models continue well.
    Any other value names a llama-cpp chat format, e.g. ``gemma``, ``chatml``, ``llama-3``."""
    context_tokens: int = Field(default=2048, ge=128, le=1_048_576)
    """Context window (prompt plus reply) the model is loaded with."""
    gpu_layers: int = Field(default=0, ge=-1)
    """Layers offloaded to a GPU when llama-cpp was built with one (-1: all)."""


class OpenAISettings(ApiSettings):
    """``CHORUS_LLM_OPENAI__*``: any OpenAI-compatible chat completions server."""

    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    """Longest the server may take to answer (a stream may run longer)."""
    max_retries: int = Field(default=0, ge=0, le=10)
    """0 by default: the caller (or Envoy) decides about retries, not a hidden loop (a
    generation is not free to repeat)."""


def _load_llama_cpp(
    settings: LlmSettings, options: LlamaCppSettings, model: str
) -> TextGenerationBackend:
    from services.llm.backends.llama_cpp_local import LlamaCppBackend
    from services.llm.weights import resolve_gguf

    return LlamaCppBackend(
        model,
        resolve_gguf(model, Path(settings.cache_dir)),
        chat_format=options.chat_format,
        context_tokens=options.context_tokens,
        threads=settings.cpu_threads,
        gpu_layers=options.gpu_layers,
    )


def _describe_llama_cpp(settings: LlmSettings, options: LlamaCppSettings, model: str) -> str:
    from services.llm.weights import OFFLINE_DESCRIPTIONS

    return OFFLINE_DESCRIPTIONS.get(model, f"GGUF file {model} (llama.cpp)")


def _load_openai(
    settings: LlmSettings, options: OpenAISettings, model: str
) -> TextGenerationBackend:
    from services.llm.backends.openai_compat import OpenAICompatibleBackend

    return OpenAICompatibleBackend(model, options)


def _describe_openai(settings: LlmSettings, options: OpenAISettings, model: str) -> str:
    return f"{model} on the OpenAI-compatible server at {options.base_url}"


def is_placeholder(settings: LlmSettings, model: str) -> bool:
    """Whether ``model`` is a stand-in: an offline model marked so in ``weights.PLACEHOLDERS``
    (Gemma 3 270M base, the offline default), run by llama.cpp."""
    from services.llm.weights import PLACEHOLDERS

    return settings.backend == "llama-cpp" and model in PLACEHOLDERS


BACKENDS: Registry[Factory[TextGenerationBackend]] = Registry(
    "llm",
    [
        Backend("llama-cpp", Factory(_load_llama_cpp, _describe_llama_cpp), LlamaCppSettings),
        Backend("openai", Factory(_load_openai, _describe_openai), OpenAISettings),
    ],
)

# What ``LlmSettings`` inherits: ``backend`` (checked against BACKENDS) and one section
# per backend with knobs. Type checkers see the static base (see BackendServiceSettings).
if TYPE_CHECKING:
    SettingsBase = BackendServiceSettings
else:
    SettingsBase = BACKENDS.settings_base(BackendServiceSettings, default="llama-cpp")
