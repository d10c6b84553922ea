"""What the image service knows about a model beyond what its pipeline says.

Two sources, both read without loading the model:

* ``KNOWN_MODELS``: native size and usual steps of well-known hub models. A hosted model has no
  pipeline to ask, and a diffusers pipeline knows its size but not its steps (every Stable
  Diffusion pipeline defaults to 50, a turbo model's 1 included).
* A model folder's ``chorus-model.json`` (``NOTES_FILE``): ``{"placeholder": true, "steps": 4}``,
  for what only its author knows. The offline tiny random-weight pipeline writes one (the
  offline ``tiny-random-sd`` and the tests' copy alike), which is how the service knows it
  serves a placeholder whatever folder it was given.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from services.catalog import BY_NAME

__all__ = [
    "FALLBACK",
    "KNOWN_MODELS",
    "NOTES_FILE",
    "PLACEHOLDER_DESCRIPTION",
    "ModelDefaults",
    "ModelNotes",
    "read_notes",
]

log = logging.getLogger(__name__)

NOTES_FILE = "chorus-model.json"


@dataclass(frozen=True)
class ModelDefaults:
    """What a model draws best with: its native size and its usual number of steps. 0: not
    known (the service falls back on its settings, then on ``FALLBACK``)."""

    width: int = 0
    height: int = 0
    steps: int = 0


FALLBACK = ModelDefaults(width=512, height=512, steps=20)
"""What a request with zeros gets when neither the settings nor the model say (a hosted model
not in ``KNOWN_MODELS``): Stable Diffusion 1.x's size, and steps enough for its schedulers."""

KNOWN_MODELS: dict[str, ModelDefaults] = {
    # Turbo models are distilled to draw in one step (their model cards: 1 to 4).
    "stabilityai/sd-turbo": ModelDefaults(512, 512, 1),
    "stabilityai/sdxl-turbo": ModelDefaults(512, 512, 1),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ModelDefaults(512, 512, 25),
    "runwayml/stable-diffusion-v1-5": ModelDefaults(512, 512, 25),
    "stabilityai/stable-diffusion-2-1": ModelDefaults(768, 768, 25),
    "stabilityai/stable-diffusion-xl-base-1.0": ModelDefaults(1024, 1024, 30),
    "stabilityai/stable-diffusion-3.5-medium": ModelDefaults(1024, 1024, 40),
    "stabilityai/stable-diffusion-3.5-large": ModelDefaults(1024, 1024, 28),
    "stabilityai/stable-diffusion-3.5-large-turbo": ModelDefaults(1024, 1024, 4),
    "black-forest-labs/FLUX.1-schnell": ModelDefaults(1024, 1024, 4),
    "black-forest-labs/FLUX.1-dev": ModelDefaults(1024, 1024, 28),
}
"""Hub ids -> native size and the steps their model cards use."""

PLACEHOLDER_DESCRIPTION = (
    "Pictures are noise: the image model is a tiny random-weight placeholder. Set "
    f"{BY_NAME['image'].env('model')} to a real model (e.g. stabilityai/sd-turbo) for pictures."
)
"""ListModels' description of a placeholder model: one line a user can read."""


@dataclass(frozen=True)
class ModelNotes:
    """A folder's ``chorus-model.json``; the defaults when it has none."""

    placeholder: bool = False
    """A stand-in that proves the path without doing the job (random weights)."""
    steps: int = 0
    """Steps a request with 0 gets; 0: not said."""


def read_notes(model: str) -> ModelNotes:
    """The notes of ``model`` when it is a folder holding ``chorus-model.json``. A hub id, a
    folder without notes or notes that do not parse say nothing (logged: the model still
    serves)."""
    path = Path(model).expanduser() / NOTES_FILE
    if not path.is_file():
        return ModelNotes()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ModelNotes(bool(data.get("placeholder", False)), max(0, int(data.get("steps", 0))))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return ModelNotes()
