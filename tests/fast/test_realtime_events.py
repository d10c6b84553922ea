"""/v1/realtime without a socket: OpenAI Realtime events <-> the orchestrator's Session messages
(``gateway.realtime_events``), checked against the official client's own event models.

Every server event a scripted session produces is validated with the ``openai`` package's
pydantic model for its type (GA, and beta for the beta names), and parsed the way the official
client parses it, so a shape the client would reject fails here. Also: the merge of partial
``session.update``s into whole configs, the error events (OpenAI's shape, ``param`` and the
client's ``event_id``), statuses, transcript deltas, G.711 and the API key in a subprotocol.
"""

from __future__ import annotations

import base64
import json
from typing import Any, get_args

import numpy as np
import pytest
from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from openai._models import construct_type_unchecked
from openai.types.beta.realtime.realtime_server_event import (
    RealtimeServerEvent as BetaServerEvent,
)
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import BaseModel

from gateway import g711
from gateway.auth import presented_key, subprotocol_key
from gateway.realtime_events import (
    AUDIO_CHUNK_BYTES,
    AUDIO_DELTA_BYTES,
    BETA,
    EventError,
    RealtimeTranslator,
)
from gateway.settings import DEFAULT_MODEL_ALIASES, DEFAULT_VOICE_ALIASES

USER, ASSISTANT = llm_pb2.CHAT_ROLE_USER, llm_pb2.CHAT_ROLE_ASSISTANT
PCM = common_pb2.AUDIO_ENCODING_PCM_S16LE


def _models(union: Any) -> dict[str, type[BaseModel]]:
    """Event type -> the official model for it, from the client's discriminated union."""
    members = get_args(get_args(union)[0])
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in members}


GA_MODELS = _models(RealtimeServerEvent)
BETA_MODELS = _models(BetaServerEvent)


def check(events: list[dict[str, Any]], beta: bool = False) -> list[dict[str, Any]]:
    """Each event is its official model, field for field, and parses as that model the way the
    client parses it; Chorus's own events carry the vendor prefix. Returns ``events``."""
    models, union = (BETA_MODELS, BetaServerEvent) if beta else (GA_MODELS, RealtimeServerEvent)
    for event in events:
        assert event["event_id"].startswith("event_")
        if event["type"].startswith("chorus."):
            continue
        model = models[event["type"]]
        model.model_validate(event)
        parsed = construct_type_unchecked(value=json.loads(json.dumps(event)), type_=union)
        assert type(parsed) is model, (event["type"], type(parsed))
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    return events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def translator(beta: bool = False, **options: Any) -> RealtimeTranslator:
    t = RealtimeTranslator(
        dialect=BETA if beta else RealtimeTranslator().dialect,
        model="gpt-realtime",
        model_id=lambda name: DEFAULT_MODEL_ALIASES.get(name, name),
        voice_id=lambda name: DEFAULT_VOICE_ALIASES.get(name, name),
        **options,
    )
    updated(t, t.start().config)  # session.created: a session in its steady state
    return t


def updated(t: RealtimeTranslator, config: pb.SessionConfig) -> list[dict[str, Any]]:
    """What the orchestrator answers a config with (defaults as it fills them in)."""
    effective = pb.SessionConfig()
    effective.CopyFrom(config)
    if not effective.turn_detection.type:
        effective.turn_detection.CopyFrom(
            pb.TurnDetection(
                type=pb.TurnDetection.TYPE_SERVER_VAD,
                threshold=0.5,
                silence_duration_ms=600,
                prefix_padding_ms=300,
                create_response=True,
                interrupt_response=True,
            )
        )
    effective.max_output_tokens = effective.max_output_tokens or 96
    event = pb.SessionEvent(session_updated=pb.SessionUpdated(session_id="s1", config=effective))
    return t.server_event(event)


def send(t: RealtimeTranslator, **event: Any) -> list[pb.SessionRequest]:
    return t.client_event(json.dumps(event))


