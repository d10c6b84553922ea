"""Gateway overhead: the same work through the HTTP gateway vs straight to the gRPC service.

Run by ``make bench``. Two measurements, interleaved (gateway, direct, gateway, ...) so drift on
the machine hits both alike, medians printed side by side with the gateway/direct ratio
(target <= 1.05):

* a text turn's time to first audio byte: POST /api/turns read as Server-Sent Events until the
  first ``audio_chunk`` event, vs the orchestrator's Converse stream until its first
  ``audio_chunk`` event. The model work varies from turn to turn on a small shared machine far
  more than the gateway costs, so the path overhead is printed too: first audio as the client
  saw it minus the orchestrator's own ``first_audio_seconds`` (turn_timings), for each path;
* a transcription: POST /v1/audio/transcriptions (multipart, JSON answer) vs the STT
  ``Transcribe`` call, same clip.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import requests
from chorus.v1 import (
    orchestrator_pb2 as pb,
)
from chorus.v1 import (
    orchestrator_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)

from bench.suite import voice_suite
from bench.timing import alternate
from devtools.processes import ROOT

REPEATS = 7
QUESTION = "What is the capital of France?"
CLIP_TEXT = (
    "Chorus turns speech into text and text into speech. "
    "Each model runs as its own service behind a clean contract."
)
TURN = {"text": QUESTION, "max_tokens": 32, "temperature": 0, "seed": 7}


def interleaved(
    gateway: Callable[[], tuple[float, float]], direct: Callable[[], tuple[float, float]]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Each callable returns (seconds measured, path overhead in seconds); the medians of each
    over REPEATS interleaved runs after a warm-up."""

    def medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    g, d = alternate(gateway, direct, REPEATS)
    return medians(g), medians(d)


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="chorus-bench-gateway-"))

    results: dict[str, dict[str, float]] = {}
    with voice_suite(
        logs,
        {"CHORUS_STT_BEAM_SIZE": "1", "CHORUS_STT_EXTRA_MODELS": "[]"},
        {"CHORUS_LLM_CPU_THREADS": "2"},
    ) as suite:
        stt, tts, orchestrator, gateway = suite.stt, suite.tts, suite.orchestrator, suite.gateway

        converse = orchestrator_pb2_grpc.OrchestratorStub(
            grpc.insecure_channel(orchestrator.address)
        ).Converse
        transcribe = stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(stt.address)).Transcribe
        clip = (
            tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(tts.address))
            .Synthesize(tts_pb2.SynthesizeRequest(text=CLIP_TEXT), timeout=60)
            .audio
        )
        http = requests.Session()

        def turn_http() -> tuple[float, float]:
            t0 = time.perf_counter()
            first = reported = None
            event = b""
            with http.post(
                f"{gateway.url}/api/turns", json=TURN, stream=True, timeout=120
            ) as response:
                response.raise_for_status()
                for line in response.iter_lines(chunk_size=None):
                    if line.startswith(b"event: "):
                        event = line[7:]
                        if first is None and event == b"audio_chunk":
                            first = time.perf_counter() - t0
                    elif line.startswith(b"data: ") and event == b"turn_timings":
                        reported = json.loads(line[6:])["first_audio_seconds"]
            if first is None or reported is None:
                raise RuntimeError("no audio in the turn")
            return first, first - reported

        def turn_grpc() -> tuple[float, float]:
            config = pb.TurnConfig(
                input_mode=pb.INPUT_MODE_TEXT,
                image_mode=pb.IMAGE_MODE_OFF,
                options=pb.TurnOptions(
                    max_tokens=TURN["max_tokens"], temperature=0, seed=TURN["seed"]
                ),
            )
            messages = [
                pb.ConverseRequest(config=config),
                pb.ConverseRequest(text=QUESTION),
                pb.ConverseRequest(end_of_input=pb.EndOfInput()),
            ]
            t0 = time.perf_counter()
            first = reported = None
            for event in converse(iter(messages), timeout=120):
                if first is None and event.HasField("audio_chunk"):
                    first = time.perf_counter() - t0
                if event.HasField("turn_timings"):
                    reported = event.turn_timings.first_audio_seconds
            if first is None or reported is None:
                raise RuntimeError("no audio in the turn")
            return first, first - reported

        def stt_http() -> tuple[float, float]:
            t0 = time.perf_counter()
            response = http.post(
                f"{gateway.url}/v1/audio/transcriptions",
                files={"file": ("clip.wav", clip, "audio/wav")},
                data={"model": "whisper-1"},
                timeout=120,
            )
            response.raise_for_status()
            assert response.json()["text"]
            return time.perf_counter() - t0, 0.0

        def stt_grpc() -> tuple[float, float]:
            t0 = time.perf_counter()
            assert transcribe(stt_pb2.TranscribeRequest(audio=clip), timeout=120).text
            return time.perf_counter() - t0, 0.0

        for name, pair in (
            ("turn: time to first audio byte", (turn_http, turn_grpc)),
            ("transcription (whisper-base)", (stt_http, stt_grpc)),
        ):
            (via_gateway, gateway_path), (direct, direct_path) = interleaved(*pair)
            results[name] = {
                "gateway_s": via_gateway,
                "grpc_s": direct,
                "ratio": via_gateway / direct,
                "gateway_path_overhead_s": gateway_path,
                "grpc_path_overhead_s": direct_path,
            }

    print(f"\nmedian of {REPEATS} interleaved runs each (logs: {logs})\n")
    print(f"{'benchmark':<34}{'HTTP gateway':>14}{'gRPC direct':>13}{'ratio':>8}")
    for name, r in results.items():
        print(f"{name:<34}{r['gateway_s']:>13.3f}s{r['grpc_s']:>12.3f}s{r['ratio']:>8.3f}")
    turn = results["turn: time to first audio byte"]
    g_ms, d_ms = turn["gateway_path_overhead_s"] * 1000, turn["grpc_path_overhead_s"] * 1000
    print(
        "\nturn path overhead (first audio seen by the client minus the orchestrator's own"
        f" first_audio_seconds):\n  HTTP/SSE via the gateway {g_ms:.1f} ms, gRPC direct"
        f" {d_ms:.1f} ms: the gateway adds {g_ms - d_ms:.1f} ms"
    )
    print("\ntarget: gateway/direct ratio <= 1.05")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
