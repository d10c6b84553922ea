"""One conversational turn: transcribe, reply, draw and speak, streamed as typed events.

The reply is cut into sentences as its tokens arrive and each sentence goes to TTS while the
model is still generating, so the first audio leaves long before the reply is finished; the
image (when asked for) is drawn at the same time. The turn keeps no state beyond the call: the
history comes with the request, or from the conversation store (``storage.py``), where a turn
that names a conversation keeps its media and items.

Required stages (transcription, reply, speech) end the turn with their failure's status; the
optional image stage reports an error event and the turn goes on. An unknown voice is found by
the speech service itself (NOT_FOUND naming ``config.voice``) at the first sentence, rather than
by asking it for its voices on every turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from chorus.v1 import common_pb2, image_pb2, llm_pb2, tts_pb2
from chorus.v1 import orchestrator_pb2 as pb

from services.common.clients import call_metadata
from services.common.errors import ChorusError
from services.common.text import pop_complete_sentences
from services.orchestrator.inputs import TurnInput, transcribe
from services.orchestrator.intent import image_prompt
from services.orchestrator.stages import Stage, StageFailed, TurnContext, stage_errors

__all__ = ["Turn"]

_SPEAKABLE = re.compile(r"\w")
# Each service's request fields that a turn's caller set, as the caller knows them.
_LLM_FIELDS = {
    "messages": "config.history",
    "system_prompt": "config.options.system_prompt",
    "max_tokens": "config.options.max_tokens",
    "temperature": "config.options.temperature",
    "model": "config.options.llm_model",
}
_TTS_FIELDS = {
    "voice": "config.voice",
    "encoding": "config.output_encoding",
    "sample_rate_hz": "config.output_sample_rate_hz",
}
_IMAGE_FIELDS = {
    "width": "config.options.image_width",
    "height": "config.options.image_height",
    "steps": "config.options.image_steps",
    "model": "config.options.image_model",
}


class Turn:
    """The stages of one turn over its ``TurnContext``.

    ``events`` runs a whole turn, from its input to its timings. ``respond`` is the part after
    the user's words are known, for a caller that finds the words itself (a live session
    transcribes continuously and answers each utterance).
    """

    def __init__(self, context: TurnContext) -> None:
        self.context = context

    @property
    def turn_id(self) -> str:
        return self.context.turn_id

    async def events(self, inputs: TurnInput) -> AsyncIterator[pb.TurnEvent]:
        """The turn's events as they happen; a fatal failure is the last event, then raised."""
        queue: asyncio.Queue[pb.TurnEvent | None] = asyncio.Queue()
        self.context.emit = queue.put_nowait
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
            transcript = await transcribe(self.context, inputs)
            await self.respond(transcript)
            if self.context.record is not None:
                # After the last audio event: storing never holds the reply back.
                await self.context.record.finish(self.context, transcript, inputs)
        except StageFailed as failed:
            self.context.report(failed.stage, failed.error, fatal=True)
            raise failed.error from None
        except ChorusError as error:
            self.context.report(Stage.STAGE_UNSPECIFIED, error, fatal=True)
            raise
        finally:
            queue.put_nowait(None)

    async def respond(self, transcript: str) -> None:
        """Answer ``transcript`` after the config's history: the reply streamed, spoken sentence
        by sentence and drawn when asked for, then the turn's timings.

        Raises:
            StageFailed: a required stage (reply, speech) failed; the others were cancelled.
        """
        user = llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=transcript)
        await self.answer([*self.context.config.history, user], transcript)

    async def answer(self, messages: list[llm_pb2.ChatMessage], transcript: str) -> None:
        """``respond`` over a whole conversation (``messages``, ending with the user's words,
        ``transcript``), for a live session that keeps the conversation itself.

        Raises:
            StageFailed: a required stage (reply, speech) failed; the others were cancelled.
        """
        prompt = self._image_prompt(transcript)
        try:
            async with asyncio.TaskGroup() as group:
                if prompt:
                    group.create_task(self._draw(prompt))
                sentences: asyncio.Queue[str | None] = asyncio.Queue()
                if not self.context.config.options.text_only:
                    group.create_task(self._speak(sentences))
                await self._reply(messages, sentences)
        except* (StageFailed, ChorusError) as failures:
            raise failures.exceptions[0] from None
        clock = self.context.clock
        clock.mark("total")
        marks = clock.marks
        self.context.event(
            turn_timings=pb.TurnTimings(
                transcription_seconds=marks.get("transcription", 0.0),
                first_reply_token_seconds=marks.get("first_reply_token", 0.0),
                reply_seconds=marks.get("reply", 0.0),
                first_audio_seconds=marks.get("first_audio", 0.0),
                image_seconds=marks.get("image", 0.0),
                total_seconds=marks["total"],
            )
        )

    def _image_prompt(self, transcript: str) -> str | None:
        mode = self.context.config.image_mode
        if mode == pb.IMAGE_MODE_ON:
            return image_prompt(transcript) or transcript
        if mode == pb.IMAGE_MODE_AUTO:
            return image_prompt(transcript)
        return None

    async def _reply(
        self, messages: list[llm_pb2.ChatMessage], sentences: asyncio.Queue[str | None]
    ) -> None:
        """Generate the reply; every complete sentence goes to ``sentences`` at once."""
        context, settings = self.context, self.context.settings
        options = context.config.options
        request = llm_pb2.GenerateTextRequest(
            messages=messages,
            system_prompt=options.system_prompt or settings.system_prompt,  # empty: LLM's own
            max_tokens=options.max_tokens or settings.max_tokens,
            model=options.llm_model,
        )
        for name in ("temperature", "seed"):
            if options.HasField(name):
                setattr(request, name, getattr(options, name))
        pending = ""
        result = llm_pb2.TextGenerationResult()
        try:
            with stage_errors(Stage.STAGE_REPLY, "text-generation", _LLM_FIELDS):
                call = context.services.llm.Generate(
                    request,
                    timeout=context.timeout(settings.reply_timeout),
                    metadata=call_metadata(),
                )
                async for response in call:
                    if response.HasField("delta"):
                        context.clock.mark("first_reply_token")
                        context.event(reply_delta=pb.ReplyDelta(text=response.delta.text))
                        pending += response.delta.text
                        done, pending = pop_complete_sentences(pending, settings.sentence_max_chars)
                        for sentence in done:
                            sentences.put_nowait(sentence)
                    else:
                        result = response.result
        finally:
            if pending.strip():
                sentences.put_nowait(pending.strip())
            sentences.put_nowait(None)
        context.clock.mark("reply")
        if context.record is not None:
            context.record.reply_text = result.text
        context.event(
            reply_final=pb.ReplyFinal(
                text=result.text, finish_reason=result.finish_reason, usage=result.usage
            )
        )

    async def _speak(self, sentences: asyncio.Queue[str | None]) -> None:
        """Speak each sentence as it comes; every sentence's audio is one numbered chunk or more."""
        context = self.context
        config = context.config
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
            with stage_errors(Stage.STAGE_SPEECH, "text-to-speech", _TTS_FIELDS):
                # The streaming method even for one sentence: cancelling a unary call does not
                # reach the server through OpenTelemetry's aio client interceptor (it awaits the
                # call inside its own task), while a cancelled stream always does.
                call = context.services.tts.StreamingSynthesize(
                    request,
                    timeout=context.timeout(context.settings.speech_timeout),
                    metadata=call_metadata(),
                )
                async for chunk in call:
                    context.clock.mark("first_audio")
                    event = pb.AudioChunkEvent(
                        audio=chunk.audio,
                        sequence=sequence,
                        text=chunk.text,
                        encoding=chunk.encoding,
                        sample_rate_hz=chunk.sample_rate_hz,
                        duration_seconds=chunk.duration_seconds,
                    )
                    if context.record is not None:
                        event = await context.record.audio_chunk(context, event)
                    context.event(audio_chunk=event)
                    sequence += 1

    async def _draw(self, prompt: str) -> None:
        """The optional stage: a failure becomes an error event, never the turn's failure."""
        context = self.context
        options = context.config.options
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
            with stage_errors(Stage.STAGE_IMAGE, "image-generation", _IMAGE_FIELDS):
                call = context.services.image.Generate(
                    request,
                    timeout=context.timeout(context.settings.image_timeout),
                    metadata=call_metadata(),
                )
                async for response in call:
                    if response.HasField("progress"):
                        p = response.progress
                        context.event(
                            image_progress=pb.ImageProgressEvent(
                                step=p.step, total_steps=p.total_steps
                            )
                        )
                    elif response.HasField("image"):
                        image = response.image
                        context.clock.mark("image")
                        result = pb.ImageResultEvent(
                            png=image.png,
                            width=image.width,
                            height=image.height,
                            seed=image.seed,
                            prompt=prompt,
                        )
                        if context.record is not None:
                            result = await context.record.image(context, result)
                        context.event(image_result=result)
        except StageFailed as failed:
            context.report(failed.stage, failed.error, fatal=False)
