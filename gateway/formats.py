"""Text and audio framing for the OpenAI-compatible responses (no audio decoding here)."""

from __future__ import annotations

from collections.abc import Iterable

from chorus.v1 import stt_pb2

from services.common.audio import wav_header


def _timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: Iterable[stt_pb2.Segment]) -> str:
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def vtt(segments: Iterable[stt_pb2.Segment]) -> str:
    blocks = [
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def streaming_wav_header(sample_rate: int) -> bytes:
    """A WAV header for 16-bit PCM of unknown length, as OpenAI's streamed ``wav`` starts:
    players read until the stream ends. Written by the suite's one WAV writer."""
    return wav_header(sample_rate)


def strip_id3v2(mp3: bytes) -> bytes:
    """An MP3 file without its leading ID3v2 tag, so per-sentence files join into one stream of
    MPEG frames (a tag in the middle of a stream is invalid data to decoders)."""
    if len(mp3) < 10 or not mp3.startswith(b"ID3"):
        return mp3
    size = (mp3[6] & 0x7F) << 21 | (mp3[7] & 0x7F) << 14 | (mp3[8] & 0x7F) << 7 | (mp3[9] & 0x7F)
    footer = 10 if mp3[5] & 0x10 else 0
    return mp3[10 + size + footer :]
