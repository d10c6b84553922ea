"""Image generation backends, picked by ``CHORUS_IMAGE_BACKEND``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.image.backends.base import ImageGenerationBackend
from services.image.settings import ImageSettings

OFFLINE_MODEL = "tiny-random-sd"


def loader_for(settings: ImageSettings, model: str) -> Callable[[], ImageGenerationBackend]:
    """A function that loads ``model`` with the configured backend (imports stay lazy so a
    replica only imports the engine it runs: torch is not needed for the hosted API)."""
    if settings.backend == "diffusers":

        def load_diffusers() -> ImageGenerationBackend:
            from services.image.backends.diffusers_local import DiffusersBackend
            from services.image.tiny import tiny_pipeline_folder

            source = (
                str(tiny_pipeline_folder(Path(settings.cache_dir)))
                if model == OFFLINE_MODEL
                else model
            )
            return DiffusersBackend(
                model,
                source,
                settings.device,
                settings.dtype,
                settings.variant,
                settings.cpu_threads,
            )

        return load_diffusers

    def load_hf_inference() -> ImageGenerationBackend:
        from services.image.backends.hf_inference import HfInferenceBackend

        return HfInferenceBackend(
            model,
            settings.hf_endpoint,
            settings.hf_endpoint_is_model_url,
            settings.resolved_hf_token(),
            settings.hf_timeout_seconds,
        )

    return load_hf_inference


def describe(settings: ImageSettings, model: str) -> str:
    """What ListModels says about a model before it is loaded."""
    if settings.backend == "diffusers" and model == OFFLINE_MODEL:
        return "tiny random-weight Stable Diffusion (offline; draws noise, proves the path)"
    if settings.backend == "diffusers":
        return f"diffusers pipeline {model} on {settings.device} ({settings.dtype})"
    return f"{model} on the Hugging Face inference API"
