"""The HTTP gateway (gunicorn, real gRPC services behind it): OpenAI-compatible endpoints driven
by the official ``openai`` client, conversational turns as SSE, bad input, and schemathesis; and,
in-process, that the OpenAPI document covers every route and that no blueprint imports the app."""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx2
import openai
import pytest
import requests
import schemathesis
from chorus.v1 import common_pb2, llm_pb2_grpc, tts_pb2
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from gateway import GatewaySettings, create_app
from gateway.openapi import document
from gateway.responses import Voice
from tests.conftest import tts_stub
from tests.support.gateway import (
    GatewayProcess,
    conforms,
    gateway_env,
    running_gateway,
    schema_settings,
    sse_events,
)
from tests.support.speech import decode_any, espeak, word_overlap, words

QUESTION = "What is the capital of France?"
SENTENCE = "The weather is lovely today, so we will walk to the park."
API_KEY = "gw-test-key-0c6b1f4e9a"
UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def api(
    logs: Path,
    stt_faster_whisper,
    tts_piper,
    llm_llama_cpp,
    image_diffusers,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayProcess]:
    """The gateway over the four model services (no orchestrator: /readyz says 503), keeping
    artifacts in a folder of its own."""
    env = gateway_env(
        stt=stt_faster_whisper,
        tts=tts_piper,
        llm=llm_llama_cpp,
        image=image_diffusers,
        CHORUS_GATEWAY_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        CHORUS_ARTIFACTS_FOLDER=str(tmp_path_factory.mktemp("gateway-artifacts")),
    )
    with running_gateway(env, logs, "models") as gateway:
        yield gateway


@pytest.fixture(scope="module")
def client(api: GatewayProcess) -> openai.OpenAI:
    """The official client, unchanged, pointed at the gateway."""
    return openai.OpenAI(base_url=api.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def sentence_wav(tts_piper) -> bytes:
    return (
        tts_stub(tts_piper).Synthesize(tts_pb2.SynthesizeRequest(text=SENTENCE), timeout=60).audio
    )


def assert_openai_error(response: requests.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    return error


# --- the official openai client ---------------------------------------------------------------


def test_openai_transcription(client: openai.OpenAI, sentence_wav: bytes):
    result = client.audio.transcriptions.create(model="whisper-1", file=("clip.wav", sentence_wav))
    assert word_overlap(SENTENCE, result.text) >= 0.8, result.text

    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("clip.wav", sentence_wav),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    assert verbose.language == "en" and verbose.duration > 2
    assert verbose.segments and verbose.words and verbose.words[0].end > verbose.words[0].start
    subtitles = client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", sentence_wav), response_format="srt"
    )
    assert subtitles.startswith("1\n00:00:00,000 --> ") and "park" in subtitles.lower()
    vtt = client.audio.transcriptions.create(
        model="whisper-1", file=("clip.wav", sentence_wav), response_format="vtt"
    )
    assert vtt.startswith("WEBVTT")


def test_openai_translation(client: openai.OpenAI, tmp_path: Path):
    """Speech in German comes back as English text (Whisper's translate task, multilingual base)."""
    # "cup" and "coffee" came out under each of 10 CTranslate2 kernel sets (see
    # test_translation.py); "Ich trinke jeden Morgen eine Tasse Kaffee." became "... some more
    # of the ice cream." under 9 of them, the service's pinned set among them.
    german = espeak(
        "Guten Morgen, heute möchte ich eine Tasse Kaffee trinken und ein Buch lesen.",
        "de",
        tmp_path / "de.wav",
    )
    result = client.audio.translations.create(model="whisper-1", file=("de.wav", german))
    assert {"cup", "coffee"} <= set(words(result.text)), result.text
    transcript = client.audio.transcriptions.create(model="whisper-1", file=("de.wav", german))
    assert "tasse" in transcript.text.lower(), (
        transcript.text
    )  # the same speech, transcribed: German


def test_openai_speech(client: openai.OpenAI):
    text = "Hello from Chorus. This is the second sentence."
    wav = client.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    )
    samples, rate = decode_any(wav.content)
    assert rate == 22050 and len(samples) / rate > 1.5

    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="mp3"
    ) as response:
        mp3 = b"".join(response.iter_bytes())
    samples, rate = decode_any(mp3)
    assert len(samples) / rate > 1.5  # both sentences play straight through

    pcm = client.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="pcm"
    ).content
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 1.5  # 16-bit mono at OpenAI's 24 kHz
    opus = client.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="opus"
    ).content
    assert opus.startswith(b"OggS")
    flac = client.audio.speech.create(
        model="tts-1", voice="alloy", input=text, response_format="flac"
    ).content
    assert flac.startswith(b"fLaC")


