"""The Orchestrator over the real model services on loopback (real weights where they exist)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import grpc
import jiwer
import numpy as np
import pytest
from chorus.v1 import (
    common_pb2,
    llm_pb2,
    orchestrator_pb2_grpc,
    tts_pb2,
)
from chorus.v1 import (
    orchestrator_pb2 as pb,
)
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_status import rpc_status
from PIL import Image

from devtools.processes import ServiceProcess
from tests.conftest import orchestrator_env, tts_stub
from tests.support.services import metric_value, running, scrape
from tests.support.speech import decode_any, read_wav

QUESTION = "What is the capital of France?"
SERVING = health_pb2.HealthCheckResponse.SERVING


def stub(proc: ServiceProcess) -> orchestrator_pb2_grpc.OrchestratorStub:
    return orchestrator_pb2_grpc.OrchestratorStub(grpc.insecure_channel(proc.address))


def text_turn(text: str, **config: object) -> list[pb.ConverseRequest]:
    return [
        pb.ConverseRequest(config=pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT, **config)),
        pb.ConverseRequest(text=text),
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]


def kinds(events: list[pb.TurnEvent]) -> list[str]:
    return [e.WhichOneof("event") for e in events]


def assert_valid_order(events: list[pb.TurnEvent]) -> None:
    k = kinds(events)
    assert k.count("transcript_final") == 1 and k.count("reply_final") == 1
    assert k.index("transcript_final") < k.index("reply_final")
    assert all(i > k.index("transcript_final") for i, x in enumerate(k) if x == "reply_delta")
    assert all(i < k.index("reply_final") for i, x in enumerate(k) if x == "reply_delta")
    assert all(
        i < k.index("transcript_final") for i, x in enumerate(k) if x == "transcript_partial"
    )
    assert k[-1] == "turn_timings"
    deltas = "".join(e.reply_delta.text for e in events if e.HasField("reply_delta"))
    assert deltas == next(e.reply_final.text for e in events if e.HasField("reply_final"))
    sequences = [e.audio_chunk.sequence for e in events if e.HasField("audio_chunk")]
    assert sequences == list(range(len(sequences)))
    elapsed = [e.elapsed_seconds for e in events]
    assert elapsed == sorted(elapsed)
    assert len({e.turn_id for e in events}) == 1


@pytest.fixture(scope="module")
def question_wav(tts_piper) -> bytes:
    return (
        tts_stub(tts_piper).Synthesize(tts_pb2.SynthesizeRequest(text=QUESTION), timeout=60).audio
    )


def test_spoken_question(orchestrator, question_wav):
    requests = [
        pb.ConverseRequest(
            config=pb.TurnConfig(
                input_mode=pb.INPUT_MODE_SPEECH,
                options=pb.TurnOptions(max_tokens=60, temperature=0),
            )
        ),
        *(
            pb.ConverseRequest(audio=question_wav[i : i + 16000])
            for i in range(0, len(question_wav), 16000)
        ),
        pb.ConverseRequest(end_of_input=pb.EndOfInput()),
    ]
    events = list(stub(orchestrator).Converse(iter(requests), timeout=180))
    assert_valid_order(events)
    k = kinds(events)
    transcript = events[k.index("transcript_final")].transcript_final
    assert jiwer.wer(_norm(QUESTION), _norm(transcript.text)) <= 0.2, transcript.text
    assert transcript.language == "en"
    reply = events[k.index("reply_final")].reply_final
    assert reply.text.strip() and reply.usage.completion_tokens > 0
    chunks = [e.audio_chunk for e in events if e.HasField("audio_chunk")]
    assert chunks and k.index("audio_chunk") < k.index("reply_final")
    for chunk in chunks:
        samples, rate = read_wav(chunk.audio)
        assert rate == 22050 and len(samples) > 2000 and np.abs(samples).max() > 1000
    timings = events[-1].turn_timings
    assert 0 < timings.transcription_seconds <= timings.first_reply_token_seconds
    assert timings.first_reply_token_seconds <= timings.first_audio_seconds <= timings.total_seconds
    assert timings.reply_seconds <= timings.total_seconds


def test_spoken_question_streamed_as_pcm(orchestrator, question_wav):
    """Raw PCM sent while it is 'spoken': partial transcripts arrive before the final one."""
    samples, rate = read_wav(question_wav)
    audio = np.concatenate([samples, np.zeros(rate, np.int16)])
    config = pb.TurnConfig(
        input_mode=pb.INPUT_MODE_SPEECH,
        input_audio_format=common_pb2.RawAudioFormat(
            encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=rate
        ),
        options=pb.TurnOptions(max_tokens=30, temperature=0, text_only=True),
    )

    def requests():
        yield pb.ConverseRequest(config=config)
        for i in range(0, len(audio), rate // 10):
            time.sleep(0.03)
            yield pb.ConverseRequest(audio=audio[i : i + rate // 10].tobytes())
        yield pb.ConverseRequest(end_of_input=pb.EndOfInput())

    events = list(stub(orchestrator).Converse(requests(), timeout=180))
    assert_valid_order(events)
    final = next(e.transcript_final for e in events if e.HasField("transcript_final"))
    assert jiwer.wer(_norm(QUESTION), _norm(final.text)) <= 0.2, final.text
    assert "transcript_partial" in kinds(events)
    assert "audio_chunk" not in kinds(events)  # text_only


def test_text_turn_with_image(orchestrator):
    events = list(
        stub(orchestrator).Converse(
            iter(
                text_turn(
                    "Draw a red apple on a table.",
                    image_mode=pb.IMAGE_MODE_ON,
                    options=pb.TurnOptions(max_tokens=40, temperature=0, image_seed=7),
                )
            ),
            timeout=180,
        )
    )
    assert_valid_order(events)
    k = kinds(events)
    (result,) = [e.image_result for e in events if e.HasField("image_result")]
    assert result.prompt == "a red apple on a table" and result.seed == 7
    image = Image.open(io.BytesIO(result.png))
    assert image.format == "PNG" and image.size == (result.width, result.height) == (64, 64)
    progress = [e.image_progress.step for e in events if e.HasField("image_progress")]
    assert progress and progress == sorted(progress)
    assert "audio_chunk" in k and "error" not in k
    assert events[-1].turn_timings.image_seconds > 0


def test_auto_image_mode_only_draws_when_asked(orchestrator):
    events = list(
        stub(orchestrator).Converse(
            iter(
                text_turn(
                    "Tell me a fun fact.",
                    image_mode=pb.IMAGE_MODE_AUTO,
                    options=pb.TurnOptions(max_tokens=20, text_only=True),
                )
            ),
            timeout=120,
        )
    )
    assert "image_result" not in kinds(events) and "image_progress" not in kinds(events)


def test_run_turn_unary(orchestrator):
    response = stub(orchestrator).RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(
                input_mode=pb.INPUT_MODE_TEXT,
                output_encoding=common_pb2.AUDIO_ENCODING_MP3,
                options=pb.TurnOptions(max_tokens=40, temperature=0),
            ),
            text=QUESTION,
        ),
        timeout=180,
    )
    assert response.transcript.text == QUESTION
    assert response.reply.text.strip()
    assert response.audio and all(c.audio.startswith(b"ID3") for c in response.audio)
    assert decode_any(response.audio[0].audio)[0].size > 0
    assert response.timings.total_seconds > 0 and not response.errors


def _norm(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_cancel_mid_reply_cancels_downstream(
    logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
):
    """Cancel while the reply is being generated and spoken: the LLM's Generate and the TTS call
    both end CANCELLED, the LLM's worker is free again, and the next turn works.

    The reply is a long count cut into short pieces (sentence_max_chars=20), so speech starts at
    once; a long synthesis keeps the TTS worker busy so the turn's call waits in its queue."""
    generate = "/chorus.v1.TextGeneration/Generate"
    synthesize = "/chorus.v1.TextToSpeech/StreamingSynthesize"

    def cancelled(proc: ServiceProcess, method: str) -> float:
        return metric_value(
            scrape(proc), "chorus_grpc_requests_total", method=method, code="CANCELLED"
        )

    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ORCH_SENTENCE_MAX_CHARS": "20",
    }
    with running("orchestrator", env, logs, "cancel") as orch:
        before_llm, before_tts = (
            cancelled(llm_llama_cpp, generate),
            cancelled(tts_piper, synthesize),
        )
        tts = tts_stub(tts_piper)

        def tts_in_flight() -> float:
            return metric_value(
                scrape(tts_piper),
                "chorus_grpc_in_flight",
                method="/chorus.v1.TextToSpeech/Synthesize",
            ) + metric_value(scrape(tts_piper), "chorus_grpc_in_flight", method=synthesize)

        # One unary synthesis of a long text is one unit of work: it holds the TTS worker for
        # seconds, so the turn's first Synthesize waits in the queue behind it.
        busy = tts.Synthesize.future(
            tts_pb2.SynthesizeRequest(
                text="This sentence keeps the voice busy for a while. " * 40,
                speed=0.5,  # twice the audio: a longer hold on the worker
                encoding=common_pb2.AUDIO_ENCODING_MP3,  # small enough for one gRPC message
            ),
            timeout=300,
        )
        deadline = time.monotonic() + 60
        while tts_in_flight() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        call = stub(orch).Converse(
            iter(
                text_turn(
                    "Count from one to a thousand: 1, 2, 3, 4, 5, 6,",
                    options=pb.TurnOptions(max_tokens=600, temperature=0),
                )
            ),
            timeout=300,
        )
        queued_behind_busy = False
        for event in call:
            if event.HasField("reply_delta") and tts_in_flight() >= 2:
                queued_behind_busy = not busy.done()
                break
        call.cancel()
        busy.result()
        assert queued_behind_busy, "the turn's speech never waited behind the busy synthesis"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            llm_done = cancelled(llm_llama_cpp, generate) - before_llm
            tts_done = cancelled(tts_piper, synthesize) - before_tts
            if llm_done >= 1 and tts_done >= 1:
                break
            time.sleep(0.1)
        assert llm_done == 1 and tts_done == 1
        while metric_value(scrape(llm_llama_cpp), "chorus_worker_admitted") > 0:
            assert time.monotonic() < deadline, (
                "the cancelled generation still holds the LLM worker"
            )
            time.sleep(0.1)
        events = list(
            stub(orch).Converse(
                iter(text_turn(QUESTION, options=pb.TurnOptions(max_tokens=20))), timeout=180
            )
        )
    assert_valid_order(events)


def test_image_service_down_degrades(
    logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, tiny_sd
):
    from tests.conftest import IMAGE_LIMITS

    env = {**IMAGE_LIMITS, "CHORUS_IMAGE_BACKEND": "diffusers", "CHORUS_IMAGE_MODEL": str(tiny_sd)}
    with running("image", env, logs, "doomed") as image:
        with running(
            "orchestrator",
            orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image),
            logs,
            "img-down",
        ) as orch:
            image.stop()
            events = list(
                stub(orch).Converse(
                    iter(
                        text_turn(
                            "Draw a boat.",
                            image_mode=pb.IMAGE_MODE_ON,
                            options=pb.TurnOptions(max_tokens=30),
                        )
                    ),
                    timeout=120,
                )
            )
    assert_valid_order(events)
    (error,) = [e.error for e in events if e.HasField("error")]
    assert error.stage == pb.STAGE_IMAGE and not error.fatal and error.code == "UNAVAILABLE"
    assert "image-generation" in error.message
    assert "audio_chunk" in kinds(events) and "image_result" not in kinds(events)


def test_tts_service_down_fails_turn(
    logs: Path, stt_faster_whisper, llm_llama_cpp, image_diffusers
):
    with running("tts", {"CHORUS_TTS_BACKEND": "piper"}, logs, "doomed") as tts:
        with running(
            "orchestrator",
            orchestrator_env(stt_faster_whisper, tts, llm_llama_cpp, image_diffusers),
            logs,
            "tts-down",
        ) as orch:
            tts.stop()
            received: list[pb.TurnEvent] = []
            with pytest.raises(grpc.RpcError) as err:
                for event in stub(orch).Converse(
                    iter(text_turn(QUESTION, options=pb.TurnOptions(max_tokens=30))), timeout=120
                ):
                    received.append(event)
            assert orch.health() == SERVING
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "text-to-speech" in err.value.details()
    (error,) = [e.error for e in received if e.HasField("error")]
    assert error.stage == pb.STAGE_SPEECH and error.fatal


