"""Stand-ins for gRPC stubs, for the in-process tests of tests/fast/ (no server, no model).

A fake method answers what the test gave it (or raises it) and records each call. A failure is
built from the domain error a service would raise (``services.common.errors``) and carries the
trailing metadata the service's interceptor would send with it (the ``google.rpc.Status`` with
its ``BadRequest``), so the code under test decodes it exactly as it decodes a real one.

Two flavours: the gateway's synchronous stubs (``Unary``, ``Streaming``) and the orchestrator's
grpc.aio stubs (``AioUnary``, ``AioStreaming``; ``stage_fakes`` and ``fake_downstream`` make the
four model services of a turn from them).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from chorus.v1 import image_pb2, llm_pb2, stt_pb2, tts_pb2
from grpc_status import rpc_status

from gateway.channels import Stubs
from services.common.errors import ChorusError, to_rpc_status
from services.orchestrator.downstream import Downstream

__all__ = [
    "PNG",
    "REPLY",
    "AioStreaming",
    "AioUnary",
    "FakeChannels",
    "FakeRpcError",
    "Recorded",
    "Streaming",
    "Unary",
    "aio_error",
    "fake_downstream",
    "fake_stubs",
    "reply_events",
    "stage_fakes",
]

Metadata = tuple[tuple[str, str | bytes], ...]


def _trailing(error: ChorusError) -> Metadata:
    """What the service's interceptor sends with ``error`` (``abort_with_status``)."""
    return tuple(rpc_status.to_status(to_rpc_status(error)).trailing_metadata)


class FakeRpcError(grpc.RpcError, grpc.Call):
    """A failed synchronous call, as grpc raises it (an ``RpcError`` that is a ``Call``)."""

    def __init__(self, error: ChorusError, trailing: Metadata | None = None) -> None:
        super().__init__(error.message)
        self._code = error.code
        self._details = error.message
        self._trailing = _trailing(error) if trailing is None else trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def initial_metadata(self) -> Metadata:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def aio_error(error: ChorusError) -> grpc.aio.AioRpcError:
    """A failed grpc.aio call (the class grpc.aio raises), carrying ``error`` as its status."""
    return grpc.aio.AioRpcError(
        error.code, grpc.aio.Metadata(), grpc.aio.Metadata(*_trailing(error)), error.message
    )


@dataclass
class Recorded:
    """One call a fake method received."""

    request: Any
    """The request message (for a client-streaming method, the list of them)."""
    timeout: float | None
    metadata: Metadata


class _Method:
    def __init__(self) -> None:
        self.calls: list[Recorded] = []

    def _record(self, request: Any, timeout: float | None, metadata: Any) -> None:
        if isinstance(request, Iterator):
            request = list(request)
        self.calls.append(Recorded(request, timeout, tuple(metadata or ())))


class Unary(_Method):
    """A unary method that answers ``reply``, or raises it when it is an exception."""

    def __init__(self, reply: Any) -> None:
        super().__init__()
        self.reply = reply

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> Any:
        self._record(request, timeout, metadata)
        return self._answer()

    def _answer(self) -> Any:
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


class StreamCall:
    """A synchronous streaming call: its items in order (an exception is raised where it
    stands); with ``hold`` it then blocks, like a turn still working, until cancelled."""

    def __init__(self, items: Iterable[Any], hold: bool) -> None:
        self._items = list(items)
        self._hold = hold
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            if self.cancelled.is_set():
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        if self._hold:
            self.cancelled.wait(timeout=30)
        if self.cancelled.is_set():
            raise FakeRpcError(_Cancelled("cancelled by the client"))

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class _Cancelled(ChorusError):
    code = grpc.StatusCode.CANCELLED


class Streaming(_Method):
    """A server- or bidirectional-streaming method; each call streams ``items``."""

    def __init__(self, items: Iterable[Any] = (), *, hold: bool = False) -> None:
        super().__init__()
        self.items = list(items)
        self.hold = hold
        self.started: list[StreamCall] = []

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> StreamCall:
        self._record(request, timeout, metadata)
        call = StreamCall(self.items, self.hold)
        self.started.append(call)
        return call


