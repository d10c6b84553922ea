"""Speech for tests: espeak-ng for other languages, audio helpers, word overlap."""

from __future__ import annotations

import io
import re
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

# The services' one WAV writer, re-exported for the tests and benches that import it from here.
from services.common.audio import wav_bytes as wav_bytes


def espeak(text: str, voice: str, path: Path) -> bytes:
    """Speak ``text`` with espeak-ng (Debian package) into a WAV file and return its bytes."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
    return path.read_bytes()


def speech_bounds(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """(start, end) of the speech in a clip, in its own samples, by Silero VAD without padding
    (pauses under 250 ms count as speech). Synthesizers pad their speech with quiet; tests that
    send exact pauses cut it off with this. The VAD sees where a stretch ends only when silence
    follows it, so the clip is judged with a second of silence appended."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from services.common.audio import resample

    audio = samples.astype(np.float32) / 32768 if samples.dtype == np.int16 else samples
    padded = np.concatenate([resample(audio, rate, 16_000), np.zeros(16_000, np.float32)])
    stretches = get_speech_timestamps(
        padded, VadOptions(min_silence_duration_ms=250, speech_pad_ms=0)
    )
    return int(stretches[0]["start"] * rate / 16_000), int(stretches[-1]["end"] * rate / 16_000)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16), w.getframerate()


def reencode(wav: bytes, fmt: str, codec: str, rate: int) -> bytes:
    """Re-encode a WAV into another container/codec with PyAV (as a browser or phone would)."""
    samples, src_rate = read_wav(wav)
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(
            format=stream.codec_context.format.name, layout="mono", rate=rate
        )
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = src_rate
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def decode_any(data: bytes) -> tuple[np.ndarray, int]:
    """Decode any container to mono float32 at its own rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = [
            f.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for f in resampler.resample(frame)
        ]
    return np.concatenate(chunks), rate


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def word_overlap(reference: str, hypothesis: str) -> float:
    """Share of the reference's words that appear in the hypothesis."""
    ref, hyp = words(reference), set(words(hypothesis))
    return sum(w in hyp for w in ref) / max(len(ref), 1)