def serve(t: RealtimeTranslator, *events: pb.SessionEvent, beta: bool = False) -> list[dict]:
    return check([shown for e in events for shown in t.server_event(e)], beta)


def item(item_id: str, role: int, text: str = "", **fields: Any) -> pb.ConversationItem:
    return pb.ConversationItem(id=item_id, role=role, text=text, **fields)


def reply_events(
    text: str = "Hello there.", audio: bool = True, status: int = pb.RESPONSE_STATUS_COMPLETED
) -> list[pb.SessionEvent]:
    """The orchestrator's events of one response: created, item, deltas, done."""
    rid, iid = "resp_1", "item_a"
    pending = item(iid, ASSISTANT, status=pb.ITEM_STATUS_IN_PROGRESS, audio=audio)
    final_status = (
        pb.ITEM_STATUS_COMPLETED
        if status == pb.RESPONSE_STATUS_COMPLETED
        else pb.ITEM_STATUS_INCOMPLETE
    )
    final = item(iid, ASSISTANT, text, status=final_status, audio=audio)
    events = [
        pb.SessionEvent(response_created=pb.ResponseCreated(response_id=rid, item_id=iid)),
        pb.SessionEvent(item_added=pb.ItemAdded(item=pending, previous_item_id="item_u")),
    ]
    for n, word in enumerate(text.split(" ")):
        delta = pb.ResponseTextDelta(response_id=rid, item_id=iid, text=(" " if n else "") + word)
        events.append(pb.SessionEvent(text_delta=delta))
    if audio:
        chunk = pb.ResponseAudioDelta(
            response_id=rid,
            item_id=iid,
            audio=b"\x01\x00" * 36000,
            encoding=PCM,
            sample_rate_hz=24000,
            duration_seconds=1.0,
            text=text,
        )
        events.append(pb.SessionEvent(audio_delta=chunk))
    done = pb.ResponseDone(
        response_id=rid,
        status=status,
        item=final,
        usage=llm_pb2.TokenUsage(prompt_tokens=10, completion_tokens=3, total_tokens=13),
    )
    if status == pb.RESPONSE_STATUS_FAILED:
        done.error.CopyFrom(pb.TurnError(code="UNAVAILABLE", message="the LLM is down"))
    events += [pb.SessionEvent(item_done=pb.ItemDone(item=final))]
    events += [pb.SessionEvent(response_done=done)]
    return events


# --- server events: shapes and order ------------------------------------------------------------


def test_session_created_then_updated_in_the_official_shapes() -> None:
    t = RealtimeTranslator(model="gpt-realtime")
    first = t.start()
    assert first.config.type == pb.SESSION_TYPE_CONVERSATION
    assert first.config.input_audio_format.sample_rate_hz == 24000
    created = check(updated(t, first.config))
    assert types(created) == ["session.created"]
    session = created[0]["session"]
    assert (session["type"], session["id"], session["model"]) == ("realtime", "s1", "gpt-realtime")
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 600
    [request] = send(t, type="session.update", session={"type": "realtime", "instructions": "Hi"})
    assert types(check(updated(t, request.config))) == ["session.updated"]


def test_a_spoken_response_is_framed_as_openai_frames_it() -> None:
    t = translator()
    events = serve(t, *reply_events("Hello there."))
    assert types(events) == [
        "response.created",
        "conversation.item.added",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    created = events[0]["response"]
    assert (created["status"], created["output"], created["output_modalities"]) == (
        "in_progress",
        [],
        ["audio"],
    )
    assert events[1]["previous_item_id"] == "item_u"
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert audio == b"\x01\x00" * 36000  # 72000 bytes, in pieces of AUDIO_DELTA_BYTES
    assert all(
        len(base64.b64decode(e["delta"])) <= AUDIO_DELTA_BYTES
        for e in events
        if e["type"] == "response.output_audio.delta"
    )
    done = events[-1]["response"]
    assert (done["status"], done["status_details"]) == ("completed", None)
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "Hello there."}]
    assert done["usage"]["total_tokens"] == 13 and done["usage"]["input_tokens"] == 10
    part_done = next(e for e in events if e["type"] == "response.content_part.done")
    assert part_done["part"] == {"type": "audio", "transcript": "Hello there."}
    assert {e.get("response_id") for e in events[2:-2]} == {"resp_1"}