def test_two_replicas_share_a_conversation(
    logs: Path, orchestrator, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
):
    """History travels with each turn: replica B answers the second turn of a conversation that
    replica A started, and its prompt holds the first turn."""
    env = orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers)
    with running("orchestrator", env, logs, "b") as replica_b:
        history: list[llm_pb2.ChatMessage] = []
        usages = []
        for replica, text in (
            (orchestrator, "My name is Ada and I like tea."),
            (replica_b, "What do I like to drink?"),
        ):
            response = stub(replica).RunTurn(
                pb.RunTurnRequest(
                    config=pb.TurnConfig(
                        history=history,
                        options=pb.TurnOptions(max_tokens=30, temperature=0, text_only=True),
                    ),
                    text=text,
                ),
                timeout=120,
            )
            assert response.reply.text.strip()
            usages.append(response.reply.usage)
            history += [
                llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=text),
                llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_ASSISTANT, content=response.reply.text),
            ]
    first, second = usages
    assert second.prompt_tokens >= first.prompt_tokens + first.completion_tokens


def test_one_turn_is_one_trace(orchestrator, logs: Path):
    response = stub(orchestrator).RunTurn(
        pb.RunTurnRequest(
            config=pb.TurnConfig(options=pb.TurnOptions(max_tokens=20)), text=QUESTION
        ),
        timeout=120,
    )
    turn_id = response.turn_id
    time.sleep(0.5)
    spans = []
    for path in logs.glob("*.spans.jsonl"):
        spans += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    root = max(
        (
            s
            for s in spans
            if s["name"] == "/chorus.v1.Orchestrator/RunTurn" and s["kind"] == "SpanKind.SERVER"
        ),
        key=lambda s: s["start_time"],
    )
    trace_id = root["context"]["trace_id"]
    in_trace = [s for s in spans if s["context"]["trace_id"] == trace_id]
    by_id = {s["context"]["span_id"]: s for s in in_trace}
    services = {s["resource"]["attributes"]["service.name"] for s in in_trace}
    assert {"chorus-orchestrator", "chorus-llm", "chorus-tts"} <= services
    for span in in_trace:
        if span is not root:
            assert span["parent_id"] in by_id, span["name"]
    servers = [s for s in in_trace if s["kind"] == "SpanKind.SERVER" and s is not root]
    for server in servers:
        client = by_id[server["parent_id"]]
        assert client["kind"] == "SpanKind.CLIENT" and client["name"] == server["name"]
    assert turn_id == root["attributes"].get("chorus.turn_id", turn_id)