def test_openai_image(client: openai.OpenAI):
    result = client.images.generate(
        prompt="a red square on a white table", size="64x64", n=2, response_format="b64_json"
    )
    assert len(result.data) == 2
    for item in result.data:
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG" and image.size == (64, 64)


def test_openai_image_url_is_a_kept_artifact(client: openai.OpenAI):
    """``response_format=url`` (OpenAI's default) links to the picture in the artifact store:
    a real URL on this gateway, PNG, cacheable, with byte ranges."""
    (item,) = client.images.generate(
        prompt="a blue circle", size="64x64", response_format="url", extra_body={"seed": 7}
    ).data
    assert item.url is not None and item.url.startswith(str(client.base_url) + "artifacts/")
    whole = requests.get(item.url, timeout=10)
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(whole.content)).size == (64, 64)
    assert "immutable" in whole.headers["Cache-Control"]
    head = requests.get(item.url, headers={"Range": "bytes=0-7"}, timeout=10)
    assert head.status_code == 206 and head.content == b"\x89PNG\r\n\x1a\n"
    # The same seed draws the same bytes: the same content address, one copy.
    (again,) = client.images.generate(
        prompt="a blue circle", size="64x64", response_format="url", extra_body={"seed": 7}
    ).data
    assert again.url == item.url


def test_openai_chat_streamed(client: openai.OpenAI):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Name three colours."}],
        stream=True,
        max_tokens=24,
        temperature=0,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    whole = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=24,
        temperature=0,
    )
    assert whole.choices[0].message.content == text  # greedy: the same reply, streamed or not


def test_openai_models(client: openai.OpenAI):
    owners = {m.owned_by for m in client.models.list().data}
    assert {"chorus-stt", "chorus-llm", "chorus-image", "chorus-tts"} <= owners


def test_config_notices_name_the_placeholder_models(api: GatewayProcess, llm_llama_cpp):
    """Offline, both generation services serve stand-ins (the tiny random-weight pipeline, whose
    folder says so; Gemma 3 270M base, the offline default): each says so in its ListModels,
    and /api/config turns that into one line per service, with the setting that fixes it."""
    llm = llm_pb2_grpc.TextGenerationStub(grpc.insecure_channel(llm_llama_cpp.address))
    (gemma,) = [m for m in llm.ListModels(common_pb2.ListModelsRequest(), timeout=10).models]
    assert gemma.placeholder and "CHORUS_LLM_MODEL" in gemma.description
    config = requests.get(f"{api.url}/api/config", timeout=10).json()
    image, text = config["notices"]
    assert (image["service"], image["setting"]) == ("image", "CHORUS_IMAGE_MODEL")
    assert "noise" in image["message"] and "CHORUS_IMAGE_MODEL" in image["message"]
    assert text == {
        "service": "text-generation",
        "message": gemma.description,
        "setting": "CHORUS_LLM_MODEL",
    }
    assert config["max_upload_bytes"] == UPLOAD_LIMIT  # the limits are still there


# --- bad HTTP input ---------------------------------------------------------------------------


def test_bad_input(api: GatewayProcess, client: openai.OpenAI):
    url = api.url
    no_file = requests.post(
        f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"other": ("x", b"x")}
    )
    assert_openai_error(no_file, 400, "file")
    not_multipart = requests.post(f"{url}/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert assert_openai_error(not_multipart, 415)["code"] == "unsupported_media_type"
    error = assert_openai_error(
        requests.post(
            f"{url}/v1/audio/transcriptions", files={"file": ("x.wav", b"this is not audio" * 50)}
        ),
        400,
    )
    assert error["code"] == "invalid_argument"
    big = requests.post(
        f"{url}/v1/audio/transcriptions", files={"file": ("big.wav", b"\0" * (UPLOAD_LIMIT + 1))}
    )
    assert assert_openai_error(big, 413)["code"] == "request_too_large"
    malformed = requests.post(
        f"{url}/v1/audio/speech", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert assert_openai_error(malformed, 400)["code"] == "invalid_json"
    assert_openai_error(
        requests.post(f"{url}/v1/audio/speech", json={"input": "hi", "speed": 9}), 400, "speed"
    )
    assert_openai_error(
        requests.post(f"{url}/v1/audio/speech", json={"input": "hi", "voice": "no-such-voice"}), 404
    )
    assert_openai_error(
        requests.post(
            f"{url}/v1/chat/completions", json={"messages": [{"role": "tool", "content": "x"}]}
        ),
        400,
    )
    assert_openai_error(
        requests.post(f"{url}/v1/images/generations", json={"prompt": "x", "size": "63x64"}), 400
    )
    assert_openai_error(requests.get(f"{url}/v1/nothing-here"), 404)
    assert_openai_error(requests.post(f"{url}/api/turns", json={"text": ""}), 400, "text")
    # The official client raises its usual exception types on these statuses.
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="hello")
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"not audio at all"))
    assert api.alive()
    assert requests.get(f"{url}/readyz").status_code == 503  # no orchestrator behind this one