def test_a_text_response_uses_the_text_events() -> None:
    t = translator()
    events = serve(t, *reply_events("Hi.", audio=False))
    assert "response.output_text.delta" in types(events)
    assert "response.output_audio.delta" not in types(events)
    assert events[3]["part"] == {"type": "text", "text": ""}
    text_done = next(e for e in events if e["type"] == "response.output_text.done")
    assert text_done["text"] == "Hi."
    assert events[-1]["response"]["output_modalities"] == ["text"]
    assert events[-1]["response"]["output"][0]["content"][0]["type"] == "output_text"


def test_a_done_text_is_the_sum_of_its_deltas() -> None:
    """The orchestrator strips the item's final text; the client adds up the deltas it got,
    and ``*.done`` must say the same."""
    t = translator()
    events = reply_events("Hi there.", audio=False)
    events.insert(
        2, pb.SessionEvent(text_delta=pb.ResponseTextDelta(response_id="resp_1", text=" "))
    )
    shown = serve(t, *events)
    deltas = "".join(e["delta"] for e in shown if e["type"] == "response.output_text.delta")
    done = next(e for e in shown if e["type"] == "response.output_text.done")
    assert deltas == " Hi there." == done["text"]
    assert shown[-1]["response"]["output"][0]["content"][0]["text"] == "Hi there."


@pytest.mark.parametrize(
    ("status", "shown", "details"),
    [
        (pb.RESPONSE_STATUS_COMPLETED, "completed", None),
        (
            pb.RESPONSE_STATUS_INTERRUPTED,
            "cancelled",
            {"type": "cancelled", "reason": "turn_detected"},
        ),
        (
            pb.RESPONSE_STATUS_CANCELLED,
            "cancelled",
            {"type": "cancelled", "reason": "client_cancelled"},
        ),
        (
            pb.RESPONSE_STATUS_FAILED,
            "failed",
            {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": "unavailable",
                    "message": "the LLM is down",
                },
            },
        ),
    ],
)
def test_response_statuses(status: int, shown: str, details: dict | None) -> None:
    t = translator()
    done = serve(t, *reply_events("Cut short", status=status))[-1]["response"]
    assert (done["status"], done["status_details"]) == (shown, details)
    if status != pb.RESPONSE_STATUS_COMPLETED:
        assert done["output"][0]["status"] == "incomplete"


def test_a_spoken_user_turn_with_server_vad() -> None:
    t = translator()
    uid = "item_u"
    heard = item(uid, USER, status=pb.ITEM_STATUS_IN_PROGRESS, audio=True)
    final = item(uid, USER, "What is the time?", status=pb.ITEM_STATUS_COMPLETED, audio=True)

    def transcript(text: str, is_final: bool = False) -> pb.SessionEvent:
        return pb.SessionEvent(
            input_transcript=pb.InputTranscript(item_id=uid, text=text, final=is_final)
        )

    events = serve(
        t,
        pb.SessionEvent(speech_started=pb.SessionSpeechStarted(audio_start_ms=200, item_id=uid)),
        transcript("What"),
        transcript("What is"),
        transcript("What's"),  # a changed hypothesis: nothing sent
        transcript("What is the"),
        pb.SessionEvent(speech_stopped=pb.SessionSpeechStopped(audio_end_ms=1700, item_id=uid)),
        pb.SessionEvent(input_committed=pb.InputCommitted(item_id=uid, previous_item_id="item_0")),
        pb.SessionEvent(item_added=pb.ItemAdded(item=heard, previous_item_id="item_0")),
        transcript("What is the time?", is_final=True),
        pb.SessionEvent(item_done=pb.ItemDone(item=final)),
    )
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    deltas = [e["delta"] for e in events if e["type"].endswith("transcription.delta")]
    assert deltas == ["What", " is", " the", " time?"]
    completed = events[-2]
    assert completed["transcript"] == "What is the time?"
    assert completed["usage"] == {"type": "duration", "seconds": 1.5}
    assert events[6]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert events[-1]["item"]["content"] == [
        {"type": "input_audio", "transcript": "What is the time?"}
    ]


def test_other_session_events() -> None:
    t = translator()
    events = serve(
        t,
        pb.SessionEvent(input_cleared=pb.InputCleared()),
        pb.SessionEvent(item_truncated=pb.ItemTruncated(item_id="i", audio_end_ms=500, text="x")),
        pb.SessionEvent(item_deleted=pb.ItemDeleted(item_id="i")),
        pb.SessionEvent(
            image_progress=pb.ResponseImageProgress(
                response_id="r", progress=pb.ImageProgressEvent(step=1, total_steps=2)
            )
        ),
        pb.SessionEvent(
            image=pb.ResponseImage(
                response_id="r",
                image=pb.ImageResultEvent(png=b"\x89PNG", width=64, height=32, prompt="a cat"),
            )
        ),
    )
    assert types(events) == [
        "input_audio_buffer.cleared",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "chorus.response.image.progress",
        "chorus.response.image.done",
    ]
    assert events[1]["content_index"] == 0 and events[1]["audio_end_ms"] == 500
    image = events[-1]
    assert base64.b64decode(image["png_base64"]) == b"\x89PNG"
    assert (image["width"], image["height"], image["prompt"]) == (64, 32, "a cat")


def test_a_transcription_session() -> None:
    t = translator()
    [request] = send(
        t,
        type="session.update",
        session={
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "whisper-1", "language": "de"}}},
        },
    )
    config = request.config
    assert config.type == pb.SESSION_TYPE_TRANSCRIPTION
    assert (config.transcription_model, config.language) == ("", "de")  # whisper-1: the default
    [event] = check(updated(t, config))
    session = event["session"]
    assert (session["type"], session["object"]) == (
        "transcription",
        "realtime.transcription_session",
    )
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "de"}


# --- client events -> requests ----------------------------------------------------------------


def test_session_updates_merge_into_whole_configs() -> None:
    t = translator()
    [first] = send(
        t,
        type="session.update",
        session={
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["text"],
            "audio": {"output": {"voice": "alloy"}},
            "chorus": {"image_mode": "auto"},
        },
    )
    assert first.config.instructions == "Be brief." and first.config.text_only
    assert first.config.voice == ""  # alloy: the speech service's default voice
    assert first.config.image_mode == pb.IMAGE_MODE_AUTO
    [second] = send(
        t,
        type="session.update",
        session={
            "audio": {"input": {"turn_detection": None}, "output": {"voice": "en_US-joe-medium"}},
            "max_output_tokens": 50,
        },
    )
    config = second.config
    # What the first update set stays: a SessionConfig replaces the whole config.
    assert (config.instructions, config.text_only, config.image_mode) == (
        "Be brief.",
        True,
        pb.IMAGE_MODE_AUTO,
    )
    assert config.turn_detection.type == pb.TurnDetection.TYPE_NONE
    assert (config.voice, config.max_output_tokens) == ("en_US-joe-medium", 50)
    [third] = send(
        t,
        type="session.update",
        session={
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.7,
                        "silence_duration_ms": 400,
                        "interrupt_response": False,
                    }
                }
            },
        },
    )
    td = third.config.turn_detection
    assert td.type == pb.TurnDetection.TYPE_SERVER_VAD
    assert (round(td.threshold, 3), td.silence_duration_ms, td.interrupt_response) == (
        0.7,
        400,
        False,
    )
    assert not td.HasField("create_response")  # left to the orchestrator's default
    assert third.config.max_output_tokens == 0


