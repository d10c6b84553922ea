"""Turn benchmarks: time to first audio vs complete reply audio, and the orchestrator's overhead.

Run by ``make bench``. Starts the whole suite on loopback. For a text turn and a spoken turn it
prints the median time to the first audio chunk and to the last one (target: first <= 0.5 x
complete), then compares a whole orchestrated turn with the sum of its stages called directly on
the model services, one after another, with identical requests (target <= 1.05).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
import wave

import grpc
import numpy as np
from chorus.v1 import (
    common_pb2,
    llm_pb2,
    llm_pb2_grpc,
    orchestrator_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from chorus.v1 import (
    orchestrator_pb2 as pb,
)

from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME, SERVICES
from services.common.text import pop_complete_sentences
from tests.support.speech import read_wav, wav_bytes

REPEATS = 5
QUESTION = "What is the capital of France? Tell me a little about it."
# Greedy and unseeded, as the browser asks: the LLM reuses the cached prompt prefix (a seeded
# call evaluates its prompt afresh for reproducible sampling).
OPTIONS = pb.TurnOptions(max_tokens=64, temperature=0)


def converse(
    stub: orchestrator_pb2_grpc.OrchestratorStub, config: pb.TurnConfig, payload: pb.ConverseRequest
) -> tuple[float, float, float]:
    """(first audio, last audio, end of turn) in seconds from the start of the call."""
    started = time.perf_counter()
    first = last = 0.0
    requests = [
        pb.ConverseRequest(config=config),
        payload,
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]
    for event in stub.Converse(iter(requests), timeout=300):
        if event.HasField("audio_chunk"):
            last = time.perf_counter() - started
            first = first or last
    return first, last, time.perf_counter() - started


def converse_live(
    stub: orchestrator_pb2_grpc.OrchestratorStub, wav: bytes
) -> tuple[float, float, float]:
    """A spoken turn as a microphone sends it: raw PCM in 100 ms chunks at real-time pace.
    (first audio, last audio, end of turn) in seconds from the end of the user's speech."""
    with wave.open(io.BytesIO(wav)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    chunk = rate // 10 * 2
    ended = [0.0]
    config = pb.TurnConfig(
        input_mode=pb.INPUT_MODE_SPEECH,
        input_audio_format=common_pb2.RawAudioFormat(
            encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
        options=OPTIONS,
    )

    def requests():  # noqa: ANN202
        yield pb.ConverseRequest(config=config)
        for start in range(0, len(pcm), chunk):
            time.sleep(0.1)
            yield pb.ConverseRequest(audio=pcm[start : start + chunk])
        ended[0] = time.perf_counter()
        yield pb.ConverseRequest(end_of_input=pb.EndOfInput())

    first = last = 0.0
    for event in stub.Converse(requests(), timeout=300):
        if event.HasField("audio_chunk"):
            last = time.perf_counter() - ended[0]
            first = first or last
    return first, last, time.perf_counter() - ended[0]


def direct_stages(stt, llm, tts, wav: bytes | None, text: str) -> float:
    """The same turn's work, each stage called directly and in sequence."""
    started = time.perf_counter()
    if wav is not None:
        text = stt.Transcribe(stt_pb2.TranscribeRequest(audio=wav), timeout=300).text.strip()
    request = llm_pb2.GenerateTextRequest(
        messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text)],
        max_tokens=OPTIONS.max_tokens,
        temperature=OPTIONS.temperature,
    )
    reply = next(r.result.text for r in llm.Generate(request, timeout=300) if r.HasField("result"))
    sentences, rest = pop_complete_sentences(reply + "\n")
    for sentence in [*sentences, rest.strip()]:
        if any(c.isalnum() for c in sentence):
            tts.Synthesize(tts_pb2.SynthesizeRequest(text=sentence), timeout=300)
    return time.perf_counter() - started


def main() -> int:
    procs = [
        ServiceProcess(spec, free_port(), free_port())
        for spec in SERVICES
        if spec.name in ("stt", "tts", "llm", "image")
    ]
    by_name = {p.spec.name: p for p in procs}
    for proc in procs:
        proc.start()
    orch = None
    try:
        for proc in procs:
            proc.wait_ready(600)
        env = {
            f"CHORUS_ORCH_{n.upper()}_ADDRESS": by_name[n].address
            for n in ("stt", "tts", "llm", "image")
        }
        spec = BY_NAME["orchestrator"]
        orch = ServiceProcess(spec, free_port(), free_port(), env=env).start()
        orch.wait_ready()
        stub = orchestrator_pb2_grpc.OrchestratorStub(grpc.insecure_channel(orch.address))
        stt = stt_pb2_grpc.SpeechToTextStub(grpc.insecure_channel(by_name["stt"].address))
        llm = llm_pb2_grpc.TextGenerationStub(grpc.insecure_channel(by_name["llm"].address))
        tts = tts_pb2_grpc.TextToSpeechStub(grpc.insecure_channel(by_name["tts"].address))
        wav = tts.Synthesize(tts_pb2.SynthesizeRequest(text=QUESTION), timeout=60).audio

        cases = {
            "text turn": (
                pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT, options=OPTIONS),
                pb.ConverseRequest(text=QUESTION),
                None,
            ),
            "spoken turn": (
                pb.TurnConfig(input_mode=pb.INPUT_MODE_SPEECH, options=OPTIONS),
                pb.ConverseRequest(audio=wav),
                wav,
            ),
        }
        print(f"\nmedian of {REPEATS} runs each, interleaved; seconds\n")
        print(
            f"{'turn':<14}{'1st audio':>10}{'all audio':>10}{'ratio':>7}"
            f"{'turn':>8}{'stages':>8}{'ratio':>7}"
        )
        for name, (config, payload, audio) in cases.items():
            converse(stub, config, payload)  # warm-up
            firsts, lasts, totals, directs = [], [], [], []
            for _ in range(REPEATS):
                first, last, total = converse(stub, config, payload)
                firsts.append(first)
                lasts.append(last)
                totals.append(total)
                directs.append(direct_stages(stt, llm, tts, audio, QUESTION))
            f, a = statistics.median(firsts), statistics.median(lasts)
            t, d = statistics.median(totals), statistics.median(directs)
            print(f"{name:<14}{f:>10.3f}{a:>10.3f}{f / a:>7.2f}{t:>8.3f}{d:>8.3f}{t / d:>7.2f}")
        # Live speech: timed from the end of the user's speech, as a listener hears it.
        samples, rate = read_wav(wav)
        live = wav_bytes(np.concatenate([samples, np.zeros(rate, np.int16)]), rate)  # + 1 s pause
        converse_live(stub, live)  # warm-up
        runs = [converse_live(stub, live) for _ in range(REPEATS)]
        f = statistics.median(r[0] for r in runs)
        a = statistics.median(r[1] for r in runs)
        print(f"{'live speech':<14}{f:>10.3f}{a:>10.3f}{f / a:>7.2f}{'(from end of speech)':>23}")
        print(
            "\ntargets: first audio / all audio <= 0.5; "
            "orchestrated turn / sum of direct stages <= 1.05"
        )
    finally:
        if orch is not None:
            orch.stop()
        for proc in procs:
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
