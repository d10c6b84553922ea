"""A turn's input: read from the caller, checked against the turn's limits, turned into words.

Three kinds of input reach a turn:

- typed text, whole;
- a recorded file in any container, sent in chunks and transcribed once the input ends;
- live raw PCM (``input_audio_format`` PCM_S16LE), transcribed while it arrives, with partial
  transcripts on the way.

Reading and checking happen before the turn starts, so a bad request fails with its own status
before any model works; ``transcribe`` is the turn's first stage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chorus.v1 import common_pb2, llm_pb2, stt_pb2
from chorus.v1 import orchestrator_pb2 as pb

from services.common.clients import call_metadata
from services.common.errors import ChorusError, InvalidArgument, ResourceExhausted
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import Stage, StageFailed, TurnContext, stage_errors

__all__ = ["LiveAudio", "TurnInput", "check_config", "read_input", "transcribe", "unary_input"]

_ROLES = {
    llm_pb2.CHAT_ROLE_UNSPECIFIED,
    llm_pb2.CHAT_ROLE_SYSTEM,
    llm_pb2.CHAT_ROLE_USER,
    llm_pb2.CHAT_ROLE_ASSISTANT,
}
# The speech-to-text request fields a turn's caller set, as the caller knows them.
_STT_FIELDS = {
    "audio": "audio",
    "language": "config.language",
    "model": "config.options.stt_model",
    "config.format": "config.input_audio_format",
}


class LiveAudio:
    """Raw PCM arriving from the caller while it is transcribed; stops at ``max_bytes``."""

    def __init__(self, chunks: AsyncIterator[bytes], max_bytes: int, describe_limit: str) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._limit = describe_limit
        self.received = 0
        self.error: ChorusError | None = None
        self.ended_at: float | None = None
        self.kept: bytearray | None = None
        """Set to a bytearray to keep a copy of the audio (a stored conversation's input)."""

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
                if self.kept is not None:
                    self.kept += chunk
                yield chunk
        except ChorusError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()


@dataclass
class TurnInput:
    """One of: typed ``text``, a recorded file's ``audio``, or ``live`` PCM."""

    text: str = ""
    audio: bytes = b""
    live: LiveAudio | None = None


# -- reading and checking ---------------------------------------------------------------------


def check_config(config: pb.TurnConfig, settings: OrchestratorSettings) -> None:
    """Refuse a turn whose history is over the turn's limits or malformed, or whose live audio
    format is not one the speech service streams."""
    history = config.history
    overflow = settings.history_overflow([m.content for m in history])
    if overflow is not None:
        raise ResourceExhausted(overflow.message, field="config.history")
    for i, message in enumerate(history):
        if message.role not in _ROLES:
            raise InvalidArgument(
                f"history[{i}] has an unknown role", field=f"config.history[{i}].role"
            )
        if not message.content.strip():
            raise InvalidArgument(f"history[{i}] is empty", field=f"config.history[{i}].content")
    if config.input_audio_format.encoding not in (
        common_pb2.AUDIO_ENCODING_UNSPECIFIED,
        common_pb2.AUDIO_ENCODING_PCM_S16LE,
    ):
        raise InvalidArgument(
            "input_audio_format takes PCM_S16LE for live audio, or nothing for a recorded file",
            field="config.input_audio_format.encoding",
        )


def _is_speech(config: pb.TurnConfig) -> bool:
    return config.input_mode == pb.INPUT_MODE_SPEECH


def _check_text(text: str, settings: OrchestratorSettings) -> str:
    if not text.strip():
        raise InvalidArgument("the text input is empty", field="text")
    overflow = settings.text_overflow(text)
    if overflow is not None:
        raise ResourceExhausted(overflow.message, field="text")
    return text.strip()


def _check_audio_size(size: int, settings: OrchestratorSettings) -> None:
    if size > settings.max_audio_bytes:
        raise ResourceExhausted(
            f"audio input has more than {settings.max_audio_bytes} bytes", field="audio"
        )


def _check_kind(kind: str | None, speech: bool) -> None:
    if kind == "config":
        raise InvalidArgument("config may only be sent once, first", field="config")
    if kind == "audio" and not speech:
        raise InvalidArgument("audio was sent in a text turn (input_mode TEXT)", field="audio")
    if kind == "text" and speech:
        raise InvalidArgument("text was sent in a speech turn (input_mode SPEECH)", field="text")


def _live_limit(config: pb.TurnConfig, settings: OrchestratorSettings) -> tuple[int, str]:
    """Bytes of live PCM a turn may send, and how to say that limit to a person."""
    fmt = config.input_audio_format
    rate, channels = fmt.sample_rate_hz or 16000, fmt.channels or 1
    seconds = settings.max_audio_seconds
    return min(int(seconds * rate * channels * 2), settings.max_audio_bytes), f"{seconds:.0f} s"


async def _audio_chunks(requests: AsyncIterator[pb.ConverseRequest]) -> AsyncIterator[bytes]:
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == "end_of_input":
            return
        _check_kind(kind, speech=True)
        yield request.audio


async def read_input(
    config: pb.TurnConfig,
    requests: AsyncIterator[pb.ConverseRequest],
    settings: OrchestratorSettings,
) -> TurnInput:
    """The input of a ``Converse`` turn, from the messages after its config.

    Live PCM is not read here: it is handed on as it arrives, for the turn to transcribe.
    """
    speech = _is_speech(config)
    if speech and config.input_audio_format.encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE:
        max_bytes, limit = _live_limit(config, settings)
        return TurnInput(live=LiveAudio(_audio_chunks(requests), max_bytes, limit))
    texts: list[str] = []
    audio = bytearray()
    async for request in requests:
        kind = request.WhichOneof("request")
        if kind == "end_of_input":
            break
        _check_kind(kind, speech)
        if kind == "text":
            texts.append(request.text)
            if sum(map(len, texts)) > settings.max_text_chars:
                _check_text(" ".join(texts), settings)  # raises the limit error
        else:
            audio += request.audio
            _check_audio_size(len(audio), settings)
    if speech:
        if not audio:
            raise InvalidArgument("a speech turn sent no audio", field="audio")
        return TurnInput(audio=bytes(audio))
    return TurnInput(text=_check_text(" ".join(texts), settings))


def unary_input(request: pb.RunTurnRequest, settings: OrchestratorSettings) -> TurnInput:
    """The input of a ``RunTurn`` turn: its text, or its recorded audio."""
    if _is_speech(request.config):
        _check_kind("text" if request.text else "audio", speech=True)
        if not request.audio:
            raise InvalidArgument("a speech turn sent no audio", field="audio")
        _check_audio_size(len(request.audio), settings)
        return TurnInput(audio=request.audio)
    _check_kind("audio" if request.audio else "text", speech=False)
    return TurnInput(text=_check_text(request.text, settings))


# -- the transcription stage ------------------------------------------------------------------


async def transcribe(context: TurnContext, inputs: TurnInput) -> str:
    """The words the reply answers: the typed text, or the speech transcribed.

    Raises:
        StageFailed: the speech service failed or heard nothing (transcription), or the live
            input broke a rule while it arrived (input).
    """
    config = context.config
    if inputs.live is None and not inputs.audio:
        context.event(
            transcript_final=pb.TranscriptFinal(text=inputs.text, language=config.language)
        )
        return inputs.text
    with stage_errors(Stage.STAGE_TRANSCRIPTION, "speech-to-text", _STT_FIELDS):
        if inputs.live is not None:
            final = await _transcribe_live(context, inputs.live)
        else:
            final = await _transcribe_file(context, inputs.audio)
    if inputs.live is not None and inputs.live.error is not None:
        raise StageFailed(Stage.STAGE_INPUT, inputs.live.error)
    context.clock.mark("transcription")
    context.event(transcript_final=final)
    if not final.text:
        raise StageFailed(
            Stage.STAGE_TRANSCRIPTION,
            InvalidArgument("no speech was recognized in the audio", field="audio"),
        )
    limit = context.settings.max_text_chars
    if len(final.text) > limit:
        raise StageFailed(
            Stage.STAGE_TRANSCRIPTION,
            ResourceExhausted(f"the transcript is longer than {limit} characters"),
        )
    return final.text


async def _transcribe_file(context: TurnContext, audio: bytes) -> pb.TranscriptFinal:
    config = context.config
    response = await context.services.stt.Transcribe(
        stt_pb2.TranscribeRequest(
            audio=audio, language=config.language, model=config.options.stt_model
        ),
        timeout=context.timeout(context.settings.transcription_timeout),
        metadata=call_metadata(),
    )
    return pb.TranscriptFinal(
        text=response.text.strip(),
        language=response.language,
        language_probability=response.language_probability,
        audio_seconds=response.duration_seconds,
    )


async def _transcribe_live(context: TurnContext, live: LiveAudio) -> pb.TranscriptFinal:
    """Stream the PCM to the speech service as it arrives; partials go out as events."""
    config = context.config

    async def requests() -> AsyncIterator[stt_pb2.StreamingTranscribeRequest]:
        yield stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=config.input_audio_format,
                language=config.language,
                model=config.options.stt_model,
            )
        )
        async for chunk in live:
            yield stt_pb2.StreamingTranscribeRequest(audio_chunk=chunk)

    finals: list[str] = []
    final = pb.TranscriptFinal(language=config.language)
    call = context.services.stt.StreamingTranscribe(
        requests(),
        timeout=context.timeout(context.settings.transcription_timeout),
        metadata=call_metadata(),
    )
    async for response in call:
        final.audio_seconds = response.audio_received_seconds
        if response.is_final:
            finals.append(response.text.strip())
            final.language = response.language
            final.language_probability = response.language_probability
        else:
            partial = " ".join([*finals, response.text.strip()]).strip()
            context.event(transcript_partial=pb.TranscriptPartial(text=partial))
    if live.ended_at is not None:
        context.clock.input_done = live.ended_at
    final.text = " ".join(f for f in finals if f)
    return final