def test_a_refused_update_is_not_the_base_of_the_next() -> None:
    """The orchestrator keeps its config when it refuses one (an unknown voice): the next
    update must not send the refused voice again."""
    t = translator()
    updated(t, pb.SessionConfig())  # session.created
    [bad] = send(
        t, type="session.update", session={"audio": {"output": {"voice": "nobody"}}}, event_id="e1"
    )
    assert bad.config.voice == "nobody"
    refusal = pb.SessionError(
        code="NOT_FOUND",
        message="unknown voice 'nobody'",
        field="config.voice",
        reason="invalid_session_config",
    )
    [error] = serve(t, pb.SessionEvent(error=refusal))
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_session_config",
        "message": "unknown voice 'nobody'",
        "param": "session.audio.output.voice",
        "event_id": "e1",
    }
    [good] = send(t, type="session.update", session={"instructions": "Hello"})
    assert (good.config.voice, good.config.instructions) == ("", "Hello")


def test_audio_appends_are_decoded_and_split() -> None:
    t = translator()
    pcm = bytes(range(256)) * 1000  # 256000 bytes
    requests = send(t, type="input_audio_buffer.append", audio=base64.b64encode(pcm).decode())
    assert all(len(r.audio) <= AUDIO_CHUNK_BYTES for r in requests)
    assert b"".join(r.audio for r in requests) == pcm
    assert send(t, type="input_audio_buffer.commit")[0].WhichOneof("request") == "commit"
    assert send(t, type="input_audio_buffer.clear")[0].WhichOneof("request") == "clear"


def test_g711_input_and_output() -> None:
    t = translator()
    [request] = send(
        t,
        type="session.update",
        session={
            "audio": {
                "input": {"format": {"type": "audio/pcmu"}},
                "output": {"format": {"type": "audio/pcma"}},
            }
        },
    )
    config = request.config
    assert (config.input_audio_format.sample_rate_hz, config.output_sample_rate_hz) == (8000, 8000)
    assert config.input_audio_format.encoding == PCM  # the gateway decodes G.711
    [shown] = check(updated(t, config))
    assert shown["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert shown["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    ulaw = bytes([0xFF, 0x7F, 0x80, 0x00])
    [append] = send(t, type="input_audio_buffer.append", audio=base64.b64encode(ulaw).decode())
    assert append.audio == g711.decode(ulaw, "pcmu") and len(append.audio) == 8
    events = serve(t, *reply_events("Hi."))
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert audio == g711.encode(b"\x01\x00" * 36000, "pcma") and len(audio) == 36000


def test_g711_tables_round_trip() -> None:
    levels = np.arange(-32000, 32000, 97, dtype="<i2")
    for codec in ("pcmu", "pcma"):
        coded = g711.encode(levels.tobytes(), codec)  # type: ignore[arg-type]
        back = np.frombuffer(g711.decode(coded, codec), "<i2").astype(int)  # type: ignore[arg-type]
        error = np.abs(back - levels.astype(int))
        assert error.max() <= 1024 and (error <= np.abs(levels) / 16 + 16).all()
    every = bytes(range(256))
    assert g711.encode(g711.decode(every, "pcma"), "pcma") == every


def test_items_responses_truncation_and_deletion() -> None:
    t = translator()
    [create] = send(
        t,
        type="conversation.item.create",
        previous_item_id="root",
        item={
            "id": "mine",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hello"}],
        },
    )
    assert create.create_item.item == item("mine", USER, "Hello")
    assert create.create_item.previous_item_id == "root"
    audio = base64.b64encode(b"\0\0" * 100).decode()
    [spoken] = send(
        t,
        type="conversation.item.create",
        item={
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": audio}],
        },
    )
    assert spoken.create_item.audio == b"\0\0" * 100 and spoken.create_item.item.text == ""
    [said] = send(
        t,
        type="conversation.item.create",
        item={"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Hi"}]},
    )
    assert said.create_item.item.role == ASSISTANT
    [respond] = send(
        t,
        type="response.create",
        response={
            "instructions": "Shout.",
            "output_modalities": ["text"],
            "audio": {"output": {"voice": "echo"}},
            "max_output_tokens": 20,
            "chorus": {"image_mode": "on"},
        },
    )
    options = respond.create_response.options
    assert (options.instructions, options.text_only, options.voice) == ("Shout.", True, "")
    assert (options.max_output_tokens, options.image_mode) == (20, pb.IMAGE_MODE_ON)
    assert send(t, type="response.create")[0].create_response.options == pb.ResponseOptions()
    [cancel] = send(t, type="response.cancel", response_id="resp_1")
    assert cancel.cancel_response.response_id == "resp_1"
    [truncate] = send(
        t, type="conversation.item.truncate", item_id="a", content_index=0, audio_end_ms=1500
    )
    assert truncate.truncate_item == pb.ItemTruncate(item_id="a", audio_end_ms=1500)
    [delete] = send(t, type="conversation.item.delete", item_id="a")
    assert delete.delete_item.item_id == "a"


