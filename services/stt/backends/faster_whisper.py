"""Speech-to-text backend built on faster-whisper (CTranslate2), the default.

Decoding runs at temperature 0 only, as the openai-whisper backend does: faster-whisper's
default ladder re-decodes a segment at rising temperatures, with random sampling, whenever its
average log-probability falls under -1. One clip then came back as different text on different
CPUs and runs (whisper-base translating German sits near -0.95), where every replica must
answer the same audio the same way; a single temperature also bounds the latency of hard audio.
"""

from __future__ import annotations

import numpy as np
from faster_whisper import WhisperModel

from services.stt.backends.base import Segment, TranscribeOptions, Transcription, Word


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
        self.model = WhisperModel(
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
