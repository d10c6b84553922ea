"""Stored conversations benchmark: what storing a turn costs a text turn, in one run.

Run by ``make bench``. Starts the model services (faster-whisper, Piper, Gemma 3 270M; no image
service) and one orchestrator on loopback, its stores in a temporary folder (artifacts in a
local folder, conversations in SQLite; the sweeper off). The same text turn runs without a
conversation and with one, alternately (A-B pairs, then B-A pairs, so that what one turn leaves
running on a 2-core machine does not always land on the same side), 2 x ``REPEATS`` times each.
With one, the turn reads its (empty) history, puts every reply chunk and the whole reply WAV in
the artifact store, appends its two items and sends ``TurnStored``. Each stored turn gets a new
conversation (made before its clock starts) so its prompt is the same as the unstored turn's: a
growing history would time the LLM, not the storage.

Prints the median time to the first audio chunk and to the end of the turn (the stream's last
event: for a stored turn, after ``TurnStored``) side by side; their ratio, the median of the
back-to-back pairs' ratios (target <= 1.03), overall and per half; and the replies each path
spoke (the same text; Piper's audio lengths vary by a few hundredths of a second).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
from chorus.v1 import orchestrator_pb2 as pb
from chorus.v1 import orchestrator_pb2_grpc

from bench.timing import alternate
from devtools.processes import ServiceProcess, free_port
from services.catalog import BY_NAME, SERVICES

REPEATS = 10
"""Per order: A-B pairs, then B-A pairs (20 turns each way in all)."""
QUESTION = "What is the capital of France? Tell me a little about it."
# Greedy and unseeded, as in bench/turn.py: every turn gets the same reply (and the LLM reuses
# the cached prompt), so both paths speak the same audio.
OPTIONS = pb.TurnOptions(max_tokens=64, temperature=0)
TENANT = "bench"
NOWHERE = "127.0.0.1:9"  # the image service is not started; text turns never call it
TARGET = 1.03


def converse(
    stub: orchestrator_pb2_grpc.OrchestratorStub, conversation_id: str
) -> tuple[float, float, float, str]:
    """(first audio, end of turn) in seconds from the start of the call, the reply's audio
    seconds and its text (both paths must speak the same reply for the times to compare)."""
    config = pb.TurnConfig(
        input_mode=pb.INPUT_MODE_TEXT, options=OPTIONS, conversation_id=conversation_id
    )
    requests = [
        pb.ConverseRequest(config=config),
        pb.ConverseRequest(text=QUESTION),
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]
    metadata = (("x-chorus-tenant", TENANT), ("x-request-id", uuid.uuid4().hex))
    started = time.perf_counter()
    first = audio = 0.0
    stored = errors = 0
    text = ""
    for event in stub.Converse(iter(requests), timeout=300, metadata=metadata):
        if event.HasField("audio_chunk"):
            first = first or time.perf_counter() - started
            audio += event.audio_chunk.duration_seconds
        if event.HasField("reply_final"):
            text = event.reply_final.text
        stored += event.HasField("stored")
        errors += event.HasField("error")
    total = time.perf_counter() - started
    if errors or not first or stored != bool(conversation_id):
        raise RuntimeError(f"unexpected turn: {errors} errors, first audio {first}, {stored}")
    return first, total, audio, text


def main() -> int:
    procs = [
        ServiceProcess(spec, free_port(), free_port())
        for spec in SERVICES
        if spec.name in ("stt", "tts", "llm")
    ]
    by_name = {p.spec.name: p for p in procs}
    for proc in procs:
        proc.start()
    orch = None
    with tempfile.TemporaryDirectory(prefix="chorus-bench-storage-") as tmp:
        root = Path(tmp)
        try:
            for proc in procs:
                proc.wait_ready(600)
            env = {
                **{
                    f"CHORUS_ORCH_{n.upper()}_ADDRESS": by_name[n].address
                    for n in ("stt", "tts", "llm")
                },
                "CHORUS_ORCH_IMAGE_ADDRESS": NOWHERE,
                "CHORUS_ORCH_ARTIFACT_SWEEP_SECONDS": "0",
                "CHORUS_ARTIFACTS_FOLDER": str(root / "artifacts"),
                "CHORUS_CONVERSATIONS_URL": f"sqlite:///{root / 'conversations.sqlite3'}",
            }
            orch = ServiceProcess(BY_NAME["orchestrator"], free_port(), free_port(), env=env)
            orch.start().wait_ready()
            channel = grpc.insecure_channel(orch.address)
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            conversations = orchestrator_pb2_grpc.ConversationsStub(channel)

            def new_conversation() -> str:
                created = conversations.CreateConversation(
                    pb.CreateConversationRequest(),
                    timeout=30,
                    metadata=(("x-chorus-tenant", TENANT),),
                )
                return str(created.id)

            def stored() -> tuple[float, float, float, str]:
                return converse(stub, new_conversation())

            plain, kept = alternate(lambda: converse(stub, ""), stored, REPEATS)
            # bench.timing.alternate runs A before B every time; whatever a turn leaves behind
            # (2 cores) would then always land on the same side. The same again in B-A order.
            kept_2, plain_2 = alternate(stored, lambda: converse(stub, ""), REPEATS)
            plain, kept = plain + plain_2, kept + kept_2
            print(f"\nmedian of {2 * REPEATS} text turns each, interleaved A-B then B-A; seconds\n")
            print(f"{'':<16}{'no store':>10}{'stored':>10}{'ratio':>8}{'A-B':>8}{'B-A':>8}")
            ratios = []
            for index, name in enumerate(("first audio", "whole turn")):
                a = statistics.median(run[index] for run in plain)
                b = statistics.median(run[index] for run in kept)
                # The ratio is the median of each back-to-back pair's ratio: the machine's load
                # drifts (shared, 2 cores) between pairs far more than within one.
                pairs = [k[index] / p[index] for p, k in zip(plain, kept, strict=True)]
                ratio = statistics.median(pairs)
                ratios.append(ratio)
                halves = statistics.median(pairs[:REPEATS]), statistics.median(pairs[REPEATS:])
                print(
                    f"{name:<16}{a:>10.3f}{b:>10.3f}{ratio:>8.3f}{halves[0]:>8.3f}{halves[1]:>8.3f}"
                )
            for name, runs in (("no store", plain), ("stored", kept)):
                replies = {(round(r[2], 2), r[3]) for r in runs}
                print(f"{name}: {len(replies)} distinct replies: {sorted(replies)[:2]}")
            met = max(ratios) <= TARGET
            print(f"\ntarget: stored / not stored <= {TARGET}: {'met' if met else 'MISSED'}")
            return 0 if met else 1
        finally:
            if orch is not None:
                orch.stop()
            for proc in procs:
                proc.stop()


if __name__ == "__main__":
    sys.exit(main())
