"""The one small interface every speech-to-text backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None
    """ISO 639-1; None -> detect."""
    word_timestamps: bool = False
    initial_prompt: str | None = None
    beam_size: int = 5
    task: Literal["transcribe", "translate"] = "transcribe"
    """``translate``: English text whatever the spoken language (multilingual models only)."""


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
    """Backend name: "faster-whisper", "openai-whisper" or "openai-api"."""
    model_id: str
    multilingual: bool
    """Knows languages other than English, and so can translate."""
    partial_results: bool
    """Worth asking for partial hypotheses while a stream is open. False for remote APIs, where
    each partial would be one more (billed) request: streams get final segments only."""

    def languages(self) -> list[str]:
        """ISO 639-1 codes the model knows."""
        ...

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcription:
        """Transcribe float32 mono 16 kHz audio in [-1, 1].

        Raises:
            ValueError: an option the model cannot honour (e.g. an unknown language).
            ChorusError: a remote backend's failure, already mapped to a status.
        """
        ...