@pytest.mark.parametrize(
    ("event", "param", "code"),
    [
        ({"event_id": "x"}, "type", "missing_required_parameter"),
        ({"type": "no.such.event"}, "type", "invalid_value"),
        ({"type": "conversation.item.retrieve", "item_id": "a"}, "type", "unsupported_event"),
        ({"type": "input_audio_buffer.append"}, "audio", "missing_required_parameter"),
        ({"type": "input_audio_buffer.append", "audio": "%%%"}, "audio", "invalid_base64"),
        ({"type": "input_audio_buffer.append", "audio": "AA=="}, "audio", "invalid_audio"),
        (
            {"type": "input_audio_buffer.append", "audio": "A" * 4000},
            "audio",
            "audio_too_large",
        ),
        (
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "mp3"}}}},
            },
            "session.audio.input.format.type",
            "invalid_value",
        ),
        (
            {"type": "session.update", "session": {"max_output_tokens": 0}},
            "session.max_output_tokens",
            "invalid_value",
        ),
        (
            {"type": "session.update", "session": {"tools": [{"type": "function"}]}},
            "session.tools",
            "unsupported_parameter",
        ),
        (
            {"type": "session.update", "session": {"audio": {"output": {"voice": {"x": 1}}}}},
            "session.audio.output.voice",
            "invalid_value",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call", "role": "user"},
            },
            "item.type",
            "unsupported_parameter",
        ),
        (
            {
                "type": "conversation.item.create",
                "item": {"role": "system", "content": [{"type": "input_audio", "audio": ""}]},
            },
            "item.content.0.type",
            "invalid_value",
        ),
        (
            {
                "type": "conversation.item.truncate",
                "item_id": "a",
                "content_index": 1,
                "audio_end_ms": 1,
            },
            "content_index",
            "invalid_value",
        ),
        (
            {"type": "conversation.item.truncate", "item_id": "a"},
            "audio_end_ms",
            "missing_required_parameter",
        ),
        (
            {"type": "response.create", "response": {"conversation": "none"}},
            "response.conversation",
            "unsupported_parameter",
        ),
    ],
)
def test_bad_client_events_are_errors_naming_the_field(
    event: dict[str, Any], param: str, code: str
) -> None:
    t = translator(max_append_bytes=1024)
    with pytest.raises(EventError) as refused:
        send(t, **{"event_id": "evt_7", **event})
    error = refused.value
    assert (error.param, error.code, error.event_id) == (
        param,
        code,
        event.get("event_id", "evt_7"),
    )
    assert error.kind == "invalid_request_error" and error.message


