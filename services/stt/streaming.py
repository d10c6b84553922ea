"""Cuts a live audio stream into speech segments with voice activity detection.

Audio is appended as it arrives; ``poll`` decides what to transcribe next: a partial hypothesis
of the segment still being spoken (every ``partial_interval`` seconds of new audio), or a final
one when Silero VAD (shipped with faster-whisper) sees a pause after speech, the segment reaches
Whisper's window, or the stream ends. Leading silence is dropped so memory stays bounded.

Speculation: after a shorter silence (``speculate_after``) the segment is offered as it will
close if the pause holds, so its final decode can start while the pause is still being
confirmed. The same VAD, run with the shorter minimum silence, ends a stretch of speech at the
same sample as the long one does (both end at the first quiet window plus the same padding), so
a speculative cut is exactly the final cut when the pause holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

SAMPLE_RATE = 16_000
_KEEP_BEFORE_SPEECH = int(0.3 * SAMPLE_RATE)


@dataclass(frozen=True)
class Work:
    """A piece of audio to transcribe: ``start`` is its offset in the stream, in seconds."""

    audio: np.ndarray
    start: float
    is_final: bool
    speculative: bool = False
    """A final candidate: the segment as it will close if the pause holds (``is_final`` False)."""


class Segmenter:
    """Holds the audio of the open segment. ``append`` and ``poll`` may run on different threads."""

    def __init__(
        self,
        partial_interval: float,
        silence: float,
        max_segment: float,
        threshold: float = 0.5,
        speculate_after: float = 0.0,
    ) -> None:
        """``speculate_after``: seconds of silence after which a final candidate is offered
        (0, or not under ``silence``: never)."""
        self._partial_every = int(partial_interval * SAMPLE_RATE)
        self._silence = int(silence * SAMPLE_RATE)
        self._max_segment = int(max_segment * SAMPLE_RATE)
        self._vad = VadOptions(
            threshold=threshold, min_silence_duration_ms=int(silence * 1000), speech_pad_ms=100
        )
        self._speculative_vad = (
            VadOptions(
                threshold=threshold,
                min_silence_duration_ms=int(speculate_after * 1000),
                speech_pad_ms=100,
            )
            if 0 < speculate_after < silence
            else None
        )
        self._speculated = 0  # buffer cut of the last final candidate offered (0: none)
        self._lock = threading.Lock()
        self._incoming: list[np.ndarray] = []
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0  # samples of the stream before the buffer
        self._partial_at = 0  # buffer length at the last partial
        self.received = 0  # samples received in all

    @property
    def received_seconds(self) -> float:
        return self.received / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        with self._lock:
            self._incoming.append(samples)
            self.received += samples.shape[0]

    def poll(self, end_of_stream: bool = False) -> Work | None:
        """The next piece of work, or None when nothing is due yet."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if incoming:
            self._buffer = np.concatenate([self._buffer, *incoming])
        if self._buffer.size == 0:
            return None
        speech = get_speech_timestamps(self._buffer, self._vad)
        if not speech:
            if end_of_stream:
                self._drop(self._buffer.size)
            elif self._buffer.size > _KEEP_BEFORE_SPEECH:
                self._drop(self._buffer.size - _KEEP_BEFORE_SPEECH)
            return None
        if speech[0]["start"] > _KEEP_BEFORE_SPEECH:
            self._drop(speech[0]["start"] - _KEEP_BEFORE_SPEECH)
            return self.poll(end_of_stream)
        if len(speech) > 1:
            # The VAD merges pauses shorter than ``silence``, so two stretches mean a real pause
            # between them: close the first, however much audio arrived at once.
            return self._close(speech[0]["end"])
        speech_end = speech[-1]["end"]
        paused = self._buffer.size - speech_end >= self._silence
        if end_of_stream or paused or self._buffer.size >= self._max_segment:
            cut = min(self._buffer.size, speech_end)
            if end_of_stream:
                # The whole rest, unless a final candidate was offered and no speech followed it.
                ended_at_candidate = self._speculated and self._speech_end() == self._speculated
                cut = self._speculated if ended_at_candidate else self._buffer.size
            return self._close(cut)
        candidate = self._speculative_cut()
        if candidate:
            self._speculated = candidate
            return Work(
                self._buffer[:candidate].copy(),
                self._offset / SAMPLE_RATE,
                is_final=False,
                speculative=True,
            )
        if self._buffer.size - self._partial_at >= self._partial_every:
            self._partial_at = self._buffer.size
            return Work(self._buffer.copy(), self._offset / SAMPLE_RATE, is_final=False)
        return None

    def _speculative_cut(self) -> int:
        """Where the segment ends if the short pause now heard holds; 0 when there is none yet
        or it was offered already."""
        end = self._speech_end()
        if end >= self._buffer.size or end == self._speculated:
            return 0  # still speaking (the open stretch ends at the buffer's end), or offered
        return end

    def _speech_end(self) -> int:
        """Where the buffer's last stretch of speech ends by the short-pause VAD (its end when
        the stretch is still open); 0 when there is no speech or speculation is off."""
        if self._speculative_vad is None:
            return 0
        speech = get_speech_timestamps(self._buffer, self._speculative_vad)
        return speech[-1]["end"] if speech else 0

    def _close(self, cut: int) -> Work:
        work = Work(self._buffer[:cut].copy(), self._offset / SAMPLE_RATE, is_final=True)
        self._drop(cut)
        return work

    def _drop(self, count: int) -> None:
        self._buffer = self._buffer[count:]
        self._offset += count
        self._partial_at = 0
        self._speculated = 0
