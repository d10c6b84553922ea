"""``/v1/realtime`` on real gateways (gunicorn) behind a real Envoy, over the real orchestrator
and models, driven by the official ``openai`` client (``client.realtime.connect()``) and, for
malformed input the client would never send, by a plain WebSocket.

The orchestrator here speaks replies in pieces of at most 20 characters, so a counting reply is
heard from its first words and is still streaming when a test cancels or interrupts it."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import openai
import pytest
from chorus.v1 import stt_pb2, stt_pb2_grpc
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devtools.processes import ServiceProcess
from tests.conftest import orchestrator_env
from tests.support.envoy import EnvoyProcess, running_envoy
from tests.support.gateway import (
    GatewayProcess,
    gateway_env,
    realtime_socket,
    receive_until,
    running_gateway,
)
from tests.support.services import metric_value, running, scrape
from tests.support.session import RATE, Spoken, silence, spoken
from tests.support.speech import wav_bytes, word_overlap

API_KEY = "rt-test-key-5d0e7c2b91"
QUESTION = "What is the capital of France?"
SECOND = "Tell me about the moon."
COUNT = "Count from one to five hundred: 1, 2, 3, 4, 5, 6,"
LIVE_MODEL = "whisper-tiny.en"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Spoken]:
    tmp = tmp_path_factory.mktemp("realtime-clips")
    return {text: spoken(text, tmp) for text in (QUESTION, SECOND)}


@pytest.fixture(scope="module")
def realtime_orchestrator(
    logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
) -> Iterator[ServiceProcess]:
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ORCH_SENTENCE_MAX_CHARS": "20",
    }
    with running("orchestrator", env, logs, "realtime") as proc:
        yield proc


@pytest.fixture(scope="module")
def replicas(
    logs: Path, realtime_orchestrator, stt_faster_whisper, tts_piper, llm_llama_cpp
) -> Iterator[tuple[GatewayProcess, GatewayProcess, EnvoyProcess]]:
    """Two gateway replicas with an API key, and Envoy in front of both."""
    env = gateway_env(
        orchestrator=realtime_orchestrator,
        stt=stt_faster_whisper,
        tts=tts_piper,
        llm=llm_llama_cpp,
        CHORUS_GATEWAY_API_KEY=API_KEY,
    )
    with (
        running_gateway(env, logs, "realtime-a", ready="/readyz") as a,
        running_gateway(env, logs, "realtime-b", ready="/readyz") as b,
        running_envoy({"gateway": [a, b]}, logs, "realtime") as envoy,
    ):
        yield a, b, envoy


@pytest.fixture(scope="module")
def url(replicas) -> str:
    """Envoy's address: every test below goes through it unless it says otherwise."""
    return f"http://{replicas[2].address}"


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0)


def session_config(**extra: Any) -> dict[str, Any]:
    session: dict[str, Any] = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "max_output_tokens": 40,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "transcription": {"model": LIVE_MODEL},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
            },
            "output": {"format": {"type": "audio/pcm", "rate": RATE}},
        },
    }
    session.update(extra)
    return session


async def stream(conn: Any, pcm: bytes, pace: float = 1.0, chunk_ms: int = 40) -> None:
    step = RATE * 2 * chunk_ms // 1000
    started = time.monotonic()
    for n, offset in enumerate(range(0, len(pcm), step)):
        await conn.input_audio_buffer.append(
            audio=base64.b64encode(pcm[offset : offset + step]).decode()
        )
        wait = started + (n + 1) * chunk_ms / 1000 / pace - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)


async def until(conn: Any, kind: str, seen: list[Any], timeout: float = 120) -> Any:
    """Read events into ``seen`` until one of ``kind`` arrives; return it."""
    async with asyncio.timeout(timeout):
        async for event in conn:
            seen.append(event)
            if event.type == kind:
                return event
    raise AssertionError(f"the connection ended before {kind}; saw {[e.type for e in seen]}")


def types(seen: list[Any]) -> list[str]:
    return [e.type for e in seen]


