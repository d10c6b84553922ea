"""Speech-to-text backend built on faster-whisper (CTranslate2), the default.

Decoding runs at temperature 0 only, as the openai-whisper backend does: faster-whisper's
default ladder re-decodes a segment at rising temperatures, with random sampling, whenever its
average log-probability falls under -1. One clip then came back as different text on different
CPUs and runs (whisper-base translating German sits near -0.95), where every replica must
answer the same audio the same way; a single temperature also bounds the latency of hard audio.

With no language given, the language is detected on exactly the first 30 s window that the
transcription then encodes, and the encoder answers that second request from memory
(``EncoderReusingWhisperModel``): faster-whisper alone encodes the window twice (once to detect,
once to transcribe), a whole encoder pass, about 0.5 s of the 1.4 s whisper-base spends on a 3 s
question on 2 cores.

Every replica must compute alike, so the CPU kernels are pinned (``ct2_kernels``, the
``cpu_isa`` setting) and the mel features are computed with exactly rounded arithmetic
(``PortableFeatureExtractor``): by default both depend on the CPU, and whisper-base's words
with them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import TranscriptionInfo

from services.stt.backends.base import Segment, TranscribeOptions, Transcription, Word
from services.stt.backends.ct2_kernels import DEFAULT_CPU_ISA, CpuIsa, pin_cpu_kernels

log = logging.getLogger(__name__)


class PortableFeatureExtractor(FeatureExtractor):
    """faster-whisper's log-mel features, computed with the same bits on every x86-64 CPU.

    faster-whisper's own ``FeatureExtractor`` leaves three steps to code picked per CPU, which
    rounds differently: the mel projection (a matrix product handed to OpenBLAS, whose kernel is
    SkylakeX on AVX-512 machines, Haswell on AVX2 ones), ``np.log10`` (float32 SIMD code that
    differs between numpy's AVX-512 and AVX2 paths) and the power spectrum (``np.abs`` of
    complex64, otherwise on numpy's x86-64-v2 path). One last bit is enough: with the
    CTranslate2 kernels pinned, an espeak Spanish clip translated to "... drink a lemon in the
    park." from faster-whisper's features on this AMD EPYC (OpenBLAS SkylakeX, numpy AVX-512)
    and to "... a book in the park." from the same audio's features under OpenBLAS's Haswell
    kernel or numpy's AVX2 code. Here those steps use only arithmetic that IEEE 754 rounds
    exactly, in float64 (``+``, ``*``, ``/``, ``frexp``), in a fixed order, so numpy's SIMD
    width cannot change a result; the features are rounded to float32 once, at the end. The STFT
    (numpy's pocketfft) and the window were already the same under numpy's x86-64-v2, v3 and v4
    code. (FFmpeg's resampler, the step before, agrees on every CPU with FMA3, which the AVX2
    that ``cpu_isa`` requires implies.) It costs 30 ms of CPU per 30 s window, where
    faster-whisper's took 38 ms, and stays within 2e-7 of it.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._window = np.hanning(self.n_fft + 1)[:-1].astype("float32")
        # The filter bank is sparse (391 of 80 x 201 weights for 80 bands): each band is
        # summed over its own bins only.
        self._bands = []
        for row in self.mel_filters:
            bins = np.flatnonzero(row)
            self._bands.append((bins, row[bins].astype(np.float64)))

    def __call__(
        self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None
    ) -> np.ndarray:
        """The log-mel spectrogram of ``waveform``, as faster-whisper 1.2's ``__call__``."""
        if chunk_length is not None:
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        waveform = np.asarray(waveform, dtype=np.float32)
        if padding:
            waveform = np.pad(waveform, (0, padding))
        stft = self.stft(
            waveform, self.n_fft, self.hop_length, window=self._window, return_complex=True
        ).astype(np.complex64)[..., :-1]
        real = stft.real.astype(np.float64)
        imag = stft.imag.astype(np.float64)
        log_spec = _log10(np.maximum(self._project(real * real + imag * imag), 1e-10))
        log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).astype(np.float32)

    def _project(self, power: np.ndarray) -> np.ndarray:
        """``mel_filters @ power`` (bins on the second-last axis), summed bin after bin."""
        out = np.zeros(power.shape[:-2] + (len(self._bands), power.shape[-1]), np.float64)
        for band, (bins, weights) in enumerate(self._bands):
            total = out[..., band, :]
            for k, weight in zip(bins, weights, strict=True):
                total += weight * power[..., k, :]
        return out


_LOG10_2 = math.log10(2.0)
_LOG10_E = math.log10(math.e)
_ATANH_TERMS = 11  # |s| <= 0.172, so the 12th term is under 1e-18 of the sum


def _log10(x: np.ndarray) -> np.ndarray:
    """log10 of positive float64 values from exactly rounded arithmetic only, so every CPU
    computes the same bits: x = m * 2**e with m in [sqrt(1/2), sqrt(2)), and
    ln m = 2 atanh(s) = 2 (s + s**3/3 + s**5/5 + ...) with s = (m - 1) / (m + 1). Within 2e-15
    of ``np.log10`` (whose SIMD code, and so its last bits, numpy picks per CPU)."""
    m, e = np.frexp(x)
    low = m < math.sqrt(0.5)
    m = np.where(low, m * 2.0, m)
    e = e - low
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    series = np.full_like(s, 1.0 / (2 * _ATANH_TERMS - 1))
    for k in range(_ATANH_TERMS - 2, -1, -1):
        series = series * s2 + 1.0 / (2 * k + 1)
    return e * _LOG10_2 + (2.0 * s * series) * _LOG10_E


class EncoderReusingWhisperModel(WhisperModel):
    """A drop-in ``WhisperModel`` that computes alike on every x86-64 CPU (pinned kernels,
    portable features) and whose ``transcribe`` encodes each window once.

    With no language given (multilingual models, audio as samples), the language is detected on
    the window ``transcribe`` encodes first, and the encoder answers that window's second request
    from memory (per thread). ``transcribe`` returns its segments as a list, not a generator, so
    the memory is dropped when it returns. ``encoder_passes`` counts the passes actually run.
    """

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        cpu_isa: CpuIsa = DEFAULT_CPU_ISA,
        **kwargs: Any,
    ) -> None:
        """``WhisperModel``'s arguments, plus ``cpu_isa``: the CPU kernels, pinned before the
        model loads (``pin_cpu_kernels``; not for ``device="cuda"``, which runs none). The
        features come from ``PortableFeatureExtractor`` in every case."""
        pin_cpu_kernels(cpu_isa, device)
        if device != "cuda" and cpu_isa != "native" and _uses_mkl():
            # Too late to change: the STT service pins first; a script that imported
            # faster-whisper earlier still runs, but computes as an unpinned Intel CPU does.
            log.warning(
                "CTranslate2 was imported with Intel MKL on, before cpu_isa %s could turn it "
                "off, so this process computes otherwise than pinned replicas: call "
                "services.stt.backends.ct2_kernels.pin_cpu_kernels before anything imports "
                "faster_whisper or ctranslate2",
                cpu_isa,
            )
        super().__init__(model_path, device=device, **kwargs)
        self.feature_extractor = PortableFeatureExtractor(**self.feat_kwargs)
        self._last = threading.local()
        self.encoder_passes = 0

    def transcribe(  # type: ignore[override]
        self, audio: Any, language: str | None = None, **options: Any
    ) -> tuple[list[FwSegment], TranscriptionInfo]:
        probability = None
        if language is None and self.model.is_multilingual and isinstance(audio, np.ndarray):
            language, probability = self._detect_language_of_first_window(audio)
        try:
            segments, info = super().transcribe(audio, language=language, **options)
            segments = list(segments)
        finally:
            self._last.pair = None
        if probability is not None:
            info = dataclasses.replace(info, language_probability=probability)
        return segments, info

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        last = getattr(self._last, "pair", None)
        if (
            last is not None
            and last[0].shape == features.shape
            and np.array_equal(last[0], features)
        ):
            return last[1]
        output = super().encode(features)
        self.encoder_passes += 1
        self._last.pair = (features, output)
        return output

    def _detect_language_of_first_window(self, audio: np.ndarray) -> tuple[str, float]:
        """The language of the window ``transcribe`` encodes first: its first 30 s, less the
        last mel frame, zero-padded (faster-whisper 1.2's ``generate_segments``)."""
        features = self.feature_extractor(audio)
        frames = min(self.feature_extractor.nb_max_frames, features.shape[-1] - 1)
        output = self.encode(pad_or_trim(features[:, :frames]))
        token, probability = self.model.detect_language(output)[0][0]
        return token[2:-2], float(probability)


