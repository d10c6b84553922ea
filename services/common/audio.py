"""Audio decoding and encoding with PyAV (FFmpeg's libraries), the one place that touches codecs.

Decoding accepts any container FFmpeg knows (WAV, FLAC, MP3, Ogg/Opus, WebM/Opus from browsers,
MP4/AAC) and resamples to mono float32 at the rate a model wants; it stops as soon as a
duration limit is passed instead of decoding a huge file first.
"""

from __future__ import annotations

import io
import logging
import struct

import av
import numpy as np
from chorus.v1 import common_pb2

from services.common.errors import InvalidArgument, ResourceExhausted

__all__ = [
    "MP3_RATES",
    "Encoding",
    "decode_audio",
    "encode_audio",
    "float_to_pcm16",
    "output_sample_rate",
    "pcm16_to_float32",
    "resample",
    "resample_pcm16",
    "wav_bytes",
    "wav_header",
]

log = logging.getLogger(__name__)

Encoding = common_pb2.AudioEncoding

# A container that declares a duration but decodes to less than this share of it is truncated.
_TRUNCATION_TOLERANCE = 0.9
# Above any real recording's rate. A WAV header that claimed 537 MHz made FFmpeg's resampler
# spend 3 s and 550 MB on 9 kB of samples (found by tests/fast/test_fuzz_audio.py).
_MAX_SAMPLE_RATE = 768_000


def decode_audio(
    data: bytes, *, sample_rate: int = 16_000, max_seconds: float, field: str = "audio"
) -> np.ndarray:
    """Decode any supported container to mono float32 samples in [-1, 1] at ``sample_rate``.

    Raises:
        InvalidArgument: empty, undecodable, truncated, or holding no audio stream.
        ResourceExhausted: longer than ``max_seconds``.
    """
    if not data:
        raise InvalidArgument("audio is empty", field=field)
    _check_wav_length(data, field)
    max_samples = int(max_seconds * sample_rate)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidArgument("the file holds no audio stream", field=field)
            stream = container.streams.audio[0]
            declared = _declared_seconds(container, stream)
            if declared is not None and declared > max_seconds:
                raise _too_long(declared, max_seconds, field)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            heard = 0.0
            for frame in container.decode(stream):
                # Counted before resampling: a container that declares no duration (Matroska,
                # Ogg) at a rate of a few Hz made one 80 kB frame resample to 1.5 GB.
                if not 0 < frame.sample_rate <= _MAX_SAMPLE_RATE:
                    raise InvalidArgument(
                        f"audio sample rate {frame.sample_rate} Hz is outside "
                        f"1..{_MAX_SAMPLE_RATE}",
                        field=field,
                    )
                heard += frame.samples / frame.sample_rate
                if heard > max_seconds:
                    raise _too_long(heard, max_seconds, field)
                for out in resampler.resample(frame):
                    total += _append(chunks, out)
                if total > max_samples:
                    raise _too_long(total / sample_rate, max_seconds, field)
            for out in resampler.resample(None):
                total += _append(chunks, out)
    except (InvalidArgument, ResourceExhausted):
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidArgument(f"audio could not be decoded: {exc}", field=field) from exc
    if total > max_samples:
        raise _too_long(total / sample_rate, max_seconds, field)
    if total == 0:
        raise InvalidArgument("audio decodes to no samples", field=field)
    if declared is not None and total / sample_rate < declared * _TRUNCATION_TOLERANCE:
        raise InvalidArgument(
            f"audio is truncated: its header says {declared:.2f} s but only "
            f"{total / sample_rate:.2f} s could be decoded",
            field=field,
        )
    return np.concatenate(chunks)


def _check_wav_length(data: bytes, field: str) -> None:
    """FFmpeg decodes a cut-off WAV without complaint, so compare its data chunk's declared
    size with the bytes present (0 and 0xFFFFFFFF mean "unknown", as streaming writers use)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    position = 12
    while position + 8 <= len(data):
        chunk, size = (
            data[position : position + 4],
            int.from_bytes(data[position + 4 : position + 8], "little"),
        )
        if chunk == b"data":
            present = len(data) - position - 8
            if size not in (0, 0xFFFFFFFF) and present < size * _TRUNCATION_TOLERANCE:
                raise InvalidArgument(
                    f"audio is truncated: the WAV header declares {size} bytes of samples but "
                    f"only {present} are present",
                    field=field,
                )
            return
        position += 8 + size + (size & 1)


def _declared_seconds(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.format.name not in {"matroska,webm", "ogg"}:
        return container.duration / av.time_base
    return None


def _append(chunks: list[np.ndarray], frame: av.AudioFrame) -> int:
    samples = frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    chunks.append(samples)
    return samples.shape[0]


def _too_long(seconds: float, limit: float, field: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"audio is longer than the limit: {seconds:.1f} s > {limit:.1f} s", field=field
    )


def pcm16_to_float32(data: bytes, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian int16 PCM to mono float32 in [-1, 1]."""
    if len(data) % (2 * channels):
        raise InvalidArgument(
            f"PCM chunk of {len(data)} bytes is not a whole number of {channels}-channel "
            "16-bit frames",
            field="audio_chunk",
        )
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 audio (linear interpolation is not good enough for speech models,
    so FFmpeg's resampler does it)."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    frame = av.AudioFrame.from_ndarray(
        samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


# encoding -> (container format, codec, sample format, forced sample rate or None); WAV and raw
# PCM need no codec (wav_bytes writes WAV).
_ENCODERS: dict[int, tuple[str, str, str, int | None]] = {
    Encoding.AUDIO_ENCODING_FLAC: ("flac", "flac", "s16", None),
    Encoding.AUDIO_ENCODING_MP3: ("mp3", "libmp3lame", "s16p", None),
    Encoding.AUDIO_ENCODING_OGG_OPUS: ("ogg", "libopus", "s16", 48_000),
}
MP3_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}


