"""The Realtime event parser (``gateway.realtime_events.RealtimeTranslator``) on generated input.

Client events: valid events of every type the official ``openai`` client sends (each seed is
checked against the package's own ``RealtimeClientEvent`` models, GA and beta) are mutated by
Hypothesis (members replaced by arbitrary JSON, NaN and huge numbers among them, removed, added,
the ``type`` swapped for another event's) and sent in sequences to one translator, so a
``session.update`` that changed the input codec is followed by appends in it. Arbitrary JSON
and arbitrary text and bytes are sent too. Every input must give ``SessionRequest``s that
serialize, or an ``EventError`` with a code from the protocol's set, a message, the event's own
``event_id``, and an ``error`` event the official client parses; anything else (an exception
the socket would answer "internal error in the gateway") fails.

Server events: ``SessionEvent``s generated from the proto descriptor (tests/support/
proto_strategies.py: unknown enums, huge strings, NaN) become JSON server events without an
exception, so a newer orchestrator cannot break a socket.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any, get_args

import pytest
from chorus.v1 import orchestrator_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.beta.realtime.realtime_client_event import (
    RealtimeClientEvent as BetaClientEvent,
)
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_error_event import RealtimeErrorEvent
from pydantic import BaseModel, TypeAdapter

from gateway.realtime_events import (
    BETA,
    GA,
    Dialect,
    EventError,
    RealtimeTranslator,
    dumps,
    error_event,
)
from gateway.realtime_schemas import CLIENT_EVENTS, UNSUPPORTED_EVENTS
from gateway.settings import DEFAULT_MODEL_ALIASES, DEFAULT_VOICE_ALIASES
from tests.support.proto_strategies import Limits, messages

CODES = {
    "invalid_json",
    "missing_required_parameter",
    "unsupported_event",
    "invalid_value",
    "unsupported_parameter",
    "audio_too_large",
    "invalid_base64",
    "invalid_audio",
}
"""Every code an ``EventError`` may carry: a code outside it is one no client knows."""

SCALE = int(os.environ.get("CHORUS_FUZZ_SCALE", "1"))
"""Examples times this: 1 in ``make test``, more for a long hunt."""
FUZZ = settings(
    max_examples=300 * SCALE,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

PCM = base64.b64encode(b"\x01\x00" * 240).decode()
ULAW = base64.b64encode(b"\xff" * 80).decode()

GA_SEEDS: list[dict[str, Any]] = [
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "max_output_tokens": 16,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        },
    },
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "semantic_vad", "eagerness": "high"},
                },
                "output": {"format": {"type": "audio/pcma"}},
            },
        },
    },
    {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
        },
    },
    {"type": "input_audio_buffer.append", "audio": PCM},
    {"type": "input_audio_buffer.append", "audio": ULAW},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "output_audio_buffer.clear"},
    {
        "type": "conversation.item.create",
        "previous_item_id": "root",
        "item": {
            "id": "item_1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hello there"}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "audio": PCM}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi."}],
        },
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Speak French."}],
        },
    },
    {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 5,
    },
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "conversation.item.retrieve", "item_id": "item_1"},
    {
        "type": "response.create",
        "response": {
            "instructions": "Answer in one word.",
            "output_modalities": ["text"],
            "max_output_tokens": 8,
            "conversation": "auto",
        },
    },
    {
        "type": "response.create",
        "response": {"audio": {"output": {"voice": "alloy"}}, "max_output_tokens": "inf"},
    },
    {"type": "response.cancel", "response_id": "resp_1"},
]

BETA_SEEDS: list[dict[str, Any]] = [
    {
        "type": "session.update",
        "session": {
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "output_audio_format": "g711_ulaw",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
        },
    },
    {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": "g711_alaw",
            "input_audio_transcription": {"model": "whisper-1", "language": "de"},
            "turn_detection": None,
        },
    },
    {
        "type": "response.create",
        "response": {"modalities": ["text"], "voice": "echo", "max_response_output_tokens": 4},
    },
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Sure."}],
        },
    },
    *[
        e
        for e in GA_SEEDS
        if e["type"] not in ("session.update", "response.create", "conversation.item.create")
    ],
]


@pytest.mark.parametrize(
    ("seeds", "union"), [(GA_SEEDS, RealtimeClientEvent), (BETA_SEEDS, BetaClientEvent)]
)
def test_seeds_are_the_official_clients_events(seeds: list[dict[str, Any]], union: Any) -> None:
    """Each seed is an event the official client sends (its own model accepts it), of every
    type that client knows (so the fuzz starts from every event there is)."""
    adapter: TypeAdapter[Any] = TypeAdapter(union)
    for seed in seeds:
        assert isinstance(adapter.validate_python(seed), BaseModel), seed
    known = {get_args(m.model_fields["type"].annotation)[0] for m in get_args(get_args(union)[0])}
    assert {s["type"] for s in seeds} == known


def translator(dialect: Dialect) -> RealtimeTranslator:
    t = RealtimeTranslator(
        dialect=dialect,
        model="gpt-realtime",
        model_id=lambda name: DEFAULT_MODEL_ALIASES.get(name, name),
        voice_id=lambda name: DEFAULT_VOICE_ALIASES.get(name, name),
        max_append_bytes=4096,
    )
    t.start()
    return t


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**32, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "inf", "audio", "text", "user", "message", "audio/pcm", "=" * 5]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every member path of a JSON tree (dict keys and list indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, member in value.items():
            found += _paths(member, (*prefix, key))
    elif isinstance(value, list):
        for index, member in enumerate(value):
            found += _paths(member, (*prefix, index))
    return found


@st.composite
def mutated_events(draw: st.DrawFn, seeds: list[dict[str, Any]]) -> str | bytes:
    """A seed event with one to three members replaced, removed or added, as JSON text (now
    and then with a byte of the text changed, or as UTF-8 bytes, as a socket may deliver)."""
    event = json.loads(json.dumps(draw(st.sampled_from(seeds))))
    event["event_id"] = draw(st.sampled_from(["evt_1", "", "\x00"]) | st.text(max_size=8))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(event)))
        op = draw(st.sampled_from(["replace", "remove", "add", "type"]))
        if op == "type":
            names = [*CLIENT_EVENTS, *UNSUPPORTED_EVENTS, "session.created", "x"]
            event["type"] = draw(st.sampled_from(names))
            continue
        if not path:
            continue
        parent = event
        for step in path[:-1]:
            parent = parent[step]
        if op == "replace":
            parent[path[-1]] = draw(json_values)
        elif op == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    text = json.dumps(event, allow_nan=True)
    form = draw(st.integers(0, 9))
    if form == 0 and text:  # a byte of the text changed
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.characters()) + text[at + 1 :]
    return text.encode("utf-8", "surrogatepass") if form == 1 else text


def outcome(t: RealtimeTranslator, message: str | bytes) -> EventError | list[pb.SessionRequest]:
    """The translator's answer, checked: requests that serialize, or a well-formed error."""
    try:
        requests = t.client_event(message)
    except EventError as error:
        assert error.code in CODES, (error.code, error.message)
        assert isinstance(error.message, str) and error.message
        assert error.param is None or (isinstance(error.param, str) and error.param)
        sent = error_event(
            error.message,
            kind=error.kind,
            code=error.code,
            param=error.param,
            event_id=error.event_id,
        )
        RealtimeErrorEvent.model_validate(json.loads(dumps(sent)))
        try:
            data = json.loads(message)
        except ValueError:
            assert error.code == "invalid_json"
        else:
            given = data.get("event_id") if isinstance(data, dict) else None
            assert error.event_id == (given if isinstance(given, str) else None)
        return error
    for request in requests:
        assert isinstance(request, pb.SessionRequest) and request.WhichOneof("request")
        request.SerializeToString()
    return requests