def _uses_mkl() -> bool:
    """Whether CTranslate2 runs on Intel MKL: only MKL gives it 16-bit integer products."""
    return "int16" in ctranslate2.get_supported_compute_types("cpu")


class FasterWhisperBackend:
    """``SpeechToTextBackend`` wrapping ``faster_whisper.WhisperModel``."""

    name = "faster-whisper"
    partial_results = True

    def __init__(
        self,
        model_id: str,
        model_path: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        cpu_isa: CpuIsa = DEFAULT_CPU_ISA,
    ) -> None:
        """Load ``model_path`` (a CTranslate2 folder, or a hub id that real deployments may
        download); ``model_id`` is the name callers use for it."""
        self.model_id = model_id
        self.model = EncoderReusingWhisperModel(
            model_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            cpu_isa=cpu_isa,
        )
        self.multilingual = bool(self.model.model.is_multilingual)

    def languages(self) -> list[str]:
        return sorted(self.model.supported_languages)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        if options.language and options.language not in self.languages():
            raise ValueError(f"model {self.model_id} does not know language {options.language!r}")
        segments, info = self.model.transcribe(
            audio,
            language=options.language,
            beam_size=options.beam_size,
            word_timestamps=options.word_timestamps,
            initial_prompt=options.initial_prompt,
            task=options.task,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        result = tuple(
            Segment(
                id=i,
                start=s.start,
                end=s.end,
                text=s.text.strip(),
                words=tuple(Word(w.word, w.start, w.end, w.probability) for w in s.words or ()),
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
            )
            for i, s in enumerate(segments)
        )
        return Transcription(
            text=" ".join(s.text for s in result if s.text).strip(),
            language=info.language,
            language_probability=float(info.language_probability),
            duration=float(info.duration),
            segments=result,
        )
