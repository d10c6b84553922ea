"""Voice-to-voice latency through ``/v1/realtime``, against today's file-upload turn.

Run by ``make bench``. Starts the suite on loopback (STT, TTS, LLM, orchestrator, gateway) with
the offline defaults. For each live transcription model (whisper-base, whisper-tiny.en) one
Realtime session with server VAD hears ten different spoken questions (espeak-ng, the same
samples every run), streamed at real-time pace in 20 ms chunks. Voice-to-voice latency is the
time from sending the chunk that holds the user's last voiced sample (known from the clip) to
the first ``response.output_audio.delta``, and it is split by the events in between:

- VAD wait: to ``input_audio_buffer.speech_stopped`` (the pause the VAD needs to be sure);
- final decode: to ``conversation.item.input_audio_transcription.completed``;
- first token: to the first ``response.output_audio_transcript.delta``;
- first audio: to the first ``response.output_audio.delta``.

The same questions go through ``POST /api/turns`` as recorded files, timed from the upload (the
moment the recording ends) to the first ``audio_chunk`` event. Barge-in latency is the time from
the onset of new speech sent during a long spoken reply to the last audio delta of the
interrupted response. Targets on a 2-core CPU: voice-to-voice p50 <= 0.8 s, barge-in <= 0.3 s.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from websockets.sync.client import ClientConnection, connect

from bench.suite import voice_suite
from tests.support.gateway import sse_events
from tests.support.session import RATE, Spoken, spoken
from tests.support.speech import wav_bytes

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet?",
    "How far away is the moon?",
    "What do bees make?",
    "Why is the ocean salty?",
    "What is two plus two?",
    "Where do penguins live?",
]
LIVE_MODELS = ("whisper-base", "whisper-tiny.en")
CHUNK_MS = 20
BARGE_INS = 5


@dataclass
class Socket:
    """A Realtime WebSocket whose events are read on a thread, each stamped on arrival."""

    ws: ClientConnection
    events: list[tuple[float, dict]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> Socket:
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for message in self.ws:
            event = json.loads(message)
            with self.changed:
                self.events.append((time.perf_counter(), event))
                self.changed.notify_all()

    def send(self, **event: object) -> None:
        self.ws.send(json.dumps(event))

    def append(self, pcm: bytes) -> None:
        self.send(type="input_audio_buffer.append", audio=base64.b64encode(pcm).decode())

    def first(self, kind: str, after: int, timeout: float = 120) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for stamp, event in self.events[after:]:
                    if event["type"] == kind:
                        return stamp, event
                if not self.changed.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"no {kind} event")

    def last(self, kind: str, after: int, before: int) -> float:
        return max(stamp for stamp, e in self.events[after:before] if e["type"] == kind)


def stream(sock: Socket, pcm: bytes, marks: dict[int, str]) -> dict[str, float]:
    """Send ``pcm`` at real-time pace; return when each sample offset in ``marks`` was sent."""
    step = RATE * 2 * CHUNK_MS // 1000
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for n, offset in enumerate(range(0, len(pcm), step)):
        sock.append(pcm[offset : offset + step])
        now = time.perf_counter()
        for sample, name in marks.items():
            if name not in sent and offset // 2 <= sample < (offset + step) // 2:
                sent[name] = now
        wait = started + (n + 1) * CHUNK_MS / 1000 - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    return sent


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def live_turns(url: str, model: str, clips: list[Spoken]) -> list[dict[str, float]]:
    """One session, one turn per clip: the split of each turn's voice-to-voice latency."""
    sock = Socket(connect(f"{url}/v1/realtime?model=chorus", max_size=2**24)).start()
    sock.send(
        type="session.update",
        session={
            "type": "realtime",
            "output_modalities": ["audio"],
            "max_output_tokens": 32,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": RATE},
                    "transcription": {"model": model},
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {"format": {"type": "audio/pcm", "rate": RATE}},
            },
        },
    )
    sock.first("session.updated", 0)
    turns = []
    for clip in clips:
        mark = len(sock.events)
        lead = silence(0.3)
        end_sample = len(lead) // 2 + int(clip.speech_end_ms * RATE / 1000)
        sent = stream(sock, lead + clip.bytes() + silence(0.2), {end_sample: "spoken"})
        # Keep the line open with silence until the reply is heard, as a microphone would.
        while not any(e["type"] == "response.output_audio.delta" for _, e in sock.events[mark:]):
            stream(sock, silence(CHUNK_MS / 1000), {})
        spoken_at = sent["spoken"]
        stopped, _ = sock.first("input_audio_buffer.speech_stopped", mark)
        final, _ = sock.first("conversation.item.input_audio_transcription.completed", mark)
        token, _ = sock.first("response.output_audio_transcript.delta", mark)
        audio, _ = sock.first("response.output_audio.delta", mark)
        sock.first("response.done", mark)
        turns.append(
            {
                "vad_wait": stopped - spoken_at,
                "final_decode": final - stopped,
                "first_token": token - final,
                "first_audio": audio - token,
                "voice_to_voice": audio - spoken_at,
            }
        )
    sock.ws.close()
    return turns


