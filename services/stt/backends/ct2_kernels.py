"""The CPU kernels CTranslate2 computes with, pinned so that every replica computes alike.

One audio clip must get one answer from every replica, and by default CTranslate2 gives none:
it and the oneDNN library inside it pick their kernels for the CPU they find, and
whisper-base's int8 layers re-quantize their inputs, so a last-bit difference grows into other
words. Measured on an espeak Spanish clip (whisper-base int8, 2 threads, beam 1, translate):
this AMD EPYC's defaults (CTranslate2 AVX2, oneDNN AVX-512 VNNI) wrote "... see a coffee and a
lemon in the park."; of 20 kernel sets (``CT2_FORCE_CPU_ISA`` x ``CT2_USE_MKL`` x
``ONEDNN_MAX_CPU_ISA``) 5 wrote "a lemon" and 15 "a book", and p(es) ran from 0.53 to 0.69.
An Intel Xeon's defaults (MKL) and this AMD's differed in the tokens of 5 of 6 clips tried,
and in every probability.
Fed the same mel features, an AMD EPYC (Zen 4) and an Intel Xeon (Sapphire Rapids) agreed bit
for bit (encoder output, language probabilities, tokens, scores) exactly when:

- CTranslate2's own kernels are forced to one level (``CT2_FORCE_CPU_ISA``): they agreed at
  every level, GENERIC to AVX512. AVX2 is the default: every x86-64 server CPU of the last
  decade has it, and a CPU without it fails at load, naming it, instead of answering otherwise.
- Intel MKL is off (``CT2_USE_MKL=0``): CTranslate2 uses MKL on Intel CPUs only, oneDNN
  elsewhere, and the two round differently.
- oneDNN's matrix products stay at AVX (``ONEDNN_MAX_CPU_ISA``): at AVX2 and at AVX-512 its
  kernels differed between the two CPUs, even on one thread; at AVX and at SSE4.1 they agreed.

The price is speed, oneDNN's int8 products at AVX rather than AVX-512 VNNI: on 2 threads of
this AMD EPYC a 9.7 s clip took 2.4 s instead of 1.55 s (beam 5; 2.1 s instead of 1.4 s at beam
1), a real-time factor of 0.25 instead of 0.16. Holding oneDNN at AVX2 would have cost a fifth,
not a half, but AVX2 is where the two CPUs parted. ``cpu_isa=native`` buys the speed back for
a deployment that accepts per-CPU answers.

CTranslate2 reads ``CT2_USE_MKL`` once, when its library is loaded (``import ctranslate2``, which
``import faster_whisper`` does), and the other two at its first model load, so
``pin_cpu_kernels`` must run before anything imports faster-whisper: the STT service calls it
first thing (and the tests' conftest), and ``EncoderReusingWhisperModel`` warns when it came too
late for MKL. This module imports neither library.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from typing import Literal

__all__ = ["DEFAULT_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "CpuIsa", "pin_cpu_kernels", "pinned_cpu_isa"]

CpuIsa = Literal["native", "GENERIC", "AVX", "AVX2", "AVX512"]
DEFAULT_CPU_ISA: CpuIsa = "AVX2"

log = logging.getLogger(__name__)

ONEDNN_MAX_CPU_ISA = {"GENERIC": "SSE41", "AVX": "AVX", "AVX2": "AVX", "AVX512": "AVX"}
"""oneDNN's ceiling for each pinned level: AVX, the highest at which its products agreed between
the AMD and the Intel CPU (SSE4.1 under GENERIC, for CPUs without AVX)."""

_pinned: CpuIsa | None = None
_lock = threading.Lock()


def pin_cpu_kernels(isa: CpuIsa, device: str = "cpu") -> None:
    """Make the CTranslate2 models this process loads compute with the kernels ``isa`` names;
    ``native`` leaves the libraries' choice and the ``CT2_*``/``ONEDNN_*`` environment alone.
    Nothing is pinned for ``device="cuda"``, which runs no CPU kernels.

    The first call decides for the whole process (the libraries read their variables once);
    calling again with the same value is a no-op.

    Raises:
        ValueError: ``isa`` names x86-64 kernels and this machine is not x86-64.
        RuntimeError: an earlier call in this process pinned other kernels.
    """
    global _pinned
    if device == "cuda":
        return
    with _lock:
        if _pinned is not None and _pinned != isa:
            raise RuntimeError(
                f"this process already pinned CTranslate2 to cpu_isa {_pinned}; it cannot "
                f"switch to {isa} (the libraries pick their kernels once)"
            )
        if isa != "native":
            if platform.machine().lower() not in ("x86_64", "amd64"):
                raise ValueError(
                    f"cpu_isa {isa} names x86-64 kernels and this machine is "
                    f"{platform.machine()}: set CHORUS_STT_FASTER_WHISPER__CPU_ISA=native"
                )
            os.environ["CT2_FORCE_CPU_ISA"] = isa
            os.environ["CT2_USE_MKL"] = "0"
            os.environ["ONEDNN_MAX_CPU_ISA"] = ONEDNN_MAX_CPU_ISA[isa]
        if _pinned is None:
            log.info(
                "CTranslate2 CPU kernels: %s",
                "the libraries' choice for this CPU (cpu_isa native)"
                if isa == "native"
                else f"{isa}, no MKL, oneDNN up to {ONEDNN_MAX_CPU_ISA[isa]} (cpu_isa {isa})",
            )
        _pinned = isa


def pinned_cpu_isa() -> CpuIsa | None:
    """What ``pin_cpu_kernels`` pinned in this process (None: not called yet)."""
    return _pinned
