"""gRPC adapter between ``chorus.v1.SpeechToText`` and a speech-to-text backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Literal

import grpc
import numpy as np
from chorus.v1 import common_pb2, stt_pb2, stt_pb2_grpc

from services.common.audio import decode_audio, pcm16_to_float32, resample
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    ResourceExhausted,
)
from services.common.models import ModelManager
from services.common.workers import WorkerPool
from services.stt.backends.base import Segment, SpeechToTextBackend, TranscribeOptions, Word
from services.stt.session import Event, StreamSession, transcribe
from services.stt.settings import SttSettings
from services.stt.streaming import SAMPLE_RATE, Segmenter, SpeechStarted, SpeechStopped

log = logging.getLogger(__name__)

_TASKS: dict[int, Literal["transcribe", "translate"]] = {
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
            work = await self._workers.run(transcribe, backend, decoded.value, options)
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
            raise Overloaded(
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
            segmenter = self._segmenter(config)
            model_id = self._models.resolve(config.model)
            async with self._models.use(model_id) as backend:
                options = self._options(
                    backend,
                    config.language,
                    config.word_timestamps,
                    config.initial_prompt,
                    config.task,
                )
                session = StreamSession(
                    segmenter,
                    backend,
                    options,
                    self._workers,
                    self._decoders,  # the VAD runs beside the model, as audio decoding does
                    speech_events=config.speech_events,
                )
                audio = self._audio(request_iterator, rate, channels)
                async for event in session.events(audio):
                    yield _stream_response(event, session.received_seconds)

    def _segmenter(self, config: stt_pb2.StreamingTranscribeConfig) -> Segmenter:
        """The stream's VAD, with the call's own settings where it gives them."""
        settings = self._settings
        threshold = settings.vad_threshold
        if config.HasField("vad_threshold"):
            threshold = config.vad_threshold
            if not 0 < threshold < 1:
                raise InvalidArgument(
                    f"vad_threshold {threshold} is outside (0, 1)", field="config.vad_threshold"
                )
        silence_ms = settings.vad_silence_ms
        if config.HasField("vad_silence_ms"):
            silence_ms = config.vad_silence_ms
            if not 100 <= silence_ms <= 10_000:
                raise InvalidArgument(
                    f"vad_silence_ms {silence_ms} is outside 100..10000",
                    field="config.vad_silence_ms",
                )
        speculate_ms = settings.vad_speculate_ms
        if config.HasField("vad_speculate_ms"):
            speculate_ms = config.vad_speculate_ms
            if speculate_ms > 10_000:
                raise InvalidArgument(
                    f"vad_speculate_ms {speculate_ms} is over 10000",
                    field="config.vad_speculate_ms",
                )
        interval_ms = config.partial_interval_ms or settings.partial_interval_ms
        return Segmenter(
            partial_interval=max(interval_ms / 1000, 0.1),
            silence=silence_ms / 1000,
            max_segment=settings.max_segment_seconds,
            threshold=threshold,
            speculate_after=speculate_ms / 1000,
        )

    async def _audio(
        self,
        requests: AsyncIterator[stt_pb2.StreamingTranscribeRequest],
        rate: int,
        channels: int,
    ) -> AsyncIterator[np.ndarray]:
        """The chunks after the config as float32 mono 16 kHz, each checked against the
        limits; a bad one ends the call with its status."""
        limit = self._settings.max_audio_seconds
        received = 0
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
            samples = resample(pcm16_to_float32(chunk, channels), rate, SAMPLE_RATE)
            received += samples.shape[0]
            if received > limit * SAMPLE_RATE:
                raise ResourceExhausted(
                    f"stream is longer than the limit of {limit:.0f} s", field="audio_chunk"
                )
            yield samples

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


def _stream_response(event: Event, received: float) -> stt_pb2.StreamingTranscribeResponse:
    if isinstance(event, SpeechStarted):
        return stt_pb2.StreamingTranscribeResponse(
            speech_started=stt_pb2.SpeechStarted(
                audio_start_ms=_ms(event.offset), resumed=event.resumed
            ),
            audio_received_seconds=received,
        )
    if isinstance(event, SpeechStopped):
        return stt_pb2.StreamingTranscribeResponse(
            speech_stopped=stt_pb2.SpeechStopped(audio_end_ms=_ms(event.offset)),
            audio_received_seconds=received,
        )
    result, work = event.result, event.work
    response = stt_pb2.StreamingTranscribeResponse(
        is_final=event.kind == "final",
        candidate=event.kind == "candidate",
        text=result.text,
        language=result.language,
        language_probability=result.language_probability,
        audio_received_seconds=received,
    )
    if event.kind != "partial":
        response.segment.CopyFrom(
            stt_pb2.Segment(
                id=event.segment_id,
                start=work.start,
                end=work.start + len(work.audio) / SAMPLE_RATE,
                text=result.text,
                words=[_word_pb(w, work.start) for s in result.segments for w in s.words],
            )
        )
    return response


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE
