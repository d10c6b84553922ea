"""/v1/realtime over a real socket, in-process: the gateway app on werkzeug's server (the same
flask-sock route gunicorn serves), a scripted orchestrator on an in-process gRPC server, and a
``websockets`` client. What is tested is the socket's plumbing: what is refused before the
upgrade, the subprotocol, close frames, a call that fails, a client that leaves, one that stops
reading, and closing every session when the worker stops. (The events themselves:
test_realtime_events.py.)"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from chorus.v1 import common_pb2, llm_pb2, orchestrator_pb2_grpc
from chorus.v1 import orchestrator_pb2 as pb
from flask import Flask
from grpc_status import rpc_status
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from werkzeug.serving import make_server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from gateway.app import create_app
from gateway.capacity import capacity_of
from gateway.openai import realtime
from gateway.settings import GatewaySettings
from services.common.errors import UpstreamError, to_rpc_status

KEY = "sk-realtime-test-3f9a"


class Orchestrator(orchestrator_pb2_grpc.OrchestratorServicer):
    """A scripted ``Session``: a config is answered with SessionUpdated, a response request with
    a short text reply (or ``flood`` audio deltas); every request is recorded."""

    def __init__(self) -> None:
        self.requests: list[pb.SessionRequest] = []
        self.ended = threading.Event()
        self.refuse: grpc.StatusCode | None = None
        self.flood = 0

    def Session(self, request_iterator: Iterator[pb.SessionRequest], context: Any) -> Any:
        context.add_callback(self.ended.set)
        if self.refuse is not None:
            busy = self.refuse == grpc.StatusCode.RESOURCE_EXHAUSTED  # as Overloaded sends it
            refusal = UpstreamError(
                self.refuse,
                "too many sessions open on this replica",
                retry_after=1.0 if busy else None,
            )
            context.abort_with_status(rpc_status.to_status(to_rpc_status(refusal)))
        for request in request_iterator:
            self.requests.append(request)
            kind = request.WhichOneof("request")
            if kind == "config":
                updated = pb.SessionUpdated(session_id="sess_1", config=request.config)
                yield pb.SessionEvent(session_updated=updated)
            elif kind == "create_response":
                yield from self._reply()

    def _reply(self) -> Iterator[pb.SessionEvent]:
        rid, iid = "resp_1", "item_1"
        added = pb.ConversationItem(
            id=iid,
            role=llm_pb2.CHAT_ROLE_ASSISTANT,
            status=pb.ITEM_STATUS_IN_PROGRESS,
            audio=self.flood > 0,
        )
        yield pb.SessionEvent(response_created=pb.ResponseCreated(response_id=rid, item_id=iid))
        yield pb.SessionEvent(item_added=pb.ItemAdded(item=added))
        for _ in range(self.flood):
            delta = pb.ResponseAudioDelta(
                response_id=rid,
                item_id=iid,
                audio=bytes(48_000),
                encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE,
            )
            yield pb.SessionEvent(audio_delta=delta)
        yield pb.SessionEvent(
            text_delta=pb.ResponseTextDelta(response_id=rid, item_id=iid, text="Hi")
        )
        done = pb.ConversationItem(
            id=iid, role=llm_pb2.CHAT_ROLE_ASSISTANT, text="Hi", status=pb.ITEM_STATUS_COMPLETED
        )
        yield pb.SessionEvent(item_done=pb.ItemDone(item=done))
        yield pb.SessionEvent(
            response_done=pb.ResponseDone(
                response_id=rid, status=pb.RESPONSE_STATUS_COMPLETED, item=done
            )
        )


@pytest.fixture
def orchestrator() -> Iterator[tuple[Orchestrator, int]]:
    fake = Orchestrator()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, port
    server.stop(0)


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> realtime.SessionRegistry:
    """A fresh registry per test (closing all sessions leaves one refusing new ones)."""
    fresh = realtime.SessionRegistry()
    monkeypatch.setattr(realtime, "SESSIONS", fresh)
    return fresh


class Gateway:
    """The app on werkzeug's threaded server, on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"ws://127.0.0.1:{self.server.server_port}/v1/realtime?model=gpt-realtime"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def connect(self, **options: Any) -> ClientConnection:
        return connect(self.url, open_timeout=10, max_size=None, **options)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.app.extensions["chorus"].channels.close()


