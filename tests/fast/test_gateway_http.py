"""The gateway app with fake stubs: gRPC status -> HTTP status and OpenAI's error shape, the API
key, and the limits a request is refused by before any service is called."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from chorus.v1 import common_pb2, tts_pb2
from flask.testing import FlaskClient
from grpc_health.v1 import health_pb2
from pydantic import SecretStr

from gateway.app import create_app
from gateway.channels import HEALTH_METADATA, Stubs
from gateway.settings import GatewaySettings
from services.common.errors import InvalidArgument, NotFound, UpstreamError
from tests.support.fakes import FakeChannels, FakeRpcError, Streaming, Unary, fake_stubs

VOICES = tts_pb2.ListVoicesResponse(
    voices=[tts_pb2.Voice(id="en_US-joe-medium", language="en-US", sample_rate_hz=22050)]
)


def client_for(settings: GatewaySettings | None = None, **services: Any) -> FlaskClient:
    return create_app(
        settings or GatewaySettings(), FakeChannels(fake_stubs(**services))
    ).test_client()


def tts(reply: Any = VOICES, **methods: Any) -> SimpleNamespace:
    return SimpleNamespace(ListVoices=Unary(reply), **methods)


def error_of(response: Any) -> dict[str, Any]:
    """The error object, after checking the body is OpenAI's shape and nothing else."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


# --- gRPC status -> HTTP status ---------------------------------------------------------------

# Google's mapping of gRPC codes to HTTP (google/rpc/code.proto), written out here rather than
# read from gateway.errors, so a wrong entry there fails.
EXPECTED_HTTP = {
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
EXPECTED_TYPE = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


@pytest.mark.parametrize("code", EXPECTED_HTTP)
def test_every_grpc_status_becomes_its_http_status(code: str) -> None:
    # RESOURCE_EXHAUSTED is 429 when the service says when to retry (RetryInfo), else 400
    # (tests/fast/test_status_mapping.py).
    busy = code == "RESOURCE_EXHAUSTED"
    failure = UpstreamError(
        grpc.StatusCode[code], "the service said no", retry_after=2.0 if busy else None
    )
    response = client_for(tts=tts(FakeRpcError(failure))).get("/api/voices")
    status = EXPECTED_HTTP[code]
    assert response.status_code == status
    assert response.headers.get("Retry-After") == ("2" if busy else None)
    error = error_of(response)
    assert error["code"] == code.lower()
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    assert error["type"] == EXPECTED_TYPE.get(status, default_type)
    if code == "UNAVAILABLE":
        assert error["message"] == "the text-to-speech service is unavailable (the service said no)"
    else:
        assert error["message"] == "the service said no"


def test_the_field_a_service_names_is_the_param() -> None:
    failure = InvalidArgument("language 'xx-' is not a language tag", field="language")
    response = client_for(tts=tts(FakeRpcError(failure))).get("/api/voices")
    assert response.status_code == 400
    assert error_of(response) == {
        "message": "language 'xx-' is not a language tag",
        "type": "invalid_request_error",
        "param": "language",
        "code": "invalid_argument",
    }


def test_inconsistent_status_details_keep_the_code_and_message() -> None:
    """Details whose status disagrees with the call's code are ignored, not a 500."""
    other = FakeRpcError(NotFound("another error", field="voice"))
    failure = FakeRpcError(
        InvalidArgument("bad language", field="language"), other.trailing_metadata()
    )
    response = client_for(tts=tts(failure)).get("/api/voices")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["message"], error["param"]) == ("bad language", None)


def test_a_bug_in_the_gateway_is_a_500_in_the_same_shape() -> None:
    response = client_for(tts=tts(RuntimeError("boom"))).get("/api/voices")
    assert response.status_code == 500
    error = error_of(response)
    assert (error["code"], error["type"]) == ("internal", "server_error")
    assert "boom" not in error["message"]


def test_unknown_route_and_wrong_method_are_openai_errors() -> None:
    client = client_for()
    assert error_of(client.get("/v1/nothing"))["code"] == "not_found"
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_a_stream_that_fails_before_its_first_chunk_is_an_http_error() -> None:
    llm = SimpleNamespace(
        Generate=Streaming([FakeRpcError(NotFound("no model 'x'", field="model"))])
    )
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = client_for(llm=llm).post("/v1/chat/completions", json=body)
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert error_of(response)["param"] == "model"


# --- readiness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "orchestrator"),
    [
        (
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING),
            200,
            "SERVING",
        ),
        (
            health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING),
            503,
            "NOT_SERVING",
        ),
        (FakeRpcError(UpstreamError(grpc.StatusCode.UNAVAILABLE, "refused")), 503, "UNAVAILABLE"),
    ],
)
def test_readiness_follows_the_orchestrators_health(
    answer: Any, status: int, orchestrator: str
) -> None:
    check = Unary(answer)
    response = client_for(orchestrator_health=SimpleNamespace(Check=check)).get("/readyz")
    assert response.status_code == status
    assert response.get_json()["orchestrator"] == orchestrator
    (call,) = check.calls
    assert call.request.service == "chorus.v1.Orchestrator"
    assert set(HEALTH_METADATA) <= set(call.metadata)  # so an Envoy routes it there


# --- the API key --------------------------------------------------------------------------------

KEY = "sk-test-0123456789"


