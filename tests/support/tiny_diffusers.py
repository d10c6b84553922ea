"""A tiny random-weight Stable Diffusion pipeline folder for tests.

The pipeline (small UNet, VAE, CLIP text encoder and byte-level tokenizer, Euler scheduler) is
written with ``save_pretrained``; the image service then loads the folder through the very
``from_pretrained`` path a real model takes. ~7 MB, built in about a second, ~16 ms a step at
64x64 on two cores. It draws noise: tests check sizes, progress, determinism, not content.
"""

from __future__ import annotations

from pathlib import Path

from services.image.tiny import build_tiny_pipeline


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Write the pipeline to ``folder``; the same seed gives the same weights."""
    return build_tiny_pipeline(Path(folder), seed=seed)
