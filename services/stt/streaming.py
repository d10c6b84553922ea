"""Cuts a live audio stream into speech segments with voice activity detection.

Audio is appended as it arrives; ``advance`` runs Silero VAD (shipped with faster-whisper) over
the audio that is new since the last call and says what happened, in stream order: speech
started or stopped, and what to transcribe next: a partial hypothesis of the segment still
being spoken (every ``partial_interval`` seconds of new audio), or a final one when a pause of
``silence`` follows speech, the segment reaches ``max_segment``, or the stream ends. Leading
silence is dropped so memory stays bounded.

Each 32 ms window is scored once, with the model's recurrent state carried from the window
before, so the work per second of audio is constant. (Scanning the whole open segment at every
chunk, as this module once did, cost time in the square of the segment's length: 14 CPU seconds
of VAD for one 28 s segment sent in 100 ms chunks.) The decisions are those of faster-whisper's
``get_speech_timestamps`` over the whole stream, made as soon as the audio that decides them
has arrived (tests/test_stt_segmenter.py holds the two to the same boundaries).

Speculation: after a shorter pause (``speculate_after``) the segment is offered as it will close
if the pause holds, so its final decode can start while the pause is still being confirmed. The
cut is the same one the final makes if the pause holds (the first quiet window plus the same
padding), so the candidate's decode is the final's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper.vad import get_vad_model

__all__ = [
    "SAMPLE_RATE",
    "WINDOW",
    "Segmenter",
    "SpeechStarted",
    "SpeechStopped",
    "StreamingVad",
    "Work",
]

SAMPLE_RATE = 16_000
WINDOW = 512
"""Samples Silero VAD scores at once at 16 kHz (32 ms)."""
_CONTEXT = 64  # samples of the previous window the model sees before each window
_PAD = int(0.1 * SAMPLE_RATE)  # speech padding around a stretch, as the VAD's speech_pad_ms
_KEEP_BEFORE_SPEECH = int(0.3 * SAMPLE_RATE)  # more audio before the padded start, for Whisper


@dataclass(frozen=True)
class Work:
    """A piece of audio to transcribe: ``start`` is its offset in the stream, in seconds."""

    audio: np.ndarray
    start: float
    is_final: bool
    speculative: bool = False
    """A final candidate: the segment as it will close if the pause holds (``is_final`` False)."""


@dataclass(frozen=True)
class SpeechStarted:
    """Speech begins at ``offset`` (samples from the start of the stream, unpadded)."""

    offset: int
    resumed: bool = False
    """Speech came back during a pause after a candidate was offered: the candidate is void."""


@dataclass(frozen=True)
class SpeechStopped:
    """A pause was confirmed; the speech ended at ``offset`` (samples, unpadded)."""

    offset: int


Event = SpeechStarted | SpeechStopped | Work


class StreamingVad:
    """Silero VAD over a stream, one window at a time, with its state kept between calls.

    faster-whisper's ``SileroVADModel`` scores a whole clip: each window is given the last 64
    samples of the window before as context, and the LSTM state (h, c) runs through the clip.
    Here the same ONNX session gets the new windows only, with the context and the state of
    the last call: the probabilities are the batch's, bit for bit. The session is shared (ONNX
    Runtime runs it from several threads); the state is this stream's, so calls on one
    instance must not overlap.
    """

    def __init__(self) -> None:
        self._session: Any = None  # loaded on the first call, on the worker thread that runs it
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.scored = 0
        """Samples of the stream scored so far (whole windows)."""

    def __call__(self, samples: np.ndarray, flush: bool = False) -> np.ndarray:
        """Speech probabilities of the whole windows now complete, in order: window ``k`` of the
        stream starts at sample ``k * WINDOW``. ``flush``: score the incomplete last window
        too, padded with zeros (the end of the stream), as the batch scan does."""
        audio = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = audio.size - audio.size % WINDOW
        if flush and whole < audio.size:
            audio = np.pad(audio, (0, WINDOW - audio.size % WINDOW))
            whole = audio.size
        self._pending = audio[whole:].astype(np.float32, copy=True)
        if whole == 0:
            return np.zeros(0, np.float32)
        if self._session is None:
            self._session = get_vad_model().session
        windows = audio[:whole].astype(np.float32, copy=False).reshape(-1, WINDOW)
        contexts = np.concatenate([self._context[None], windows[:-1, -_CONTEXT:]])
        probs, self._h, self._c = self._session.run(
            None,
            {"input": np.concatenate([contexts, windows], axis=1), "h": self._h, "c": self._c},
        )
        self._context = windows[-1, -_CONTEXT:].copy()
        self.scored += whole
        return np.asarray(probs, np.float32).reshape(-1)


class _Audio:
    """Samples of the stream from ``start`` on: appended at the end, dropped from the front, in
    amortized constant time per sample (concatenating per chunk copies the whole segment)."""

    def __init__(self) -> None:
        self._data = np.zeros(4 * SAMPLE_RATE, np.float32)
        self._used = 0
        self.start = 0  # stream position of self._data[0]

    @property
    def end(self) -> int:
        return self.start + self._used

    def extend(self, samples: np.ndarray) -> None:
        needed = self._used + samples.size
        if needed > self._data.size:
            grown = np.zeros(max(needed, 2 * self._data.size), np.float32)
            grown[: self._used] = self._data[: self._used]
            self._data = grown
        self._data[self._used : needed] = samples
        self._used = needed

    def drop_to(self, position: int) -> None:
        count = min(max(position - self.start, 0), self._used)
        if count:
            self._data[: self._used - count] = self._data[count : self._used]
            self._used -= count
            self.start += count

    def copy(self, start: int, end: int) -> np.ndarray:
        return self._data[start - self.start : end - self.start].copy()


class Segmenter:
    """The stream's VAD state and the audio of the open segment. ``append`` may run on another
    thread than ``advance``; calls to ``advance`` must not overlap."""

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
        self._speculate = (
            int(speculate_after * SAMPLE_RATE) if 0 < speculate_after < silence else None
        )
        self._max_segment = int(max_segment * SAMPLE_RATE)
        self._threshold = threshold
        self._neg_threshold = max(threshold - 0.15, 0.01)  # as faster-whisper's default
        self._vad = StreamingVad()
        self._lock = threading.Lock()
        self._incoming: list[np.ndarray] = []
        self._audio = _Audio()
        self.received = 0
        """Samples received in all."""
        # The VAD's hysteresis (faster-whisper's get_speech_timestamps, one window at a time):
        self._speaking = False  # "triggered": inside a stretch of speech
        self._quiet_since: int | None = None  # "temp_end": first quiet window of a pause
        self._offered = False  # a candidate was offered for this pause
        # The open segment: where it starts (None: none open) and its last partial.
        self._segment: int | None = None
        self._partial_at = 0

    @property
    def received_seconds(self) -> float:
        return self.received / SAMPLE_RATE

    def append(self, samples: np.ndarray) -> None:
        with self._lock:
            self._incoming.append(samples)
            self.received += samples.shape[0]

    def advance(self, end_of_stream: bool = False) -> list[Event]:
        """Score the audio that arrived since the last call; return what happened, in order."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        new = np.concatenate(incoming) if incoming else np.zeros(0, np.float32)
        self._audio.extend(new)
        events: list[Event] = []
        first = self._vad.scored
        for k, prob in enumerate(self._vad(new, flush=end_of_stream)):
            self._step(first + k * WINDOW, float(prob), events)
        if end_of_stream:
            self._end(events)
            return events
        if self._segment is None:
            # Nothing open: keep only what a segment starting at the next window would hold.
            self._audio.drop_to(self._vad.scored - _PAD - _KEEP_BEFORE_SPEECH)
        elif self._audio.end - self._partial_at >= self._partial_every:
            self._partial_at = self._audio.end
            events.append(
                Work(self._audio.copy(self._segment, self._audio.end), self._seconds(), False)
            )
        return events

    def _step(self, position: int, prob: float, events: list[Event]) -> None:
        """One window, at ``position``: faster-whisper's hysteresis, with its decisions acted on
        at once instead of at the end of the clip."""
        if prob >= self._threshold:
            if self._quiet_since is not None:  # speech goes on after a short quiet
                self._quiet_since = None
                if self._offered:
                    self._offered = False
                    events.append(SpeechStarted(position, resumed=True))
            if not self._speaking:
                self._speaking = True
                events.append(SpeechStarted(position))
            if self._segment is None:
                self._open(position)
        elif prob < self._neg_threshold and self._speaking:
            if self._quiet_since is None:
                self._quiet_since = position
            quiet = position - self._quiet_since
            if quiet >= self._silence:
                cut = self._quiet_since + _PAD
                events.append(SpeechStopped(self._quiet_since))
                self._speaking, self._quiet_since, self._offered = False, None, False
                self._close(min(cut, self._audio.end), events)
                return
            if self._speculate is not None and quiet >= self._speculate and not self._offered:
                if self._segment is not None and self._quiet_since + _PAD > self._segment:
                    self._offered = True
                    cut = min(self._quiet_since + _PAD, self._audio.end)
                    events.append(
                        Work(
                            self._audio.copy(self._segment, cut),
                            self._seconds(),
                            is_final=False,
                            speculative=True,
                        )
                    )
        if self._segment is not None and position + WINDOW - self._segment >= self._max_segment:
            # Whisper sees 30 s: close here even without a pause; in a pause, where it began.
            cut = self._segment + self._max_segment
            if self._quiet_since is not None:
                cut = min(cut, self._quiet_since + _PAD)
            in_pause = self._quiet_since is not None
            self._close(cut, events)
            self._offered = False
            if not in_pause:
                self._open_at(cut)  # the speech goes on in a new segment

    def _end(self, events: list[Event]) -> None:
        """The stream ended: close the open segment with the rest of the audio, unless a
        candidate was offered and no speech followed it (then at the candidate's cut)."""
        if self._speaking:
            stopped = self._quiet_since if self._quiet_since is not None else self.received
            events.append(SpeechStopped(stopped))
        if self._segment is not None:
            cut = self._audio.end
            if self._offered and self._quiet_since is not None:
                cut = min(self._quiet_since + _PAD, cut)
            self._close(cut, events)
        self._speaking, self._quiet_since, self._offered = False, None, False
        self._audio.drop_to(self._audio.end)

    def _open(self, speech_start: int) -> None:
        self._open_at(max(self._audio.start, speech_start - _PAD - _KEEP_BEFORE_SPEECH))

    def _open_at(self, start: int) -> None:
        self._segment = start
        self._partial_at = start

    def _close(self, cut: int, events: list[Event]) -> None:
        if self._segment is not None and cut > self._segment:
            events.append(Work(self._audio.copy(self._segment, cut), self._seconds(), True))
        self._segment = None
        self._audio.drop_to(cut)

    def _seconds(self) -> float:
        return (self._segment or 0) / SAMPLE_RATE