@pytest.mark.parametrize("dialect", [GA, BETA], ids=["ga", "beta"])
def test_mutated_client_events(dialect: Dialect) -> None:
    seeds = BETA_SEEDS if dialect.beta else GA_SEEDS

    @FUZZ
    @given(st.lists(mutated_events(seeds), min_size=1, max_size=4))
    def run(events: list[str | bytes]) -> None:
        t = translator(dialect)
        for message in events:
            outcome(t, message)

    run()


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from(["type", "event_id", "session"]), json_values))
def test_arbitrary_json(value: Any) -> None:
    """Any JSON: an object with a served type is judged as above; everything else gets the
    code the protocol gives it."""
    error = outcome(translator(GA), json.dumps(value, allow_nan=True))
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict):
        assert isinstance(error, EventError) and error.code == "invalid_json"
    elif not isinstance(kind, str) or not kind:
        assert isinstance(error, EventError) and error.code == "missing_required_parameter"
        assert error.param == "type"
    elif kind in UNSUPPORTED_EVENTS:
        assert isinstance(error, EventError) and error.code == "unsupported_event"
    elif kind not in CLIENT_EVENTS:
        assert isinstance(error, EventError) and error.code == "invalid_value"


@FUZZ
@given(st.text() | st.binary())
def test_arbitrary_text_and_bytes(message: str | bytes) -> None:
    outcome(translator(GA), message)


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


@settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(messages(pb.SessionEvent, Limits(huge_text=5000, huge_bytes=5000)), max_size=4))
def test_generated_session_events_become_server_events(events: list[pb.SessionEvent]) -> None:
    """Whatever the orchestrator sends, the translator answers with JSON events (or none)."""
    for dialect in (GA, BETA):
        t = translator(dialect)
        for event in events:
            for shown in t.server_event(event):
                assert isinstance(shown["type"], str) and shown["event_id"]
                json.loads(dumps(shown), parse_constant=_no_constant)  # as JSON.parse reads
