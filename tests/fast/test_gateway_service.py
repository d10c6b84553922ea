"""The gateway as a service, in-process with fake stubs: its own /metrics (and, in a forked
child, prometheus_client's multiprocess mode summing workers), the bound on open streams and
sockets, the limits on a request's size, CORS, the security headers, per-key rate limits on an
injected clock, and which realtime models pass."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chorus.v1 import llm_pb2, tts_pb2
from chorus.v1 import orchestrator_pb2 as pb
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from gateway import ratelimit
from gateway.app import create_app
from gateway.capacity import capacity_of
from gateway.headers import API_CSP, SECURITY_HEADERS
from gateway.keys import digest
from gateway.openai import realtime
from gateway.openapi import document
from gateway.realtime_events import EventError, RealtimeTranslator
from gateway.settings import GatewaySettings
from services.common.errors import NotFound
from tests.support.fakes import FakeChannels, FakeRpcError, Streaming, Unary, fake_stubs

KEY = "sk-service-test-0123456789"
OTHER_KEY = "sk-service-other-9876543210"
VOICES = tts_pb2.ListVoicesResponse(voices=[tts_pb2.Voice(id="en_US-joe-medium")])
ROOT = Path(__file__).resolve().parents[2]


def app_for(settings: GatewaySettings | None = None, **services: Any) -> Flask:
    services.setdefault("tts", SimpleNamespace(ListVoices=Unary(VOICES)))
    return create_app(settings or GatewaySettings(), FakeChannels(fake_stubs(**services)))


def held_turn() -> Streaming:
    """A turn that sends one event and then works until cancelled: its stream stays open."""
    first = pb.TurnEvent(turn_id="t1", reply_delta=pb.ReplyDelta(text="Hel"))
    return Streaming([first], hold=True)


class OpenTurn:
    """POST /api/turns on a thread of its own, its stream left open (not read) until ``close``:
    a streamed response holds its thread's request context, as under a real server."""

    def __init__(self, client: FlaskClient) -> None:
        self._answered = threading.Event()
        self._close = threading.Event()
        self._closed = threading.Event()
        self.status_code = 0
        self.headers: Any = None
        self.json: Any = None
        self._thread = threading.Thread(target=self._run, args=(client,), daemon=True)
        self._thread.start()
        assert self._answered.wait(30)

    def _run(self, client: FlaskClient) -> None:
        response = client.post("/api/turns", json={"text": "hi"}, buffered=False)
        self.status_code, self.headers = response.status_code, response.headers
        if response.status_code != 200:
            self.json = response.get_json()
        self._answered.set()
        self._close.wait(30)
        response.close()
        self._closed.set()

    def close(self) -> None:
        self._close.set()
        assert self._closed.wait(30)


def open_turn(client: FlaskClient) -> OpenTurn:
    return OpenTurn(client)


