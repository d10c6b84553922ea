"""Text generation backends, picked by ``CHORUS_LLM_BACKEND``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.llm.backends.base import TextGenerationBackend
from services.llm.settings import LlmSettings


def loader_for(settings: LlmSettings, model: str) -> Callable[[], TextGenerationBackend]:
    """A function that loads ``model`` with the configured backend (imports stay lazy so a
    replica only imports the engine it runs)."""
    if settings.backend == "llama-cpp":

        def load_llama_cpp() -> TextGenerationBackend:
            from services.llm.backends.llama_cpp_local import LlamaCppBackend
            from services.llm.weights import resolve_gguf

            return LlamaCppBackend(
                model,
                resolve_gguf(model, Path(settings.cache_dir)),
                chat_format=settings.chat_format,
                context_tokens=settings.context_tokens,
                threads=settings.cpu_threads,
                gpu_layers=settings.gpu_layers,
            )

        return load_llama_cpp

    def load_openai() -> TextGenerationBackend:
        from services.llm.backends.openai_compat import OpenAICompatibleBackend

        return OpenAICompatibleBackend(
            model,
            settings.base_url,
            settings.resolved_api_key(),
            settings.request_timeout_seconds,
        )

    return load_openai


def describe(settings: LlmSettings, model: str) -> str:
    """What ListModels says about a model before it is loaded."""
    from services.llm.weights import OFFLINE_DESCRIPTIONS

    if settings.backend == "llama-cpp":
        return OFFLINE_DESCRIPTIONS.get(model, f"GGUF file {model} (llama.cpp)")
    return f"{model} on the OpenAI-compatible server at {settings.base_url}"
