"""Statuses a client can act on, through the official ``openai`` client (default retries, 2)
talking to the gateway in-process (httpx's WSGI transport) with fake stubs: a limit on the
request is 400 and sent once; a busy service is 429 with ``Retry-After`` and retried; an unknown
model is 404 ``model_not_found``; a body of the wrong type is 415; a control character is 400.
Every case counts the HTTP requests the client really sent."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import httpx2 as httpx
import openai
import pytest
from chorus.v1 import common_pb2, tts_pb2

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.common.errors import (
    NotFound,
    Overloaded,
    ResourceExhausted,
    UpstreamError,
    retry_after_of,
)
from services.common.text import control_character
from tests.support.fakes import FakeChannels, FakeRpcError, Streaming, Unary, fake_stubs

VOICES = tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(id="en_US-joe-medium")])
WAV = b"RIFF" + bytes(40)


class Sent:
    """The requests the client sent, counted by an httpx event hook."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)


@pytest.fixture
def sent() -> Sent:
    return Sent()


def client(sent: Sent, **services: Any) -> openai.OpenAI:
    app = create_app(GatewaySettings(), FakeChannels(fake_stubs(**services)))
    http = httpx.Client(
        transport=httpx.WSGITransport(app=app),  # type: ignore[arg-type]
        event_hooks={"request": [sent]},
    )
    return openai.OpenAI(api_key="none", base_url="http://gateway/v1", http_client=http)


def stt(failure: Exception) -> SimpleNamespace:
    return SimpleNamespace(Transcribe=Unary(failure))


def test_a_limit_on_the_request_is_400_and_sent_once(sent: Sent) -> None:
    """The 3-hour upload: the STT's duration limit is a ResourceExhausted without RetryInfo."""
    too_long = ResourceExhausted("audio is 10800 s long; the limit is 600 s", field="audio")
    api = client(sent, stt=stt(FakeRpcError(too_long)))
    with pytest.raises(openai.BadRequestError) as refused:
        api.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV))
    assert refused.value.status_code == 400
    assert refused.value.body == {
        "message": "audio is 10800 s long; the limit is 600 s",
        "type": "invalid_request_error",
        "param": "audio",
        "code": "limit_exceeded",
    }
    assert "retry-after" not in refused.value.response.headers
    assert len(sent.requests) == 1


def test_too_many_chat_messages_is_400_and_sent_once(sent: Sent) -> None:
    too_many = ResourceExhausted("10000 messages; the limit is 256", field="messages")
    api = client(sent, llm=SimpleNamespace(Generate=Streaming([FakeRpcError(too_many)])))
    messages: Any = [{"role": "user", "content": "hi"}] * 10_000
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert (refused.value.code, refused.value.param) == ("limit_exceeded", "messages")
    assert len(sent.requests) == 1


def test_a_busy_service_is_429_with_retry_after_and_retried(sent: Sent) -> None:
    """A full queue (Overloaded, RetryInfo 0.2 s): 429, ``Retry-After: 1`` (whole seconds, at
    least 1), and the client's two retries are sent, as they may succeed."""
    busy = Overloaded("server busy: 4 calls running or queued (limit 4)", retry_after=0.2)
    api = client(sent, stt=stt(FakeRpcError(busy)))
    with pytest.raises(openai.RateLimitError) as refused:
        api.audio.transcriptions.create(model="whisper-1", file=("a.wav", WAV))
    assert refused.value.response.headers["Retry-After"] == "1"
    assert refused.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert len(sent.requests) == 3


def test_retry_info_survives_a_hop_through_the_orchestrator() -> None:
    """An UpstreamError keeps the downstream RetryInfo, so "busy" stays 429 end to end."""
    downstream = FakeRpcError(Overloaded("busy", retry_after=3))
    assert retry_after_of(downstream) == 3
    assert (
        retry_after_of(FakeRpcError(UpstreamError(grpc.StatusCode.RESOURCE_EXHAUSTED, "x"))) is None
    )


def speech_stub() -> tuple[SimpleNamespace, Streaming]:
    stream = Streaming([tts_pb2.SynthesizeResponse(audio=b"\0\0", sample_rate_hz=24_000)])
    return SimpleNamespace(ListVoices=Unary(VOICES), StreamingSynthesize=stream), stream


@pytest.mark.parametrize("model", ["../../etc/passwd", "whisper-1", "gpt-4o", "nonsense"])
def test_speech_refuses_an_unknown_model_before_any_call(sent: Sent, model: str) -> None:
    tts, stream = speech_stub()
    api = client(sent, tts=tts)
    with pytest.raises(openai.NotFoundError) as refused:
        api.audio.speech.create(model=model, voice="alloy", input="hello", response_format="pcm")
    assert (refused.value.code, refused.value.param) == ("model_not_found", "model")
    assert len(sent.requests) == 1
    assert stream.calls == []


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"])
def test_speech_accepts_the_openai_aliases(sent: Sent, model: str) -> None:
    tts, stream = speech_stub()
    api = client(sent, tts=tts)
    audio = api.audio.speech.create(model=model, voice="alloy", input="hi", response_format="pcm")
    assert audio.content == b"\0\0"
    assert len(stream.calls) == 1


def test_a_service_unknown_model_is_model_not_found(sent: Sent) -> None:
    unknown = NotFound("unknown model 'x'; available: base", field="model")
    api = client(sent, stt=stt(FakeRpcError(unknown)))
    with pytest.raises(openai.NotFoundError) as refused:
        api.audio.transcriptions.create(model="x", file=("a.wav", WAV))
    assert refused.value.code == "model_not_found"
    assert len(sent.requests) == 1


@pytest.mark.parametrize("text", ["a\x00b", "bell\x07", "\x7f", "c1\x85"])
def test_control_characters_in_text_are_400_naming_the_field(sent: Sent, text: str) -> None:
    tts, stream = speech_stub()
    api = client(sent, tts=tts)
    with pytest.raises(openai.BadRequestError) as refused:
        api.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm")
    assert (refused.value.code, refused.value.param) == ("invalid_characters", "input")
    assert len(sent.requests) == 1
    assert stream.calls == []


def test_a_lone_surrogate_is_400(sent: Sent) -> None:
    """JSON may escape one (``\\ud800``), which no encoder can send on to a service: 400 (the
    request model already refuses it), not a 500 when the gRPC message is encoded."""
    api = client(sent)
    with pytest.raises(openai.BadRequestError) as refused:
        api.post(
            "/audio/speech",
            cast_to=httpx.Response,
            content=b'{"model": "tts-1", "input": "lone \\ud800"}',
            options={"headers": {"Content-Type": "application/json"}},
        )
    assert refused.value.param == "input"
    assert len(sent.requests) == 1


def test_control_character_rule() -> None:
    assert control_character("tabs\tlines\nand\r\nreturns, ünïcode, 漢字 🎵") is None
    assert control_character("ab\x00") == "U+0000 at 2"
    assert control_character("\x1b[31m") == "U+001B at 0"


def test_chat_content_with_a_nul_is_400(sent: Sent) -> None:
    api = client(sent)  # no service may be called
    with pytest.raises(openai.BadRequestError) as refused:
        api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi\x00"}]
        )
    assert refused.value.param == "messages.0.content"
    assert len(sent.requests) == 1


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/audio/speech", "text/plain"),
        ("/audio/speech", "application/x-www-form-urlencoded"),
        ("/chat/completions", "text/plain"),
        ("/images/generations", "text/plain"),
        ("/audio/transcriptions", "application/json"),
    ],
)
def test_a_wrong_content_type_is_415(sent: Sent, path: str, content_type: str) -> None:
    api = client(sent)
    with pytest.raises(openai.APIStatusError) as refused:
        api.post(
            path,
            cast_to=httpx.Response,
            content=b'{"input": "hi"}',
            options={"headers": {"Content-Type": content_type}},
        )
    assert refused.value.status_code == 415
    assert refused.value.code == "unsupported_media_type"  # type: ignore[attr-defined]
    assert len(sent.requests) == 1


def test_models_lists_the_aliases_under_their_service(sent: Sent) -> None:
    listing = common_pb2.ListModelsResponse(models=[common_pb2.ModelInfo(id="base", loaded=True)])
    api = client(
        sent,
        stt=SimpleNamespace(ListModels=Unary(listing)),
        llm=SimpleNamespace(ListModels=Unary(common_pb2.ListModelsResponse())),
        image=SimpleNamespace(ListModels=Unary(common_pb2.ListModelsResponse())),
        tts=SimpleNamespace(ListVoices=Unary(VOICES)),
    )
    owners = {m.id: m.owned_by for m in api.models.list()}
    assert owners["base"] == "chorus-stt"
    assert owners["whisper-1"] == "chorus-stt"
    assert owners["tts-1"] == "chorus-tts"
    assert owners["gpt-4o-mini"] == "chorus-llm"
    assert owners["dall-e-3"] == "chorus-image"
