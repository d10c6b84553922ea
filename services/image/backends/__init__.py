"""Image generation backends: the registry ``BACKENDS``, picked by ``CHORUS_IMAGE_BACKEND``.

A backend is a module here implementing ``ImageGenerationBackend`` (``base.py``), plus, below,
its settings section (if it has knobs: ``CHORUS_IMAGE_<NAME>__<FIELD>``), a loader that imports
the module lazily (a replica imports only the engine it runs: torch is not needed for the
hosted API), what ListModels says of a model before it is loaded, and one line in
``BACKENDS``.

A model is a placeholder (``ModelInfo.placeholder``) when it is the offline ``tiny-random-sd``
or a folder whose ``chorus-model.json`` says so (``services/image/models.py``); hosted models
never are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from services.common.registry import Backend, Factory, Registry
from services.common.settings import ApiSettings, BackendServiceSettings
from services.image.backends.base import ImageGenerationBackend
from services.image.models import KNOWN_MODELS, PLACEHOLDER_DESCRIPTION, read_notes

if TYPE_CHECKING:
    from services.image.settings import ImageSettings

__all__ = [
    "BACKENDS",
    "SettingsBase",
    "OFFLINE_MODEL",
    "DiffusersSettings",
    "HfInferenceSettings",
    "is_placeholder",
]

OFFLINE_MODEL = "tiny-random-sd"


class DiffusersSettings(BaseModel):
    """``CHORUS_IMAGE_DIFFUSERS__*``: a diffusers pipeline in-process."""

    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Weights' dtype. float16 halves memory on CUDA/MPS; CPUs want float32 (or bfloat16)."""
    variant: str | None = None
    """Weights variant to load, e.g. ``fp16`` for repositories that ship one."""


class HfInferenceSettings(ApiSettings):
    """``CHORUS_IMAGE_HF_INFERENCE__*``: the Hugging Face hosted inference API. Without a key
    the hub library looks one up itself (``HF_TOKEN``, or the token of ``hf auth login``)."""

    base_url: str = "https://router.huggingface.co/hf-inference"
    """API root; requests go to ``{base_url}/models/{model}``. A dedicated Inference Endpoint
    URL also works (set ``endpoint_is_model_url``)."""
    endpoint_is_model_url: bool = False
    """Post to ``base_url`` itself (an Inference Endpoint serving one model)."""
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    max_retries: int = Field(default=0, ge=0, le=0)
    """Always 0: the hub client does not retry (the caller, or Envoy, decides)."""


def _load_diffusers(
    settings: ImageSettings, options: DiffusersSettings, model: str
) -> ImageGenerationBackend:
    from services.image.backends.diffusers_local import DiffusersBackend
    from services.image.tiny import tiny_pipeline_folder

    source = (
        str(tiny_pipeline_folder(Path(settings.cache_dir))) if model == OFFLINE_MODEL else model
    )
    known = KNOWN_MODELS.get(model)
    return DiffusersBackend(
        model,
        source,
        settings.device,
        options.dtype,
        options.variant,
        settings.cpu_threads,
        steps=read_notes(source).steps or (known.steps if known else 0),
    )


def _describe_diffusers(settings: ImageSettings, options: DiffusersSettings, model: str) -> str:
    if is_placeholder(settings, model):
        return PLACEHOLDER_DESCRIPTION
    return f"diffusers pipeline {model} on {settings.device} ({options.dtype})"


def _load_hf_inference(
    settings: ImageSettings, options: HfInferenceSettings, model: str
) -> ImageGenerationBackend:
    from services.image.backends.hf_inference import HfInferenceBackend

    return HfInferenceBackend(model, options)


def _describe_hf_inference(
    settings: ImageSettings, options: HfInferenceSettings, model: str
) -> str:
    return f"{model} on the Hugging Face inference API"


def is_placeholder(settings: ImageSettings, model: str) -> bool:
    """Whether ``model`` is a stand-in that draws noise: the offline ``tiny-random-sd``, or a
    diffusers folder whose notes say so (the tests' copy of it). Read without loading it."""
    if settings.backend != "diffusers":
        return False
    return model == OFFLINE_MODEL or read_notes(model).placeholder


BACKENDS: Registry[Factory[ImageGenerationBackend]] = Registry(
    "image",
    [
        Backend("diffusers", Factory(_load_diffusers, _describe_diffusers), DiffusersSettings),
        Backend(
            "hf-inference",
            Factory(_load_hf_inference, _describe_hf_inference),
            HfInferenceSettings,
        ),
    ],
)

# What ``ImageSettings`` inherits: ``backend`` (checked against BACKENDS) and one section
# per backend with knobs. Type checkers see the static base (see BackendServiceSettings).
if TYPE_CHECKING:
    SettingsBase = BackendServiceSettings
else:
    SettingsBase = BACKENDS.settings_base(BackendServiceSettings, default="diffusers")
