"""The one small interface every text-to-speech backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    """Voice id used in requests."""
    name: str
    language: str
    """BCP-47-ish tag, e.g. "en-US" or "en"."""
    sample_rate_hz: int
    backend: str
    """"piper" or "coqui"."""


class TextToSpeechBackend(Protocol):
    """A loaded set of voices. Calls run on a worker thread."""

    name: str

    def voices(self) -> list[VoiceInfo]: ...

    def synthesize(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """Speak one utterance (the servicer splits text into sentences first).

        Returns mono int16 samples and their sample rate. ``voice`` is already validated.
        """
        ...
