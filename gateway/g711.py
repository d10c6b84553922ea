"""G.711 (mu-law and A-law, 8 kHz telephone audio) to and from 16-bit PCM, by table lookup.

The Realtime API lets a client speak ``audio/pcmu`` or ``audio/pcma``; the orchestrator takes and
gives PCM16 only. Each byte of G.711 is one sample, so decoding is one 256-entry table and
encoding one 65536-entry table (each input value to its nearest level), both built once with
numpy. ``audioop`` did this until Python 3.13 removed it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["Codec", "decode", "encode"]

Codec = Literal["pcmu", "pcma"]


def _ulaw_levels() -> np.ndarray:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + 0x84 << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_levels() -> np.ndarray:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _encoder(levels: np.ndarray) -> np.ndarray:
    """For each int16 value (offset by 32768), the code whose level is nearest."""
    order = np.argsort(levels, kind="stable")
    sorted_levels = levels[order].astype(np.int32)
    values = np.arange(-32768, 32768, dtype=np.int32)
    right = np.clip(np.searchsorted(sorted_levels, values), 1, len(levels) - 1)
    left = right - 1
    nearer_left = values - sorted_levels[left] <= sorted_levels[right] - values
    return order[np.where(nearer_left, left, right)].astype(np.uint8)


_LEVELS: dict[str, np.ndarray] = {"pcmu": _ulaw_levels(), "pcma": _alaw_levels()}
_CODES: dict[str, np.ndarray] = {name: _encoder(levels) for name, levels in _LEVELS.items()}


def decode(data: bytes, codec: Codec) -> bytes:
    """G.711 bytes as little-endian PCM16 (twice as many bytes, same sample rate)."""
    samples = _LEVELS[codec][np.frombuffer(data, dtype=np.uint8)]
    return samples.astype("<i2").tobytes()


def encode(pcm: bytes, codec: Codec) -> bytes:
    """Little-endian PCM16 as G.711 (an odd trailing byte is dropped)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32) + 32768
    return bytes(_CODES[codec][samples].tobytes())