def test_spoken_question_with_server_vad(url: str, clips, stt_faster_whisper) -> None:
    """The official client: session.update, a spoken question appended at real-time pace, the
    VAD's events, the input transcript, and a response whose transcript and audio deltas
    arrive; the audio transcribes back to the response's text."""

    async def run() -> list[Any]:
        seen: list[Any] = []
        async with client(url).realtime.connect(model="chorus") as conn:
            await until(conn, "session.created", seen)
            await conn.session.update(session=session_config())
            await until(conn, "session.updated", seen)
            clip = clips[QUESTION]
            sender = asyncio.create_task(stream(conn, silence(0.4) + clip.bytes() + silence(1.6)))
            await until(conn, "response.done", seen)
            await sender
        return seen

    seen = asyncio.run(run())
    kinds = types(seen)
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.done",
    ]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order), kinds
    transcript = next(
        e for e in seen if e.type == "conversation.item.input_audio_transcription.completed"
    )
    assert word_overlap(QUESTION, transcript.transcript) >= 0.6, transcript.transcript
    done = seen[-1].response
    assert done.status == "completed"
    said = "".join(e.delta for e in seen if e.type == "response.output_audio_transcript.delta")
    assert said.strip()
    pcm = b"".join(
        base64.b64decode(e.delta) for e in seen if e.type == "response.output_audio.delta"
    )
    heard = (
        stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(stt_faster_whisper.address))
        .Transcribe(
            stt_pb2.TranscribeRequest(audio=wav_bytes(np.frombuffer(pcm, "<i2"), RATE)),
            timeout=120,
        )
        .text
    )
    assert word_overlap(said, heard) >= 0.5, (said, heard)


def _cancelled(proc: ServiceProcess, method: str) -> float:
    return metric_value(scrape(proc), "chorus_grpc_requests_total", method=method, code="CANCELLED")


def test_text_item_response_and_cancel(url: str, llm_llama_cpp, tts_piper) -> None:
    """A text item and response.create answer in text; a spoken counting reply cancelled with
    response.cancel ends cancelled (client_cancelled), and the LLM and TTS calls behind it end
    CANCELLED."""
    generate = "/chorus.v1.TextGeneration/Generate"
    synthesize = "/chorus.v1.TextToSpeech/StreamingSynthesize"
    before = _cancelled(llm_llama_cpp, generate), _cancelled(tts_piper, synthesize)

    async def run() -> tuple[list[Any], list[Any]]:
        text_seen: list[Any] = []
        cancel_seen: list[Any] = []
        async with client(url).realtime.connect(model="chorus") as conn:
            await conn.session.update(session=session_config(output_modalities=["text"]))
            await until(conn, "session.updated", text_seen)
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": QUESTION}],
                }
            )
            await conn.response.create()
            await until(conn, "response.done", text_seen)

            await conn.session.update(session=session_config(max_output_tokens=400))
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": COUNT}],
                }
            )
            await conn.response.create()
            await until(conn, "response.output_audio.delta", cancel_seen)
            await conn.response.cancel()
            await until(conn, "response.done", cancel_seen)
        return text_seen, cancel_seen

    text_seen, cancel_seen = asyncio.run(run())
    text = "".join(e.delta for e in text_seen if e.type == "response.output_text.delta")
    done = next(e for e in text_seen if e.type == "response.output_text.done")
    assert text.strip() and done.text == text
    assert "response.output_audio.delta" not in types(text_seen)
    cancelled = cancel_seen[-1].response
    assert cancelled.status == "cancelled"
    assert cancelled.status_details.reason == "client_cancelled"
    deadline = time.monotonic() + 30
    while _cancelled(llm_llama_cpp, generate) - before[0] < 1:
        assert time.monotonic() < deadline, "the LLM call was not cancelled"
        time.sleep(0.1)
    # The TTS call in flight at the cancel (if any was) ends CANCELLED too: pieces are 20
    # characters, so one is being spoken almost all the time while the count streams.
    assert _cancelled(tts_piper, synthesize) - before[1] <= 1


def test_barge_in_over_the_socket(url: str, clips) -> None:
    """Speech appended while the reply's audio streams: the reply ends cancelled with reason
    turn_detected, the client truncates the item to what it played, and the new question is
    answered."""

    async def run() -> list[Any]:
        seen: list[Any] = []
        async with client(url).realtime.connect(model="chorus") as conn:
            await conn.session.update(session=session_config(max_output_tokens=400))
            await until(conn, "session.updated", seen)
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": COUNT}],
                }
            )
            await conn.response.create()
            first = await until(conn, "response.output_audio.delta", seen)
            sender = asyncio.create_task(stream(conn, clips[SECOND].bytes() + silence(1.5)))
            interrupted = await until(conn, "response.done", seen)
            assert interrupted.response.status_details.reason == "turn_detected"
            await conn.conversation.item.truncate(
                item_id=first.item_id, content_index=0, audio_end_ms=300
            )
            await until(conn, "conversation.item.truncated", seen)
            await until(conn, "response.done", seen)
            await sender
        return seen

    seen = asyncio.run(run())
    kinds = types(seen)
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
    dones = [e.response for e in seen if e.type == "response.done"]
    assert dones[0].status == "cancelled" and dones[-1].status == "completed"
    truncated = next(e for e in seen if e.type == "conversation.item.truncated")
    assert truncated.audio_end_ms == 300