@pytest.fixture
def keyed() -> tuple[FlaskClient, Stubs]:
    stubs = fake_stubs(
        tts=tts(),
        orchestrator_health=SimpleNamespace(
            Check=Unary(
                health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
            )
        ),
    )
    app = create_app(GatewaySettings(api_key=SecretStr(KEY)), FakeChannels(stubs))
    return app.test_client(), stubs


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {KEY}", KEY, f"Bearer {KEY}x", "Bearer "],
    ids=["none", "wrong", "basic", "no-scheme", "longer", "empty"],
)
def test_without_the_key_nothing_is_called(
    keyed: tuple[FlaskClient, Stubs], authorization: str | None
) -> None:
    client, stubs = keyed
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/api/voices", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    error = error_of(response)
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert KEY not in response.get_data(as_text=True)
    assert stubs.tts.ListVoices.calls == []


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_with_the_key_the_call_goes_through(keyed: tuple[FlaskClient, Stubs], scheme: str) -> None:
    client, stubs = keyed
    response = client.get("/api/voices", headers={"Authorization": f"{scheme} {KEY}"})
    assert response.status_code == 200
    assert response.get_json()["voices"][0]["id"] == "en_US-joe-medium"
    assert len(stubs.tts.ListVoices.calls) == 1


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/healthz", True),
        ("/readyz", True),
        ("/openapi.json", True),
        ("/api/interface/", True),
        ("/", False),
        ("/api/config", False),
        ("/v1/models", False),
    ],
)
def test_only_probes_the_document_and_the_page_are_public(
    keyed: tuple[FlaskClient, Stubs], path: str, public: bool
) -> None:
    client, _ = keyed
    status = client.get(path).status_code
    assert (status != 401) == public, status


def test_no_key_configured_means_no_key_needed() -> None:
    response = client_for(tts=tts()).get("/api/voices")
    assert response.status_code == 200


# --- limits: refused before any call ------------------------------------------------------------


def test_a_body_over_the_upload_limit_is_413() -> None:
    stt = SimpleNamespace(Transcribe=Unary(AssertionError("must not be called")))
    client = client_for(GatewaySettings(max_upload_bytes=2048), stt=stt)
    response = client.post(
        "/v1/audio/transcriptions",
        data={"file": (io.BytesIO(b"\0" * 4096), "a.wav"), "model": "whisper-1"},
    )
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "request_too_large"
    assert "2048 bytes" in error["message"]
    assert stt.Transcribe.calls == []
    # A JSON body too:
    response = client.post("/v1/audio/speech", json={"input": "x" * 4096})
    assert response.status_code == 413


@pytest.mark.parametrize(("length", "status"), [(10, 200), (11, 400)])
def test_speech_input_is_limited_to_max_text_chars(length: int, status: int) -> None:
    audio = tts_pb2.SynthesizeResponse(
        audio=b"fLaC", encoding=common_pb2.AUDIO_ENCODING_FLAC, sample_rate_hz=22050
    )
    speech = tts(Synthesize=Unary(audio))
    client = client_for(GatewaySettings(max_text_chars=10), tts=speech)
    response = client.post(
        "/v1/audio/speech", json={"input": "x" * length, "response_format": "flac"}
    )
    assert response.status_code == status
    if status == 400:
        error = error_of(response)
        assert (error["param"], error["code"]) == ("input", "string_above_max_length")
        assert speech.Synthesize.calls == []
    else:
        assert response.data == b"fLaC"
        assert speech.Synthesize.calls[0].request.text == "x" * length


def test_image_count_and_chat_content_limits() -> None:
    image = SimpleNamespace(Generate=Streaming())
    llm = SimpleNamespace(Generate=Streaming())
    client = client_for(GatewaySettings(max_images=2, max_text_chars=5), image=image, llm=llm)
    response = client.post("/v1/images/generations", json={"prompt": "a cat", "n": 3})
    assert (response.status_code, error_of(response)["param"]) == (400, "n")
    messages = [{"role": "system", "content": "short"}, {"role": "user", "content": "too long"}]
    response = client.post("/v1/chat/completions", json={"messages": messages})
    assert (response.status_code, error_of(response)["param"]) == (400, "messages.1.content")
    assert image.Generate.calls == [] and llm.Generate.calls == []


@pytest.mark.parametrize(
    ("data", "param", "code"),
    [
        (b"", None, "invalid_json"),
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'{"input": "hi", "speed": 9}', "speed", "invalid_value"),
        (b'{"voice": "alloy"}', "input", "invalid_value"),
    ],
    ids=["empty", "malformed", "not-an-object", "out-of-range", "missing"],
)
def test_bad_json_is_400_naming_the_field(data: bytes, param: str | None, code: str) -> None:
    client = client_for(tts=tts())
    response = client.post("/v1/audio/speech", data=data, content_type="application/json")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["code"]) == (param, code)


def test_the_request_id_travels_to_the_service_and_back() -> None:
    speech = tts()
    response = client_for(tts=speech).get("/api/voices", headers={"X-Request-Id": "req-42.a"})
    assert response.headers["X-Request-Id"] == "req-42.a"
    assert ("x-request-id", "req-42.a") in speech.ListVoices.calls[0].metadata
    # An id that is not a short token is replaced, not passed on into every log line.
    speech = tts()
    response = client_for(tts=speech).get("/api/voices", headers={"X-Request-Id": "a b;c"})
    replaced = response.headers["X-Request-Id"]
    assert replaced != "a b;c" and len(replaced) == 32
    assert ("x-request-id", replaced) in speech.ListVoices.calls[0].metadata


def test_the_call_carries_the_gateways_deadline() -> None:
    speech = tts()
    client_for(GatewaySettings(call_timeout=7.5), tts=speech).get("/api/voices")
    assert speech.ListVoices.calls[0].timeout == 7.5
