"""One StreamingTranscribe call as an object: audio in, speech events and transcripts out.

Three tasks share a session, so that hearing never waits for transcribing:

- the reader appends audio as it arrives;
- the listener runs the VAD (``Segmenter.advance``) on the audio pool over the new audio,
  sends speech events at once and hands segments to the decoder;
- the decoder transcribes on the model pool, one piece at a time per stream: every final, in
  order; the latest partial only (a newer one replaces one not yet started); the speculative
  candidate beside them, as soon as it is offered.

Everything they produce goes through one bounded queue to the caller, so a caller that stops
reading stalls its own session, never the shared workers. A final and a candidate wait for a
model worker when all are busy; partials are skipped instead (the final replaces them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from prometheus_client import Counter

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.workers import WorkerPool
from services.stt.backends.base import SpeechToTextBackend, TranscribeOptions, Transcription
from services.stt.streaming import Segmenter, SpeechStarted, SpeechStopped, Work

__all__ = ["Event", "StreamSession", "Transcript", "transcribe"]

SPECULATION = Counter(
    "chorus_stt_speculative_finals_total",
    "Final decodes started at a short pause, before the segment closed: used or wasted.",
    ["outcome"],
)

_QUEUED_EVENTS = 32  # responses waiting for a slow caller before the session stalls


@dataclass(frozen=True)
class Transcript:
    """Text of one segment: a partial (may change), a candidate (the final if the pause
    holds) or the final. ``segment_id`` numbers the segments of the stream from 0."""

    result: Transcription
    work: Work
    kind: Literal["partial", "candidate", "final"]
    segment_id: int


Event = SpeechStarted | SpeechStopped | Transcript


def transcribe(
    backend: SpeechToTextBackend, audio: np.ndarray, options: TranscribeOptions
) -> Transcription:
    """The backend's transcription, its ValueError (an option it cannot honour) as the call's
    INVALID_ARGUMENT. Runs on a worker thread."""
    try:
        return backend.transcribe(audio, options)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc


@dataclass
class _Candidate:
    """A final candidate being decoded (see streaming.py: speculation)."""

    work: Work
    options: TranscribeOptions
    task: asyncio.Future[Transcription | None]
    reported: bool = False

    def covers(self, final: Work) -> bool:
        return final.start == self.work.start and len(final.audio) == len(self.work.audio)

    def decoded_as(self, options: TranscribeOptions, result: Transcription) -> bool:
        """Whether ``result`` (decoded with the candidate's options) is what ``options`` would
        decode: the same options, or only a language detected since that is the one the
        candidate detected itself (Whisper decoded it in that very language)."""
        if self.options == options:
            return True
        detected = dataclasses.replace(self.options, language=result.language)
        return self.options.language is None and detected == options

    def drop(self) -> None:
        """Stop waiting for it (its worker finishes the decode regardless)."""
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()  # retrieved: a failed candidate is decoded again as the final


class StreamSession:
    """The live state of one stream; ``events`` runs it."""

    def __init__(
        self,
        segmenter: Segmenter,
        backend: SpeechToTextBackend,
        options: TranscribeOptions,
        workers: WorkerPool,
        audio_pool: WorkerPool,
        speech_events: bool = False,
    ) -> None:
        """``workers`` run the model; ``audio_pool`` runs the VAD, beside the model so that
        speech is heard while a decode holds every model worker. ``speech_events``: also yield
        SpeechStarted / SpeechStopped and candidate transcripts."""
        self._segmenter = segmenter
        self._backend = backend
        self._options = options
        self._workers = workers
        self._audio_pool = audio_pool
        self._speech_events = speech_events
        self._arrived = asyncio.Event()
        self._ended = False
        self._listened = False  # the listener has handed over the stream's last work
        self._wake = asyncio.Event()  # the decoder has something to look at
        self._finals: collections.deque[tuple[Work, _Candidate | None]] = collections.deque()
        self._partial: Work | None = None
        self._candidate: _Candidate | None = None
        self._segments = 0
        self._out: asyncio.Queue[Event | None] = asyncio.Queue(_QUEUED_EVENTS)
        self._failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def received_seconds(self) -> float:
        return self._segmenter.received_seconds

    async def events(self, audio: AsyncIterator[np.ndarray]) -> AsyncIterator[Event]:
        """Feed ``audio`` (float32 mono 16 kHz chunks) and yield what is heard and decoded,
        until the audio ends and its last segment is decoded. Raises what the audio iterator
        or a decode raises; leaving early cancels the session's tasks."""
        tasks = [
            asyncio.ensure_future(self._guarded(self._read(audio))),
            asyncio.ensure_future(self._guarded(self._listen())),
            asyncio.ensure_future(self._guarded(self._decode())),
        ]
        try:
            while True:
                getter = asyncio.ensure_future(self._out.get())
                either: set[asyncio.Future[Any]] = {getter, self._failed}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    getter.cancel()
                if self._failed.done():
                    self._failed.result()  # raises the failure
                event = getter.result()
                if event is None:
                    return
                yield event
        finally:
            for task in tasks:
                task.cancel()
            for candidate in self._outstanding():
                SPECULATION.labels("wasted").inc()
                candidate.drop()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._failed.done():
                self._failed.exception()  # retrieved, even when the caller left first

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            if not self._failed.done():
                self._failed.set_exception(exc)

    async def _read(self, audio: AsyncIterator[np.ndarray]) -> None:
        async for samples in audio:
            self._segmenter.append(samples)
            self._arrived.set()
        self._ended = True
        self._arrived.set()

    async def _listen(self) -> None:
        while not self._listened:
            await self._arrived.wait()
            self._arrived.clear()
            ended = self._ended
            heard = await self._audio_pool.run(self._segmenter.advance, ended, wait=True)
            for event in heard.value:
                if isinstance(event, Work):
                    self._route(event)
                    continue
                if isinstance(event, SpeechStarted) and event.resumed:
                    self._void_candidate()  # speech came back before the pause was confirmed
                if self._speech_events:
                    await self._out.put(event)
            self._listened = ended
            self._wake.set()

    def _route(self, work: Work) -> None:
        if work.is_final:
            # A final is taken with the candidate of its pause; a partial of it is stale.
            self._finals.append((work, self._candidate))
            self._candidate, self._partial = None, None
        elif work.speculative:
            self._void_candidate()
            options = self._options
            # A candidate waits for a worker like the final it stands for: skipped while a
            # partial decodes, it would leave the final to start only once the pause is
            # confirmed, and the caller's speculative reply with it.
            task = asyncio.ensure_future(self._run(work, options, wait=True))
            candidate = _Candidate(work, options, task)
            task.add_done_callback(lambda _: self._wake.set())
            self._candidate = candidate
        elif self._backend.partial_results:
            self._partial = work

    def _void_candidate(self) -> None:
        if self._candidate is not None:
            SPECULATION.labels("wasted").inc()
            self._candidate.drop()
            self._candidate = None

    def _outstanding(self) -> list[_Candidate]:
        bound = [c for _, c in self._finals if c is not None]
        return bound + ([self._candidate] if self._candidate is not None else [])

    async def _decode(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while await self._decode_next():
                pass
            if self._listened and not self._finals:
                await self._out.put(None)
                return

    async def _decode_next(self) -> bool:
        """Decode (or report) the most urgent thing; False when there is nothing to do."""
        candidate = self._candidate
        if self._finals:
            work, bound = self._finals.popleft()
            await self._final(work, bound)
            return True
        if candidate is not None and candidate.task.done() and not candidate.reported:
            candidate.reported = True
            result = None if candidate.task.cancelled() else candidate.task.result()
            if result is not None and self._speech_events:
                await self._emit(result, candidate.work, "candidate")
            return True
        if self._partial is not None:
            work, self._partial = self._partial, None
            if candidate is not None and not candidate.task.done():
                return True  # the worker is busy with the final candidate: skip the partial
            result = await self._run(work, _fast(self._options), wait=False)
            if result is not None:
                await self._emit(result, work, "partial")
            return True
        return False

    async def _final(self, work: Work, candidate: _Candidate | None) -> None:
        result = None
        if candidate is not None:
            if candidate.covers(work) and not candidate.task.cancelled():
                with contextlib.suppress(Exception):
                    result = await candidate.task
                if result is not None and not candidate.decoded_as(self._options, result):
                    result = None
            SPECULATION.labels("used" if result is not None else "wasted").inc()
            candidate.drop()
        if result is None:
            result = await self._run(work, self._options, wait=True)
        if result is not None:
            await self._emit(result, work, "final")
        self._segments += 1

    async def _run(
        self, work: Work, options: TranscribeOptions, wait: bool
    ) -> Transcription | None:
        """A decode; None when it is not a final and every worker is busy."""
        try:
            done = await self._workers.run(
                transcribe, self._backend, work.audio, options, wait=wait
            )
        except ResourceExhausted:
            if wait:
                raise
            return None
        return done.value

    async def _emit(
        self,
        result: Transcription,
        work: Work,
        kind: Literal["partial", "candidate", "final"],
    ) -> None:
        if self._options.language is None and result.language_probability >= 0.5:
            # The first confident detection holds for the rest of the stream.
            self._options = dataclasses.replace(self._options, language=result.language)
        await self._out.put(Transcript(result, work, kind, self._segments))


def _fast(options: TranscribeOptions) -> TranscribeOptions:
    """Greedy decoding without word timings: partials are replaced soon anyway."""
    return dataclasses.replace(options, word_timestamps=False, beam_size=1)
