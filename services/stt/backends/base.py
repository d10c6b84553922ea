"""The one small interface every speech-to-text backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    """ISO 639-1; None -> detect."""
    word_timestamps: bool = False
    initial_prompt: str | None = None
    beam_size: int = 5


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    language_probability: float
    duration: float
    segments: tuple[Segment, ...]


class SpeechToTextBackend(Protocol):
    """A loaded speech model. Calls run on a worker thread, one at a time per worker."""

    name: str
    """Backend name: "faster-whisper" or "openai-whisper"."""
    model_id: str
    multilingual: bool

    def languages(self) -> list[str]:
        """ISO 639-1 codes the model knows."""
        ...

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        """Transcribe float32 mono 16 kHz audio in [-1, 1].

        Raises:
            ValueError: an option the model cannot honour (e.g. an unknown language).
        """
        ...
