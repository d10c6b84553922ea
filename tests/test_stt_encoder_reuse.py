"""The faster-whisper backend detects the language on the window it transcribes first and encodes
that window once (faster-whisper alone encodes it twice). In-process: the count of encoder
passes is not visible over gRPC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.audio import decode_audio
from services.stt.backends.base import TranscribeOptions
from services.stt.backends.faster_whisper import FasterWhisperBackend
from services.stt.settings import SttSettings
from services.stt.weights import resolve_faster_whisper_model
from tests.support.speech import espeak

SENTENCE = "Guten Morgen, ich möchte heute einen Kaffee trinken und ein Buch lesen."


@pytest.fixture(scope="module")
def backend() -> FasterWhisperBackend:
    path = resolve_faster_whisper_model("whisper-base", Path(SttSettings().cache_dir))
    return FasterWhisperBackend("whisper-base", path)


@pytest.fixture(scope="module")
def german(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    wav = espeak(SENTENCE, "de", tmp_path_factory.mktemp("reuse") / "de.wav")
    return decode_audio(wav, max_seconds=60)


def passes(backend: FasterWhisperBackend, audio: np.ndarray, language: str | None):
    before = backend.model.encoder_passes
    result = backend.transcribe(audio, TranscribeOptions(language=language))
    return result, backend.model.encoder_passes - before


def test_detection_shares_the_transcription_encoder_pass(backend, german):
    detected, detected_passes = passes(backend, german, None)
    explicit, explicit_passes = passes(backend, german, "de")
    assert detected_passes == explicit_passes == 1  # faster-whisper alone: 2 when detecting
    assert detected.language == "de"
    assert (detected.text, detected.segments) == (explicit.text, explicit.segments)
    # faster-whisper's own detection (its window holds one more mel frame) agrees.
    language, probability, _ = backend.model.detect_language(german)  # WhisperModel's own
    assert language == "de" and abs(detected.language_probability - probability) < 0.1


def test_long_audio_detection_costs_no_extra_pass(backend, german):
    repeats = int(np.ceil(40 * 16_000 / len(german)))  # over one 30 s window
    long = np.concatenate([german] * repeats)
    detected, detected_passes = passes(backend, long, None)
    _, explicit_passes = passes(backend, long, "de")
    assert detected.language == "de"
    assert detected_passes == explicit_passes >= 2