def test_bad_input(orchestrator):
    orch = stub(orchestrator)
    cases = [
        ([pb.ConverseRequest(text="hi")], grpc.StatusCode.INVALID_ARGUMENT, "config"),
        (
            [
                pb.ConverseRequest(config=pb.TurnConfig(input_mode=pb.INPUT_MODE_TEXT)),
                pb.ConverseRequest(audio=b"RIFF"),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "audio was sent in a text turn",
        ),
        (
            text_turn(
                "hi", history=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="x")] * 9
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "history",
        ),
        (text_turn("   "), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (
            [
                pb.ConverseRequest(config=pb.TurnConfig(input_mode=pb.INPUT_MODE_SPEECH)),
                pb.ConverseRequest(audio=b"not audio at all"),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "speech-to-text",
        ),
    ]
    for requests, code, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(orch.Converse(iter(requests), timeout=60))
        assert err.value.code() == code, words
        assert words in err.value.details(), err.value.details()
    assert orchestrator.health() == SERVING
    assert list(
        orch.Converse(
            iter(text_turn(QUESTION, options=pb.TurnOptions(max_tokens=10, text_only=True))),
            timeout=60,
        )
    )


def test_unknown_voice_is_named_by_the_speech_service(orchestrator, tts_piper):
    """No voice list is fetched per turn: the speech service's own NOT_FOUND ends the turn, and
    the field it names reaches the caller as the turn's field, ``config.voice``."""
    list_voices = "/chorus.v1.TextToSpeech/ListVoices"
    before = metric_value(scrape(tts_piper), "chorus_grpc_requests_total", method=list_voices)
    received: list[pb.TurnEvent] = []
    with pytest.raises(grpc.RpcError) as err:
        for event in stub(orchestrator).Converse(
            iter(text_turn(QUESTION, voice="nobody", options=pb.TurnOptions(max_tokens=30))),
            timeout=120,
        ):
            received.append(event)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "text-to-speech" in err.value.details() and "unknown voice" in err.value.details()
    status = rpc_status.from_call(err.value)
    assert status is not None
    (detail,) = status.details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["config.voice"]
    (error,) = [e.error for e in received if e.HasField("error")]
    assert error.stage == pb.STAGE_SPEECH and error.fatal and error.code == "NOT_FOUND"
    assert "audio_chunk" not in kinds(received)
    after = metric_value(scrape(tts_piper), "chorus_grpc_requests_total", method=list_voices)
    assert after == before