def samples(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed: (sample name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def error_of(response: TestResponse | OpenTurn) -> dict[str, Any]:
    body = response.json if isinstance(response, OpenTurn) else response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> realtime.SessionRegistry:
    """A fresh realtime registry per test (the process-wide one outlives apps)."""
    fresh = realtime.SessionRegistry()
    monkeypatch.setattr(realtime, "SESSIONS", fresh)
    return fresh


# --- /metrics -----------------------------------------------------------------------------------


def test_metrics_count_by_route_template_method_and_status() -> None:
    conversations = SimpleNamespace(GetConversation=Unary(FakeRpcError(NotFound("no such id"))))
    client = app_for(conversations=conversations).test_client()
    for _ in range(2):
        assert client.get("/api/voices").status_code == 200
    assert client.get("/v1/conversations/conv_secret123").status_code == 404
    assert client.get("/no/such/path-xyz").status_code == 404
    assert client.delete("/api/voices").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert "conv_secret123" not in text and "path-xyz" not in text  # never a raw path
    found = samples(client)
    requests = "chorus_gateway_requests_total"
    assert found[(requests, (("method", "GET"), ("route", "/api/voices"), ("status", "200")))] == 2
    template = "/v1/conversations/<conversation_id>"
    assert found[(requests, (("method", "GET"), ("route", template), ("status", "404")))] == 1
    unmatched = (("method", "GET"), ("route", "(unmatched)"), ("status", "404"))
    assert found[(requests, unmatched)] == 1
    assert found[(requests, (("method", "DELETE"), ("route", "(unmatched)"), ("status", "405")))]
    count = found[("chorus_gateway_request_seconds_count", (("route", "/api/voices"),))]
    assert count == 2
    slowest = ("chorus_gateway_request_seconds_bucket", (("le", "+Inf"), ("route", template)))
    assert found[slowest] == 1
    for reason in ("rate_limited", "too_many_streams", "too_many_sessions"):
        assert found[("chorus_gateway_rejected_total", (("reason", reason),))] == 0
    # The scrape itself is the one request in flight; nothing is open.
    assert found[("chorus_gateway_in_flight", ())] == 1
    assert found[("chorus_gateway_open_streams", ())] == 0
    assert found[("chorus_gateway_open_sockets", ())] == 0


def test_metrics_need_no_key_and_hold_no_key_or_tenant(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nname = "alice"\ntenant = "acme-corp"\nkey = "{KEY}"\n')
    client = app_for(GatewaySettings(api_keys_file=keys)).test_client()
    assert client.get("/api/voices").status_code == 401
    assert client.get("/api/voices", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert 'route="/api/voices"' in text
    assert KEY not in text and "alice" not in text and "acme-corp" not in text


def test_open_streams_while_a_stream_is_open() -> None:
    client = app_for(orchestrator=SimpleNamespace(Converse=held_turn())).test_client()
    stream = open_turn(client)
    assert stream.status_code == 200
    found = samples(client)
    assert found[("chorus_gateway_open_streams", ())] == 1
    assert found[("chorus_gateway_in_flight", ())] == 1  # the scrape: the stream's handler ended
    stream.close()
    assert samples(client)[("chorus_gateway_open_streams", ())] == 0


MULTIPROCESS_SCRIPT = """
import json, os
from types import SimpleNamespace
from prometheus_client.parser import text_string_to_metric_families
from gateway.metrics import child_exit, prepare_multiprocess

folder = prepare_multiprocess()  # as the gunicorn master does, before the fork

from chorus.v1 import tts_pb2
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.fakes import FakeChannels, Streaming, Unary, fake_stubs
from chorus.v1 import orchestrator_pb2 as pb

def app():
    first = pb.TurnEvent(turn_id="t", reply_delta=pb.ReplyDelta(text="x"))
    stubs = fake_stubs(
        tts=SimpleNamespace(ListVoices=Unary(tts_pb2.ListVoicesResponse())),
        orchestrator=SimpleNamespace(Converse=Streaming([first], hold=True)),
    )
    return create_app(GatewaySettings(), FakeChannels(stubs)).test_client()

workers = []
for n in (1, 2):  # two workers: n voice requests each, the second keeps a stream open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        client = app()
        for _ in range(n):
            client.get("/api/voices")
        if n == 2:
            stream = client.post("/api/turns", json={"text": "hi"}, buffered=False)
        os.write(write, b"x")
        os._exit(0)  # the stream is never closed: as a worker that dies
    os.read(read, 1)
    workers.append(pid)

def scrape():
    text = app().get("/metrics").get_data(as_text=True)
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found

voices = ("chorus_gateway_requests_total",
          (("method", "GET"), ("route", "/api/voices"), ("status", "200")))
before = scrape()
for pid in workers:
    os.waitpid(pid, 0)
    child_exit(None, SimpleNamespace(pid=pid))
after = scrape()
print(json.dumps({
    "voices": before[voices],
    "streams": before[("chorus_gateway_open_streams", ())],
    "streams_after": after[("chorus_gateway_open_streams", ())],
    "voices_after": after[voices],
    "folder": str(folder),
}))
"""


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    """Two forked workers count into one folder; a scrape from a third process sees their sum;
    a dead worker's open stream stops counting (``child_exit``), its counters stay."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "PROMETHEUS_"))}
    env.update(PYTHONPATH=f"{ROOT / 'gen'}:{ROOT}", TMPDIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["voices"] == 3  # 1 + 2, from two processes
    assert seen["streams"] == 1
    assert seen["streams_after"] == 0  # its worker is dead: a livesum gauge forgets it
    assert seen["voices_after"] == 3
    assert not Path(seen["folder"]).exists()  # the master removes its folder at exit


# --- streams and sockets ------------------------------------------------------------------------


def test_streams_past_the_limit_are_429_before_any_work() -> None:
    converse = held_turn()
    app = app_for(
        GatewaySettings(threads=8, max_streams=2, busy_retry_after=7),
        orchestrator=SimpleNamespace(Converse=converse),
    )
    client = app.test_client()
    streams = [open_turn(client) for _ in range(2)]
    assert [s.status_code for s in streams] == [200, 200]
    refused = open_turn(client)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "7"
    error = error_of(refused)
    assert (error["code"], error["type"]) == ("too_many_streams", "rate_limit_error")
    assert len(converse.calls) == 2  # the refused turn never reached the orchestrator
    assert client.get("/healthz").status_code == 200  # plain requests still pass
    streams[0].close()
    again = open_turn(client)
    assert again.status_code == 200
    for stream in (streams[1], again):
        stream.close()
    assert capacity_of(app).open("stream") == 0
    found = samples(client)
    assert found[("chorus_gateway_rejected_total", (("reason", "too_many_streams"),))] == 1


def test_streamed_chat_and_speech_take_a_place_and_plain_ones_do_not() -> None:
    result = llm_pb2.GenerateTextResponse(result=llm_pb2.TextGenerationResult(text="hi"))
    llm = SimpleNamespace(Generate=Streaming([result]))
    tts = SimpleNamespace(ListVoices=Unary(VOICES), StreamingSynthesize=Streaming([], hold=True))
    app = app_for(GatewaySettings(threads=4, max_streams=0), llm=llm, tts=tts)
    client = app.test_client()
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert client.post("/v1/chat/completions", json=chat).status_code == 200
    refused = client.post("/v1/chat/completions", json={**chat, "stream": True})
    assert refused.status_code == 429 and error_of(refused)["code"] == "too_many_streams"
    speech = {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "wav"}
    refused = client.post("/v1/audio/speech", json=speech)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
    assert len(llm.Generate.calls) == 1 and not tts.StreamingSynthesize.calls


def test_streams_and_sockets_together_leave_one_thread() -> None:
    """threads=3: two long-lived requests at most, whatever kind; the third thread stays."""
    app = app_for(
        GatewaySettings(threads=3, max_streams=5, realtime_max_sessions=5),
        orchestrator=SimpleNamespace(Converse=held_turn()),
    )
    client = app.test_client()
    capacity = capacity_of(app)
    assert capacity.take("socket")  # as an open realtime socket holds its place
    stream = open_turn(client)
    assert stream.status_code == 200
    assert open_turn(client).status_code == 429
    refused = client.get("/v1/realtime?model=gpt-realtime", headers=UPGRADE)
    assert refused.status_code == 429 and error_of(refused)["code"] == "too_many_sessions"
    assert refused.headers["Retry-After"] == "2"
    stream.close()
    capacity.release("socket")
    assert open_turn(client).status_code == 200


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_realtime_refusals_before_the_upgrade() -> None:
    """Each refusal is the API's error with its status: a foreign page's origin (403), an
    unknown model (404), no place (429 with Retry-After); known models pass to the next check."""
    client = app_for(
        GatewaySettings(realtime_max_sessions=0, cors_origins=["https://app.example.com"])
    ).test_client()

    def upgrade(query: str, **headers: str) -> TestResponse:
        return client.get(f"/v1/realtime{query}", headers={**UPGRADE, **headers})

    foreign = upgrade("?model=gpt-realtime", Origin="https://evil.example.net")
    assert foreign.status_code == 403 and error_of(foreign)["code"] == "origin_not_allowed"
    for origin in ("http://localhost", "https://app.example.com"):  # its own host; listed
        assert upgrade("?model=gpt-realtime", Origin=origin).status_code == 429
    unknown = upgrade("?model=gpt-4o")
    assert unknown.status_code == 404
    error = error_of(unknown)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    for model in (
        "",
        "?model=chorus",
        "?model=gpt-realtime-2025-08-28",
        "?model=gpt-4o-realtime-preview-2024-12-17",
        "?model=gpt-4o-mini-realtime-preview",
    ):
        busy = upgrade(model)
        assert busy.status_code == 429, model
        assert busy.headers["Retry-After"] == "2"
        assert error_of(busy)["code"] == "too_many_sessions"
    assert "chorus-realtime" in {
        card["owned_by"]
        for card in app_for(
            tts=SimpleNamespace(ListVoices=Unary(VOICES)),
            stt=SimpleNamespace(ListModels=Unary(FakeRpcError(NotFound("x")))),
            llm=SimpleNamespace(ListModels=Unary(FakeRpcError(NotFound("x")))),
            image=SimpleNamespace(ListModels=Unary(FakeRpcError(NotFound("x")))),
        )
        .test_client()
        .get("/v1/models")
        .get_json()["data"]
    }


def test_session_update_with_an_unknown_model_is_an_error_event() -> None:
    app = app_for()
    with app.test_request_context("/v1/realtime"):
        translator = RealtimeTranslator(model_check=realtime._model_problem)
        translator.start()
        known = {"type": "session.update", "session": {"model": "gpt-realtime-2025-08-28"}}
        assert translator.client_event(json.dumps(known))
        unknown = {"type": "session.update", "session": {"model": "whisper-1"}}
        with pytest.raises(EventError) as refused:
            translator.client_event(json.dumps({**unknown, "event_id": "e1"}))
    error = refused.value
    assert (error.code, error.param, error.event_id) == ("model_not_found", "session.model", "e1")
    assert "gpt-realtime" in error.message


# --- sizes --------------------------------------------------------------------------------------


def test_an_oversize_body_is_413_before_it_is_read() -> None:
    llm = SimpleNamespace(Generate=Streaming([]))
    client = app_for(GatewaySettings(max_upload_bytes=1024), llm=llm).test_client()
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 2000}]})
    response = client.post("/v1/chat/completions", data=body, content_type="application/json")
    assert response.status_code == 413
    error = error_of(response)
    assert (error["code"], error["type"]) == ("request_too_large", "invalid_request_error")
    assert "1024 bytes" in error["message"]
    # A route that reads no body says so too, rather than let the body be drained.
    assert client.get("/api/voices", data=b"x" * 2000).status_code == 413
    form = {"file": (io.BytesIO(b"x" * 2000), "a.wav")}
    assert client.post("/v1/audio/transcriptions", data=form).status_code == 413
    assert not llm.Generate.calls


def test_a_form_with_too_many_parts_is_413() -> None:
    stt = SimpleNamespace(Transcribe=Unary(FakeRpcError(NotFound("never called"))))
    client = app_for(GatewaySettings(max_form_parts=8), stt=stt).test_client()
    fields: dict[str, Any] = {f"field{i}": "x" for i in range(10)}
    fields["file"] = (io.BytesIO(b"RIFF"), "a.wav")
    response = client.post("/v1/audio/transcriptions", data=fields)
    assert response.status_code == 413
    assert "8 form parts" in error_of(response)["message"]
    assert not stt.Transcribe.calls


def chunked(client: FlaskClient, path: str, body: bytes) -> TestResponse:
    """POST ``body`` without Content-Length (``Transfer-Encoding: chunked``, the input marked
    terminated, as gunicorn marks it)."""
    builder = EnvironBuilder(
        path,
        method="POST",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    response = client.open(Request(environ))
    assert "Content-Length" not in response.request.headers
    return response


def test_a_chunked_body_over_the_limit_is_413() -> None:
    """werkzeug would hand a handler the body cut at the limit (here: invalid JSON, a 400)."""
    result = llm_pb2.GenerateTextResponse(result=llm_pb2.TextGenerationResult(text="hi"))
    llm = SimpleNamespace(Generate=Streaming([result]))
    client = app_for(GatewaySettings(max_upload_bytes=1024), llm=llm).test_client()
    chat = {"messages": [{"role": "user", "content": "x"}]}
    at_limit = json.dumps(chat).encode().ljust(1024)  # trailing blanks: still valid JSON
    response = chunked(client, "/v1/chat/completions", at_limit)
    assert response.status_code == 200, response.get_json()
    response = chunked(client, "/v1/chat/completions", at_limit + b" ")  # cut: still valid
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"
    assert len(llm.Generate.calls) == 1


def test_long_urls_and_headers_are_refused() -> None:
    client = app_for(
        GatewaySettings(max_request_line_bytes=300, max_header_bytes=1024, max_header_count=20)
    ).test_client()
    assert client.get("/api/voices?language=" + "e" * 20).status_code == 200
    long_url = client.get("/api/voices?language=" + "e" * 300)
    assert long_url.status_code == 414 and error_of(long_url)["code"] == "uri_too_long"
    long_header = client.get("/api/voices", headers={"X-Big": "v" * 1100})
    assert long_header.status_code == 431
    assert error_of(long_header)["code"] == "headers_too_large"
    many = client.get("/api/voices", headers={f"X-H{i}": "v" for i in range(25)})
    assert many.status_code == 431


# --- CORS and security headers ------------------------------------------------------------------

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def test_cors_is_closed_by_default() -> None:
    client = app_for(GatewaySettings(api_key=KEY)).test_client()
    origin = {"Origin": "https://app.example.com"}
    answer = client.get("/api/voices", headers={**origin, "Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200
    preflight = client.options("/v1/chat/completions", headers={**origin, **PREFLIGHT})
    for response in (answer, preflight):
        assert not [h for h in response.headers.keys() if h.startswith("Access-Control-Allow")]


def test_cors_allows_a_listed_origin_only() -> None:
    listed = "https://app.example.com"
    client = app_for(
        GatewaySettings(api_key=KEY, cors_origins=[listed], cors_max_age=120)
    ).test_client()
    preflight = client.options("/v1/chat/completions", headers={"Origin": listed, **PREFLIGHT})
    assert preflight.status_code == 204  # no key needed: a preflight carries none
    assert preflight.headers["Access-Control-Allow-Origin"] == listed
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    allowed = {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert preflight.headers["Access-Control-Max-Age"] == "120"
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    answer = client.get("/api/voices", headers={"Origin": listed})  # 401: still readable
    assert answer.status_code == 401
    assert answer.headers["Access-Control-Allow-Origin"] == listed
    assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]
    assert "Origin" in answer.headers["Vary"]
    other = "https://evil.example.net"
    refused = client.options("/v1/chat/completions", headers={"Origin": other, **PREFLIGHT})
    answer = client.get("/healthz", headers={"Origin": other})
    for response in (refused, answer):
        assert not [h for h in response.headers.keys() if h.startswith("Access-Control-Allow")]


def test_security_headers_on_every_kind_of_response() -> None:
    broken = SimpleNamespace(ListVoices=Unary(RuntimeError("a bug")))
    app = app_for(GatewaySettings(max_upload_bytes=1024))
    client = app.test_client()
    stream_client = app_for(orchestrator=SimpleNamespace(Converse=held_turn())).test_client()
    stream = open_turn(stream_client)
    answers = {
        "json": client.get("/healthz"),
        "unmatched 404": client.get("/nope"),
        "413": client.post("/v1/chat/completions", data=b"x" * 2000),
        "500": app_for(tts=broken).test_client().get("/api/voices"),
        "redirect": client.get("/api/interface"),
        "metrics": client.get("/metrics"),
        "stream": stream,
    }
    assert answers["500"].status_code == 500
    for kind, response in answers.items():
        for name, value in SECURITY_HEADERS.items():
            if name != "Cache-Control":
                assert response.headers.get(name) == value, (kind, name)
        assert response.headers.get("Content-Security-Policy") == API_CSP, kind
    assert answers["json"].headers["Cache-Control"] == "no-store"
    assert answers["stream"].headers["Cache-Control"] == "no-store"  # the stream's own
    stream.close()
    page = client.get("/api/interface/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # the page's own
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"


# --- per-key rate limits ------------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[FlaskClient, Clock]]:
    """Two keys of a keys file: ``bob`` has his own rate (2 a second, burst 1)."""
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[[keys]]\nname = "alice"\ntenant = "acme"\nkey = "{KEY}"\n'
        f'[[keys]]\nname = "bob"\ntenant = "acme"\nkey_sha256 = "{digest(OTHER_KEY)}"\n'
        "rate_limit_rps = 2\nrate_limit_burst = 1\n"
    )
    settings = GatewaySettings(api_keys_file=keys, rate_limit_rps=0.25, rate_limit_burst=3)
    app = app_for(settings)
    clock = Clock()
    ratelimit.install(app, settings, clock)
    yield app.test_client(), clock


def test_a_key_past_its_bucket_gets_429_with_the_seconds_until_a_token(
    keyed: tuple[FlaskClient, Clock],
) -> None:
    client, clock = keyed
    alice = {"Authorization": f"Bearer {KEY}"}
    assert [client.get("/api/voices", headers=alice).status_code for _ in range(3)] == [200] * 3
    refused = client.get("/api/voices", headers=alice)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "4"  # a token every 4 s at 0.25 a second
    error = error_of(refused)
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "rate_limit_error")
    clock.now += 3.5
    assert client.get("/api/voices", headers=alice).headers["Retry-After"] == "1"  # 0.5 s, up
    clock.now += 0.5
    assert client.get("/api/voices", headers=alice).status_code == 200
    # Exempt: probes, /metrics, the page; and other keys have buckets of their own.
    for path in ("/healthz", "/metrics", "/openapi.json", "/api/interface/"):
        assert client.get(path).status_code == 200, path
    bob = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert client.get("/api/voices", headers=bob).status_code == 200
    assert client.get("/api/voices", headers=bob).headers["Retry-After"] == "1"
    clock.now += 0.5  # bob's own rate: 2 a second
    assert client.get("/api/voices", headers=bob).status_code == 200
    found = samples(client)
    assert found[("chorus_gateway_rejected_total", (("reason", "rate_limited"),))] == 3


def test_rate_limits_off_and_on_an_open_gateway() -> None:
    """0 turns the bucket off; a gateway without keys has no per-key bucket."""
    for settings in (
        GatewaySettings(api_key=KEY, rate_limit_rps=0, rate_limit_burst=1),
        GatewaySettings(rate_limit_rps=0.001, rate_limit_burst=1),
    ):
        client = app_for(settings).test_client()
        headers = {"Authorization": f"Bearer {KEY}"}
        assert {client.get("/api/voices", headers=headers).status_code for _ in range(5)} == {200}


def test_429s_are_documented_with_every_keyed_route() -> None:
    paths = document(app_for())["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"413", "414", "431"} <= codes, (path, method)
            public = operation.get("security") == []
            assert ("429" in codes) == (not public), (path, method)
    assert "403" in paths["/v1/realtime"]["get"]["responses"]
    assert "404" in paths["/v1/realtime"]["get"]["responses"]
