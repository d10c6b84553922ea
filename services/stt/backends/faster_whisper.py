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
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.transcribe import Segment as FwSegment
from faster_whisper.transcribe import TranscriptionInfo

from services.stt.backends.base import Segment, TranscribeOptions, Transcription, Word


class EncoderReusingWhisperModel(WhisperModel):
    """A drop-in ``WhisperModel`` whose ``transcribe`` encodes each window once.

    With no language given (multilingual models, audio as samples), the language is detected on
    the window ``transcribe`` encodes first, and the encoder answers that window's second request
    from memory (per thread). ``transcribe`` returns its segments as a list, not a generator, so
    the memory is dropped when it returns. ``encoder_passes`` counts the passes actually run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
    ) -> None:
        """Load ``model_path`` (a CTranslate2 folder, or a hub id that real deployments may
        download); ``model_id`` is the name callers use for it."""
        self.model_id = model_id
        self.model = EncoderReusingWhisperModel(
            model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads
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