def test_api_key(logs: Path, tts_piper):
    env = gateway_env(
        tts=tts_piper,
        CHORUS_GATEWAY_API_KEY=API_KEY,
        CHORUS_GATEWAY_LOG_LEVEL="DEBUG",
        CHORUS_GATEWAY_MAX_ATTEMPTS="1",
        CHORUS_GATEWAY_RATE_LIMIT_RPS="0.01",  # a token every 100 s: the bucket only empties
        CHORUS_GATEWAY_RATE_LIMIT_BURST="6",
    )
    with running_gateway(env, logs, "keyed") as gateway:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            response = requests.get(f"{gateway.url}/api/voices", headers=headers)
            assert assert_openai_error(response, 401)["code"] == "invalid_api_key"
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(
            f"{gateway.url}/api/voices", headers={"Authorization": f"Bearer {API_KEY}"}
        ).ok
        assert requests.get(f"{gateway.url}/healthz").ok  # probes need no key
        assert requests.get(f"{gateway.url}/api/interface/").ok
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gateway.url + "/v1", api_key="wrong", max_retries=0
            ).models.list()
        voices = openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=API_KEY, max_retries=0
        ).models.list()
        assert voices.data
        # The key's bucket (burst 6, two taken above) empties: 429 with the seconds until a
        # token; probes and /metrics stay open, and the metrics name no key.
        keyed = {"Authorization": f"Bearer {API_KEY}"}
        statuses = [requests.get(f"{gateway.url}/api/voices", headers=keyed) for _ in range(5)]
        assert [r.status_code for r in statuses[:4]] == [200] * 4
        limited = statuses[4]
        assert assert_openai_error(limited, 429)["code"] == "rate_limit_exceeded"
        assert 1 <= int(limited.headers["Retry-After"]) <= 100
        assert requests.get(f"{gateway.url}/healthz").ok
        scraped = requests.get(f"{gateway.url}/metrics")
        assert scraped.ok and API_KEY not in scraped.text
        assert 'chorus_gateway_rejected_total{reason="rate_limited"} 1.0' in scraped.text
        assert gateway.alive()
    assert API_KEY not in gateway.log_path.read_text()