def output_sample_rate(encoding: int, requested: int, native: int) -> int:
    """The rate a response will have: Opus always runs at 48 kHz; MP3 knows a fixed set."""
    forced = _ENCODERS.get(encoding, ("", "", "", None))[3]
    rate = forced or requested or native
    if encoding == Encoding.AUDIO_ENCODING_MP3 and rate not in MP3_RATES:
        raise InvalidArgument(
            f"MP3 cannot be encoded at {rate} Hz; use one of {sorted(MP3_RATES)}",
            field="sample_rate_hz",
        )
    return rate


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16: scaled by 32768, rounded to the nearest step and
    clipped. ``astype`` alone truncates toward zero, which pulls every sample half a step toward
    silence on average; that bias was enough to change Whisper's language detection."""
    scaled = np.rint(np.asarray(samples, np.float32) * np.float32(32768.0))
    pcm: np.ndarray = np.clip(scaled, -32768, 32767).astype(np.int16)
    return pcm


def resample_pcm16(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """:func:`resample` for int16 samples (through float, rounded back)."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    return float_to_pcm16(resample(samples.astype(np.float32) / 32768.0, from_rate, to_rate))


def wav_header(sample_rate: int, data_bytes: int | None = None, *, float32: bool = False) -> bytes:
    """The RIFF/WAVE header of a mono file: 16-bit PCM, or 32-bit IEEE float with ``float32``.

    ``data_bytes=None`` means a length not known yet: both sizes say 0xFFFFFFFF, as streaming
    writers (OpenAI's streamed ``wav``) do, and players read to the end of the stream.
    """
    unknown = 0xFFFFFFFF
    width = 4 if float32 else 2
    fmt = struct.pack(
        "<HHIIHH", 3 if float32 else 1, 1, sample_rate, sample_rate * width, width, 8 * width
    )
    chunks = [(b"fmt ", fmt)]
    if float32:  # a non-PCM format ends its fmt chunk with a size field, and adds a frame count
        frames = unknown if data_bytes is None else data_bytes // width
        chunks = [(b"fmt ", fmt + struct.pack("<H", 0)), (b"fact", struct.pack("<I", frames))]
    body = b"WAVE" + b"".join(name + struct.pack("<I", len(data)) + data for name, data in chunks)
    if data_bytes is None:
        return b"RIFF" + struct.pack("<I", unknown) + body + b"data" + struct.pack("<I", unknown)
    riff_size = len(body) + 8 + data_bytes
    return b"RIFF" + struct.pack("<I", riff_size) + body + b"data" + struct.pack("<I", data_bytes)


def wav_bytes(samples: np.ndarray, sample_rate: int, *, float32: bool = False) -> bytes:
    """Mono samples as a WAV file; the one WAV writer of Chorus (services, tests and benches).

    int16 samples are written as they are; float samples in [-1, 1] as 16-bit PCM through
    :func:`float_to_pcm16`, or, with ``float32``, exactly as they are (IEEE float: what Whisper
    would have decoded, at twice the size).
    """
    if float32:
        data = np.ascontiguousarray(samples, dtype="<f4").tobytes()
    elif np.issubdtype(samples.dtype, np.floating):
        data = float_to_pcm16(samples).astype("<i2").tobytes()
    else:
        data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return wav_header(sample_rate, len(data), float32=float32) + data


def encode_audio(samples: np.ndarray, sample_rate: int, encoding: int, out_rate: int) -> bytes:
    """Encode mono samples (int16, or float in [-1, 1]) into ``encoding`` at ``out_rate``,
    resampling if needed."""
    if np.issubdtype(samples.dtype, np.floating):
        pcm = float_to_pcm16(samples)
    else:
        pcm = samples.astype(np.int16, copy=False)
    pcm = resample_pcm16(pcm, sample_rate, out_rate)
    if encoding == Encoding.AUDIO_ENCODING_WAV:
        return wav_bytes(pcm, out_rate)
    if encoding == Encoding.AUDIO_ENCODING_PCM_S16LE:
        return pcm.astype("<i2").tobytes()
    if encoding not in _ENCODERS:
        raise InvalidArgument(f"unsupported output encoding {encoding}", field="encoding")
    fmt, codec, sample_format, _ = _ENCODERS[encoding]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=out_rate)
        assert isinstance(stream, av.AudioStream)  # an audio codec makes an audio stream
        stream.layout = "mono"
        if codec == "libmp3lame":
            stream.bit_rate = 64_000
        frame_size = stream.codec_context.frame_size or 1024
        converter = (
            None
            if sample_format == "s16"
            else av.AudioResampler(format=sample_format, layout="mono", rate=out_rate)
        )
        for start in range(0, max(len(pcm), 1), frame_size):
            block = pcm[start : start + frame_size]
            if block.size == 0:
                break
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = out_rate
            frame.pts = start
            for converted in converter.resample(frame) if converter else [frame]:
                for packet in stream.encode(converted):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
