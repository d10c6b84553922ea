"""One conversational turn: transcribe, reply, draw and speak, streamed as typed events.

The reply is cut into sentences as its tokens arrive and each sentence goes to TTS while the
model is still generating, so the first audio leaves long before the reply is finished; the
image (when asked for) is drawn at the same time. The turn keeps no state beyond the call: the
history comes with the request.

Required stages (transcription, reply, speech) end the turn with their failure's status; the
optional image stage reports an error event and the turn goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from chorus.v1 import (
    common_pb2,
    image_pb2,
    llm_pb2,
    stt_pb2,
    tts_pb2,
)
from chorus.v1 import (
    orchestrator_pb2 as pb,
)
from prometheus_client import Counter, Histogram

from services.common.clients import call_metadata
from services.common.errors import (
    ChorusError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    from_rpc_error,
)
from services.common.text import pop_complete_sentences
from services.orchestrator.downstream import Downstream
from services.orchestrator.intent import image_prompt
from services.orchestrator.settings import OrchestratorSettings

log = logging.getLogger(__name__)

STAGE_SECONDS = Histogram(
    "chorus_turn_stage_seconds",
    "Seconds from the end of a turn's input to each milestone (transcript, first reply token, "
    "first audio, image) and to the end of the turn (total).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120),
)
TURN_ERRORS = Counter("chorus_turn_errors_total", "Failed turn stages.", ["stage", "code"])

Stage = pb.Stage
_SPEAKABLE = re.compile(r"\w")


class LiveAudio:
    """Raw PCM arriving from the caller while it is transcribed; stops at ``max_bytes``."""

    def __init__(self, chunks: AsyncIterator[bytes], max_bytes: int, describe_limit: str) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._limit = describe_limit
        self.received = 0
        self.error: ChorusError | None = None
        self.ended_at: float | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._chunks:
                self.received += len(chunk)
                if self.received > self._max_bytes:
                    # Raising here would only cancel the STT call; the turn reports it instead.
                    self.error = ResourceExhausted(
                        f"speech input is longer than the limit ({self._limit})", field="audio"
                    )
                    return
                yield chunk
        except ChorusError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()


@dataclass
class TurnInput:
    text: str = ""
    audio: bytes = b""
    live: LiveAudio | None = None


class StageFailed(Exception):
    def __init__(self, stage: int, error: ChorusError) -> None:
        super().__init__(error.message)
        self.stage = stage
        self.error = error


@dataclass
class _Clock:
    started: float = field(default_factory=time.monotonic)
    input_done: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Record a milestone (the first time only), in seconds since the input was complete."""
        if name not in self.marks:
            self.marks[name] = max(0.0, time.monotonic() - self.input_done)
            STAGE_SECONDS.labels(name).observe(self.marks[name])


