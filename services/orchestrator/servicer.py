"""gRPC adapter for ``chorus.v1.Orchestrator``: validates a turn's input, then runs the Turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from chorus.v1 import common_pb2, llm_pb2, orchestrator_pb2_grpc
from chorus.v1 import orchestrator_pb2 as pb

from services.common.errors import InvalidArgument, ResourceExhausted
from services.common.logs import request_id
from services.orchestrator.downstream import Downstream
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.turn import LiveAudio, Turn, TurnInput

_ROLES = {llm_pb2.CHAT_ROLE_SYSTEM, llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_ASSISTANT}


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, settings: OrchestratorSettings, downstream: Downstream) -> None:
        self._settings = settings
        self._downstream = downstream
        self._turns = asyncio.Semaphore(settings.max_turns)

    # -- validation -----------------------------------------------------------------------

    def _validate_config(self, config: pb.TurnConfig) -> None:
        s = self._settings
        history = config.history
        if len(history) > s.max_history_messages:
            raise ResourceExhausted(
                f"history has {len(history)} messages; the limit is {s.max_history_messages}",
                field="config.history",
            )
        chars = sum(len(m.content) for m in history)
        if chars > s.max_history_chars:
            raise ResourceExhausted(
                f"history has {chars} characters; the limit is {s.max_history_chars}",
                field="config.history",
            )
        for i, message in enumerate(history):
            if message.role not in _ROLES and message.role != llm_pb2.CHAT_ROLE_UNSPECIFIED:
                raise InvalidArgument(
                    f"history[{i}] has an unknown role", field=f"config.history[{i}].role"
                )
            if not message.content.strip():
                raise InvalidArgument(
                    f"history[{i}] is empty", field=f"config.history[{i}].content"
                )
        fmt = config.input_audio_format
        if fmt.encoding not in (
            common_pb2.AUDIO_ENCODING_UNSPECIFIED,
            common_pb2.AUDIO_ENCODING_PCM_S16LE,
        ):
            raise InvalidArgument(
                "input_audio_format takes PCM_S16LE for live audio, or nothing for a recorded file",
                field="config.input_audio_format.encoding",
            )

    def _text(self, text: str) -> str:
        if not text.strip():
            raise InvalidArgument("the text input is empty", field="text")
        if len(text) > self._settings.max_text_chars:
            raise ResourceExhausted(
                f"text input has {len(text)} characters; "
                f"the limit is {self._settings.max_text_chars}",
                field="text",
            )
        return text.strip()

    def _audio(self, size: int) -> None:
        if size > self._settings.max_audio_bytes:
            raise ResourceExhausted(
                f"audio input has more than {self._settings.max_audio_bytes} bytes", field="audio"
            )

    def _live_limit(self, config: pb.TurnConfig) -> tuple[int, str]:
        fmt = config.input_audio_format
        rate, channels = fmt.sample_rate_hz or 16000, fmt.channels or 1
        seconds = self._settings.max_audio_seconds
        return min(
            int(seconds * rate * channels * 2), self._settings.max_audio_bytes
        ), f"{seconds:.0f} s"

    @staticmethod
    def _speech(config: pb.TurnConfig) -> bool:
        return config.input_mode == pb.INPUT_MODE_SPEECH

    # -- input ----------------------------------------------------------------------------

    async def _read_input(
        self, config: pb.TurnConfig, requests: AsyncIterator[pb.ConverseRequest]
    ) -> TurnInput:
        speech = self._speech(config)
        if speech and config.input_audio_format.encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE:
            max_bytes, limit = self._live_limit(config)
            return TurnInput(live=LiveAudio(self._audio_chunks(requests), max_bytes, limit))
        texts: list[str] = []
        audio = bytearray()
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "end_of_input":
                break
            self._check_kind(kind, speech)
            if kind == "text":
                texts.append(request.text)
                if sum(map(len, texts)) > self._settings.max_text_chars:
                    self._text(" ".join(texts))  # raises the limit error
            else:
                audio += request.audio
                self._audio(len(audio))
        if speech:
            if not audio:
                raise InvalidArgument("a speech turn sent no audio", field="audio")
            return TurnInput(audio=bytes(audio))
        return TurnInput(text=self._text(" ".join(texts)))

    def _check_kind(self, kind: str | None, speech: bool) -> None:
        if kind == "config":
            raise InvalidArgument("config may only be sent once, first", field="config")
        if kind == "audio" and not speech:
            raise InvalidArgument("audio was sent in a text turn (input_mode TEXT)", field="audio")
        if kind == "text" and speech:
            raise InvalidArgument(
                "text was sent in a speech turn (input_mode SPEECH)", field="text"
            )

    async def _audio_chunks(
        self, requests: AsyncIterator[pb.ConverseRequest]
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            kind = request.WhichOneof("request")
            if kind == "end_of_input":
                return
            self._check_kind(kind, speech=True)
            yield request.audio

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        budget = self._settings.turn_timeout if remaining is None else remaining
        return time.monotonic() + budget

    def _admit(self) -> None:
        if self._turns.locked():
            raise ResourceExhausted(
                f"too many turns in progress (limit {self._settings.max_turns}); retry later"
            )

    # -- RPCs -----------------------------------------------------------------------------

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TurnEvent]:
        self._admit()
        async with self._turns:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("request") != "config":
                raise InvalidArgument(
                    "the first message of Converse must be the turn config", field="config"
                )
            config = first.config
            self._validate_config(config)
            inputs = await self._read_input(config, request_iterator)
            turn = Turn(
                config, self._settings, self._downstream, request_id.get(), self._deadline(context)
            )
            async for event in turn.events(inputs):
                yield event

    async def RunTurn(
        self, request: pb.RunTurnRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunTurnResponse:
        self._admit()
        async with self._turns:
            config = request.config
            self._validate_config(config)
            if self._speech(config):
                self._check_kind("text" if request.text else "audio", speech=True)
                if not request.audio:
                    raise InvalidArgument("a speech turn sent no audio", field="audio")
                self._audio(len(request.audio))
                inputs = TurnInput(audio=request.audio)
            else:
                self._check_kind("audio" if request.audio else "text", speech=False)
                inputs = TurnInput(text=self._text(request.text))
            turn = Turn(
                config, self._settings, self._downstream, request_id.get(), self._deadline(context)
            )
            response = pb.RunTurnResponse(turn_id=turn.turn_id)
            async for event in turn.events(inputs):
                kind = event.WhichOneof("event")
                if kind == "transcript_final":
                    response.transcript.CopyFrom(event.transcript_final)
                elif kind == "reply_final":
                    response.reply.CopyFrom(event.reply_final)
                elif kind == "audio_chunk":
                    response.audio.append(event.audio_chunk)
                elif kind == "image_result":
                    response.images.append(event.image_result)
                elif kind == "turn_timings":
                    response.timings.CopyFrom(event.turn_timings)
                elif kind == "error":
                    response.errors.append(event.error)
            return response
