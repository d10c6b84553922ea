"""``/v1/realtime``: OpenAI's Realtime API (a WebSocket) over the orchestrator's ``Session`` call.

One socket is one ``Session`` call, and four threads carry it:

- the request's own (a gunicorn gthread worker thread) iterates the call's events, turns each
  into server events (``gateway.realtime_events``) and sends them;
- a reader thread receives client events, answers a bad one with an ``error`` event itself, and
  queues the requests of the others for the call (bounded: a client that sends faster than the
  orchestrator reads waits, and its socket is not read meanwhile);
- gRPC's thread sends those requests; simple-websocket's thread reads the socket.

Every send goes through one lock, and each is a whole ``sendall`` (``_WholeFrames``), so frames
of the two senders never interleave; ``SO_SNDTIMEO`` bounds a send to a client that stopped
reading, and a send that times out ends the session. Closing the socket cancels the call, and
the orchestrator cancels every downstream call with it. When the call ends first, the client gets
an ``error`` event (what failed) and a close frame: 1013 "try again later" when the orchestrator
is busy or unreachable, 1000 when the session reached its time limit, 1011 for other failures;
1001 (no error event) when the gateway is stopping, 1009 for an event over the size limit.

What is refused before the upgrade is refused in the gateway's HTTP error shape: a wrong key
(401; a browser offers it as the subprotocol ``openai-insecure-api-key.<key>``), a key over its
rate (429), a page of another origin (403), an unknown model (404), too many open sessions or a
worker whose threads are all taken but one (429, with ``Retry-After``), not a WebSocket
handshake (426, or 400 when one is malformed).
"""

from __future__ import annotations

import contextvars
import logging
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any, cast

import grpc
from flask import Blueprint, Flask, Response, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask_sock import Sock  # type: ignore[import-untyped]  # ships no types
from simple_websocket import ConnectionClosed, Server  # type: ignore[import-untyped]

from gateway.auth import subprotocols
from gateway.capacity import capacity_of
from gateway.channels import Stubs
from gateway.context import settings_of, state_of, stubs_of, tenant_metadata
from gateway.errors import ApiError, from_rpc_error
from gateway.headers import check_socket_origin
from gateway.metrics import metrics_of
from gateway.openai.common import DEFAULT_MODEL, realtime_model
from gateway.openapi import documented
from gateway.realtime_events import (
    Dialect,
    EventError,
    RealtimeTranslator,
    dumps,
    error_event,
)
from gateway.realtime_schemas import RealtimeQuery
from gateway.settings import GatewaySettings
from services.common.clients import call_metadata

__all__ = ["SESSIONS", "RealtimeSocket", "SessionRegistry", "blueprint"]

log = logging.getLogger(__name__)

blueprint = Blueprint("realtime", __name__)
sock = Sock()

SUBPROTOCOL = "realtime"
"""The subprotocol the server selects when it is offered (browsers drop a connection whose
offered subprotocols all go unanswered)."""
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
CLOSE_WAIT_SECONDS = 2.0
"""After its close frame, how long the server waits for the client's before dropping the
connection."""
LINGER_SECONDS = 1.0
"""How long a closing connection's remaining input is read and dropped (see ``_WholeFrames``)."""
QUEUED_REQUESTS = 64
"""Requests waiting for the call; then the reader stops reading the socket until there is room."""

_CLOSE_CODES = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: 1013,
    grpc.StatusCode.UNAVAILABLE: 1013,
    grpc.StatusCode.DEADLINE_EXCEEDED: 1000,
}
"""A failed call -> the close code (others: 1011, internal error)."""
_GOING_AWAY = (1001, "the gateway is shutting down")


class SessionRegistry:
    """This process's open realtime sockets, closed together when the worker stops. (How many
    are admitted against the limits is the app's ``Capacity``, ``gateway/capacity.py``.)"""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._open: set[RealtimeSocket] = set()
        self.stopping = False

    def add(self, session: RealtimeSocket) -> bool:
        """Register an open socket; False when the worker is stopping already."""
        with self._lock:
            if self.stopping:
                return False
            self._open.add(session)
            return True

    def remove(self, session: RealtimeSocket) -> None:
        with self._lock:
            self._open.discard(session)
            self._lock.notify_all()

    def close_all(self, code: int, reason: str, wait: float = 0.0) -> int:
        """End every open session with a close frame ``code``, admit no more; with ``wait``,
        wait that long for them to be gone. Returns how many were open."""
        with self._lock:
            self.stopping = True
            sessions = list(self._open)
        for session in sessions:
            session.shut(code, reason)
        if wait > 0:
            with self._lock:
                self._lock.wait_for(lambda: not self._open, timeout=wait)
        return len(sessions)