# -- raw WebSocket: bad input, auth, limits, replicas ------------------------------------------


ws_connect = functools.partial(realtime_socket, api_key=API_KEY)


def test_bad_input_gets_error_events_and_the_session_stays_open(url: str) -> None:
    bad: list[tuple[str, str]] = [
        ("{not json", "invalid_json"),
        (json.dumps({"type": "no.such.event"}), "unknown_event"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "audio"),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "AA=="}), "audio"),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "audio": {"output": {"voice": "nobody"}}},
                }
            ),
            "voice",
        ),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "audio": {"input": {"format": {"type": "audio/flac"}}},
                    },
                }
            ),
            "format",
        ),
        (json.dumps({"type": "input_audio_buffer.commit"}), "commit"),
        (json.dumps({"type": "response.cancel"}), "cancel"),
        (json.dumps({"type": "conversation.item.delete", "item_id": "item_nope"}), "item"),
    ]
    with ws_connect(url, max_size=2**24) as ws:
        receive_until(ws, "session.created")
        for raw, about in bad:
            ws.send(raw)
            error = receive_until(ws, "error", timeout=30)["error"]
            assert error["message"] and error["type"], (about, error)
        big = base64.b64encode(bytes(4 * 1024 * 1024)).decode()
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
        assert receive_until(ws, "error", timeout=30)["error"]["message"]
        ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": QUESTION}],
                    },
                }
            )
        )
        ws.send(
            json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}})
        )
        assert receive_until(ws, "response.done", timeout=120)["response"]["status"] == "completed"


def test_auth_before_the_upgrade(url: str) -> None:
    """No key: 401 before any WebSocket exists. The header and the browser's subprotocol both
    open a session (the server selects "realtime")."""
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, headers={})
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        ws_connect(url, headers={"Authorization": "Bearer wrong"})
    with ws_connect(
        url, headers={}, subprotocols=["realtime", f"openai-insecure-api-key.{API_KEY}"]
    ) as ws:
        assert ws.subprotocol == "realtime"
        assert receive_until(ws, "session.created")["session"]


def test_replicas_behind_envoy_and_a_stopped_one_closes_its_sessions(replicas) -> None:
    """Sessions through Envoy reach both gateway replicas; stopping one ends its sessions with
    a close frame (1001, going away) within seconds, and the other replica's go on."""
    _, b, envoy = replicas
    url = f"http://{envoy.address}"
    sockets = [ws_connect(url) for _ in range(6)]
    for ws in sockets:
        receive_until(ws, "session.created")
    started = time.monotonic()
    assert b.process is not None
    b.process.send_signal(signal.SIGTERM)
    closed, alive = [], []
    for ws in sockets:
        try:
            ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            receive_until(ws, "input_audio_buffer.cleared", timeout=15)
            alive.append(ws)
        except ConnectionClosed as ended:
            assert ended.rcvd is not None and ended.rcvd.code == 1001, ended
            closed.append(ws)
    # Both replicas held sessions: the stopped one's closed, the other's answered.
    assert closed and alive, (len(closed), len(alive))
    assert time.monotonic() - started < 15
    b.process.wait(30)
    for ws in alive:
        ws.close()


def test_session_limit_per_gateway_is_refused_before_the_upgrade(
    logs: Path, realtime_orchestrator
) -> None:
    """Over CHORUS_GATEWAY_REALTIME_MAX_SESSIONS the handshake is answered 429 (no socket);
    once a session ends its place is free again."""
    env = gateway_env(orchestrator=realtime_orchestrator, CHORUS_GATEWAY_REALTIME_MAX_SESSIONS="1")
    with running_gateway(env, logs, "realtime-limit", ready="/readyz") as gateway:
        with ws_connect(gateway.url, headers={}) as first:
            receive_until(first, "session.created")
            with pytest.raises(InvalidStatus) as refused:
                ws_connect(gateway.url, headers={})
            assert refused.value.response.status_code == 429
        deadline = time.monotonic() + 10
        while True:
            try:
                with ws_connect(gateway.url, headers={}) as again:
                    assert receive_until(again, "session.created")
                break
            except InvalidStatus:
                assert time.monotonic() < deadline, "the ended session's place was not freed"
                time.sleep(0.2)
