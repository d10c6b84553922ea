"""The streaming segmenter on real speech and the real Silero VAD, in-process: its incremental
VAD against faster-whisper's whole-clip scan, and the work it offers (not visible over gRPC,
only its effect)."""

from __future__ import annotations

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps, get_vad_model

from services.common.audio import decode_audio
from services.stt.streaming import (
    SAMPLE_RATE,
    WINDOW,
    Segmenter,
    SpeechStarted,
    SpeechStopped,
    StreamingVad,
    Work,
)
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


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Two sentences with a 1.2 s pause between them, real quiet around them."""
    folder = tmp_path_factory.mktemp("dialogue")
    parts = []
    for i, text in enumerate(["Where is the train station?", "It is next to the old bridge."]):
        audio = decode_audio(espeak(text, "en", folder / f"{i}.wav"), max_seconds=60)
        start, end = speech_bounds(audio, SAMPLE_RATE)
        parts += [silence(0.8 if i == 0 else 1.2), audio[start:end]]
    return np.concatenate([*parts, silence(1.5)])


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def feed(segmenter: Segmenter, audio: np.ndarray, end: bool = False, chunk: int = CHUNK) -> list:
    """Send ``audio`` in ``chunk``-sample pieces, advancing after each as the session does."""
    events = []
    for start in range(0, len(audio), chunk):
        segmenter.append(audio[start : start + chunk])
        events += segmenter.advance()
    if end:
        events += segmenter.advance(end_of_stream=True)
    return events


def works(events: list) -> list[Work]:
    return [e for e in events if isinstance(e, Work)]


def segmenter(speculate_after: float = 0.25, partial_interval: float = 60) -> Segmenter:
    return Segmenter(
        partial_interval=partial_interval,
        silence=0.6,
        max_segment=28,
        speculate_after=speculate_after,
    )


def test_incremental_vad_scores_as_the_whole_clip_scan(dialogue):
    vad = StreamingVad()
    chunks = [vad(dialogue[i : i + 1000]) for i in range(0, len(dialogue), 1000)]  # uneven
    streamed = np.concatenate([*chunks, vad(np.zeros(0, np.float32), flush=True)])
    padded = np.pad(dialogue, (0, WINDOW - len(dialogue) % WINDOW))
    whole = get_vad_model()(padded).reshape(-1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_speech_bounds_match_the_whole_clip_scan(dialogue):
    """The events' offsets are where get_speech_timestamps puts the stretches (no padding)."""
    events = feed(segmenter(), dialogue, end=True)
    heard = [(type(e).__name__, e.offset) for e in events if not isinstance(e, Work)]
    batch = get_speech_timestamps(
        dialogue, VadOptions(min_silence_duration_ms=600, speech_pad_ms=0)
    )
    expected = [
        (name, stretch[edge])
        for stretch in batch
        for name, edge in (("SpeechStarted", "start"), ("SpeechStopped", "end"))
    ]
    assert len(batch) == 2
    assert [name for name, _ in heard] == [name for name, _ in expected], heard
    for (_, got), (_, want) in zip(heard, expected, strict=True):
        assert abs(got - want) <= WINDOW, (heard, expected)


def test_decisions_do_not_depend_on_how_the_audio_is_chunked(dialogue):
    def decisions(chunk: int) -> list:
        out = []
        for e in feed(segmenter(), dialogue, end=True, chunk=chunk):
            if isinstance(e, Work):
                out.append(("work", e.is_final, e.speculative, e.start, len(e.audio)))
            else:
                out.append((type(e).__name__, e.offset))
        return out

    small = decisions(CHUNK)
    assert small == decisions(len(dialogue))  # all at once
    assert small == decisions(333)  # windows split across chunks
    finals = [d for d in small if d[0] == "work" and d[1]]
    assert len(finals) == 2


def test_candidate_is_offered_early_and_is_the_final_cut(speech):
    found = works(feed(segmenter(), np.concatenate([silence(0.3), speech, silence(1.0)])))
    kinds = ["candidate" if w.speculative else "final" if w.is_final else "partial" for w in found]
    assert kinds == ["candidate", "final"], kinds
    candidate, final = found
    assert final.start == candidate.start
    assert np.array_equal(final.audio, candidate.audio)  # the decode started early is the final's


def test_resumed_speech_makes_the_candidate_stale(speech):
    # A 0.35 s pause: long enough for a candidate, too short to close the segment.
    events = feed(segmenter(), np.concatenate([speech, silence(0.35), speech, silence(1.0)]))
    candidates = [w for w in works(events) if w.speculative]
    finals = [w for w in works(events) if w.is_final]
    assert len(finals) == 1 and len(candidates) == 2
    assert len(candidates[0].audio) < len(finals[0].audio)  # stale: the final holds both
    assert np.array_equal(candidates[1].audio, finals[0].audio)
    # Heard: speech, a pause that voided the first candidate, speech again, the pause confirmed.
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    assert [s.resumed for s in starts] == [False, True]
    assert sum(isinstance(e, SpeechStopped) for e in events) == 1
    order = [e for e in events if not isinstance(e, Work) or e.speculative]
    assert order.index(starts[1]) == order.index(candidates[0]) + 1


def test_end_of_stream_after_a_candidate_closes_at_its_cut(speech):
    events = feed(segmenter(), np.concatenate([speech, silence(0.45)]), end=True)
    candidate, final = [w for w in works(events) if w.speculative or w.is_final]
    assert candidate.speculative and final.is_final
    assert np.array_equal(final.audio, candidate.audio)
    assert isinstance(events[-2], SpeechStopped)  # every start is stopped, at the end at last


def test_off_offers_no_candidate(speech):
    found = works(feed(segmenter(speculate_after=0), np.concatenate([speech, silence(1.0)])))
    assert [w.is_final for w in found] == [True] and not found[0].speculative


def test_partials_grow_with_the_segment(speech):
    found = works(feed(segmenter(partial_interval=0.5), np.concatenate([speech, silence(1.0)])))
    partials = [w for w in found if not w.is_final and not w.speculative]
    assert len(partials) >= 2
    assert all(p.start == partials[0].start for p in partials)
    assert [len(p.audio) for p in partials] == sorted(len(p.audio) for p in partials)


def test_long_speech_is_cut_at_the_segment_limit(speech):
    """Speech without a pause long enough to close a segment is cut at max_segment; the pieces
    follow each other without a gap, and only real pauses are reported as stops."""
    talk = np.concatenate([np.concatenate([speech, silence(0.2)]) for _ in range(6)])
    cutter = Segmenter(partial_interval=60, silence=0.6, max_segment=4, speculate_after=0)
    events = feed(cutter, talk, end=True)
    finals = [w for w in works(events) if w.is_final]
    assert len(finals) >= 2
    assert all(len(w.audio) <= 4 * SAMPLE_RATE for w in finals)
    for before, after in zip(finals, finals[1:], strict=False):
        assert after.start * SAMPLE_RATE == before.start * SAMPLE_RATE + len(before.audio)
    assert [type(e).__name__ for e in events if not isinstance(e, Work)] == [
        "SpeechStarted",
        "SpeechStopped",
    ]