SESSIONS = SessionRegistry()
"""The process-wide registry (``gateway.__main__`` closes it on SIGTERM)."""


class _Requests:
    """The call's request stream: the reader puts, gRPC's sending thread takes. Bounded, so a
    client that sends faster than the orchestrator reads waits instead of filling memory."""

    def __init__(self, limit: int) -> None:
        self._items: deque[Any] = deque()
        self._ready = threading.Condition()
        self._limit = limit
        self._closed = False

    def put(self, item: Any) -> bool:
        """Queue ``item``; False once the stream is closed."""
        with self._ready:
            self._ready.wait_for(lambda: self._closed or len(self._items) < self._limit)
            if self._closed:
                return False
            self._items.append(item)
            self._ready.notify_all()
            return True

    def close(self) -> None:
        """End the stream; what is still queued is dropped."""
        with self._ready:
            self._closed = True
            self._items.clear()
            self._ready.notify_all()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._closed or bool(self._items))
                if self._closed:
                    return
                item = self._items.popleft()
                self._ready.notify_all()
            yield item


class _WholeFrames:
    """The connection's socket with every send whole and one at a time.

    simple-websocket sends from two threads (the session's events; its reader's pongs and close
    replies) with a plain ``send``, which may write part of a frame when the send times out;
    here each is a ``sendall`` under one lock, so frames never interleave and a timed-out send
    raises. Everything else goes to the socket itself.
    """

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._raw.sendall(data)
        return len(data)

    def close(self) -> None:
        """Close after the client has had its close frame: end the output, read what is still
        coming until the client's end (at most ``LINGER_SECONDS``), then close. Closing with
        unread input makes the kernel answer with a reset, and a client can lose the close frame
        sent just before it (simple-websocket closes at once after its 1009 while the rest of
        the oversized message is still arriving)."""
        try:
            self._raw.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self._raw], [], [], left)
                if readable and not self._raw.recv(65536):
                    break
        except (OSError, ValueError):  # already closed (gunicorn closes it too)
            pass
        self._raw.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class RealtimeSocket:
    """One accepted socket and its ``Session`` call."""

    def __init__(
        self, ws: Server, translator: RealtimeTranslator, stubs: Stubs, settings: GatewaySettings
    ) -> None:
        self._ws = ws
        self._translator = translator
        self._stubs = stubs
        self._settings = settings
        self._tenant = tenant_metadata()  # read here, in the upgrade's request
        self._send_lock = threading.Lock()
        self._requests = _Requests(QUEUED_REQUESTS)
        self._call: Any = None
        self._open = True
        """Frames may still be sent (no close frame sent, no send failed)."""
        self._client_left = False
        self._shut: tuple[int, str] | None = None
        self._done = threading.Event()
        self._raw: socket.socket = ws.sock

    def run(self) -> None:
        """Serve the socket until the call or the socket ends."""
        self._raw.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self._settings.realtime_send_timeout)
        )
        self._ws.sock = _WholeFrames(self._raw)
        if not SESSIONS.add(self):
            self._end(_GOING_AWAY)
            return
        reader = None
        close: tuple[int, str] | None = None
        try:
            self._requests.put(self._translator.start())
            self._call = self._stubs.orchestrator.Session(
                iter(self._requests),
                timeout=self._settings.realtime_session_seconds,
                metadata=call_metadata(self._tenant),
            )
            if self._shut is not None:
                self._call.cancel()
            reader = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._read,),
                name="realtime-reader",
                daemon=True,
            )
            reader.start()
            close = self._pump()
        except Exception:
            log.exception("realtime session failed")
            self._send(error_event("internal error in the gateway", kind="server_error"))
            close = (1011, "internal error")
        finally:
            self._end(close)
            if reader is not None:
                reader.join(timeout=CLOSE_WAIT_SECONDS)
            SESSIONS.remove(self)

    def shut(self, code: int, reason: str) -> None:
        """End the session from outside (the worker is stopping): close frame ``code``."""
        self._shut = (code, reason)
        self._cancel()

    def _pump(self) -> tuple[int, str] | None:
        """Send the call's events until it ends; the close frame to send then (None: none)."""
        try:
            for event in self._call:
                for shown in self._translator.server_event(event):
                    if not self._send(shown):
                        return None
        except grpc.RpcError as error:
            if self._shut is not None:
                return self._shut
            if self._client_left or not self._open:
                return None
            return self._failed(error)
        if self._shut is not None:
            return self._shut
        return 1000, "the session ended"

    def _failed(self, error: grpc.RpcError) -> tuple[int, str]:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        api = from_rpc_error(error, "orchestrator")
        log.info("realtime session ended by the call: %s %s", code.name, api.message)
        if not self._translator.fatal:  # a fatal error event already said why
            self._send(
                error_event(
                    api.message,
                    kind="server_error" if api.status >= 500 else "invalid_request_error",
                    code=api.code,
                )
            )
        return _CLOSE_CODES.get(code, 1011), f"session ended: {code.name.lower()}"

    def _read(self) -> None:
        """The reader thread: client events -> requests, or an error event."""
        try:
            while not self._done.is_set():
                try:
                    message = self._ws.receive(timeout=0.5)
                except ConnectionClosed:
                    break
                if message is None:
                    continue
                try:
                    requests = self._translator.client_event(message)
                except EventError as error:
                    self._send(
                        error_event(
                            error.message,
                            kind=error.kind,
                            code=error.code,
                            param=error.param,
                            event_id=error.event_id,
                        )
                    )
                    continue
                except Exception:  # a bug here: tell the client, keep the session
                    log.exception("a realtime client event could not be handled")
                    self._send(error_event("internal error in the gateway", kind="server_error"))
                    continue
                for request_ in requests:
                    if not self._requests.put(request_):
                        return
        finally:
            if not self._done.is_set():
                self._client_left = True
                log.info("realtime client closed the socket; cancelling its session")
                self._cancel()

    def _send(self, event: dict[str, Any]) -> bool:
        """Send one server event; False (and the session cancelled) when it cannot be sent."""
        text = dumps(event)
        with self._send_lock:
            if not self._open:
                return False
            try:
                self._ws.send(text)
                return True
            except (OSError, ConnectionClosed) as error:
                self._open = False
                reason = "stopped reading" if isinstance(error, OSError) else "left"
                log.info("realtime client %s (%r); ending its session", reason, error)
        self._cancel()
        return False

    def _cancel(self) -> None:
        self._requests.close()
        call = self._call
        if call is not None:
            call.cancel()

    def _end(self, close: tuple[int, str] | None) -> None:
        """Stop the call, send the close frame, and let the connection go."""
        self._done.set()
        self._cancel()
        closing = False
        with self._send_lock:
            if close is not None and self._open:
                try:
                    self._ws.close(close[0], close[1][:120])
                    closing = True
                except (OSError, ConnectionClosed):
                    pass
            self._open = False
        # The client answers the close frame; one that does not (or that stopped reading, or
        # left) is disconnected.
        self._ws.thread.join(timeout=CLOSE_WAIT_SECONDS if closing else 0.1)
        if self._ws.thread.is_alive():
            try:
                self._raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log.info("realtime session closed%s", f" ({close[0]}: {close[1]})" if close else "")


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


