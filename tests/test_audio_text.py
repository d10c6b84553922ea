"""Unit tests of the shared audio coding and sentence splitting (no servers)."""

from __future__ import annotations

import io
import random
import wave

import numpy as np
import pytest
from chorus.v1 import common_pb2

from services.common.audio import (
    decode_audio,
    encode_audio,
    float_to_pcm16,
    pcm16_to_float32,
    resample,
    wav_bytes,
    wav_header,
)
from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.text import pop_complete_sentences, split_sentences

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


def test_float_to_pcm16_rounds_to_nearest_and_clips():
    steps = np.array([0.49, 0.51, -0.49, -0.51, 1.51, -1.51, 40000, -40000], np.float32) / 32768
    assert float_to_pcm16(steps).tolist() == [0, 1, 0, -1, 2, -2, 32767, -32768]
    assert float_to_pcm16(np.array([1.0, -1.0], np.float32)).tolist() == [32767, -32768]


def test_encode_audio_rounds_float_and_resampled_samples():
    """Truncation toward zero biased every sample half a step toward silence; rounding leaves
    no bias and at most half a step of error."""
    t = np.arange(22050) / 22050
    exact = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    pcm = np.frombuffer(encode_audio(exact, 22050, E.AUDIO_ENCODING_PCM_S16LE, 22050), "<i2")
    error = pcm - exact.astype(np.float64) * 32768
    assert np.abs(error).max() <= 0.5 + 1e-3 and abs(error.mean()) < 0.01
    resampled = resample(tone().astype(np.float32) / 32768, 22050, 16000).astype(np.float64)
    pcm = np.frombuffer(encode_audio(tone(), 22050, E.AUDIO_ENCODING_PCM_S16LE, 16000), "<i2")
    assert np.abs(pcm - resampled * 32768).max() <= 0.5 + 1e-3


def test_one_wav_writer():
    samples = tone(0.25)
    data = wav_bytes(samples, 22050)
    with wave.open(io.BytesIO(data)) as w:  # the standard library reads it back
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        assert np.array_equal(np.frombuffer(w.readframes(w.getnframes()), "<i2"), samples)
    assert encode_audio(samples, 22050, E.AUDIO_ENCODING_WAV, 22050) == data
    # Float samples: 16-bit, rounded; or IEEE float, exactly these samples.
    floats = samples.astype(np.float32) / 32768 + np.float32(0.4 / 32768)
    assert wav_bytes(floats, 22050) == data
    exact = wav_bytes(floats, 16000, float32=True)
    assert np.array_equal(decode_audio(exact, sample_rate=16000, max_seconds=1), floats)
    # A streamed file: sizes unknown, the samples follow the header as they are made.
    streamed = wav_header(22050) + samples.astype("<i2").tobytes()
    assert streamed[4:8] == streamed[40:44] == b"\xff\xff\xff\xff"
    decoded = decode_audio(streamed, sample_rate=22050, max_seconds=1)
    assert np.array_equal(decoded, samples.astype(np.float32) / 32768)


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


# Whole texts and the sentences they hold: abbreviations, initials and decimals do not end a
# sentence; a following word decides some ("etc. I think" goes on, "etc. It" starts anew).
SENTENCE_CASES = [
    (
        "Dr. Smith is here. He arrived at 3.5 p.m. today! Use e.g. apples, i.e. fruit.",
        ["Dr. Smith is here.", "He arrived at 3.5 p.m. today!", "Use e.g. apples, i.e. fruit."],
    ),
    (
        "It costs $3.50. Mr. Jones went to Washington D.C. on Monday. He liked it.",
        ["It costs $3.50.", "Mr. Jones went to Washington D.C. on Monday.", "He liked it."],
    ),
    (
        "Pi is about 3.14159. See Fig. 3 for details. St. Louis is nice.",
        ["Pi is about 3.14159.", "See Fig. 3 for details.", "St. Louis is nice."],
    ),
    (
        'The U.S. is big. I said "Go home." Then he left. Version 2.0 is out... Maybe later?',
        [
            "The U.S. is big.",
            'I said "Go home."',
            "Then he left.",
            "Version 2.0 is out...",
            "Maybe later?",
        ],
    ),
    (
        "We had apples, pears, etc. I think so. We had fruit, etc. It was fun.",
        ["We had apples, pears, etc. I think so.", "We had fruit, etc.", "It was fun."],
    ),
    (
        "Sure! Three tips:\n1. Drink water.\n2. Sleep 8 hours.\nHope that helps!",
        ["Sure!", "Three tips:", "1. Drink water.", "2. Sleep 8 hours.", "Hope that helps!"],
    ),
    ("你好。谢谢！我很好。", ["你好。", "谢谢！", "我很好。"]),
]


@pytest.mark.parametrize(("text", "sentences"), SENTENCE_CASES)
def test_split_sentences_keeps_abbreviations_and_decimals(text, sentences):
    assert split_sentences(text) == sentences


def _stream(pieces: list[str], max_chars: int = 400) -> list[str]:
    """Sentences as a streamed reply yields them: popped after every piece, the rest split at
    the end. Each pop may only release what splitting the whole text also gives (never a cut
    that more text would have moved)."""
    whole = split_sentences("".join(pieces), max_chars)
    released: list[str] = []
    pending = ""
    for piece in pieces:
        done, pending = pop_complete_sentences(pending + piece, max_chars)
        released += done
        assert released == whole[: len(released)], f"cut early after {piece!r}"
    return released + split_sentences(pending, max_chars)


def _tokens(text: str, seed: int) -> list[str]:
    """``text`` in pieces of one to five characters, as an LLM's tokens arrive."""
    rng = random.Random(seed)
    pieces: list[str] = []
    while text:
        size = rng.randint(1, 5)
        pieces.append(text[:size])
        text = text[size:]
    return pieces


LONG_REPLY = (
    "word " * 90
    + "end. "
    + "This is a fine sentence with words. " * 40
    + "One. Two. Three. Four. Five. Six. Seven. Eight. Nine. Ten. Eleven. Twelve. Thirteen. "
    + "Fourteen. Fifteen. Sixteen. Seventeen. Eighteen."
)


@pytest.mark.parametrize("text", [case[0] for case in SENTENCE_CASES] + [LONG_REPLY])
def test_streamed_text_gives_the_sentences_of_the_whole_text(text):
    whole = split_sentences(text, max_chars=300)
    assert _stream(list(text), max_chars=300) == whole  # one character at a time
    for seed in range(5):
        assert _stream(_tokens(text, seed), max_chars=300) == whole


def test_pop_complete_sentences():
    # A sentence is released once a whole word follows it, as only then is its end certain.
    assert pop_complete_sentences("First one. Second") == ([], "First one. Second")
    done, rest = pop_complete_sentences("First one. Second one")
    assert done == ["First one."] and rest == "Second one"
    assert pop_complete_sentences("Ask Dr. Smith about") == ([], "Ask Dr. Smith about")
    assert pop_complete_sentences("It is 3.") == ([], "It is 3.")
    assert pop_complete_sentences("no end yet") == ([], "no end yet")
    done, rest = pop_complete_sentences("A line\nand more")  # a line break ends a sentence
    assert done == ["A line"] and rest == "and more"
    done, rest = pop_complete_sentences("word " * 30, max_chars=50)  # too long: cut at a space
    assert all(len(d) <= 50 for d in done) and len(rest) <= 50