@pytest.mark.parametrize("raw", ["{oops", "[1]", b"\xff\xfe", "null"])
def test_malformed_json(raw: str | bytes) -> None:
    with pytest.raises(EventError) as refused:
        translator().client_event(raw)
    assert refused.value.code == "invalid_json" and refused.value.param is None


@pytest.mark.parametrize(
    ("field", "param", "request_event", "reason", "code"),
    [
        (
            "commit",
            None,
            "input_audio_buffer.commit",
            "invalid_request",
            "input_audio_buffer_commit_empty",
        ),
        ("audio", "audio", "input_audio_buffer.append", "limit_exceeded", "limit_exceeded"),
        (
            "item.text",
            "item.content",
            "conversation.item.create",
            "limit_exceeded",
            "limit_exceeded",
        ),
        (
            "previous_item_id",
            "previous_item_id",
            "conversation.item.create",
            "not_found",
            "not_found",
        ),
        ("create_response", None, "response.create", "invalid_request", "invalid_request"),
        ("response_id", "response_id", "response.cancel", "not_found", "not_found"),
        (
            "config.turn_detection.threshold",
            "session.audio.input.turn_detection.threshold",
            "session.update",
            "invalid_session_config",
            "invalid_session_config",
        ),
        (
            "config.input_audio_format.encoding",
            "session.audio.input.format",
            "session.update",
            "invalid_session_config",
            "invalid_session_config",
        ),
    ],
)
def test_session_errors_name_the_client_event_and_its_member(
    field: str, param: str | None, request_event: str, reason: str, code: str
) -> None:
    t = translator()
    minimal = {
        "input_audio_buffer.commit": {},
        "input_audio_buffer.append": {"audio": ""},
        "conversation.item.create": {
            "item": {"role": "user", "content": [{"type": "input_text", "text": "x"}]}
        },
        "response.create": {},
        "response.cancel": {},
        "session.update": {"session": {}},
    }[request_event]
    send(t, type=request_event, event_id="client_1", **minimal)
    error = pb.SessionError(code="INVALID_ARGUMENT", message="no", field=field, reason=reason)
    [shown] = serve(t, pb.SessionEvent(error=error))
    assert shown["error"] == {
        "type": "invalid_request_error",
        "code": code,
        "message": "no",
        "param": param,
        "event_id": "client_1",
    }


def test_server_side_failures_are_server_errors() -> None:
    t = translator()
    error = pb.SessionError(
        code="UNAVAILABLE", message="speech service down", reason="transcription_failed"
    )
    fatal = pb.SessionError(code="DEADLINE_EXCEEDED", message="too long", fatal=True)
    shown = serve(t, pb.SessionEvent(error=error), pb.SessionEvent(error=fatal))
    assert [e["error"]["type"] for e in shown] == ["server_error", "server_error"]
    assert shown[0]["error"]["code"] == "transcription_failed"
    assert t.fatal


# --- the beta protocol ------------------------------------------------------------------------


