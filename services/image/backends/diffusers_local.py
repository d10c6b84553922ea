"""Local text-to-image with diffusers: any pipeline ``AutoPipelineForText2Image`` can load.

A model is a folder written by ``save_pretrained`` or a hub id (SD 1.x/2.x, SD-Turbo, SDXL,
...), loaded with the standard ``from_pretrained``. Progress comes from the pipeline's
``callback_on_step_end``, which also aborts the run when the call is cancelled.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable

import torch
from diffusers import AutoPipelineForText2Image
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from services.image.backends.base import Event, Image, ImageRequest, Progress
from services.image.models import ModelDefaults

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _Cancelled(Exception):
    """Raised from the step callback to leave the denoising loop at once."""


class DiffusersBackend:
    name = "diffusers"

    def __init__(
        self,
        model_id: str,
        source: str,
        device: str = "cpu",
        dtype: str = "float32",
        variant: str | None = None,
        cpu_threads: int = 0,
        steps: int = 0,
    ) -> None:
        """``steps``: the model's default steps when known (its notes, or a known hub model);
        a pipeline cannot say (every Stable Diffusion pipeline defaults to 50)."""
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.model_id = model_id
        self.description = f"diffusers pipeline from {source} on {device} ({dtype})"
        self._device = device
        diffusers_logging.disable_progress_bar()  # tqdm bars would garble the service log
        transformers_logging.disable_progress_bar()
        self._pipeline = AutoPipelineForText2Image.from_pretrained(
            source, dtype=_DTYPES[dtype], variant=variant
        )
        self._pipeline.to(device)
        self._pipeline.set_progress_bar_config(disable=True)
        width, height = native_size(self._pipeline)
        self.native = ModelDefaults(width, height, steps)
        # A pipeline keeps per-call state (timesteps, the interrupt flag): one call at a time.
        self._lock = threading.Lock()
        log.info(
            "loaded %s (%s, native %dx%d)", model_id, type(self._pipeline).__name__, width, height
        )

    def generate(
        self, request: ImageRequest, emit: Callable[[Event], None], cancelled: threading.Event
    ) -> int:
        def on_step_end(
            pipeline: object, step: int, timestep: object, tensors: dict[str, object]
        ) -> dict[str, object]:
            emit(Progress(step + 1, request.steps))
            if cancelled.is_set():
                raise _Cancelled
            return tensors

        # CPU generators give the same noise for a seed whatever the device runs the UNet.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.seeds]
        with self._lock, torch.inference_mode():
            try:
                output = self._pipeline(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    width=request.width,
                    height=request.height,
                    num_inference_steps=request.steps,
                    guidance_scale=request.guidance_scale,
                    num_images_per_prompt=len(request.seeds),
                    generator=generators,
                    callback_on_step_end=on_step_end,
                    output_type="pil",
                )
            except _Cancelled:
                return 0
        for index, (picture, seed) in enumerate(zip(output.images, request.seeds, strict=True)):
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            emit(Image(buffer.getvalue(), picture.width, picture.height, seed, index))
        return len(output.images)


def native_size(pipeline: object) -> tuple[int, int]:
    """(width, height) the pipeline draws when given none, as diffusers computes it: the
    denoiser's latent sample size (``default_sample_size`` where the pipeline has one: SDXL,
    SD3, Flux; else the UNet's or transformer's ``sample_size``) times the VAE's scale factor.
    (0, 0) when the pipeline has neither."""
    scale = getattr(pipeline, "vae_scale_factor", 0)
    size = getattr(pipeline, "default_sample_size", None)
    if size is None:
        for name in ("unet", "transformer"):
            denoiser = getattr(pipeline, name, None)
            if denoiser is not None:
                size = getattr(denoiser.config, "sample_size", None)
                break
    if not isinstance(scale, int) or scale <= 0 or size is None:
        return 0, 0
    if isinstance(size, int):
        return size * scale, size * scale
    height, width = size  # a (height, width) pair in some configs
    return int(width) * scale, int(height) * scale
