"""The orchestrator's Session RPC over real model services, called directly over gRPC (a client
that is not the gateway): turn detection, transcripts, responses, cancel, barge-in with
truncation, and each bad request answered by an error event while the session goes on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from chorus.v1 import common_pb2, llm_pb2, tts_pb2
from chorus.v1 import orchestrator_pb2 as pb

from devtools.processes import ServiceProcess
from tests.conftest import orchestrator_env, tts_stub
from tests.support.services import metric_value, running, scrape
from tests.support.session import RATE, SessionClient, Spoken, silence, spoken
from tests.support.speech import word_overlap

QUESTION = "What is the capital of France?"
SECOND = "Tell me about the moon."
LIVE_MODEL = "whisper-tiny.en"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Spoken]:
    tmp = tmp_path_factory.mktemp("session-clips")
    return {text: spoken(text, tmp) for text in (QUESTION, SECOND)}


@pytest.fixture(scope="module")
def short_sentences(
    logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers
) -> Iterator[ServiceProcess]:
    """An orchestrator that speaks a reply in pieces of at most 20 characters: a count
    ("1, 2, 3, ...", no sentence end) is spoken from its first words on."""
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ORCH_SENTENCE_MAX_CHARS": "20",
    }
    with running("orchestrator", env, logs, "short-sentences") as proc:
        yield proc


def config(**fields: object) -> pb.SessionConfig:
    fields.setdefault("transcription_model", LIVE_MODEL)
    fields.setdefault("max_output_tokens", 40)
    fields.setdefault("temperature", 0.0)
    return pb.SessionConfig(**fields)  # type: ignore[arg-type]


def text_item(text: str, role: int = llm_pb2.CHAT_ROLE_USER) -> pb.ItemCreate:
    return pb.ItemCreate(item=pb.ConversationItem(role=role, text=text))  # type: ignore[arg-type]


def test_spoken_turn_with_server_vad(orchestrator: ServiceProcess, clips):
    """Speech streamed at real-time pace: speech started/stopped at the clip's speech, the
    user item committed and transcribed, then a response whose text and 24 kHz PCM audio
    arrive, in order, and whose context is the user's item."""
    clip = clips[QUESTION]
    lead = 0.5
    session = SessionClient(orchestrator.address, config())
    try:
        updated = session.wait_for("session_updated").session_updated
        assert updated.session_id
        td = updated.config.turn_detection
        assert td.type == pb.TurnDetection.TYPE_SERVER_VAD and td.create_response
        assert updated.config.output_sample_rate_hz == 24000
        session.stream(silence(lead) + clip.bytes() + silence(1.5))
        done = session.wait_for("response_done").response_done
        kinds = session.kinds()
        order = [
            "speech_started",
            "speech_stopped",
            "input_committed",
            "item_added",
            "item_done",
            "response_created",
            "text_delta",
            "audio_delta",
            "response_done",
        ]
        assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
        started = session.of("speech_started")[0]
        stopped = session.of("speech_stopped")[0]
        padding = updated.config.turn_detection.prefix_padding_ms
        assert started.item_id == stopped.item_id
        speech_start = lead * 1000 + clip.speech_start_ms
        assert abs(started.audio_start_ms + padding - speech_start) < 150
        assert abs(stopped.audio_end_ms - (lead * 1000 + clip.speech_end_ms)) < 250
        final = next(t for t in session.of("input_transcript") if t.final)
        assert final.item_id == started.item_id
        assert word_overlap(QUESTION, final.text) >= 0.6, final.text

        assert done.status == pb.RESPONSE_STATUS_COMPLETED
        assert list(done.input_item_ids) == [started.item_id]
        text = "".join(d.text for d in session.of("text_delta"))
        assert text.strip() and done.item.text == text.strip()
        audio = session.of("audio_delta")
        assert all(
            a.encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE and a.sample_rate_hz == RATE
            for a in audio
        )
        samples = sum(len(a.audio) // 2 for a in audio)
        assert abs(samples / RATE - sum(a.duration_seconds for a in audio)) < 0.01
        assert done.timings.first_audio_seconds > 0
    finally:
        session.close()
    assert session.error is None


def _cancelled(proc: ServiceProcess, method: str) -> float:
    return metric_value(scrape(proc), "chorus_grpc_requests_total", method=method, code="CANCELLED")


def test_text_item_then_cancel_cancels_downstream(short_sentences, llm_llama_cpp, tts_piper):
    """A typed item and a requested response; cancelling it mid-reply ends it CANCELLED and the
    LLM and TTS calls downstream end CANCELLED. Then the session answers again.

    A long synthesis holds the TTS worker, so the response's first sentence waits in the TTS
    queue (in flight) when the cancel comes, while the LLM is still counting."""
    generate = "/chorus.v1.TextGeneration/Generate"
    synthesize = "/chorus.v1.TextToSpeech/StreamingSynthesize"

    def tts_in_flight() -> float:
        text = scrape(tts_piper)
        return sum(
            metric_value(text, "chorus_grpc_in_flight", method=f"/chorus.v1.TextToSpeech/{m}")
            for m in ("Synthesize", "StreamingSynthesize")
        )

    before = _cancelled(llm_llama_cpp, generate), _cancelled(tts_piper, synthesize)
    session = SessionClient(short_sentences.address, config(max_output_tokens=400))
    busy = tts_stub(tts_piper).Synthesize.future(
        tts_pb2.SynthesizeRequest(
            text="This sentence keeps the voice busy for a while. " * 40,
            speed=0.5,
            encoding=common_pb2.AUDIO_ENCODING_MP3,
        ),
        timeout=300,
    )
    try:
        deadline = time.monotonic() + 60
        while tts_in_flight() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        session.send(create_item=text_item("Count from one to five hundred: 1, 2, 3, 4, 5, 6,"))
        added = session.wait_for("item_done").item_done.item
        assert added.role == llm_pb2.CHAT_ROLE_USER and added.text.startswith("Count")
        session.send(create_response=pb.ResponseCreate())
        created = session.wait_for("response_created").response_created
        session.wait_for("text_delta")
        while tts_in_flight() < 2:
            assert time.monotonic() < deadline, "the reply's speech never reached the TTS"
            time.sleep(0.02)
        assert not busy.done()
        session.send(cancel_response=pb.ResponseCancel(response_id=created.response_id))
        done = session.wait_for("response_done").response_done
        assert done.status == pb.RESPONSE_STATUS_CANCELLED
        assert done.item.status == pb.ITEM_STATUS_INCOMPLETE
        busy.result()
        deadline = time.monotonic() + 30
        while (
            _cancelled(llm_llama_cpp, generate) - before[0] < 1
            or _cancelled(tts_piper, synthesize) - before[1] < 1
        ):
            assert time.monotonic() < deadline, "the downstream calls were not cancelled"
            time.sleep(0.1)
        mark = len(session.events)
        session.send(create_item=text_item(QUESTION))
        session.send(create_response=pb.ResponseCreate(options=pb.ResponseOptions(text_only=True)))
        again = session.wait_for("response_done", after=mark).response_done
        assert again.status == pb.RESPONSE_STATUS_COMPLETED
        assert created.item_id in again.input_item_ids  # the cancelled reply is history
        assert not [e for e in session.events[mark:] if e.HasField("audio_delta")]
    finally:
        session.close()


def test_reply_audio_goes_out_at_the_pace_of_playback(short_sentences):
    """A reply is made faster than it is spoken; its audio arrives in slices of at most 200 ms,
    never more than the lead (1 s) ahead of real time from the first slice, and the response
    is done only when the last slice is out. (Lower bounds: a sleep is never short, so this
    holds on any machine, however fast.)"""
    session = SessionClient(short_sentences.address, config(max_output_tokens=120))
    try:
        session.send(create_item=text_item("Count from one to five hundred: 1, 2, 3, 4, 5, 6,"))
        session.wait_for("item_done")
        # Before the server can send anything of the reply: every bound below is measured
        # from here, so a late read of the first slice here cannot make one fail.
        asked = time.monotonic()
        session.send(create_response=pb.ResponseCreate())
        done = session.wait_for("response_done", timeout=180).response_done
        assert done.status == pb.RESPONSE_STATUS_COMPLETED
        deltas = [
            (at, e.audio_delta)
            for at, e in zip(session.arrivals, session.events, strict=True)
            if e.HasField("audio_delta")
        ]
        total = sum(d.duration_seconds for _, d in deltas)
        assert total > 5, f"only {total:.1f} s of audio: too short to show pacing"
        assert max(d.duration_seconds for _, d in deltas) <= 0.2 + 1e-6
        assert all(len(d.audio) == 2 * round(d.duration_seconds * RATE) for _, d in deltas)
        sent = 0.0
        for at, delta in deltas:
            assert at - asked >= sent - 1.0, (at - asked, sent)
            sent += delta.duration_seconds
        finished = session.arrivals[session.events.index(session.wait_for("response_done"))]
        assert finished - asked >= total - 1.0 - 0.2
    finally:
        session.close()


def test_barge_in_interrupts_truncates_and_answers_with_true_history(short_sentences, clips):
    """New speech while the reply's audio streams: the reply ends INTERRUPTED, the client's
    truncation cuts the assistant item to what it played, and the new question is answered
    with a history that holds the cut item."""
    session = SessionClient(short_sentences.address, config(max_output_tokens=400))
    try:
        # A long reply (a count), so it is still streaming when the user speaks.
        session.send(create_item=text_item("Count from one to five hundred: 1, 2, 3, 4, 5, 6,"))
        session.send(create_response=pb.ResponseCreate())
        first = session.wait_for("audio_delta").audio_delta
        mark = len(session.events)
        # The user talks over the reply.
        session.stream(clips[SECOND].bytes() + silence(1.5), pace=2)
        done = session.wait_for("response_done", response_id=first.response_id).response_done
        assert done.status == pb.RESPONSE_STATUS_INTERRUPTED
        barge = session.wait_for("speech_started", after=mark)
        assert session.events.index(barge) < session.events.index(
            next(e for e in session.events if e.HasField("response_done"))
        ), "the response ended before the user spoke: nothing was interrupted"
        # Half of the audio that came (the client played that much, say).
        received = sum(
            d.duration_seconds for d in session.of("audio_delta") if d.item_id == first.item_id
        )
        played_ms = int(received * 1000 * 0.5)
        session.send(truncate_item=pb.ItemTruncate(item_id=first.item_id, audio_end_ms=played_ms))
        cut = session.wait_for("item_truncated").item_truncated
        words = done.item.text.split()
        assert cut.item_id == first.item_id and cut.audio_end_ms == played_ms
        assert 0 < len(cut.text.split()) < len(words)
        assert words[: len(cut.text.split())] == cut.text.split()
        interrupted = next(e for e in session.events if e.HasField("response_done"))
        second = session.wait_for(
            "response_done", after=session.events.index(interrupted) + 1, timeout=180
        ).response_done
        assert second.response_id != first.response_id
        assert second.status == pb.RESPONSE_STATUS_COMPLETED
        assert first.item_id in second.input_item_ids
        user_items = [
            i.item.id for i in session.of("item_done") if i.item.role == llm_pb2.CHAT_ROLE_USER
        ]
        assert second.input_item_ids[-1] in user_items
        transcript = next(
            t
            for t in session.of("input_transcript")
            if t.final and t.item_id == barge.speech_started.item_id
        )
        assert word_overlap(SECOND, transcript.text) >= 0.5, transcript.text
    finally:
        session.close()


def test_transcription_session_and_client_commits(orchestrator, clips):
    """A transcription-only session sends transcripts and no response; without server VAD the
    client's commit closes the item, and response.create answers it."""
    captions = SessionClient(orchestrator.address, config(type=pb.SESSION_TYPE_TRANSCRIPTION))
    try:
        captions.stream(silence(0.3) + clips[QUESTION].bytes() + silence(1.0), pace=4)
        final = captions.wait_for("input_transcript", final=True).input_transcript
        assert word_overlap(QUESTION, final.text) >= 0.6
        captions.send(create_response=pb.ResponseCreate())
        error = captions.wait_for("error").error
        assert error.code == "INVALID_ARGUMENT" and not error.fatal
    finally:
        captions.close()
    assert not captions.of("response_created")

    manual = pb.TurnDetection(type=pb.TurnDetection.TYPE_NONE)
    session = SessionClient(orchestrator.address, config(turn_detection=manual, text_only=True))
    try:
        session.stream(clips[QUESTION].bytes(), pace=8)
        # Push-to-talk: commit and ask at once; the response waits for the transcript.
        session.send(commit=pb.InputCommit())
        session.send(create_response=pb.ResponseCreate())
        committed = session.wait_for("input_committed").input_committed
        partials = [t for t in session.of("input_transcript") if not t.final]
        assert all(t.item_id == committed.item_id for t in partials)
        done = session.wait_for("response_done").response_done
        final = session.wait_for("input_transcript", final=True).input_transcript
        assert final.item_id == committed.item_id
        assert word_overlap(QUESTION, final.text) >= 0.6
        kinds = session.kinds()
        assert kinds.index("input_committed") < kinds.index("response_created")
        assert not session.of("speech_started") and not session.of("error")
        assert done.status == pb.RESPONSE_STATUS_COMPLETED and done.item.text
        assert list(done.input_item_ids) == [committed.item_id]
        assert not session.of("audio_delta")
    finally:
        session.close()


def test_bad_requests_get_error_events_and_the_session_goes_on(orchestrator):
    """Each bad request is answered with a non-fatal error naming the field; afterwards the
    same session still answers."""
    session = SessionClient(orchestrator.address, config(text_only=True))
    bad: list[tuple[dict[str, object], str, str]] = [
        ({"audio": b"\x00\x01\x02"}, "INVALID_ARGUMENT", "audio"),
        ({"audio": bytes(2 * 1024 * 1024)}, "RESOURCE_EXHAUSTED", "audio"),
        ({"commit": pb.InputCommit()}, "INVALID_ARGUMENT", "commit"),
        ({"cancel_response": pb.ResponseCancel()}, "INVALID_ARGUMENT", "cancel_response"),
        ({"create_response": pb.ResponseCreate()}, "INVALID_ARGUMENT", "create_response"),
        ({"config": config(voice="no-such-voice")}, "NOT_FOUND", "config.voice"),
        (
            {"config": config(input_audio_format=common_pb2.RawAudioFormat(encoding=3))},
            "INVALID_ARGUMENT",
            "config.input_audio_format.encoding",
        ),
        (
            {"truncate_item": pb.ItemTruncate(item_id="item_missing", audio_end_ms=10)},
            "NOT_FOUND",
            "item_id",
        ),
        ({"delete_item": pb.ItemDelete(item_id="item_missing")}, "NOT_FOUND", "item_id"),
        ({"create_item": text_item("x" * 5000)}, "RESOURCE_EXHAUSTED", "item.text"),
        ({"create_item": text_item("   ")}, "INVALID_ARGUMENT", "item.text"),
    ]
    try:
        session.wait_for("session_updated")
        for n, (request, code, field) in enumerate(bad):
            mark = len(session.events)
            session.send(**request)
            error = session.wait_for("error", after=mark, timeout=30).error
            assert (error.code, error.field, error.fatal) == (code, field, False), (n, error)
        assert len(session.of("session_updated")) == 1  # the refused configs changed nothing
        session.send(create_item=text_item(QUESTION))
        session.send(create_response=pb.ResponseCreate())
        done = session.wait_for("response_done").response_done
        assert done.status == pb.RESPONSE_STATUS_COMPLETED
    finally:
        session.close()
    assert session.error is None


def test_session_limits(logs: Path, stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers):
    """One session per replica: a second is refused with RESOURCE_EXHAUSTED; a session longer
    than max_session_seconds ends with a fatal error event and DEADLINE_EXCEEDED; a session that
    sends no config first is INVALID_ARGUMENT."""
    env = {
        **orchestrator_env(stt_faster_whisper, tts_piper, llm_llama_cpp, image_diffusers),
        "CHORUS_ORCH_MAX_SESSIONS": "1",
        "CHORUS_ORCH_MAX_SESSION_SECONDS": "3",
    }
    with running("orchestrator", env, logs, "sessions") as orch:
        first = SessionClient(orch.address, config())
        first.wait_for("session_updated")
        second = SessionClient(orch.address, config())
        second.close()
        assert second.error is not None
        assert second.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        first.stream(silence(0.5))
        first.wait_for("error", timeout=10)
        first.close()
        assert first.error is not None and first.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert first.of("error")[-1].fatal

        bare = SessionClient(orch.address, None)
        bare.send(audio=np.zeros(10, np.int16).tobytes())
        bare.close()
        assert bare.error is not None and bare.error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_ending_the_call_ends_its_speech_stream(orchestrator, stt_faster_whisper, clips):
    """A client that goes away mid-speech leaves nothing running: the session's STT stream is
    cancelled with it (it would otherwise hold one of the speech service's stream slots)."""
    method = "/chorus.v1.SpeechToText/StreamingTranscribe"

    def streams() -> float:
        return metric_value(scrape(stt_faster_whisper), "chorus_grpc_in_flight", method=method)

    before = streams()
    session = SessionClient(orchestrator.address, config())
    session.stream(clips[QUESTION].bytes()[: RATE * 2], pace=4)
    deadline = time.monotonic() + 30
    while streams() < before + 1:
        assert time.monotonic() < deadline, "the session opened no speech stream"
        time.sleep(0.05)
    session.cancel()
    deadline = time.monotonic() + 10
    while streams() > before:
        assert time.monotonic() < deadline, "the speech stream outlived its session"
        time.sleep(0.05)


def test_a_failed_transcription_names_its_item(orchestrator, clips):
    """An audio item the speech service cannot transcribe (an unknown model): an error event
    naming the item, the item done INCOMPLETE, and the session goes on."""
    session = SessionClient(orchestrator.address, config(transcription_model="no-such-model"))
    try:
        session.send(
            create_item=pb.ItemCreate(
                item=pb.ConversationItem(role=llm_pb2.CHAT_ROLE_USER), audio=clips[QUESTION].bytes()
            )
        )
        added = session.wait_for("item_added").item_added.item
        error = session.wait_for("error").error
        assert (error.code, error.reason, error.item_id) == (
            "NOT_FOUND",
            "transcription_failed",
            added.id,
        )
        done = session.wait_for("item_done").item_done.item
        assert done.id == added.id and done.status == pb.ITEM_STATUS_INCOMPLETE
        session.send(create_item=text_item(QUESTION))
        session.send(create_response=pb.ResponseCreate(options=pb.ResponseOptions(text_only=True)))
        assert session.wait_for("response_done").response_done.status == (
            pb.RESPONSE_STATUS_COMPLETED
        )
    finally:
        session.close()
