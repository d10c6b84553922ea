"""Simulated users: each a thread that loops (think time, then one request chosen by weight)
until told to stop, recording every request as a ``Record``.

Kinds: a text turn (POST /api/turns, JSON, read as Server-Sent Events, in the user's stored
conversation), a spoken turn (the same with a WAV upload), a transcription and a synthesis
(/v1/audio/*, the official ``openai`` client), a live session (/v1/realtime over a WebSocket:
a spoken question streamed at real-time pace with server VAD, then quiet as a microphone sends
it until the spoken response is done, close) and
now and then an image (/v1/images/generations). Requests are small (16 tokens, one sentence,
64x64 images in 2 steps) so two cores hold the load.

A request is *lost* when its user got no answer: a hang past its deadline, a connection reset
without a status, a stream or socket cut without its end (no ``done`` event, no close frame).
A status (an HTTP error, an SSE error event, a WebSocket close code with its error event) is an
error, not a loss."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from bench.soak_report import Record

__all__ = ["WEIGHTS", "Clip", "Load"]

WEIGHTS = {
    "text_turn": 30,
    "spoken_turn": 12,
    "transcription": 20,
    "speech": 20,
    "live": 12,
    "image": 6,
}
QUESTIONS = [
    "What is the capital of France?",
    "What color is the sky?",
    "How many legs does a spider have?",
    "What do bees make?",
    "Where do penguins live?",
]
SENTENCES = ["Hello there, this is a short test.", "The weather is lovely today."]
MAX_TOKENS = 16
DEADLINES = {
    "text_turn": 120.0,
    "spoken_turn": 120.0,
    "transcription": 60.0,
    "speech": 60.0,
    "live": 90.0,
    "image": 90.0,
}
RECONNECT_FOR = 45.0
"""How long a live client keeps reconnecting after its session was closed on it."""
ERROR_WAIT = 10.0
"""After an error event, how long a live client still waits for a response before it takes
the error as the answer to its question."""
RATE = 24000
CHUNK_MS = 40


@dataclass(frozen=True)
class Clip:
    """A spoken question: a WAV file for uploads, 24 kHz PCM16 for live sessions."""

    text: str
    wav: bytes
    pcm24k: bytes


@dataclass
class Load:
    url: str
    clips: list[Clip]
    clock: Callable[[], float]
    """Seconds since the load began."""
    conversations: bool = True
    """Text turns name each user's stored conversation (its items and audio are stored)."""
    think: tuple[float, float] = (1.0, 3.0)
    records: list[Record] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _active: dict[str, int] = field(default_factory=dict)

    def start(self, users: int) -> None:
        for n in range(users):
            thread = threading.Thread(target=self._user, args=(n,), name=f"user-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()
            time.sleep(0.5)  # staggered, not all at once

    def join(self, timeout: float) -> list[str]:
        """Stop and wait; the names of users still inside a request after ``timeout``."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self._threads if t.is_alive()]

    def add(self, record: Record) -> None:
        with self._lock:
            self.records.append(record)

    def active(self, kind: str) -> int:
        """Requests of ``kind`` under way now."""
        with self._lock:
            return self._active.get(kind, 0)

    def _count(self, kind: str, step: int) -> None:
        with self._lock:
            self._active[kind] = self._active.get(kind, 0) + step

    def since(self, start: float) -> list[Record]:
        with self._lock:
            return [r for r in self.records if r.start >= start]

    # --- one user -------------------------------------------------------------------------

    def _user(self, n: int) -> None:
        rng = random.Random(n)
        http = requests.Session()
        client = openai.OpenAI(base_url=f"{self.url}/v1", api_key="soak", max_retries=0)
        conversation = self._conversation(http) if self.conversations else ""
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while not self.stop.wait(rng.uniform(*self.think)):
            kind = rng.choices(kinds, weights)[0]
            clip = rng.choice(self.clips)
            start = self.clock()
            t0 = time.monotonic()
            self._count(kind, 1)
            try:
                if kind == "text_turn":
                    body = {"text": rng.choice(QUESTIONS), "max_tokens": MAX_TOKENS}
                    if conversation:
                        body["conversation_id"] = conversation
                    record = self._turn(http, kind, start, t0, json=body)
                elif kind == "spoken_turn":
                    files = {"audio": ("question.wav", clip.wav, "audio/wav")}
                    form = {"options": json.dumps({"max_tokens": MAX_TOKENS})}
                    record = self._turn(http, kind, start, t0, files=files, data=form)
                elif kind == "live":
                    for record in self._live(clip, start, t0):
                        self.add(record)
                    continue  # (finally counts it done)
                else:
                    record = self._openai(client, kind, clip, rng, start, t0)
            except Exception as exc:  # noqa: BLE001 (a client bug must not end the user)
                record = Record(
                    kind, start, time.monotonic() - t0, "client_exception", False, True, repr(exc)
                )
            finally:
                self._count(kind, -1)
            self.add(record)

    def _conversation(self, http: requests.Session) -> str:
        try:
            made = http.post(f"{self.url}/v1/conversations", json={"title": "soak"}, timeout=30)
            return str(made.json()["id"]) if made.status_code == 200 else ""
        except (requests.RequestException, ValueError, KeyError):
            return ""

    def _turn(
        self, http: requests.Session, kind: str, start: float, t0: float, **body: Any
    ) -> Record:
        first: float | None = None
        errors: list[str] = []
        warnings: list[str] = []
        ended = False
        try:
            with http.post(
                f"{self.url}/api/turns", stream=True, timeout=(10, DEADLINES[kind]), **body
            ) as response:
                if response.status_code != 200:
                    return Record(
                        kind,
                        start,
                        time.monotonic() - t0,
                        f"{response.status_code} {_error_code(response)}".strip(),
                        False,
                    )
                event, data = "message", ""
                for line in response.iter_lines(decode_unicode=True):
                    if time.monotonic() - t0 > DEADLINES[kind]:
                        return Record(kind, start, time.monotonic() - t0, "hang", False, True)
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and data:
                        if first is None and event == "audio_chunk":
                            first = time.monotonic() - t0
                        if event == "error":
                            err = json.loads(data)
                            what = f"{err.get('stage', '?')}/{err.get('code', '?')}"
                            (errors if err.get("fatal") else warnings).append(what)
                        elif event == "done":
                            ended = True
                        event, data = "message", ""
        except requests.Timeout:
            return Record(kind, start, time.monotonic() - t0, "hang", False, True, "read timeout")
        except requests.ConnectionError as exc:
            return Record(kind, start, time.monotonic() - t0, "reset", False, True, repr(exc)[:200])
        seconds = time.monotonic() - t0
        if not ended:
            return Record(kind, start, seconds, "cut", False, True, "no done event", first)
        if errors:
            return Record(kind, start, seconds, f"200 error:{errors[0]}", False, False, "", first)
        status = f"200 warn:{warnings[0]}" if warnings else "200"
        return Record(kind, start, seconds, status, True, False, ",".join(warnings), first)

    def _openai(
        self,
        client: openai.OpenAI,
        kind: str,
        clip: Clip,
        rng: random.Random,
        start: float,
        t0: float,
    ) -> Record:
        timeout = DEADLINES[kind]
        try:
            if kind == "transcription":
                text = client.audio.transcriptions.create(
                    model="whisper-1", file=("clip.wav", clip.wav), timeout=timeout
                ).text
                ok = bool(text.strip())
            elif kind == "speech":
                audio = client.audio.speech.create(
                    model="tts-1",
                    voice="alloy",
                    input=rng.choice(SENTENCES),
                    response_format="wav",
                    timeout=timeout,
                ).content
                ok = audio[:4] == b"RIFF" and len(audio) > 1000
            else:
                images = client.images.generate(
                    prompt="a red lighthouse",
                    size="64x64",
                    n=1,
                    timeout=timeout,
                    extra_body={"steps": 2},
                ).data
                ok = bool(images and images[0].b64_json)
        except openai.APITimeoutError:
            return Record(kind, start, time.monotonic() - t0, "hang", False, True)
        except openai.APIConnectionError as exc:
            return Record(kind, start, time.monotonic() - t0, "reset", False, True, repr(exc)[:200])
        except openai.APIStatusError as exc:
            code = ""
            if isinstance(exc.body, dict):
                code = str(exc.body.get("code") or exc.body.get("error", {}).get("code") or "")
            return Record(
                kind, start, time.monotonic() - t0, f"{exc.status_code} {code}".strip(), False
            )
        seconds = time.monotonic() - t0
        return Record(kind, start, seconds, "200" if ok else "200 empty", ok, False)

    # --- live sessions ----------------------------------------------------------------------

    def _live(self, clip: Clip, start: float, t0: float) -> list[Record]:
        """One session; when the server closes it on the client (a restart), reconnect and
        ask again until it is answered or RECONNECT_FOR has passed: every try is a record."""
        records = [self._session(clip, start, t0)]
        first_failure = time.monotonic()
        while (
            not records[-1].ok
            and not records[-1].lost
            and records[-1].status.startswith("close")
            and time.monotonic() - first_failure < RECONNECT_FOR
            and not self.stop.is_set()
        ):
            time.sleep(1.0)
            t1 = time.monotonic()
            again = self._session(clip, self.clock(), t1)
            again.detail = f"reconnect {t1 - first_failure:.1f} s after close; {again.detail}"
            records.append(again)
        return records

    def _session(self, clip: Clip, start: float, t0: float) -> Record:
        ws_url = self.url.replace("http://", "ws://") + "/v1/realtime?model=chorus"
        deadline = t0 + DEADLINES["live"]
        try:
            ws = connect(ws_url, open_timeout=10, max_size=2**24, close_timeout=5)
        except (OSError, TimeoutError) as exc:
            return Record("live", start, time.monotonic() - t0, "reset", False, True, repr(exc))
        except Exception as exc:  # noqa: BLE001 (an HTTP refusal of the upgrade)
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status is None:
                return Record("live", start, time.monotonic() - t0, "reset", False, True, repr(exc))
            return Record("live", start, time.monotonic() - t0, f"{status} upgrade", False)
        events: list[dict[str, Any]] = []
        error: list[str] = []
        sent_at = [0.0]
        first: list[float] = []

        def until(kind: str, by: float = deadline, stop_on_error: bool = False) -> bool:
            while time.monotonic() < by:
                try:
                    message = ws.recv(timeout=max(0.01, by - time.monotonic()))
                except TimeoutError:
                    return False
                event = json.loads(message)
                events.append(event)
                if event["type"] == "error":
                    error.append(str(event.get("error", {}).get("code") or "error"))
                    if stop_on_error:
                        return False
                if event["type"] == "response.output_audio.delta" and not first:
                    first.append(time.monotonic())
                if event["type"] == kind:
                    return True
            return False

        try:
            ws.send(json.dumps({"type": "session.update", "session": _session_config()}))
            if not until("session.updated"):
                ws.close()
                return Record("live", start, time.monotonic() - t0, "hang", False, True)
            answered = threading.Event()
            sender = threading.Thread(
                target=_stream, args=(ws, clip.pcm24k, sent_at, answered), daemon=True
            )
            sender.start()
            done = until("response.done", stop_on_error=True)
            if not done and error:
                # An error event (the question's transcription failed, say): a response may
                # still come; if none does soon, the question was answered with that error.
                done = until("response.done", by=min(deadline, time.monotonic() + ERROR_WAIT))
            answered.set()
            sender.join(10)
            ws.close()
            end = time.monotonic()
            if not done and error:
                return Record("live", start, end - t0, f"error:{error[0]}", False)
            if not done:
                seen = [e["type"] for e in events[-4:]]
                what = f"no response.done; errors {error}; last events {seen}"
                return Record("live", start, end - t0, "hang", False, True, what)
            response = events[-1].get("response", {})
            if response.get("status") != "completed":
                return Record(
                    "live", start, end - t0, f"done {response.get('status')}", False, False
                )
            answered = end - (sent_at[0] or t0)
            heard = first[0] - (sent_at[0] or t0) if first else None
            return Record("live", start, answered, "close 1000", True, False, "", heard)
        except ConnectionClosed as exc:
            seconds = time.monotonic() - t0
            if exc.rcvd is None:
                return Record("live", start, seconds, "cut", False, True, "no close frame")
            what = f"close {exc.rcvd.code}" + (f" error:{error[-1]}" if error else "")
            return Record("live", start, seconds, what, False, False, exc.rcvd.reason)


def _session_config() -> dict[str, Any]:
    return {
        "type": "realtime",
        "output_modalities": ["audio"],
        "max_output_tokens": MAX_TOKENS,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": RATE},
                "transcription": {"model": "whisper-tiny.en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            },
            "output": {"format": {"type": "audio/pcm", "rate": RATE}},
        },
    }


def _stream(
    ws: ClientConnection, pcm: bytes, sent_at: list[float], answered: threading.Event
) -> None:
    """0.3 s of quiet, the question, then quiet until the answer came, at real-time pace, as a
    microphone sends it."""
    quiet = bytes(RATE * 2 * 3 // 10)
    step = RATE * 2 * CHUNK_MS // 1000
    spoken = quiet + pcm
    began = time.monotonic()
    n = 0
    try:
        while not answered.is_set():
            offset = n * step
            piece = spoken[offset : offset + step] if offset < len(spoken) else bytes(step)
            chunk = base64.b64encode(piece).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            if offset <= len(spoken) < offset + step:
                sent_at[0] = time.monotonic()
            n += 1
            wait = began + n * CHUNK_MS / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
    except ConnectionClosed:
        pass


def _error_code(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("code") or "") if isinstance(error, dict) else ""
