"""gRPC adapter between ``chorus.v1.SpeechToText`` and a speech-to-text backend."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import grpc
import numpy as np
from chorus.v1 import common_pb2, stt_pb2, stt_pb2_grpc
from prometheus_client import Counter

from services.common.audio import decode_audio, pcm16_to_float32, resample
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.common.models import ModelManager
from services.common.workers import WorkerPool
from services.stt.backends.base import (
    Segment,
    SpeechToTextBackend,
    TranscribeOptions,
    Transcription,
    Word,
)
from services.stt.settings import SttSettings
from services.stt.streaming import SAMPLE_RATE, Segmenter, Work

log = logging.getLogger(__name__)

SPECULATION = Counter(
    "chorus_stt_speculative_finals_total",
    "Final decodes started at a short pause, before the segment closed: used or wasted.",
    ["outcome"],
)

_REJECTED_RETRY_SECONDS = 0.05
_TASKS = {
    stt_pb2.TASK_UNSPECIFIED: "transcribe",
    stt_pb2.TASK_TRANSCRIBE: "transcribe",
    stt_pb2.TASK_TRANSLATE: "translate",
}


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    def __init__(
        self,
        settings: SttSettings,
        models: ModelManager[SpeechToTextBackend],
        workers: WorkerPool,
        decoders: WorkerPool,
    ) -> None:
        self._settings = settings
        self._models = models
        self._workers = workers
        self._decoders = decoders
        self._streams = asyncio.Semaphore(settings.max_streams)

    def _options(
        self,
        backend: SpeechToTextBackend,
        language: str,
        word_timestamps: bool,
        prompt: str,
        task: int,
    ) -> TranscribeOptions:
        if task not in _TASKS:
            raise InvalidArgument(
                f"unknown task {task}; use TASK_TRANSCRIBE or TASK_TRANSLATE", field="task"
            )
        if _TASKS[task] == "translate" and not backend.multilingual:
            raise FailedPrecondition(
                f"model {backend.model_id} is English-only and cannot translate; pick a "
                "multilingual model (such as whisper-base) or use TASK_TRANSCRIBE"
            )
        language = language.strip().lower()
        if language and language not in backend.languages():
            raise InvalidArgument(
                f"unknown or unsupported language code {language!r} for model "
                f"{backend.model_id}; use an ISO 639-1 code such as 'en' or 'de', or leave it "
                "empty to detect the language",
                field="language",
            )
        if len(prompt) > self._settings.max_prompt_chars:
            raise ResourceExhausted(
                f"initial_prompt has {len(prompt)} characters; the limit is "
                f"{self._settings.max_prompt_chars}",
                field="initial_prompt",
            )
        return TranscribeOptions(
            language=language or None,
            word_timestamps=word_timestamps,
            initial_prompt=prompt or None,
            beam_size=self._settings.beam_size,
            task=_TASKS[task],
        )

    async def Transcribe(
        self, request: stt_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> stt_pb2.TranscribeResponse:
        if len(request.audio) > self._settings.max_audio_bytes:
            raise ResourceExhausted(
                f"audio has {len(request.audio)} bytes; the limit is "
                f"{self._settings.max_audio_bytes}",
                field="audio",
            )
        model_id = self._models.resolve(request.model)
        async with self._models.use(model_id) as backend:
            options = self._options(
                backend,
                request.language,
                request.word_timestamps,
                request.initial_prompt,
                request.task,
            )
            decoded = await self._decoders.run(
                lambda: decode_audio(
                    request.audio,
                    sample_rate=SAMPLE_RATE,
                    max_seconds=self._settings.max_audio_seconds,
                )
            )
            work = await self._workers.run(_transcribe, backend, decoded.value, options)
        result = work.value
        return stt_pb2.TranscribeResponse(
            text=result.text,
            language=result.language,
            language_probability=result.language_probability,
            duration_seconds=len(decoded.value) / SAMPLE_RATE,
            segments=[_segment_pb(s, 0.0) for s in result.segments],
            model=model_id,
            usage=common_pb2.Usage(
                audio_seconds=len(decoded.value) / SAMPLE_RATE,
                characters=len(result.text),
                processing_seconds=work.run_seconds + decoded.run_seconds,
                queue_seconds=work.queue_seconds + decoded.queue_seconds,
            ),
        )

    async def StreamingTranscribe(
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        if self._streams.locked():
            raise ResourceExhausted(
                f"too many open streams (limit {self._settings.max_streams}); retry later"
            )
        async with self._streams:
            first = await anext(aiter(request_iterator), None)
            if first is None or not first.HasField("config"):
                raise InvalidArgument(
                    "the first message of StreamingTranscribe must carry the config", field="config"
                )
            config = first.config
            rate, channels = _stream_format(config.format)
            model_id = self._models.resolve(config.model)
            async with self._models.use(model_id) as backend:
                options = self._options(
                    backend,
                    config.language,
                    config.word_timestamps,
                    config.initial_prompt,
                    config.task,
                )
                interval = (config.partial_interval_ms or self._settings.partial_interval_ms) / 1000
                segmenter = Segmenter(
                    partial_interval=max(interval, 0.1),
                    silence=self._settings.vad_silence_ms / 1000,
                    max_segment=self._settings.max_segment_seconds,
                    threshold=self._settings.vad_threshold,
                    speculate_after=self._settings.vad_speculate_ms / 1000,
                )
                async for response in self._stream(
                    request_iterator, segmenter, backend, options, rate, channels
                ):
                    yield response

    async def _stream(
        self,
        requests: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
        segmenter: Segmenter,
        backend: SpeechToTextBackend,
        options: TranscribeOptions,
        rate: int,
        channels: int,
    ) -> AsyncIterator[stt_pb2.StreamingTranscribeResponse]:
        arrived = asyncio.Event()
        limit = self._settings.max_audio_seconds

        async def read() -> None:
            async for request in requests:
                if request.HasField("config"):
                    raise InvalidArgument("config may only be sent once, first", field="config")
                chunk = request.audio_chunk
                if len(chunk) > self._settings.max_chunk_bytes:
                    raise ResourceExhausted(
                        f"audio_chunk has {len(chunk)} bytes; the limit is "
                        f"{self._settings.max_chunk_bytes}",
                        field="audio_chunk",
                    )
                segmenter.append(resample(pcm16_to_float32(chunk, channels), rate, SAMPLE_RATE))
                if segmenter.received_seconds > limit:
                    raise ResourceExhausted(
                        f"stream is longer than the limit of {limit:.0f} s", field="audio_chunk"
                    )
                arrived.set()

        reader = asyncio.create_task(read())
        finals = 0
        candidate: _Candidate | None = None
        try:
            while True:
                waiter = asyncio.ensure_future(arrived.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                arrived.clear()
                ended = reader.done()
                if ended:
                    reader.result()  # re-raise a bad chunk or limit as the call's status
                while (work := await asyncio.to_thread(segmenter.poll, ended)) is not None:
                    if work.speculative:
                        if candidate is not None:  # speech resumed after the earlier candidate
                            SPECULATION.labels("wasted").inc()
                        _drop(candidate)
                        candidate = _Candidate(
                            work,
                            options,
                            asyncio.ensure_future(self._run_stream_work(backend, work, options)),
                        )
                        continue
                    if not work.is_final and candidate is not None and not candidate.task.done():
                        continue  # the worker is busy with the final candidate: skip the partial
                    result = None
                    if work.is_final and candidate is not None:
                        if candidate.matches(work, options):
                            result = await candidate.task
                        SPECULATION.labels("used" if result is not None else "wasted").inc()
                        _drop(candidate)
                        candidate = None
                    if result is None:
                        result = await self._run_stream_work(backend, work, options)
                    if result is None:
                        continue
                    if options.language is None and result.language_probability >= 0.5:
                        options = _with_language(options, result.language)
                    yield _stream_response(result, work, segmenter.received_seconds, finals)
                    finals += work.is_final
                    if not work.is_final and not ended:
                        break  # read what arrived meanwhile before the next partial
                if ended:
                    return
        finally:
            if candidate is not None:
                SPECULATION.labels("wasted").inc()
            _drop(candidate)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def _run_stream_work(
        self, backend: SpeechToTextBackend, work: Work, options: TranscribeOptions
    ) -> Transcription | None:
        """Partials and final candidates are skipped (None) when every worker is busy, partials
        also when the backend does not want them; finals wait for a worker. A candidate is
        decoded as the final it may become."""
        if not work.is_final and not work.speculative:
            if not backend.partial_results:
                return None
            options = _fast(options)
        while True:
            try:
                return (await self._workers.run(_transcribe, backend, work.audio, options)).value
            except ResourceExhausted:
                if not work.is_final:
                    return None
                await asyncio.sleep(_REJECTED_RETRY_SECONDS)

    async def ListModels(
        self, request: common_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ListModelsResponse:
        models = []
        for model_id in self._models.ids:
            backend = self._models.peek(model_id)
            models.append(
                common_pb2.ModelInfo(
                    id=model_id,
                    backend=self._settings.backend,
                    loaded=backend is not None,
                    languages=backend.languages() if backend is not None else [],
                    is_default=model_id == self._models.default,
                )
            )
        return common_pb2.ListModelsResponse(models=models)


@dataclasses.dataclass
class _Candidate:
    """A final candidate being decoded (see streaming.py: speculation)."""

    work: Work
    options: TranscribeOptions
    task: asyncio.Future[Transcription | None]

    def matches(self, final: Work, options: TranscribeOptions) -> bool:
        return (
            final.start == self.work.start
            and len(final.audio) == len(self.work.audio)
            and options == self.options
        )


def _drop(candidate: _Candidate | None) -> None:
    """Stop waiting for a candidate (its worker finishes the decode regardless)."""
    if candidate is None:
        return
    if candidate.task.done():
        if not candidate.task.cancelled():
            candidate.task.exception()  # retrieved: a failed final is decoded again
    else:
        candidate.task.cancel()


def _transcribe(
    backend: SpeechToTextBackend, audio: np.ndarray, options: TranscribeOptions
) -> Transcription:
    try:
        return backend.transcribe(audio, options)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from exc


def _stream_format(fmt: common_pb2.RawAudioFormat) -> tuple[int, int]:
    if fmt.encoding not in (
        common_pb2.AUDIO_ENCODING_UNSPECIFIED,
        common_pb2.AUDIO_ENCODING_PCM_S16LE,
    ):
        raise InvalidArgument(
            "StreamingTranscribe takes raw PCM_S16LE chunks; use Transcribe for containers",
            field="config.format.encoding",
        )
    rate = fmt.sample_rate_hz or SAMPLE_RATE
    if not 8000 <= rate <= 192_000:
        raise InvalidArgument(
            f"sample_rate_hz {rate} is outside 8000..192000", field="config.format.sample_rate_hz"
        )
    channels = fmt.channels or 1
    if not 1 <= channels <= 8:
        raise InvalidArgument(
            f"channels {channels} is outside 1..8", field="config.format.channels"
        )
    return rate, channels


def _with_language(options: TranscribeOptions, language: str) -> TranscribeOptions:
    return dataclasses.replace(options, language=language)


def _fast(options: TranscribeOptions) -> TranscribeOptions:
    """Greedy decoding without word timings: partials are replaced soon anyway."""
    return dataclasses.replace(options, word_timestamps=False, beam_size=1)


def _word_pb(word: Word, offset: float) -> stt_pb2.Word:
    return stt_pb2.Word(
        word=word.text,
        start=word.start + offset,
        end=word.end + offset,
        probability=word.probability,
    )


def _segment_pb(segment: Segment, offset: float) -> stt_pb2.Segment:
    return stt_pb2.Segment(
        id=segment.id,
        start=segment.start + offset,
        end=segment.end + offset,
        text=segment.text,
        words=[_word_pb(w, offset) for w in segment.words],
        avg_logprob=segment.avg_logprob,
        no_speech_prob=segment.no_speech_prob,
    )


def _stream_response(
    result: Transcription, work: Work, received: float, segment_id: int
) -> stt_pb2.StreamingTranscribeResponse:
    response = stt_pb2.StreamingTranscribeResponse(
        is_final=work.is_final,
        text=result.text,
        language=result.language,
        language_probability=result.language_probability,
        audio_received_seconds=received,
    )
    if work.is_final:
        response.segment.CopyFrom(
            stt_pb2.Segment(
                id=segment_id,
                start=work.start,
                end=work.start + len(work.audio) / SAMPLE_RATE,
                text=result.text,
                words=[_word_pb(w, work.start) for s in result.segments for w in s.words],
            )
        )
    return response
