"""gRPC adapter between ``chorus.v1.ImageGeneration`` and an image generation backend."""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import grpc
from chorus.v1 import common_pb2, image_pb2, image_pb2_grpc

from services.common.errors import InvalidArgument
from services.common.models import ModelManager, list_models
from services.common.workers import WorkerPool, WorkResult
from services.image.backends.base import (
    Event,
    Image,
    ImageGenerationBackend,
    ImageRequest,
    Progress,
)
from services.image.models import FALLBACK, ModelDefaults
from services.image.settings import ImageSettings

MIN_SIDE = 64
"""Smallest width or height: 8 latent pixels, below which UNets have nothing to downsample."""
MAX_GUIDANCE = 30.0


class ImageGenerationServicer(image_pb2_grpc.ImageGenerationServicer):
    def __init__(
        self,
        settings: ImageSettings,
        models: ModelManager[ImageGenerationBackend],
        workers: WorkerPool,
        descriptions: dict[str, str],
        placeholders: frozenset[str] = frozenset(),
    ) -> None:
        """``placeholders``: the ids of models that are stand-ins (``is_placeholder``)."""
        self._settings = settings
        self._models = models
        self._workers = workers
        self._descriptions = descriptions
        self._placeholders = placeholders

    def _validate(self, request: image_pb2.GenerateImageRequest) -> ImageRequest:
        s = self._settings
        if not request.prompt.strip():
            raise InvalidArgument("prompt is empty", field="prompt")
        for name in ("prompt", "negative_prompt"):
            length = len(getattr(request, name))
            if length > s.max_prompt_chars:
                raise InvalidArgument(
                    f"{name} has {length} characters; the limit is {s.max_prompt_chars}",
                    field=name,
                )
        # 0 stays 0 here: the model's defaults fill it once the model is loaded.
        width, height, steps = request.width, request.height, request.steps
        for name, value in (("width", width), ("height", height)):
            if value and (value % 8 or not MIN_SIDE <= value <= s.max_side):
                raise InvalidArgument(
                    f"{name} {value} must be a multiple of 8 within {MIN_SIDE}..{s.max_side}",
                    field=name,
                )
        if steps > s.max_steps:
            raise InvalidArgument(
                f"steps {steps} is over the limit of {s.max_steps}", field="steps"
            )
        count = request.num_images or 1
        if count > s.max_images:
            raise InvalidArgument(
                f"num_images {count} is over the limit of {s.max_images}", field="num_images"
            )
        guidance = (
            request.guidance_scale
            if request.HasField("guidance_scale")
            else s.default_guidance_scale
        )
        if not (math.isfinite(guidance) and 0 <= guidance <= MAX_GUIDANCE):
            raise InvalidArgument(
                f"guidance_scale {guidance} is outside 0..{MAX_GUIDANCE:g}", field="guidance_scale"
            )
        seed = request.seed if request.HasField("seed") else secrets.randbits(32)
        return ImageRequest(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=width,
            height=height,
            steps=steps,
            guidance_scale=guidance,
            seeds=[(seed + i) % 2**32 for i in range(count)],
        )

    def defaults(self, native: ModelDefaults) -> ModelDefaults:
        """What a request with width, height or steps 0 gets from a model whose own values are
        ``native``: the configured defaults, else the model's (its size scaled down to fit
        max_side, its steps within max_steps), else ``FALLBACK``'s."""
        s = self._settings
        size = native if native.width and native.height else FALLBACK
        width, height = fit(size.width, size.height, s.max_side)
        return ModelDefaults(
            width=s.default_width or width,
            height=s.default_height or height,
            steps=s.default_steps or min(native.steps or FALLBACK.steps, s.max_steps),
        )

    async def Generate(
        self, request: image_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[image_pb2.GenerateImageResponse]:
        job = self._validate(request)
        model_id = self._models.resolve(request.model)
        async with self._models.use(model_id) as backend:
            default = self.defaults(backend.native)
            job = replace(
                job,
                width=job.width or default.width,
                height=job.height or default.height,
                steps=job.steps or default.steps,
            )
            interval = self._settings.progress_interval_ms / 1000

            def generate(emit: Callable[[Event], None], cancelled: threading.Event) -> int:
                return backend.generate(job, throttle_progress(emit, interval), cancelled)

            async for item in self._workers.stream(generate):
                if isinstance(item, Progress):
                    yield image_pb2.GenerateImageResponse(
                        progress=image_pb2.ImageProgress(
                            step=item.step, total_steps=item.total_steps
                        )
                    )
                elif isinstance(item, Image):
                    yield image_pb2.GenerateImageResponse(
                        image=image_pb2.GeneratedImage(
                            png=item.png,
                            width=item.width,
                            height=item.height,
                            seed=item.seed,
                            index=item.index,
                        )
                    )
                elif isinstance(item, WorkResult):
                    yield image_pb2.GenerateImageResponse(
                        result=image_pb2.ImageGenerationResult(
                            model=model_id,
                            num_images=item.value,
                            processing_seconds=item.run_seconds,
                            queue_seconds=item.queue_seconds,
                        )
                    )

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        s = self._settings
        listing = list_models(self._models, s.backend, self._descriptions, self._placeholders)
        for info in listing.models:
            backend = self._models.peek(info.id)
            if backend is not None:
                native, default = backend.native, self.defaults(backend.native)
            else:  # its pipeline is not read until it is loaded
                native = ModelDefaults()
                default = ModelDefaults(
                    s.default_width or 0, s.default_height or 0, s.default_steps or 0
                )
            info.image.CopyFrom(
                common_pb2.ImageModelInfo(
                    native_width=native.width,
                    native_height=native.height,
                    default_width=default.width,
                    default_height=default.height,
                    default_steps=default.steps,
                )
            )
        return listing


def fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down (aspect kept) until neither side is over
    ``max_side``, each side a multiple of 8 and at least ``MIN_SIDE``."""
    scale = min(1.0, max_side / max(width, height))

    def side(pixels: int) -> int:
        return max(MIN_SIDE, int(pixels * scale) // 8 * 8)

    return side(width), side(height)


def throttle_progress(
    emit: Callable[[Event], None], interval_s: float, clock: Callable[[], float] = time.monotonic
) -> Callable[[Event], None]:
    """``emit`` passing on every image, and progress at the first step, the last, and otherwise
    only once ``interval_s`` has passed since the last one passed on. Runs on the worker thread,
    so a dropped step costs nothing beyond a clock read."""
    last: float | None = None

    def throttled(event: Event) -> None:
        nonlocal last
        if isinstance(event, Progress) and event.step < event.total_steps:
            now = clock()
            if last is not None and now - last < interval_s:
                return
            last = now
        emit(event)

    return throttled