def fake_stubs(**services: Any) -> Stubs:
    """The gateway's ``Stubs``, each service an object whose attributes are fake methods
    (``orchestrator=SimpleNamespace(Converse=Streaming(...))``); a service not given fails the
    test if it is called."""
    names = ("orchestrator", "conversations", "orchestrator_health", "stt", "tts", "llm", "image")
    unknown = set(services) - set(names)
    assert not unknown, f"no such service: {unknown}"
    return Stubs(**{name: services.get(name, _Uncalled(name)) for name in names})


class _Uncalled:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        raise AssertionError(f"the test did not expect a call to {self._name}.{method}")


@dataclass
class FakeChannels:
    """``gateway.channels.Channels`` with fake stubs instead of channels."""

    fakes: Stubs
    closed: bool = field(default=False)

    def stubs(self) -> Stubs:
        return self.fakes

    def close(self) -> None:
        self.closed = True


# -- grpc.aio (the orchestrator's downstream calls) ----------------------------------------------


class AioUnary(Unary):
    """A grpc.aio unary method: awaiting the call answers ``reply`` or raises it."""

    async def _answer(self) -> Any:
        await asyncio.sleep(0)
        return super()._answer()


class AioStreaming(_Method):
    """A grpc.aio server-streaming method: ``items`` in order (an exception raised where it
    stands), then, with ``hold``, waits until cancelled; ``cancelled`` counts the calls that
    were."""

    def __init__(self, items: Iterable[Any] = (), *, hold: bool = False) -> None:
        super().__init__()
        self.items = list(items)
        self.hold = hold
        self.cancelled = 0

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, **_: Any
    ) -> AsyncIterator[Any]:
        if not isinstance(request, AsyncIterator):
            self._record(request, timeout, metadata)
        return self._stream()

    async def _stream(self) -> AsyncIterator[Any]:
        try:
            for item in self.items:
                await asyncio.sleep(0)
                if isinstance(item, BaseException):
                    raise item
                yield item
            if self.hold:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


# -- the model services of a turn -----------------------------------------------------------------

REPLY = ("Hello there. ", "A cat ", "on a mat.")
"""The reply's deltas: two sentences, the second split across deltas."""
PNG = b"\x89PNG fake"


def reply_events(*texts: str) -> list[llm_pb2.GenerateTextResponse]:
    """A text generation stream: one delta per text, then the result."""
    deltas = [llm_pb2.GenerateTextResponse(delta=llm_pb2.TextDelta(text=t)) for t in texts]
    result = llm_pb2.TextGenerationResult(
        text="".join(texts), finish_reason=llm_pb2.FINISH_REASON_STOP
    )
    return [*deltas, llm_pb2.GenerateTextResponse(result=result)]


def stage_fakes(**override: Any) -> dict[str, Any]:
    """One fake per stage (``transcribe``, ``generate``, ``speak``, ``draw``), each answering,
    unless overridden."""
    chunk = tts_pb2.SynthesisChunk(audio=b"RIFF....", sample_rate_hz=22050, duration_seconds=0.5)
    image = [
        image_pb2.GenerateImageResponse(progress=image_pb2.ImageProgress(step=1, total_steps=2)),
        image_pb2.GenerateImageResponse(image=image_pb2.GeneratedImage(png=PNG, width=64, seed=3)),
    ]
    methods = {
        "transcribe": AioUnary(stt_pb2.TranscribeResponse(text=" draw a cat ", language="en")),
        "generate": AioStreaming(reply_events(*REPLY)),
        "speak": AioStreaming([chunk]),
        "draw": AioStreaming(image),
    }
    return {**methods, **override}


class _Stub:
    def __init__(self, **methods: Any) -> None:
        self.__dict__.update(methods)


def fake_downstream(methods: dict[str, Any]) -> Downstream:
    """The orchestrator's ``Downstream`` over the fakes of ``stage_fakes``."""
    return Downstream(
        stt=_Stub(Transcribe=methods["transcribe"]),
        tts=_Stub(StreamingSynthesize=methods["speak"]),
        llm=_Stub(Generate=methods["generate"]),
        image=_Stub(Generate=methods["draw"]),
        channels=[],
    )