def test_beta_names_and_layout() -> None:
    t = translator(beta=True)
    [request] = send(
        t,
        type="session.update",
        session={
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "pcm16",
            "turn_detection": None,
            "input_audio_transcription": {"model": "whisper-1"},
            "max_response_output_tokens": 40,
            "instructions": "Hi",
        },
    )
    config = request.config
    assert not config.text_only and config.turn_detection.type == pb.TurnDetection.TYPE_NONE
    assert config.input_audio_format.sample_rate_hz == 8000 and config.max_output_tokens == 40
    assert config.instructions == "Hi"
    [shown] = check(updated(t, config), beta=True)
    session = shown["session"]
    assert shown["type"] == "session.updated"
    assert (session["input_audio_format"], session["output_audio_format"]) == ("g711_ulaw", "pcm16")
    assert (session["voice"], session["turn_detection"], session["modalities"]) == (
        "alloy",
        None,
        ["audio", "text"],
    )
    events = serve(t, *reply_events("Hi there."), beta=True)
    assert types(events)[:4] == [
        "response.created",
        "conversation.item.created",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert "response.audio_transcript.delta" in types(events)
    assert "response.audio.delta" in types(events) and "response.audio.done" in types(events)
    assert "conversation.item.done" not in types(events)  # the beta protocol has none
    done = events[-1]["response"]
    assert done["modalities"] == ["audio", "text"]
    assert done["output"][0]["content"] == [{"type": "audio", "transcript": "Hi there."}]
    text = serve(translator(beta=True), *reply_events("Hi.", audio=False), beta=True)
    assert "response.text.delta" in types(text) and "response.text.done" in types(text)
    [respond] = send(t, type="response.create", response={"modalities": ["text"], "voice": "x"})
    assert respond.create_response.options.text_only
    assert respond.create_response.options.voice == "x"


def test_beta_errors_name_the_beta_members() -> None:
    t = translator(beta=True)
    with pytest.raises(EventError) as refused:
        send(t, type="session.update", session={"input_audio_format": "opus"})
    assert refused.value.param == "session.input_audio_format"
    send(t, type="session.update", session={"voice": "nobody"}, event_id="b1")
    error = pb.SessionError(
        code="NOT_FOUND", message="no", field="config.voice", reason="invalid_session_config"
    )
    [shown] = serve(t, pb.SessionEvent(error=error), beta=True)
    assert (shown["error"]["param"], shown["error"]["event_id"]) == ("session.voice", "b1")


def test_a_beta_transcription_session() -> None:
    t = RealtimeTranslator(dialect=BETA, transcription=True)
    first = t.start()
    assert first.config.type == pb.SESSION_TYPE_TRANSCRIPTION
    [created] = updated(t, first.config)
    assert created["type"] == "transcription_session.created"
    [request] = send(
        t,
        type="transcription_session.update",
        session={"input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"}},
    )
    assert request.config.type == pb.SESSION_TYPE_TRANSCRIPTION
    assert request.config.language == "en"
    [shown] = updated(t, request.config)
    assert shown["type"] == "transcription_session.updated"
    assert shown["session"]["input_audio_transcription"]["model"] == "gpt-4o-transcribe"


# --- the key in a subprotocol ------------------------------------------------------------------


def test_the_key_as_a_subprotocol_only_on_an_upgrade() -> None:
    upgrade = {"Connection": "keep-alive, Upgrade", "Upgrade": "websocket"}
    offered = {
        "Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.sk-1, openai-beta.realtime-v1"
    }
    assert subprotocol_key(offered) == "sk-1"
    assert subprotocol_key({"Sec-WebSocket-Protocol": "realtime"}) is None
    assert presented_key({**upgrade, **offered}) == "sk-1"
    assert presented_key(offered) is None  # not an upgrade: headers only
    assert presented_key({**upgrade, **offered, "Authorization": "Bearer sk-2"}) == "sk-2"


@pytest.mark.parametrize("beta", [False, True], ids=["ga", "beta"])
def test_a_failed_transcription_names_its_item(beta: bool) -> None:
    """A user item whose transcription failed gets OpenAI's own event for it (a client can
    tell which item has no transcript); other errors stay plain ``error`` events."""
    t = translator(beta=beta)
    failed = pb.SessionEvent(
        error=pb.SessionError(
            code="UNAVAILABLE",
            message="speech-to-text is unavailable",
            reason="transcription_failed",
            item_id="item_7",
        )
    )
    (shown,) = check(serve(t, failed, beta=beta), beta=beta)
    assert shown["type"] == "conversation.item.input_audio_transcription.failed"
    assert shown["item_id"] == "item_7" and shown["content_index"] == 0
    assert shown["error"]["code"] == "unavailable"
    assert shown["error"]["message"] == "speech-to-text is unavailable"
    plain = pb.SessionEvent(
        error=pb.SessionError(code="NOT_FOUND", message="no item", field="item_id")
    )
    assert types(check(serve(t, plain, beta=beta), beta=beta)) == ["error"]
