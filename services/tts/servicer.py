"""gRPC adapter between ``chorus.v1.TextToSpeech`` and a text-to-speech backend."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
from chorus.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from prometheus_client import Counter

from services.common.audio import encode_audio, output_sample_rate
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.models import ModelManager
from services.common.text import control_character, split_sentences
from services.common.workers import WorkerPool
from services.tts.backends import VoiceCatalog
from services.tts.backends.base import TextToSpeechBackend
from services.tts.settings import TtsSettings

Encoding = common_pb2.AudioEncoding
_SUPPORTED = {
    Encoding.AUDIO_ENCODING_WAV,
    Encoding.AUDIO_ENCODING_PCM_S16LE,
    Encoding.AUDIO_ENCODING_OGG_OPUS,
    Encoding.AUDIO_ENCODING_MP3,
    Encoding.AUDIO_ENCODING_FLAC,
}


SENTENCES = Counter("chorus_tts_sentences_total", "Sentences synthesized.")


@dataclass(frozen=True)
class _Job:
    """A validated request."""

    sentences: list[str]
    voice: str
    model_id: str
    speed: float
    encoding: common_pb2.AudioEncoding
    sample_rate: int
    native_rate: int


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    def __init__(
        self,
        settings: TtsSettings,
        catalog: VoiceCatalog,
        models: ModelManager[TextToSpeechBackend],
        workers: WorkerPool,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._models = models
        self._workers = workers

    def _validate(self, request: tts_pb2.SynthesizeRequest) -> _Job:
        s = self._settings
        text = request.text.strip()
        if not text:
            raise InvalidArgument("text is empty", field="text")
        bad = control_character(request.text)
        if bad is not None:
            raise InvalidArgument(f"text holds a control character ({bad})", field="text")
        if len(request.text) > s.max_text_chars:
            raise ResourceExhausted(
                f"text has {len(request.text)} characters; the limit is {s.max_text_chars}",
                field="text",
            )
        voice = request.voice or self._catalog.default_voice
        if voice not in self._catalog.voices:
            raise NotFound(
                f"unknown voice {voice!r}; available: {', '.join(self._catalog.voices)}",
                field="voice",
            )
        speed = request.speed or 1.0
        if not (math.isfinite(speed) and s.min_speed <= speed <= s.max_speed):
            raise InvalidArgument(
                f"speed {request.speed} is outside {s.min_speed}..{s.max_speed}", field="speed"
            )
        encoding = request.encoding or Encoding.AUDIO_ENCODING_WAV
        if encoding not in _SUPPORTED:
            raise InvalidArgument(
                f"unsupported output encoding {encoding}; "
                "use WAV, PCM_S16LE, OGG_OPUS, MP3 or FLAC",
                field="encoding",
            )
        if request.sample_rate_hz and not (
            s.min_sample_rate_hz <= request.sample_rate_hz <= s.max_sample_rate_hz
        ):
            raise InvalidArgument(
                f"sample_rate_hz {request.sample_rate_hz} is outside "
                f"{s.min_sample_rate_hz}..{s.max_sample_rate_hz}",
                field="sample_rate_hz",
            )
        native = self._catalog.voices[voice].sample_rate_hz
        return _Job(
            sentences=split_sentences(text, s.max_sentence_chars),
            voice=voice,
            model_id=self._catalog.model_of[voice],
            speed=speed,
            encoding=encoding,
            sample_rate=output_sample_rate(encoding, request.sample_rate_hz, native),
            native_rate=native,
        )

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.SynthesizeResponse:
        job = self._validate(request)
        async with self._models.use(job.model_id) as backend:
            work = await self._workers.run(_synthesize, backend, job, " ".join(job.sentences))
        samples, rate = work.value
        audio = await self._workers.run(encode_audio, samples, rate, job.encoding, job.sample_rate)
        return tts_pb2.SynthesizeResponse(
            audio=audio.value,
            encoding=job.encoding,
            sample_rate_hz=job.sample_rate,
            duration_seconds=len(samples) / rate,
            voice=job.voice,
            usage=common_pb2.Usage(
                audio_seconds=len(samples) / rate,
                characters=len(request.text),
                processing_seconds=work.run_seconds + audio.run_seconds,
                queue_seconds=work.queue_seconds + audio.queue_seconds,
            ),
        )

    async def StreamingSynthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesisChunk]:
        job = self._validate(request)
        async with self._models.use(job.model_id) as backend:
            last = len(job.sentences) - 1
            for sequence, sentence in enumerate(job.sentences):
                # Synthesis and encoding of one sentence are one unit of work: a sentence's
                # chunk leaves before the next sentence is started.
                work = await self._workers.run(_synthesize_encoded, backend, job, sentence)
                audio, duration = work.value
                yield tts_pb2.SynthesisChunk(
                    audio=audio,
                    sequence=sequence,
                    text=sentence,
                    encoding=job.encoding,
                    sample_rate_hz=job.sample_rate,
                    duration_seconds=duration,
                    last=sequence == last,
                )

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        prefix = request.language.lower()
        return tts_pb2.ListVoicesResponse(
            voices=[
                tts_pb2.Voice(
                    id=v.id,
                    name=v.name,
                    language=v.language,
                    sample_rate_hz=v.sample_rate_hz,
                    backend=v.backend,
                    is_default=v.id == self._catalog.default_voice,
                )
                for v in self._catalog.voices.values()
                if v.language.lower().startswith(prefix)
            ]
        )


def _synthesize(backend: TextToSpeechBackend, job: _Job, text: str) -> tuple[np.ndarray, int]:
    result = backend.synthesize(text, job.voice, job.speed)
    SENTENCES.inc(len(job.sentences))
    return result


def _synthesize_encoded(backend: TextToSpeechBackend, job: _Job, text: str) -> tuple[bytes, float]:
    samples, rate = backend.synthesize(text, job.voice, job.speed)
    SENTENCES.inc()
    return encode_audio(samples, rate, job.encoding, job.sample_rate), len(samples) / rate