def gateway(port: int, **settings: Any) -> Gateway:
    options = {
        "orchestrator_address": f"127.0.0.1:{port}",
        "max_attempts": 1,
        "heartbeat_seconds": 30,
        **settings,
    }
    return Gateway(create_app(GatewaySettings(**options)))


@pytest.fixture
def served(orchestrator: tuple[Orchestrator, int]) -> Iterator[tuple[Gateway, Orchestrator]]:
    fake, port = orchestrator
    gw = gateway(port)
    yield gw, fake
    gw.close()


def receive(ws: ClientConnection, until: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``until``."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != until:
        events.append(json.loads(ws.recv(timeout=timeout)))
    return events


def wait_for(condition: Any, timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_session_over_the_socket(served: tuple[Gateway, Orchestrator]) -> None:
    gw, fake = served
    with gw.connect(subprotocols=["realtime"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        [created] = receive(ws, "session.created")
        assert created["session"]["model"] == "gpt-realtime"
        ws.send("{not json")
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["error"]["code"]) == ("error", "invalid_json")
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        }
        ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        ws.send(json.dumps({"type": "response.create"}))
        events = receive(ws, "response.done")
        assert events[0]["type"] == "response.created"
        assert events[-1]["response"]["status"] == "completed"
    # Closing the socket cancels the call.
    assert fake.ended.wait(10)
    kinds = [r.WhichOneof("request") for r in fake.requests]
    assert kinds == ["config", "create_item", "create_response"]
    assert wait_for(lambda: capacity_of(gw.app).open("socket") == 0)


def test_refusals_before_the_upgrade(orchestrator: tuple[Orchestrator, int]) -> None:
    fake, port = orchestrator
    gw = gateway(port, api_key=KEY, realtime_max_sessions=1)
    try:
        for options in (
            {},
            {"additional_headers": {"Authorization": "Bearer wrong"}},
            {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]},
        ):
            with pytest.raises(InvalidStatus) as refused:
                gw.connect(**options)
            response = refused.value.response
            assert response.status_code == 401
            assert json.loads(response.body)["error"]["code"] == "invalid_api_key"
            assert KEY.encode() not in response.body
        # A browser's form: the key as a subprotocol, and "realtime" selected.
        browser = ["realtime", f"openai-insecure-api-key.{KEY}"]
        with gw.connect(subprotocols=browser) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            receive(ws, "session.created")
            with pytest.raises(InvalidStatus) as refused:  # over the limit of 1
                gw.connect(additional_headers={"Authorization": f"Bearer {KEY}"})
            assert refused.value.response.status_code == 429
            assert json.loads(refused.value.response.body)["error"]["code"] == "too_many_sessions"
        assert wait_for(lambda: capacity_of(gw.app).open("socket") == 0)
        with gw.connect(additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            receive(ws, "session.created")
    finally:
        gw.close()
    client = create_app(GatewaySettings()).test_client()
    plain = client.get("/v1/realtime")
    assert plain.status_code == 426 and plain.headers["Upgrade"] == "websocket"
    assert plain.get_json()["error"]["code"] == "upgrade_required"
    broken = client.get("/v1/realtime", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert broken.status_code == 400 and broken.get_json()["error"]["code"] == "invalid_handshake"


def test_no_session_when_the_limit_is_zero_or_the_threads_are_few() -> None:
    assert GatewaySettings(threads=4, realtime_max_sessions=8).realtime_session_limit == 3
    assert GatewaySettings(threads=1).realtime_session_limit == 0
    assert GatewaySettings(realtime_max_sessions=0).realtime_session_limit == 0


@pytest.mark.parametrize(
    ("refuse", "close"),
    [(grpc.StatusCode.RESOURCE_EXHAUSTED, 1013), (grpc.StatusCode.INTERNAL, 1011)],
)
def test_a_failed_call_is_an_error_event_then_a_close_frame(
    served: tuple[Gateway, Orchestrator], refuse: grpc.StatusCode, close: int
) -> None:
    gw, fake = served
    fake.refuse = refuse
    with gw.connect() as ws:
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error"
        assert error["error"]["code"] == refuse.name.lower()
        assert "too many sessions" in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == close


def test_an_unreachable_orchestrator(orchestrator: tuple[Orchestrator, int]) -> None:
    gw = gateway(9)  # the discard port: nothing listens
    try:
        with gw.connect() as ws:
            error = json.loads(ws.recv(timeout=20))
            assert (error["error"]["type"], error["error"]["code"]) == (
                "server_error",
                "unavailable",
            )
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        gw.close()


def test_stopping_closes_every_session_with_going_away(
    served: tuple[Gateway, Orchestrator],
) -> None:
    gw, fake = served
    with gw.connect() as first, gw.connect() as second:
        receive(first, "session.created")
        receive(second, "session.created")
        assert realtime.SESSIONS.close_all(1001, "the gateway is shutting down", wait=5) == 2
        for ws in (first, second):
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    with pytest.raises(InvalidStatus) as refused:
        gw.connect()
    assert refused.value.response.status_code == 503


def test_an_event_over_the_size_limit_closes_with_1009(
    orchestrator: tuple[Orchestrator, int],
) -> None:
    fake, port = orchestrator
    gw = gateway(port, realtime_max_message_bytes=64 * 1024, realtime_max_append_bytes=1024)
    try:
        with gw.connect() as ws:
            receive(ws, "session.created")
            # Under the message limit but over the append limit: an error, the session goes on.
            audio = base64.b64encode(bytes(4096)).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
            error = json.loads(ws.recv(timeout=10))
            assert error["error"]["code"] == "audio_too_large"
            ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 100_000}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert fake.ended.wait(10)
    finally:
        gw.close()


def test_a_client_that_stops_reading_ends_its_session(
    orchestrator: tuple[Orchestrator, int],
) -> None:
    """The socket's sends time out (SO_SNDTIMEO), the call is cancelled, the thread is freed."""
    fake, port = orchestrator
    fake.flood = 400  # 400 x 64 kB of base64 audio: far more than the sockets' buffers
    gw = gateway(port, realtime_send_timeout=0.5)
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", gw.server.server_port))
        client = WSConnection(ConnectionType.CLIENT)
        target = "/v1/realtime?model=gpt-realtime"
        raw.sendall(client.send(Request(host="127.0.0.1", target=target)))
        accepted = False
        while not accepted:
            client.receive_data(raw.recv(4096))
            accepted = any(isinstance(e, AcceptConnection) for e in client.events())
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        for event in (
            {"type": "conversation.item.create", "item": item},
            {"type": "response.create"},
        ):
            raw.sendall(client.send(TextMessage(data=json.dumps(event))))
        # ... and never read again.
        assert fake.ended.wait(30), "the call was not cancelled"
        assert wait_for(lambda: capacity_of(gw.app).open("socket") == 0, 30)
        raw.close()
    finally:
        gw.close()


def test_no_key_is_ever_logged(
    orchestrator: tuple[Orchestrator, int], caplog: pytest.LogCaptureFixture
) -> None:
    fake, port = orchestrator
    gw = gateway(port, api_key=KEY)
    try:
        with caplog.at_level("DEBUG"):
            with gw.connect(subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:  # type: ignore[list-item]
                receive(ws, "session.created")
            with pytest.raises(InvalidStatus):
                gw.connect(subprotocols=["realtime", "openai-insecure-api-key.nope"])  # type: ignore[list-item]
        ours = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets")]
        assert ours and not [m for m in ours if KEY in m or "nope" in m]
    finally:
        gw.close()