class Turn:
    def __init__(
        self,
        config: pb.TurnConfig,
        settings: OrchestratorSettings,
        downstream: Downstream,
        turn_id: str,
        deadline: float,
    ) -> None:
        self.config = config
        self.settings = settings
        self.services = downstream
        self.turn_id = turn_id
        self.deadline = deadline
        self.clock = _Clock()
        self._emit: Callable[[pb.TurnEvent], None] = lambda event: None

    # -- plumbing -------------------------------------------------------------------------

    def _event(self, **event: object) -> None:
        self._emit(
            pb.TurnEvent(
                turn_id=self.turn_id,
                elapsed_seconds=time.monotonic() - self.clock.started,
                **event,
            )
        )

    def _timeout(self, stage_timeout: float) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the turn's deadline passed")
        return min(stage_timeout, remaining)

    async def events(self, inputs: TurnInput) -> AsyncIterator[pb.TurnEvent]:
        """The turn's events as they happen; a fatal failure is the last event, then raised."""
        queue: asyncio.Queue[pb.TurnEvent | None] = asyncio.Queue()
        self._emit = queue.put_nowait
        runner = asyncio.create_task(self._run(inputs, queue))
        try:
            while (event := await queue.get()) is not None:
                yield event
            await runner
        finally:
            if not runner.done():
                runner.cancel()  # the caller went away: cancel every downstream call
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner

    async def _run(self, inputs: TurnInput, queue: asyncio.Queue[pb.TurnEvent | None]) -> None:
        try:
            await self._turn(inputs)
        except StageFailed as failed:
            code = failed.error.code.name
            TURN_ERRORS.labels(pb.Stage.Name(failed.stage), code).inc()
            log.warning("turn failed at %s: %s", pb.Stage.Name(failed.stage), failed.error.message)
            self._event(
                error=pb.TurnError(
                    stage=failed.stage, code=code, message=failed.error.message, fatal=True
                )
            )
            raise failed.error from None
        except ChorusError as error:  # e.g. the deadline passed between stages
            self._event(error=pb.TurnError(code=error.code.name, message=error.message, fatal=True))
            raise
        finally:
            queue.put_nowait(None)

    # -- the turn -------------------------------------------------------------------------

    async def _turn(self, inputs: TurnInput) -> None:
        voice_check = asyncio.create_task(self._check_voice())
        try:
            transcript = await self._transcribe(inputs)
            await voice_check
        finally:
            voice_check.cancel()
        prompt = self._image_prompt(transcript)
        try:
            async with asyncio.TaskGroup() as group:
                if prompt:
                    group.create_task(self._draw(prompt))
                sentences: asyncio.Queue[str | None] = asyncio.Queue()
                if not self.config.options.text_only:
                    group.create_task(self._speak(sentences))
                await self._reply(transcript, sentences)
        except* (StageFailed, ChorusError) as failures:
            raise failures.exceptions[0] from None
        self.clock.mark("total")
        marks = self.clock.marks
        self._event(
            turn_timings=pb.TurnTimings(
                transcription_seconds=marks.get("transcription", 0.0),
                first_reply_token_seconds=marks.get("first_reply_token", 0.0),
                reply_seconds=marks.get("reply", 0.0),
                first_audio_seconds=marks.get("first_audio", 0.0),
                image_seconds=marks.get("image", 0.0),
                total_seconds=marks["total"],
            )
        )

    async def _check_voice(self) -> None:
        """Reject an unknown voice before any work, rather than after the first sentence."""
        voice = self.config.voice
        if not voice or self.config.options.text_only:
            return
        try:
            voices = await self.services.tts.ListVoices(
                tts_pb2.ListVoicesRequest(),
                timeout=self._timeout(self.settings.speech_timeout),
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as err:
            raise StageFailed(Stage.STAGE_SPEECH, from_rpc_error(err, "text-to-speech")) from None
        known = [v.id for v in voices.voices]
        if voice not in known:
            raise StageFailed(
                Stage.STAGE_SPEECH,
                NotFound(f"unknown voice {voice!r}; available: {', '.join(known)}", field="voice"),
            )

    async def _transcribe(self, inputs: TurnInput) -> str:
        config = self.config
        if inputs.live is None and not inputs.audio:
            self._event(
                transcript_final=pb.TranscriptFinal(text=inputs.text, language=config.language)
            )
            return inputs.text
        try:
            if inputs.live is not None:
                text, language, probability, seconds = await self._transcribe_live(inputs.live)
            else:
                response = await self.services.stt.Transcribe(
                    stt_pb2.TranscribeRequest(
                        audio=inputs.audio, language=config.language, model=config.options.stt_model
                    ),
                    timeout=self._timeout(self.settings.transcription_timeout),
                    metadata=call_metadata(),
                )
                text, language = response.text.strip(), response.language
                probability, seconds = response.language_probability, response.duration_seconds
        except grpc.aio.AioRpcError as err:
            raise StageFailed(
                Stage.STAGE_TRANSCRIPTION, from_rpc_error(err, "speech-to-text")
            ) from None
        except ChorusError as err:
            raise StageFailed(Stage.STAGE_INPUT, err) from None
        self.clock.mark("transcription")
        self._event(
            transcript_final=pb.TranscriptFinal(
                text=text,
                language=language,
                language_probability=probability,
                audio_seconds=seconds,
            )
        )
        if not text:
            raise StageFailed(
                Stage.STAGE_TRANSCRIPTION,
                InvalidArgument("no speech was recognized in the audio", field="audio"),
            )
        if len(text) > self.settings.max_text_chars:
            raise StageFailed(
                Stage.STAGE_TRANSCRIPTION,
                ResourceExhausted(
                    f"the transcript is longer than {self.settings.max_text_chars} characters"
                ),
            )
        return text

    async def _transcribe_live(self, live: LiveAudio) -> tuple[str, str, float, float]:
        fmt = self.config.input_audio_format

        async def requests() -> AsyncIterator[stt_pb2.StreamingTranscribeRequest]:
            yield stt_pb2.StreamingTranscribeRequest(
                config=stt_pb2.StreamingTranscribeConfig(
                    format=fmt, language=self.config.language, model=self.config.options.stt_model
                )
            )
            async for chunk in live:
                yield stt_pb2.StreamingTranscribeRequest(audio_chunk=chunk)

        finals: list[str] = []
        language, probability, seconds = self.config.language, 0.0, 0.0
        call = self.services.stt.StreamingTranscribe(
            requests(),
            timeout=self._timeout(self.settings.transcription_timeout),
            metadata=call_metadata(),
        )
        async for response in call:
            seconds = response.audio_received_seconds
            if response.is_final:
                finals.append(response.text.strip())
                language, probability = response.language, response.language_probability
            else:
                self._event(
                    transcript_partial=pb.TranscriptPartial(
                        text=" ".join([*finals, response.text.strip()]).strip()
                    )
                )
        if live.error is not None:
            raise live.error
        if live.ended_at is not None:
            self.clock.input_done = live.ended_at
        return " ".join(f for f in finals if f), language, probability, seconds

    def _image_prompt(self, transcript: str) -> str | None:
        mode = self.config.image_mode
        if mode == pb.IMAGE_MODE_ON:
            return image_prompt(transcript) or transcript
        if mode == pb.IMAGE_MODE_AUTO:
            return image_prompt(transcript)
        return None

    async def _reply(self, transcript: str, sentences: asyncio.Queue[str | None]) -> None:
        options = self.config.options
        request = llm_pb2.GenerateTextRequest(
            messages=[
                *self.config.history,
                llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=transcript),
            ],
            system_prompt=options.system_prompt or self.settings.system_prompt,  # empty: LLM's own
            max_tokens=options.max_tokens or self.settings.max_tokens,
            model=options.llm_model,
        )
        for name in ("temperature", "seed"):
            if options.HasField(name):
                setattr(request, name, getattr(options, name))
        pending = ""
        result = llm_pb2.TextGenerationResult()
        try:
            call = self.services.llm.Generate(
                request,
                timeout=self._timeout(self.settings.reply_timeout),
                metadata=call_metadata(),
            )
            async for response in call:
                if response.HasField("delta"):
                    self.clock.mark("first_reply_token")
                    self._event(reply_delta=pb.ReplyDelta(text=response.delta.text))
                    pending += response.delta.text
                    done, pending = pop_complete_sentences(
                        pending, self.settings.sentence_max_chars
                    )
                    for sentence in done:
                        sentences.put_nowait(sentence)
                else:
                    result = response.result
        except grpc.aio.AioRpcError as err:
            raise StageFailed(Stage.STAGE_REPLY, from_rpc_error(err, "text-generation")) from None
        finally:
            if pending.strip():
                sentences.put_nowait(pending.strip())
            sentences.put_nowait(None)
        self.clock.mark("reply")
        self._event(
            reply_final=pb.ReplyFinal(
                text=result.text, finish_reason=result.finish_reason, usage=result.usage
            )
        )

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        config = self.config
        sequence = 0
        while (sentence := await sentences.get()) is not None:
            if not _SPEAKABLE.search(sentence):
                continue
            request = tts_pb2.SynthesizeRequest(
                text=sentence,
                voice=config.voice,
                encoding=config.output_encoding or common_pb2.AUDIO_ENCODING_WAV,
                sample_rate_hz=config.output_sample_rate_hz,
            )
            try:
                # The streaming method even for one sentence: cancelling a unary call does not
                # reach the server through OpenTelemetry's aio client interceptor (it awaits the
                # call inside its own task), while a cancelled stream always does.
                call = self.services.tts.StreamingSynthesize(
                    request,
                    timeout=self._timeout(self.settings.speech_timeout),
                    metadata=call_metadata(),
                )
                async for chunk in call:
                    self.clock.mark("first_audio")
                    self._event(
                        audio_chunk=pb.AudioChunkEvent(
                            audio=chunk.audio,
                            sequence=sequence,
                            text=chunk.text,
                            encoding=chunk.encoding,
                            sample_rate_hz=chunk.sample_rate_hz,
                            duration_seconds=chunk.duration_seconds,
                        )
                    )
                    sequence += 1
            except grpc.aio.AioRpcError as err:
                raise StageFailed(
                    Stage.STAGE_SPEECH, from_rpc_error(err, "text-to-speech")
                ) from None

    async def _draw(self, prompt: str) -> None:
        """The optional stage: a failure becomes an error event, never the turn's failure."""
        options = self.config.options
        request = image_pb2.GenerateImageRequest(
            prompt=prompt,
            width=options.image_width,
            height=options.image_height,
            steps=options.image_steps,
            num_images=1,
            model=options.image_model,
        )
        if options.HasField("image_seed"):
            request.seed = options.image_seed
        try:
            call = self.services.image.Generate(
                request,
                timeout=self._timeout(self.settings.image_timeout),
                metadata=call_metadata(),
            )
            async for response in call:
                if response.HasField("progress"):
                    p = response.progress
                    self._event(
                        image_progress=pb.ImageProgressEvent(step=p.step, total_steps=p.total_steps)
                    )
                elif response.HasField("image"):
                    image = response.image
                    self.clock.mark("image")
                    self._event(
                        image_result=pb.ImageResultEvent(
                            png=image.png,
                            width=image.width,
                            height=image.height,
                            seed=image.seed,
                            prompt=prompt,
                        )
                    )
        except (grpc.aio.AioRpcError, ChorusError) as err:
            error = (
                from_rpc_error(err, "image-generation")
                if isinstance(err, grpc.aio.AioRpcError)
                else err
            )
            TURN_ERRORS.labels("STAGE_IMAGE", error.code.name).inc()
            log.warning("image stage failed, the turn goes on: %s", error.message)
            self._event(
                error=pb.TurnError(
                    stage=Stage.STAGE_IMAGE,
                    code=error.code.name,
                    message=error.message,
                    fatal=False,
                )
            )
