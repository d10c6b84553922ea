"""Unit tests of the shared audio coding and sentence splitting (no servers)."""

from __future__ import annotations

import numpy as np
import pytest
from chorus.v1 import common_pb2

from services.common.audio import decode_audio, encode_audio, pcm16_to_float32, resample
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.text import pop_complete_sentences, split_sentences
from tests.support.speech import wav_bytes

E = common_pb2.AudioEncoding


def tone(seconds: float = 1.0, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)


@pytest.mark.parametrize(
    "encoding",
    [E.AUDIO_ENCODING_WAV, E.AUDIO_ENCODING_FLAC, E.AUDIO_ENCODING_MP3, E.AUDIO_ENCODING_OGG_OPUS],
)
def test_encode_decode_round_trip(encoding):
    rate = 48000 if encoding == E.AUDIO_ENCODING_OGG_OPUS else 22050
    data = encode_audio(tone(), 22050, encoding, rate)
    decoded = decode_audio(data, sample_rate=16000, max_seconds=10)
    assert decoded.dtype == np.float32
    assert len(decoded) / 16000 == pytest.approx(1.0, abs=0.08)
    assert 0.2 < np.abs(decoded).max() <= 1.0


def test_pcm_output_is_raw():
    data = encode_audio(tone(0.5), 22050, E.AUDIO_ENCODING_PCM_S16LE, 16000)
    assert len(data) == pytest.approx(0.5 * 16000 * 2, rel=0.01)


def test_decode_limits_and_errors():
    with pytest.raises(ResourceExhausted):
        decode_audio(wav_bytes(tone(3), 22050), max_seconds=2)
    with pytest.raises(InvalidArgument, match="empty"):
        decode_audio(b"", max_seconds=2)
    with pytest.raises(InvalidArgument, match="truncated"):
        decode_audio(wav_bytes(tone(3), 22050)[:30000], max_seconds=10)


def test_pcm16_and_resample():
    samples = pcm16_to_float32(np.array([0, 16384, -16384, 0], np.int16).tobytes(), channels=2)
    assert samples.tolist() == [0.25, -0.25]
    with pytest.raises(InvalidArgument):
        pcm16_to_float32(b"\0\0\0", channels=1)
    out = resample(np.zeros(48000, np.float32), 48000, 16000)
    assert abs(len(out) - 16000) <= 32


def test_split_sentences():
    assert split_sentences("Hello there! How are you? Fine.\nNext line") == [
        "Hello there!",
        "How are you?",
        "Fine.",
        "Next line",
    ]
    long = "word " * 200
    pieces = split_sentences(long, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and " ".join(pieces).split() == long.split()


def test_pop_complete_sentences():
    done, rest = pop_complete_sentences("First one. Second")
    assert done == ["First one."] and rest == "Second"
    assert pop_complete_sentences("no end yet") == ([], "no end yet")