@blueprint.record_once
def _options(state: BlueprintSetupState) -> None:
    """flask-sock reads its ``Server`` options from the app's config: the gateway's limits."""
    settings = state_of(cast(Flask, state.app)).settings
    state.app.config.setdefault(
        "SOCK_SERVER_OPTIONS",
        {
            "subprotocols": [SUBPROTOCOL],
            "max_message_size": settings.realtime_max_message_bytes,
            "ping_interval": settings.heartbeat_seconds,
        },
    )


@blueprint.before_request
def _admit() -> None:
    """Before the upgrade: a well-formed handshake from an allowed origin, a known model, and
    a free place (after the key and the rate limit, which the app checks first)."""
    rule = request.url_rule
    if rule is None or not getattr(rule, "websocket", False):
        return
    headers = request.headers
    if not headers.get("Sec-WebSocket-Key") or headers.get("Sec-WebSocket-Version") != "13":
        raise ApiError(
            400,
            "not a WebSocket handshake: Sec-WebSocket-Key and Sec-WebSocket-Version: 13 needed",
            "invalid_handshake",
        )
    settings = settings_of()
    check_socket_origin(request, settings)
    realtime_model(request.args.get("model") or DEFAULT_MODEL)
    if SESSIONS.stopping:
        raise ApiError(503, "the gateway is shutting down", "unavailable")
    capacity = capacity_of()
    if not capacity.take("socket"):
        limit = capacity.limit("socket")
        if capacity.open("socket") >= limit:
            raise _busy(f"too many realtime sessions open on this gateway process (limit {limit})")
        raise _busy("every thread of this gateway process but one holds a stream or a socket")
    g.realtime_admitted = True


