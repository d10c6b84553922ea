"""Scale-out through Envoy: throughput with 1 vs 2 STT replicas, and Envoy's added latency.

Run by ``make bench``. Two STT replicas (whisper-tiny.en, one CPU thread each, so two replicas
can use two cores) behind real Envoy on loopback; a bounded burst of concurrent Transcribe calls
goes through an Envoy that knows one replica, then through one that knows both, in one run.
Prints requests per second, the ratio, the machine's CPU utilisation during each burst, and the
median latency of sequential calls through Envoy vs straight to the replica (target <= 1.05).
"""

from __future__ import annotations

import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from chorus.v1 import stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc

from devtools.envoy import running_envoy
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME

REQUESTS = 24
CONCURRENCY = 4
SEQUENTIAL = 10
STT_ENV = {
    "CHORUS_STT_MODEL": "whisper-tiny.en",
    "CHORUS_STT_EXTRA_MODELS": "[]",
    "CHORUS_STT_CPU_THREADS": "1",
    "CHORUS_STT_MAX_QUEUE": "64",
}


def burst(address: str, audio: bytes) -> tuple[float, float]:
    """(requests per second, CPU utilisation %) for a bounded concurrent burst."""
    stub = stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(address))
    psutil.cpu_percent(interval=None)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        texts = list(
            pool.map(
                lambda _: stub.Transcribe(stt_pb2.TranscribeRequest(audio=audio), timeout=300).text,
                range(REQUESTS),
            )
        )
    elapsed = time.perf_counter() - started
    assert all(texts), "every call must succeed"
    return REQUESTS / elapsed, psutil.cpu_percent(interval=None)


def sequential_median(address: str, audio: bytes) -> float:
    stub = stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(address))
    times = []
    for _ in range(SEQUENTIAL):
        started = time.perf_counter()
        stub.Transcribe(stt_pb2.TranscribeRequest(audio=audio), timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    logs = Path(tempfile.mkdtemp(prefix="chorus-scale-"))
    replicas = [
        ServiceProcess(
            BY_NAME["stt"], free_port(), free_port(), env=STT_ENV, log_path=logs / f"stt-{i}.log"
        )
        for i in range(2)
    ]
    tts = ServiceProcess(BY_NAME["tts"], free_port(), free_port(), log_path=logs / "tts.log")
    for proc in [*replicas, tts]:
        proc.start()
    try:
        for proc in [*replicas, tts]:
            proc.wait_ready()
        audio = (
            tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(tts.address))
            .Synthesize(
                tts_pb2.SynthesizeRequest(
                    text="Scaling out means running more replicas of the busy service."
                ),
                timeout=60,
            )
            .audio
        )
        with (
            running_envoy({"stt": replicas[:1]}, logs, "one") as one,
            running_envoy({"stt": replicas}, logs, "two") as two,
        ):
            for address in (one.address, two.address):  # warm both paths
                burst(address, audio)
            rps_one, cpu_one = burst(one.address, audio)
            rps_two, cpu_two = burst(two.address, audio)
            direct = sequential_median(replicas[0].address, audio)
            proxied = sequential_median(one.address, audio)
    finally:
        for proc in [*replicas, tts]:
            proc.stop()
    print(
        f"\n{REQUESTS} Transcribe calls, {CONCURRENCY} at a time, through Envoy "
        "(whisper-tiny.en, 1 thread per replica)\n"
    )
    print(f"{'replicas':<10}{'req/s':>8}{'CPU %':>8}")
    print(f"{1:<10}{rps_one:>8.2f}{cpu_one:>8.0f}")
    print(f"{2:<10}{rps_two:>8.2f}{cpu_two:>8.0f}")
    print(
        f"throughput ratio 2/1 replicas: {rps_two / rps_one:.2f} "
        f"(bounded by {psutil.cpu_count()} cores)"
    )
    print(
        f"\nsequential latency, median of {SEQUENTIAL}: direct {direct:.3f} s, "
        f"through Envoy {proxied:.3f} s, "
        f"ratio {proxied / direct:.3f} (target <= 1.05)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
