"""The turn's rules with fake stage stubs: which failures end a turn, which it survives, and
what each stage is asked for. No model service runs: the four stubs are fakes (grpc.aio)."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import stt_pb2

from services.common.errors import (
    ChorusError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.orchestrator.inputs import TurnInput
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import TurnContext
from services.orchestrator.turn import Turn
from tests.support.fakes import (
    PNG,
    REPLY,
    AioStreaming,
    AioUnary,
    aio_error,
    fake_downstream,
    reply_events,
    stage_fakes,
)


def config(**fields: Any) -> pb.TurnConfig:
    return pb.TurnConfig(
        **{"input_mode": pb.INPUT_MODE_TEXT, "image_mode": pb.IMAGE_MODE_ON, "voice": "v", **fields}
    )


async def run(
    methods: dict[str, Any],
    inputs: TurnInput | None = None,
    *,
    seconds: float = 30.0,
    **turn_config: Any,
) -> tuple[list[pb.TurnEvent], ChorusError | None]:
    """Run one turn: its events, and the error it ended with (None when it completed)."""
    context = TurnContext(
        config(**turn_config),
        OrchestratorSettings(),
        fake_downstream(methods),
        "turn-1",
        time.monotonic() + seconds,
    )
    events: list[pb.TurnEvent] = []
    try:
        async for item in Turn(context).events(inputs or TurnInput(text="draw a cat")):
            events.append(item)
    except ChorusError as error:
        return events, error
    return events, None


def kinds(events: list[pb.TurnEvent]) -> list[str]:
    return [e.WhichOneof("event") or "" for e in events]


def errors(events: list[pb.TurnEvent]) -> list[pb.TurnError]:
    return [e.error for e in events if e.WhichOneof("event") == "error"]


# --- a turn that completes --------------------------------------------------------------------


async def test_every_stage_answers() -> None:
    methods = stage_fakes()
    events, failure = await run(methods)
    assert failure is None
    got = kinds(events)
    assert got[0] == "transcript_final" and got[-1] == "turn_timings"
    assert {"reply_delta", "reply_final", "audio_chunk", "image_progress", "image_result"} <= set(
        got
    )
    assert errors(events) == []
    assert [e.reply_final.text for e in events if e.HasField("reply_final")] == ["".join(REPLY)]
    # Each sentence is spoken once, in order, and the chunks are numbered across sentences.
    spoken = [c.request.text for c in methods["speak"].calls]
    assert spoken == ["Hello there.", "A cat on a mat."]
    assert [e.audio_chunk.sequence for e in events if e.HasField("audio_chunk")] == [0, 1]
    assert all(c.request.voice == "v" for c in methods["speak"].calls)
    # Every downstream call carries a deadline within the turn's.
    calls = [*methods["generate"].calls, *methods["speak"].calls, *methods["draw"].calls]
    assert all(c.timeout is not None and 0 < c.timeout <= 30 for c in calls)
    (image,) = [e.image_result for e in events if e.HasField("image_result")]
    assert (image.png, image.prompt) == (PNG, "a cat")


async def test_text_only_never_calls_the_speech_service() -> None:
    methods = stage_fakes()
    events, failure = await run(methods, options=pb.TurnOptions(text_only=True))
    assert failure is None
    assert methods["speak"].calls == []
    assert "audio_chunk" not in kinds(events)


@pytest.mark.parametrize(
    ("mode", "text", "drawn"),
    [
        (pb.IMAGE_MODE_OFF, "draw a cat", False),
        (pb.IMAGE_MODE_AUTO, "what time is it", False),
        (pb.IMAGE_MODE_AUTO, "draw a cat", True),
        (pb.IMAGE_MODE_ON, "what time is it", True),
    ],
)
async def test_the_image_mode_decides_whether_to_draw(mode: int, text: str, drawn: bool) -> None:
    methods = stage_fakes()
    _, failure = await run(methods, TurnInput(text=text), image_mode=mode)
    assert failure is None
    assert bool(methods["draw"].calls) == drawn


# --- the optional stage degrades ----------------------------------------------------------------


async def test_an_image_failure_is_reported_and_the_turn_goes_on() -> None:
    methods = stage_fakes(draw=AioStreaming([aio_error(Unavailable("connection refused"))]))
    events, failure = await run(methods)
    assert failure is None
    (error,) = errors(events)
    assert (error.stage, error.code, error.fatal) == (pb.STAGE_IMAGE, "UNAVAILABLE", False)
    assert error.message.startswith("image-generation: ")
    got = kinds(events)
    assert "reply_final" in got and "audio_chunk" in got
    assert got[-1] == "turn_timings"
    assert "image_result" not in got


# --- a required stage's failure ends the turn with its status --------------------------------


async def test_a_reply_failure_ends_the_turn_and_cancels_the_image() -> None:
    methods = stage_fakes(
        generate=AioStreaming([aio_error(ResourceExhausted("the queue is full"))]),
        draw=AioStreaming(hold=True),  # still drawing when the reply fails
    )
    events, failure = await run(methods)
    assert failure is not None and failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert events[-1].WhichOneof("event") == "error"
    (error,) = errors(events)
    assert (error.stage, error.code, error.fatal) == (pb.STAGE_REPLY, "RESOURCE_EXHAUSTED", True)
    assert error.message == "text-generation: the queue is full"
    assert "turn_timings" not in kinds(events)
    assert methods["draw"].cancelled == 1


async def test_a_reply_failure_after_some_words_ends_the_turn() -> None:
    broken = [*reply_events("Hello there. ")[:-1], aio_error(Unavailable("reset"))]
    methods = stage_fakes(generate=AioStreaming(broken))
    events, failure = await run(methods)
    assert failure is not None and failure.code == grpc.StatusCode.UNAVAILABLE
    assert kinds(events).count("reply_delta") == 1
    assert errors(events)[-1].stage == pb.STAGE_REPLY
    assert "reply_final" not in kinds(events)


async def test_speech_failure_ends_the_turn_naming_the_turns_field() -> None:
    methods = stage_fakes(
        speak=AioStreaming([aio_error(NotFound("unknown voice 'v'", field="voice"))])
    )
    events, failure = await run(methods)
    assert failure is not None and failure.code == grpc.StatusCode.NOT_FOUND
    # The speech service named its own request's field; the turn's caller set config.voice.
    assert failure.field == "config.voice"
    (error,) = errors(events)
    assert (error.stage, error.fatal) == (pb.STAGE_SPEECH, True)


async def test_transcription_failure_ends_the_turn_before_any_reply() -> None:
    methods = stage_fakes(
        transcribe=AioUnary(aio_error(InvalidArgument("not audio", field="audio")))
    )
    speech = TurnInput(audio=b"not really audio")
    events, failure = await run(methods, speech, input_mode=pb.INPUT_MODE_SPEECH)
    assert failure is not None and failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.field == "audio"
    assert kinds(events) == ["error"]
    assert errors(events)[0].stage == pb.STAGE_TRANSCRIPTION
    assert methods["generate"].calls == [] and methods["draw"].calls == []


async def test_speech_with_nothing_recognized_ends_the_turn() -> None:
    methods = stage_fakes(transcribe=AioUnary(stt_pb2.TranscribeResponse(text="  ")))
    speech = TurnInput(audio=b"silence")
    events, failure = await run(methods, speech, input_mode=pb.INPUT_MODE_SPEECH)
    assert failure is not None and failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert kinds(events) == ["transcript_final", "error"]
    assert methods["generate"].calls == []


async def test_a_spent_deadline_ends_the_turn_before_calling() -> None:
    methods = stage_fakes()
    events, failure = await run(methods, seconds=-1.0)
    assert failure is not None and failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert errors(events)[-1].fatal
    assert methods["generate"].calls == []
