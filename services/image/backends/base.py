"""The one small interface every image generation backend implements."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from services.image.models import ModelDefaults


@dataclass(frozen=True)
class ImageRequest:
    """A validated request. A backend gets it with every default applied; 0 in width, height
    or steps only before that (the model's defaults are known once it is loaded)."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: list[int]
    """One seed per image to draw; image i is drawn from seeds[i]."""


@dataclass(frozen=True)
class Progress:
    step: int
    """Steps done, 1-based."""
    total_steps: int


@dataclass(frozen=True)
class Image:
    png: bytes
    width: int
    height: int
    seed: int
    index: int


Event = Progress | Image


class ImageGenerationBackend(Protocol):
    """One loaded model. ``generate`` runs on a worker thread."""

    name: str
    """Backend name, e.g. "diffusers" or "hf-inference"."""
    model_id: str
    description: str
    native: ModelDefaults
    """The model's native size and default steps, read from the loaded model (or, for a hosted
    one, known values); what a request leaving them at 0 gets."""

    def generate(
        self, request: ImageRequest, emit: Callable[[Event], None], cancelled: threading.Event
    ) -> int:
        """Draw ``len(request.seeds)`` images, emitting progress and each image as it exists.

        Returns the number of images drawn. Checks ``cancelled`` between steps and returns
        promptly once it is set.

        Raises:
            ChorusError: for failures the caller can act on (bad token, rate limit, bad input).
        """
        ...
