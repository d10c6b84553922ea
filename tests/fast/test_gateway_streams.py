"""Streams through the gateway app with fake stubs: a turn's events as Server-Sent Events (what
the orchestrator is sent, how each event is framed, how a failure ends the stream, heartbeats,
a client that leaves), and OpenAI's chat completion chunks."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.streams import sse
from services.common.errors import (
    InvalidArgument,
    Overloaded,
    ResourceExhausted,
    Unavailable,
)
from tests.support.fakes import FakeChannels, FakeRpcError, Streaming, fake_stubs

TURN = "turn-1"


def event(**kind: Any) -> pb.TurnEvent:
    return pb.TurnEvent(turn_id=TURN, elapsed_seconds=0.123456, **kind)


def turn_error(stage: int, code: str, message: str, fatal: bool) -> pb.TurnEvent:
    return event(error=pb.TurnError(stage=stage, code=code, message=message, fatal=fatal))


def client_for(converse: Streaming, **settings: Any) -> FlaskClient:
    stubs = fake_stubs(orchestrator=SimpleNamespace(Converse=converse))
    return create_app(GatewaySettings(**settings), FakeChannels(stubs)).test_client()


def frames(body: str) -> list[tuple[str | None, Any]]:
    """(event name, decoded data) of each SSE frame; a comment frame is (":", its text)."""
    assert body.endswith("\n\n"), "every frame ends with a blank line"
    parsed = []
    for block in body[:-2].split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            parsed.append((":", block))
            continue
        name = None
        data = []
        for line in lines:
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            else:
                assert field == "data", line
                data.append(value)
        text = "\n".join(data)
        try:
            parsed.append((name, json.loads(text)))
        except ValueError:
            parsed.append((name, text))  # [DONE], or text
    return parsed


def test_sse_frames_text_line_by_line() -> None:
    assert sse("done", {"a": "x\ny"}) == 'event: done\ndata: {"a":"x\\ny"}\n\n'
    assert sse(None, "line one\nline two") == "data: line one\ndata: line two\n\n"
    assert frames(sse(None, "line one\nline two")) == [(None, "line one\nline two")]


# --- /api/turns ---------------------------------------------------------------------------------


def test_a_text_turn_is_sent_as_config_text_end() -> None:
    converse = Streaming([event(transcript_final=pb.TranscriptFinal(text="hi"))])
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    body = {"text": "hi", "history": history, "voice": "v1", "image_mode": "auto", "seed": 7}
    response = client_for(converse, turn_timeout=42.0).post(
        "/api/turns", json=body, headers={"X-Request-Id": "rid-1"}
    )
    assert response.status_code == 200
    (call,) = converse.calls
    kinds = [m.WhichOneof("request") for m in call.request]
    assert kinds == ["config", "text", "end_of_input"]
    config = call.request[0].config
    assert config.input_mode == pb.INPUT_MODE_TEXT
    assert [(m.role, m.content) for m in config.history] == [
        (llm_pb2.CHAT_ROLE_USER, "a"),
        (llm_pb2.CHAT_ROLE_ASSISTANT, "b"),
    ]
    assert (config.voice, config.image_mode) == ("v1", pb.IMAGE_MODE_AUTO)
    assert config.output_encoding == common_pb2.AUDIO_ENCODING_WAV
    assert config.options.HasField("seed") and not config.options.HasField("temperature")
    assert call.request[1].text == "hi"
    assert call.timeout == 42.0
    assert ("x-request-id", "rid-1") in call.metadata


def test_a_speech_turn_uploads_its_audio_in_chunks() -> None:
    converse = Streaming([event(transcript_final=pb.TranscriptFinal(text="hi"))])
    audio = bytes(range(256)) * 600  # 150 KiB: three messages of at most 64 KiB
    upload = {"audio": (io.BytesIO(audio), "q.webm"), "options": json.dumps({"language": "fr"})}
    response = client_for(converse).post("/api/turns", data=upload)
    assert response.status_code == 200
    messages = converse.calls[0].request
    assert messages[0].config.input_mode == pb.INPUT_MODE_SPEECH
    assert messages[0].config.language == "fr"
    chunks = [m.audio for m in messages[1:-1]]
    assert b"".join(chunks) == audio
    assert max(map(len, chunks)) <= 64 * 1024 and len(chunks) == 3
    assert messages[-1].WhichOneof("request") == "end_of_input"


def test_a_speech_turn_without_audio_or_with_bad_options_is_refused() -> None:
    converse = Streaming()
    client = client_for(converse)
    response = client.post("/api/turns", data={"options": "{}"}, content_type="multipart/form-data")
    assert (response.status_code, response.get_json()["error"]["param"]) == (400, "audio")
    upload = {"audio": (io.BytesIO(b"RIFF"), "q.wav"), "options": "{oops"}
    response = client.post("/api/turns", data=upload)
    assert (response.status_code, response.get_json()["error"]["param"]) == (400, "options")
    assert converse.calls == []


def test_each_event_is_one_frame_named_by_its_kind() -> None:
    wav = b"RIFF\x24\x00\x00\x00WAVE"
    converse = Streaming(
        [
            event(transcript_final=pb.TranscriptFinal(text="Draw a cat", language="en")),
            event(reply_delta=pb.ReplyDelta(text="A cat.\nHere")),
            event(audio_chunk=pb.AudioChunkEvent(audio=wav, sequence=0, text="A cat.")),
            turn_error(pb.STAGE_IMAGE, "UNAVAILABLE", "image-generation: down", fatal=False),
            event(reply_final=pb.ReplyFinal(text="A cat.\nHere")),
            event(turn_timings=pb.TurnTimings(total_seconds=1.5)),
        ]
    )
    response = client_for(converse).post("/api/turns", json={"text": "Draw a cat"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"  # user data: never kept by a cache
    assert response.headers["X-Accel-Buffering"] == "no"
    got = frames(response.get_data(as_text=True))
    assert [name for name, _ in got] == [
        "transcript_final",
        "reply_delta",
        "audio_chunk",
        "error",
        "reply_final",
        "turn_timings",
        "done",
    ]
    payloads = dict(got[:-1])
    assert all(p["turn_id"] == TURN and p["elapsed_seconds"] == 0.1235 for p in payloads.values())
    assert payloads["reply_delta"]["text"] == "A cat.\nHere"  # JSON escapes it: one data line
    assert base64.b64decode(payloads["audio_chunk"]["audio"]) == wav
    assert payloads["audio_chunk"]["sequence"] == 0  # zero values are sent, not left out
    error = payloads["error"]
    assert (error["stage"], error["code"], error["fatal"]) == ("STAGE_IMAGE", "UNAVAILABLE", False)
    assert "http_status" not in error  # the turn went on
    assert got[-1] == ("done", {"turn_id": TURN})


def test_a_fatal_first_event_is_an_http_error_and_the_turn_is_cancelled() -> None:
    fatal = turn_error(pb.STAGE_SPEECH, "NOT_FOUND", "text-to-speech: unknown voice", fatal=True)
    converse = Streaming([fatal], hold=True)
    response = client_for(converse).post("/api/turns", json={"text": "hi"})
    assert response.status_code == 404
    assert response.get_json()["error"]["message"] == "text-to-speech: unknown voice"
    assert converse.started[0].cancelled.is_set()


def test_a_call_that_fails_before_any_event_is_an_http_error() -> None:
    converse = Streaming([FakeRpcError(Unavailable("connection refused"))])
    response = client_for(converse).post("/api/turns", json={"text": "hi"})
    assert response.status_code == 503
    assert "orchestrator" in response.get_json()["error"]["message"]
    refused = Streaming([FakeRpcError(InvalidArgument("bad history", field="config.history"))])
    response = client_for(refused).post("/api/turns", json={"text": "hi"})
    assert (response.status_code, response.get_json()["error"]["param"]) == (400, "config.history")


def test_a_turn_without_events_is_502() -> None:
    response = client_for(Streaming([])).post("/api/turns", json={"text": "hi"})
    assert (response.status_code, response.get_json()["error"]["code"]) == (502, "empty_turn")


def test_a_stream_broken_mid_turn_ends_with_one_fatal_error_then_done() -> None:
    converse = Streaming(
        [event(reply_delta=pb.ReplyDelta(text="Hel")), FakeRpcError(Unavailable("reset"))]
    )
    got = frames(
        client_for(converse).post("/api/turns", json={"text": "hi"}).get_data(as_text=True)
    )
    assert [name for name, _ in got] == ["reply_delta", "error", "done"]
    error = got[1][1]
    assert (error["code"], error["fatal"], error["http_status"]) == ("UNAVAILABLE", True, 503)
    assert error["stage"] == "STAGE_UNSPECIFIED"
    assert error["message"] == "the orchestrator service is unavailable (reset)"


@pytest.mark.parametrize(
    ("failure", "retry_after", "status"),
    [
        (Overloaded("text-generation: busy", retry_after=2.5), 2.5, 429),
        (ResourceExhausted("text-generation: the prompt is too long"), 0.0, 400),
    ],
    ids=["busy", "limit"],
)
def test_a_fatal_event_is_not_repeated_by_the_calls_failure(
    failure: ResourceExhausted, retry_after: float, status: int
) -> None:
    """The orchestrator reports a fatal failure as an event and then fails the call with the
    same status: the browser gets one error, with the HTTP status of its code. A lack of
    capacity says when to retry (429); a limit on the request says never (400)."""
    converse = Streaming(
        [
            event(transcript_final=pb.TranscriptFinal(text="hi")),
            event(
                error=pb.TurnError(
                    stage=pb.STAGE_REPLY,
                    code="RESOURCE_EXHAUSTED",
                    message=failure.message,
                    fatal=True,
                    retry_after_seconds=retry_after,
                )
            ),
            FakeRpcError(failure),
        ]
    )
    got = frames(
        client_for(converse).post("/api/turns", json={"text": "hi"}).get_data(as_text=True)
    )
    assert [name for name, _ in got] == ["transcript_final", "error", "done"]
    error = got[1][1]
    assert (error["stage"], error["http_status"], error["fatal"]) == ("STAGE_REPLY", status, True)
    assert error["retry_after_seconds"] == retry_after


def test_a_first_event_that_is_a_limit_answers_400_and_busy_429_with_retry_after() -> None:
    """A fatal first event becomes the HTTP answer itself: a limit is never worth a retry."""
    for retry_after, status in ((0.0, 400), (3.2, 429)):
        converse = Streaming(
            [
                event(
                    error=pb.TurnError(
                        stage=pb.STAGE_TRANSCRIPTION,
                        code="RESOURCE_EXHAUSTED",
                        message="speech-to-text: no room",
                        fatal=True,
                        retry_after_seconds=retry_after,
                    )
                )
            ]
        )
        response = client_for(converse).post("/api/turns", json={"text": "hi"})
        assert response.status_code == status
        assert response.headers.get("Retry-After") == ("4" if status == 429 else None)


def test_heartbeats_while_waiting_and_leaving_cancels_the_turn() -> None:
    converse = Streaming([event(reply_delta=pb.ReplyDelta(text="Hel"))], hold=True)
    response = client_for(converse, heartbeat_seconds=0.05).post(
        "/api/turns", json={"text": "hi"}, buffered=False
    )
    chunks = iter(response.response)
    first, second = next(chunks), next(chunks)
    assert frames(first.decode())[0][0] == "reply_delta"
    assert second == b": keep-alive\n\n"
    call = converse.started[0]
    assert not call.cancelled.is_set()
    response.close()  # the HTTP client went away
    assert call.cancelled.wait(timeout=5)


# --- /v1/chat/completions with stream ---------------------------------------------------------


def generate_events(*texts: str, failure: Exception | None = None) -> list[Any]:
    events: list[Any] = [
        llm_pb2.GenerateTextResponse(delta=llm_pb2.TextDelta(text=t)) for t in texts
    ]
    if failure is not None:
        return [*events, failure]
    result = llm_pb2.TextGenerationResult(
        text="".join(texts),
        model="gemma",
        finish_reason=llm_pb2.FINISH_REASON_LENGTH,
        usage=llm_pb2.TokenUsage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
    )
    return [*events, llm_pb2.GenerateTextResponse(result=result)]


def chat(generate: Streaming, **extra: Any) -> list[tuple[str | None, Any]]:
    stubs = fake_stubs(llm=SimpleNamespace(Generate=generate))
    client = create_app(GatewaySettings(), FakeChannels(stubs)).test_client()
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, **extra}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    got = frames(response.get_data(as_text=True))
    assert all(name is None for name, _ in got), "OpenAI's chunks are unnamed data frames"
    return got


def test_chat_chunks_then_done() -> None:
    got = chat(Streaming(generate_events("Hel", "lo")), stream_options={"include_usage": True})
    data = [d for _, d in got]
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:3]] == ["Hel", "lo"]
    assert chunks[3]["choices"][0]["finish_reason"] == "length"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_chat_failure_after_the_first_chunk_is_an_error_chunk_then_done() -> None:
    failure = FakeRpcError(Overloaded("the queue is full"))
    got = chat(Streaming(generate_events("Hel", failure=failure)))
    data = [d for _, d in got]
    assert data[-1] == "[DONE]"
    assert data[-2]["error"]["code"] == "resource_exhausted"
    assert data[-2]["error"]["type"] == "rate_limit_error"
    assert [c["choices"][0]["delta"].get("content") for c in data[:-2]] == ["", "Hel"]
