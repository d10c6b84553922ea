"""A test client of the orchestrator's ``Session`` RPC: requests sent when the test likes, events
read on a thread and waited for by kind."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import orchestrator_pb2_grpc

from services.common.audio import resample_pcm16
from tests.support.speech import espeak, read_wav, speech_bounds

__all__ = ["SessionClient", "Spoken", "spoken"]

RATE = 24000


class Spoken:
    """A spoken sentence as 24 kHz PCM16, and where its speech lies in it (ms)."""

    def __init__(self, text: str, pcm: np.ndarray) -> None:
        self.text = text
        self.pcm = pcm
        start, end = speech_bounds(pcm.astype(np.float32) / 32768, RATE)
        self.speech_start_ms = start * 1000 / RATE
        self.speech_end_ms = end * 1000 / RATE

    def bytes(self) -> bytes:
        return self.pcm.astype("<i2").tobytes()


def spoken(text: str, tmp: Path, voice: str = "en-us") -> Spoken:
    """``text`` spoken by espeak-ng (the same samples every run), at 24 kHz."""
    samples, rate = read_wav(espeak(text, voice, tmp / f"{abs(hash(text))}.wav"))
    pcm = samples if samples.dtype == np.int16 else (samples * 32767).astype(np.int16)
    return Spoken(text, resample_pcm16(pcm, rate, RATE))


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


class SessionClient:
    """One Session call: ``send`` requests, ``wait_for`` events; ``events`` holds all so far."""

    def __init__(
        self,
        address: str,
        config: pb.SessionConfig | None,
        timeout: float = 300,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Open the call; ``config`` is its first request (None: none, to test that)."""
        self._requests: queue.Queue[pb.SessionRequest | None] = queue.Queue()
        if config is not None:
            self._requests.put(pb.SessionRequest(config=config))
        self._channel = grpc.insecure_channel(address)
        stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        self.call = stub.Session(self._iterate(), timeout=timeout, metadata=tuple(metadata))
        self.events: list[pb.SessionEvent] = []
        self.arrivals: list[float] = []
        """When each of ``events`` arrived (time.monotonic)."""
        self.error: grpc.RpcError | None = None
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _iterate(self) -> Iterator[pb.SessionRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for event in self.call:
                with self._changed:
                    self.arrivals.append(time.monotonic())
                    self.events.append(event)
                    self._changed.notify_all()
        except grpc.RpcError as error:
            self.error = error
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def send(self, **request: object) -> None:
        self._requests.put(pb.SessionRequest(**request))  # type: ignore[arg-type]

    def stream(self, audio: bytes, pace: float = 1.0, chunk_ms: int = 40) -> None:
        """Append ``audio`` in ``chunk_ms`` pieces, ``pace`` times faster than real time."""
        step = RATE * 2 * chunk_ms // 1000
        started = time.monotonic()
        for n, offset in enumerate(range(0, len(audio), step)):
            self.send(audio=audio[offset : offset + step])
            wait = started + (n + 1) * chunk_ms / 1000 / pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def wait_for(
        self, kind: str, timeout: float = 120, after: int = 0, **match: object
    ) -> pb.SessionEvent:
        """The first event of ``kind`` at index ``after`` or later whose fields equal ``match``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if event.WhichOneof("event") == kind and all(
                        getattr(getattr(event, kind), k) == v for k, v in match.items()
                    ):
                        return event
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    raise AssertionError(
                        f"no {kind} {match or ''} event; got {self.kinds()} ({self.error})"
                    )
                self._changed.wait(left)

    def kinds(self) -> list[str]:
        return [str(e.WhichOneof("event")) for e in self.events]

    def of(self, kind: str) -> list[object]:
        return [getattr(e, kind) for e in list(self.events) if e.WhichOneof("event") == kind]

    def close(self) -> None:
        """End the input and wait for the call to end."""
        self._requests.put(None)
        self._reader.join(120)

    def cancel(self) -> None:
        self.call.cancel()
        self._reader.join(30)
        self._channel.close()