def _busy(why: str) -> ApiError:
    """429 ``too_many_sessions``, counted, with the gateway's ``Retry-After`` for a full worker."""
    metrics_of().rejected.labels("too_many_sessions").inc()
    return ApiError(
        429, f"{why}; retry later", "too_many_sessions", retry_after=settings_of().busy_retry_after
    )


@blueprint.teardown_request
def _release(_: BaseException | None) -> None:
    if g.pop("realtime_admitted", False):
        capacity_of().release("socket")


@blueprint.get("/realtime")
@documented(
    "createRealtimeSession",
    "realtime",
    (None, "Switching Protocols: the WebSocket of the session"),
    status=101,
    errors=(403, 404, 426, 429, 503),
    query=RealtimeQuery,
)
def realtime_handshake() -> Response:
    """Open a Realtime session (WebSocket)

    OpenAI's Realtime API: connect with a WebSocket to ``/v1/realtime?model=...`` and exchange
    its JSON events (GA names; with the header ``OpenAI-Beta: realtime=v1``, the beta names).
    The key goes in ``Authorization: Bearer <key>`` or, from a browser, as the subprotocol
    ``openai-insecure-api-key.<key>`` beside ``realtime``. A request without the upgrade is
    answered 426; one from a browser page of another origin 403 (unless
    ``CHORUS_GATEWAY_CORS_ORIGINS`` lists it); an unknown ``model`` 404 (``chorus`` and OpenAI's
    realtime models, dated or not, are known). Chorus's images arrive as
    ``chorus.response.image.progress`` and ``chorus.response.image.done`` events;
    ``session.chorus`` holds its own settings (``image_mode``, ``llm_model``).
    """
    error = ApiError(
        426, "this endpoint is a WebSocket: connect with an upgrade", "upgrade_required"
    )
    response = jsonify(error.body())
    response.status_code = 426
    response.headers["Upgrade"] = "websocket"
    return response


def _model_problem(name: str) -> str | None:
    """Why ``session.update``'s ``model`` is refused (an ``error`` event), or None."""
    try:
        realtime_model(name)
    except ApiError as error:
        return error.message
    return None


def realtime(ws: Server) -> None:
    """The socket, once upgraded (flask-sock has made ``ws``, the handshake is answered)."""
    settings = settings_of()
    offered = subprotocols(request.headers)
    beta = BETA_SUBPROTOCOL in offered or "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    translator = RealtimeTranslator(
        dialect=Dialect(beta=beta),
        model=request.args.get("model") or DEFAULT_MODEL,
        transcription=request.args.get("intent") == "transcription",
        model_id=lambda name: settings.model_aliases.get(name, name),
        voice_id=lambda name: settings.voice_aliases.get(name, name),
        max_append_bytes=settings.realtime_max_append_bytes,
        model_check=_model_problem,
    )
    log.info("realtime session opened (%s protocol)", "beta" if beta else "GA")
    RealtimeSocket(ws, translator, stubs_of(), settings).run()


sock.route("/realtime", bp=blueprint)(realtime)  # websocket=True: only upgrades reach it
