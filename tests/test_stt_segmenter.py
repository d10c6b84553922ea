"""The streaming segmenter's speculation, on real speech and the real Silero VAD (in-process:
which work it offers is not visible over gRPC, only its effect)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.audio import decode_audio
from services.stt.streaming import SAMPLE_RATE, Segmenter, Work
from tests.support.speech import espeak, speech_bounds

CHUNK = SAMPLE_RATE // 10  # 100 ms, as a live client sends


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    wav = espeak(
        "Please send the report to my office.", "en", tmp_path_factory.mktemp("seg") / "s.wav"
    )
    audio = decode_audio(wav, max_seconds=60)
    start, end = speech_bounds(audio, SAMPLE_RATE)  # the speech alone: the pauses here are exact
    return audio[start:end]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def feed(segmenter: Segmenter, audio: np.ndarray, end: bool = False) -> list[Work]:
    """Send ``audio`` in 100 ms chunks, polling after each as the servicer does."""
    works = []
    for start in range(0, len(audio), CHUNK):
        segmenter.append(audio[start : start + CHUNK])
        while (work := segmenter.poll()) is not None:
            works.append(work)
    while end and (work := segmenter.poll(end_of_stream=True)) is not None:
        works.append(work)
    return works


def segmenter(speculate_after: float = 0.25) -> Segmenter:
    return Segmenter(
        partial_interval=60, silence=0.6, max_segment=28, speculate_after=speculate_after
    )


def test_candidate_is_offered_early_and_is_the_final_cut(speech):
    works = feed(segmenter(), np.concatenate([silence(0.3), speech, silence(1.0)]))
    kinds = ["candidate" if w.speculative else "final" if w.is_final else "partial" for w in works]
    assert kinds == ["candidate", "final"], kinds
    candidate, final = works
    assert final.start == candidate.start
    assert np.array_equal(final.audio, candidate.audio)  # the decode started early is the final's


def test_resumed_speech_makes_the_candidate_stale(speech):
    # A 0.35 s pause: long enough for a candidate, too short to close the segment.
    audio = np.concatenate([speech, silence(0.35), speech, silence(1.0)])
    works = feed(segmenter(), audio)
    candidates = [w for w in works if w.speculative]
    finals = [w for w in works if w.is_final]
    assert len(finals) == 1 and len(candidates) == 2
    assert len(candidates[0].audio) < len(finals[0].audio)  # stale: the final holds both
    assert np.array_equal(candidates[1].audio, finals[0].audio)


def test_end_of_stream_after_a_candidate_closes_at_its_cut(speech):
    works = feed(segmenter(), np.concatenate([speech, silence(0.45)]), end=True)
    candidate, final = [w for w in works if w.speculative or w.is_final]
    assert candidate.speculative and final.is_final
    assert np.array_equal(final.audio, candidate.audio)


def test_off_offers_no_candidate(speech):
    works = feed(segmenter(speculate_after=0), np.concatenate([speech, silence(1.0)]))
    assert [w.is_final for w in works] == [True] and not works[0].speculative