def barge_ins(url: str, clip: Spoken) -> list[tuple[float, float]]:
    """Onset of new speech during a spoken reply -> the interrupted reply's last audio delta,
    and -> its response.done (every stage of it stopped)."""
    sock = Socket(connect(f"{url}/v1/realtime?model=chorus", max_size=2**24)).start()
    sock.send(
        type="session.update",
        session={
            "type": "realtime",
            "max_output_tokens": 800,
            "audio": {"input": {"transcription": {"model": "whisper-tiny.en"}}},
        },
    )
    sock.first("session.updated", 0)
    results = []
    for _ in range(BARGE_INS):
        mark = len(sock.events)
        sock.send(
            type="conversation.item.create",
            item={
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Count from one to five hundred: 1, 2, 3, 4,"}
                ],
            },
        )
        sock.send(type="response.create")
        sock.first("response.output_audio.delta", mark)
        onset = int(clip.speech_start_ms * RATE / 1000)
        sent = stream(sock, clip.bytes() + silence(0.8), {onset: "onset"})
        _, done = sock.first("response.done", mark)
        status = done["response"]["status_details"] or {}
        end = next(i for i, (_, e) in enumerate(sock.events) if e is done)
        sock.first("response.done", end + 1)  # the answer to the interrupting question
        if status.get("reason") != "turn_detected":
            print(f"barge-in run skipped: the reply ended {done['response']['status']} first")
            continue
        stopped = sock.events[end][0]
        results.append(
            (
                sock.last("response.output_audio.delta", mark, end) - sent["onset"],
                stopped - sent["onset"],
            )
        )
    sock.ws.close()
    return results


def file_turns(url: str, clips: list[Spoken]) -> list[float]:
    """The same questions as recorded files through POST /api/turns: upload -> first audio."""
    http = requests.Session()
    seconds = []
    for clip in clips:
        wav = wav_bytes(clip.pcm, RATE)
        started = time.perf_counter()
        with http.post(
            f"{url}/api/turns",
            files={"audio": ("question.wav", wav, "audio/wav")},
            data={"options": json.dumps({"max_tokens": 32})},
            stream=True,
            timeout=120,
        ) as response:
            response.raise_for_status()
            for kind, _ in sse_events(response):
                if kind == "audio_chunk":
                    seconds.append(time.perf_counter() - started)
                    break
    return seconds


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="chorus-bench-realtime-"))
    clips = [spoken(q, logs) for q in QUESTIONS]

    with voice_suite(logs, {}, {}) as suite:
        url = suite.gateway.url
        ws_url = url.replace("http://", "ws://")
        live = {model: live_turns(ws_url, model, clips) for model in LIVE_MODELS}
        files = file_turns(url, clips)
        print(json.dumps({"live": live, "files": files}))
        barge = barge_ins(ws_url, clips[0])

    print(f"\nvoice-to-voice over {len(clips)} questions (logs: {logs})\n")
    print(f"{'path':<40}{'p50':>8}{'p95':>8}")
    for model, turns in live.items():
        v2v = [t["voice_to_voice"] for t in turns]
        print(f"{'/v1/realtime, live ' + model:<40}{pct(v2v, 50):>7.2f}s{pct(v2v, 95):>7.2f}s")
    print(f"{'POST /api/turns (file upload)':<40}{pct(files, 50):>7.2f}s{pct(files, 95):>7.2f}s")
    for model, turns in live.items():
        print(f"\nsplit for {model} (median s):")
        for part in ("vad_wait", "final_decode", "first_token", "first_audio"):
            print(f"  {part:<14}{statistics.median(t[part] for t in turns):>7.3f}")
    last_audio, done = [b[0] for b in barge], [b[1] for b in barge]
    print(f"\nbarge-in over {len(barge)} runs (from the onset of the new speech), target <= 0.3 s:")
    print(f"  to the interrupted reply's last audio delta  p50 {pct(last_audio, 50):.3f}s")
    print(f"  to its response.done (cancelled)             p50 {pct(done, 50):.3f}s")
    best = min(pct([t["voice_to_voice"] for t in turns], 50) for turns in live.values())
    print(f"\nvoice-to-voice p50 (best live model) {best:.2f}s   target <= 0.8 s")
    print(f"ratio realtime/file-upload p50: {best / pct(files, 50):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
