"""The upload decoder (``services.common.audio.decode_audio``, PyAV) on mutated recordings.

Seeds are made here with PyAV, 0.3 s of tone each: WAV, WebM/Opus (what browsers record), MP3,
Ogg/Opus, Ogg/Vorbis and Matroska/PCM (a container that declares no duration). Hypothesis
mutates their bytes (bit flips, overwritten bytes, header fields set to extreme values,
truncation, deleted, duplicated and spliced ranges, one container's bytes inside another's) and
every input must either decode to bounded mono float32 samples or be refused with the decoder's
own errors (``InvalidArgument``: undecodable, truncated, no audio; ``ResourceExhausted``: over
the duration limit), which the STT service sends as INVALID_ARGUMENT / RESOURCE_EXHAUSTED. Any
other exception, a decode that does not return (each runs on a thread, bounded by a timeout) or
memory that grows without bound (a declared size or rate making the decoder allocate what the
file does not hold) fails.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import resource
import struct
import sys

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.common.audio import decode_audio, wav_bytes
from services.common.errors import InvalidArgument, ResourceExhausted

RATE = 16_000
MAX_SECONDS = 5.0
DECODE_TIMEOUT_S = 30.0
"""A decode of a 0.3 s file takes milliseconds; this only catches one that never returns."""
EXAMPLES = 250 * int(os.environ.get("CHORUS_FUZZ_SCALE", "1"))
"""Per seed format; six formats, 1,500 decodes in all (a few seconds); CHORUS_FUZZ_SCALE
multiplies them for a long hunt."""


def _tone(rate: int, seconds: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _encode(container: str, codec: str, rate: int, layout: str = "mono") -> bytes:
    """0.3 s of tone through PyAV's encoder and muxer, as a browser or a tool would write it.
    (FFmpeg's own Vorbis encoder is experimental and stereo only; this build has no
    libvorbis.)"""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options={"strict": "experimental"})
        assert isinstance(stream, av.AudioStream)
        stream.layout = layout
        fmt = stream.codec_context.format.name if stream.codec_context.format else "s16"
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        pcm = (_tone(rate) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        step = stream.codec_context.frame_size or 1024
        for converted in resampler.resample(frame):
            for start in range(0, converted.samples, step):
                piece = av.AudioFrame.from_ndarray(
                    converted.to_ndarray()[:, start : start + step], format=fmt, layout=layout
                )
                piece.sample_rate = rate
                piece.pts = start
                for packet in stream.encode(piece):
                    out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    made = {
        "wav": wav_bytes(_tone(RATE), RATE),
        "webm": _encode("webm", "libopus", 48_000),
        "mp3": _encode("mp3", "libmp3lame", 24_000),
        "ogg-opus": _encode("ogg", "libopus", 48_000),
        "ogg-vorbis": _encode("ogg", "vorbis", 22_050, "stereo"),
        "mka-pcm": _encode("matroska", "pcm_s16le", 8_000),
    }
    for name, data in made.items():  # every seed is a valid recording to begin with
        samples = decode_audio(data, sample_rate=RATE, max_seconds=MAX_SECONDS)
        assert 0.2 < samples.size / RATE < 0.5, name
    return made


INTERESTING_32 = [0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


@st.composite
def _mutated(draw: st.DrawFn, seed: bytes, others: list[bytes]) -> bytes:
    """``seed`` with one to four mutations; positions favour the first 64 bytes (headers)."""
    data = bytearray(seed)

    def position() -> int:
        size = max(len(data), 1)
        return draw(st.one_of(st.integers(0, min(64, size - 1)), st.integers(0, size - 1)))

    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["flip", "bytes", "u32", "u16", "truncate", "delete", "repeat", "splice"]
            )
        )
        at = position()
        if op == "flip":
            if data:
                data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "bytes":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif op == "u32":  # a size, a rate or a count set to an extreme
            value = draw(st.sampled_from(INTERESTING_32) | st.integers(0, 2**32 - 1))
            endian = draw(st.sampled_from("<>"))
            data[at : at + 4] = struct.pack(endian + "I", value)
        elif op == "u16":  # channels, bits per sample, a block size
            value = draw(st.sampled_from([0, 1, 2, 3, 8, 255, 0x7FFF, 0xFFFF]))
            data[at : at + 2] = struct.pack(draw(st.sampled_from("<>")) + "H", value)
        elif op == "truncate":
            del data[at:]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 512))]
        elif op == "repeat":
            end = at + draw(st.integers(1, 4096))
            data[at:at] = data[at:end] * draw(st.integers(1, 8))
        else:  # bytes of another (or the same) container, at any position
            other = draw(st.sampled_from(others))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[at:at] = other[start : start + draw(st.integers(1, 2048))]
    return bytes(data)


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuzz-decode")


def _decode_bounded(data: bytes) -> np.ndarray | Exception:
    """The decoder's samples, or the exception it raised; a decode that does not return within
    DECODE_TIMEOUT_S fails the test (the thread is left behind: the run is failing anyway)."""
    future = _pool.submit(decode_audio, data, sample_rate=RATE, max_seconds=MAX_SECONDS)
    try:
        return future.result(timeout=DECODE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"decode_audio did not return in {DECODE_TIMEOUT_S} s on {len(data)} bytes")
    except Exception as error:  # judged by the caller
        return error


def check(data: bytes) -> None:
    result = _decode_bounded(data)
    if isinstance(result, np.ndarray):
        assert result.dtype == np.float32 and result.ndim == 1
        assert 0 < result.size <= MAX_SECONDS * RATE
        assert np.isfinite(result).all()
        return
    assert isinstance(result, (InvalidArgument, ResourceExhausted)), repr(result)
    assert result.message and result.field == "audio"


def _max_rss_bytes() -> int:
    # ru_maxrss: KiB on Linux, bytes on macOS.
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


@pytest.mark.parametrize("name", ["wav", "webm", "mp3", "ogg-opus", "ogg-vorbis", "mka-pcm"])
def test_mutated_recordings_decode_or_are_refused(seeds: dict[str, bytes], name: str) -> None:
    before = _max_rss_bytes()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_mutated(seeds[name], list(seeds.values())))
    def run(data: bytes) -> None:
        check(data)

    run()
    # The peak of the whole process: a declared size turned into an allocation shows here.
    assert _max_rss_bytes() - before < 512 * 1024 * 1024


def _wav(
    rate: int = RATE,
    channels: int = 1,
    bits: int = 16,
    data_size: int | None = None,
    frames: bytes = b"\x00\x00" * 4800,
) -> bytes:
    """A PCM WAV whose header fields say what they are given, true or not (wrapped to their
    widths, as a corrupt file would hold them)."""
    block = (channels * bits // 8) & 0xFFFF
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    size = len(frames) if data_size is None else data_size
    riff = (4 + 8 + len(fmt) + 8 + size) & 0xFFFFFFFF
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + chunks + frames


@given(
    rate=st.sampled_from([0, 1, 8, 8000, 48_000, 192_000, 2**31 - 1, 2**32 - 1]),
    channels=st.sampled_from([0, 1, 2, 8, 255, 65535]),
    bits=st.sampled_from([0, 1, 8, 16, 24, 32, 64, 65535]),
    data_size=st.sampled_from([None, 0, 1, 2**31 - 1, 0xFFFFFFFE, 0xFFFFFFFF]),
)
@example(rate=8, channels=1, bits=16, data_size=None)  # 0.3 s of samples declaring 600 s
# 537 MHz: FFmpeg's resampler spent 3 s and 550 MB on 9 kB of samples before the rate was bounded
@example(rate=536_887_936, channels=1, bits=16, data_size=None)
@settings(max_examples=150, derandomize=True, database=None, deadline=None)
def test_wav_header_extremes(rate: int, channels: int, bits: int, data_size: int | None) -> None:
    """A WAV header's every size field at its extremes: decoded, or refused by name; a rate
    that makes a short file long is refused by the duration limit, never decoded to gigabytes."""
    before = _max_rss_bytes()
    check(_wav(rate, channels, bits, data_size))
    assert _max_rss_bytes() - before < 256 * 1024 * 1024


def test_declared_length_over_the_limit_is_refused_before_decoding() -> None:
    """A file whose header says it is longer than the limit is refused from the header alone
    (0.3 s of samples at a declared 8 Hz: 600 s)."""
    with pytest.raises(ResourceExhausted, match="longer than the limit"):
        decode_audio(_wav(rate=8), sample_rate=RATE, max_seconds=MAX_SECONDS)


@pytest.mark.parametrize("rate", [1, 10, 100])
def test_a_low_sample_rate_is_refused_before_resampling(rate: int) -> None:
    """40,000 samples (80 kB) of Matroska PCM at a few Hz: hours of audio in a container that
    declares no duration. Refused by the duration limit before the resampler turns a frame into
    gigabytes (at 10 Hz one decode peaked at 1.5 GB; at 1 Hz FFmpeg ran out of memory)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            np.full((1, 40_000), 300, np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    before = _max_rss_bytes()
    with pytest.raises(ResourceExhausted, match="longer than the limit"):
        decode_audio(buffer.getvalue(), sample_rate=RATE, max_seconds=MAX_SECONDS)
    assert _max_rss_bytes() - before < 256 * 1024 * 1024