def test_the_gateway_as_a_service(api: GatewayProcess):
    """Under gunicorn: a chunked body over the limit is 413 (no Content-Length to refuse it
    by), every answer has the security headers, CORS stays closed, and /metrics counts by
    route template."""
    url = api.url

    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(UPLOAD_LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    big = requests.post(
        f"{url}/v1/chat/completions", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert big.request.headers.get("Transfer-Encoding") == "chunked"
    assert assert_openai_error(big, 413)["code"] == "request_too_large"
    foreign = {"Origin": "https://evil.example.net"}
    for response in (
        big,
        requests.get(f"{url}/v1/models", headers=foreign),
        requests.get(f"{url}/v1/nothing-here"),
        requests.get(f"{url}/api/interface/"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Access-Control-Allow-Origin" not in response.headers
    assert requests.get(f"{url}/v1/models").headers["Cache-Control"] == "no-store"
    scraped = requests.get(f"{url}/metrics")
    assert scraped.ok and scraped.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    counted = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["chorus_gateway_requests"].samples
        if s.name == "chorus_gateway_requests_total"
    }
    assert counted[("/v1/chat/completions", "413")] >= 1
    assert counted[("(unmatched)", "404")] >= 1
    assert not [route for route, _ in counted if "nothing-here" in route]


# --- conversational turns over SSE ------------------------------------------------------------


def test_text_turn_streams_events(gateway: GatewayProcess):
    started = time.perf_counter()
    with requests.post(
        f"{gateway.url}/api/turns",
        json={
            "text": QUESTION,
            "max_tokens": 40,
            "temperature": 0,
            "history": [
                {"role": "user", "content": "Hello."},
                {"role": "assistant", "content": "Hi! How can I help?"},
            ],
        },
        stream=True,
        timeout=120,
    ) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith(
            "text/event-stream"
        )
        events = list(sse_events(response))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "done" and "turn_timings" in kinds and "error" not in kinds, kinds
    deltas = "".join(d["text"] for k, d in events if k == "reply_delta")
    final = next(d for k, d in events if k == "reply_final")
    assert deltas == final["text"] and final["text"].strip()
    chunks = [d for k, d in events if k == "audio_chunk"]
    assert chunks and all(base64.b64decode(c["audio"]).startswith(b"RIFF") for c in chunks)
    first_audio = next(i for i, k in enumerate(kinds) if k == "audio_chunk")
    assert first_audio < kinds.index("turn_timings")
    assert time.perf_counter() - started < 60


def test_speech_turn_upload(gateway: GatewayProcess, tts_piper):
    wav = tts_stub(tts_piper).Synthesize(tts_pb2.SynthesizeRequest(text=QUESTION), timeout=60).audio
    options = {"max_tokens": 24, "temperature": 0, "text_only": True, "language": "en"}
    with requests.post(
        f"{gateway.url}/api/turns",
        files={"audio": ("q.wav", wav, "audio/wav")},
        data={"options": json.dumps(options)},
        stream=True,
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.text
        events = list(sse_events(response))
    transcript = next(d for k, d in events if k == "transcript_final")
    assert word_overlap(QUESTION, transcript["text"]) >= 0.8, transcript
    assert any(k == "reply_final" for k, _ in events) and not any(
        k == "audio_chunk" for k, _ in events
    )


def test_statuses_a_client_can_act_on(api: GatewayProcess, sentence_wav: bytes):
    """The official client with its default retries (2) against the real services: a limit on
    the request, an unknown model, a control character and a wrong Content-Type are each sent
    once (no retry of a request that cannot succeed)."""
    sent: list[httpx2.Request] = []
    http = httpx2.Client(event_hooks={"request": [sent.append]}, timeout=120)
    client = openai.OpenAI(base_url=api.url + "/v1", api_key="unused", http_client=http)
    many: Any = [{"role": "user", "content": "hi"}] * 10_000  # the LLM's limit is 200
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=many)
    assert (refused.value.code, refused.value.param) == ("limit_exceeded", "messages")
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.speech.create(model="tts-1", voice="alloy", input="a\x00b")
    assert (refused.value.code, refused.value.param) == ("invalid_characters", "input")
    for model in ("../../etc/passwd", "whisper-1"):
        with pytest.raises(openai.NotFoundError) as refused:
            client.audio.speech.create(model=model, voice="alloy", input="hello")
        assert refused.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as refused:
        client.audio.transcriptions.create(model="no-such-model", file=("a.wav", sentence_wav))
    assert refused.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as refused:
        client.post(
            "/audio/speech",
            cast_to=httpx2.Response,
            content=b'{"input": "hi"}',
            options={"headers": {"Content-Type": "text/plain"}},
        )
    assert refused.value.status_code == 415
    assert len(sent) == 6, [str(r.url) for r in sent]
    ids = {m.id for m in client.models.list()}
    assert {"whisper-1", "tts-1", "gpt-4o-mini", "dall-e-3"} <= ids


def test_turn_errors_are_http_statuses(gateway: GatewayProcess):
    assert requests.get(f"{gateway.url}/readyz").status_code == 200
    missing = requests.post(f"{gateway.url}/api/turns", files={"other": ("x", b"x")})
    assert_openai_error(missing, 400, "audio")
    too_long = requests.post(
        f"{gateway.url}/api/turns",
        json={"text": "x", "history": [{"role": "user", "content": "hi"}] * 100},
    )
    assert_openai_error(too_long, 400, "history")


def test_client_disconnect_cancels_turn(gateway: GatewayProcess):
    """Closing the HTTP stream mid-reply cancels the gRPC call (logged by the gateway)."""
    before = gateway.log_path.read_text().count("turn cancelled: the HTTP client went away")
    body = json.dumps(
        {
            "text": "Tell me a long story about a dragon and a knight.",
            "max_tokens": 300,
            "text_only": True,
        }
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock:
        sock.sendall(
            f"POST /api/turns HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        received = b""
        while b"event: reply_delta" not in received:
            data = sock.recv(65536)
            assert data, received
            received += data
        assert received.startswith(b"HTTP/1.1 200")
    # The socket is closed mid-reply; the gateway's next write fails and cancels the turn.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if gateway.log_path.read_text().count("turn cancelled: the HTTP client went away") > before:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the gateway did not cancel the turn after the client went away")
    assert gateway.alive()


# --- the OpenAPI document --------------------------------------------------------------------

APP = create_app(GatewaySettings())
DOCUMENT = document(APP)
ERROR_REF = "#/components/schemas/ErrorResponse"


def _operations() -> Iterator[tuple[str, str, str]]:
    """(rule, OpenAPI path, method) of every route the app registers. A WebSocket route has no
    OpenAPI form and is left out; HEAD and OPTIONS come with every GET and every route."""
    for rule in APP.url_map.iter_rules():
        if getattr(rule, "websocket", False):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule.rule, path, method.lower()


def test_openapi_covers_every_route():
    """Every route is in the document with its answers and the error shape, and routes behind
    the API key say so; a route added without ``@documented`` fails here."""
    operations = list(_operations())
    assert len(operations) >= 16
    for rule, path, method in operations:
        assert method in DOCUMENT["paths"].get(path, {}), f"{method.upper()} {rule} is undocumented"
        operation = DOCUMENT["paths"][path][method]
        responses = operation["responses"]
        # Success: 2xx, 3xx, or 101 (/v1/realtime, documented by its upgrade)
        assert any(code.startswith(("2", "3")) or code == "101" for code in responses), (
            rule,
            responses,
        )
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF
        public = rule.startswith(
            ("/healthz", "/readyz", "/metrics", "/openapi.json", "/api/interface")
        )
        assert (operation.get("security") == []) == public, rule
        if not public:
            assert responses["401"]["content"]["application/json"]["schema"]["$ref"] == ERROR_REF
    documented = {(p, m) for p, ops in DOCUMENT["paths"].items() for m in ops}
    assert documented == {(p, m) for _, p, m in operations}  # and nothing that is not served
    bearer = DOCUMENT["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    keyed = create_app(GatewaySettings(api_key="k"))
    assert document(keyed)["security"] == [{"bearer": []}]  # required once a key is set
    assert DOCUMENT["security"] == [{"bearer": []}, {}]


def test_openapi_models_match_the_code():
    """The members the hand-written document had lost are there, bodies and streams have their
    media types, and ``Voice`` is ``chorus.v1.Voice`` field for field."""
    schemas = DOCUMENT["components"]["schemas"]
    card = schemas["ModelList"]["properties"]["data"]["items"]["$ref"].rsplit("/", 1)[-1]
    assert "loaded" in schemas[card]["required"]
    assert {"text", "usage"} <= set(schemas["Transcription"]["required"])
    assert set(Voice.model_fields) == {f.name for f in tts_pb2.Voice.DESCRIPTOR.fields}
    paths = DOCUMENT["paths"]
    upload = paths["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    form = schemas[upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert form["properties"]["file"] == {**form["properties"]["file"], "format": "binary"}
    assert "text/event-stream" in paths["/api/turns"]["post"]["responses"]["200"]["content"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(chat)
    speech = paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert {"audio/mpeg", "audio/wav", "audio/pcm", "audio/ogg", "audio/flac"} == set(speech)


def test_no_blueprint_imports_the_app():
    """Routes reach settings and stubs through ``gateway.context``; only the package and its
    entrypoint import ``gateway.app``, so there is no cycle between the app and its routes."""
    root = Path(__file__).resolve().parent.parent / "gateway"
    for source in root.rglob("*.py"):
        if source.relative_to(root).as_posix() in ("__init__.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            assert "gateway.app" not in names, f"{source.name} imports gateway.app"


# --- schemathesis over the non-streaming endpoints: the document against the running gateway ---


# The document is made in-process from the same app (gateway/openapi.py), so the schema loads at
# import; each operation becomes its own test, sent to the running gateway through base_url.
# /api/turns and /v1/conversations need an orchestrator (conversations: tests/
# test_stored_conversations.py runs this check on them, against one with its stores).
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(
    path_regex=r"^/(api/turns|readyz|v1/conversations.*)$"
)


@schema.parametrize()
@schema_settings(5)
def test_schemathesis_conforms(case, api: GatewayProcess):
    """No server error, and every answer has a status, media type and body the document gives
    (so the response models in gateway/responses.py are what the handlers send)."""
    body = case.body if isinstance(case.body, dict) else None
    # Bounded work per example: at most 4 tokens, 2 denoising steps, 2 images.
    if body is not None and case.path == "/v1/chat/completions":
        body["stream"] = False  # streamed completions are tested above
        body.pop("max_completion_tokens", None)
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] > 4:
            body["max_tokens"] = 4
    if body is not None and case.path == "/v1/images/generations":
        for key, most in (("steps", 2), ("n", 2)):
            if not isinstance(body.get(key), int) or body[key] > most:
                body[key] = most
    conforms(case, api.url)
