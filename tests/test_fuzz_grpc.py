"""Every gRPC method of every Chorus service, fuzzed with requests generated from the protos.

The methods are enumerated from the generated descriptors (``chorus.v1.*_pb2``), and the test
first proves the enumeration complete: every ``chorus.v1`` service is in the catalog (served by
some process) and every method has a case here, so a method added to a proto fails until it is
fuzzed. Requests come from ``tests/support/proto_strategies.py``: whole messages generated from
the descriptor (garbage, refused at the first check) and valid requests with a few fields
replaced (which get past it); streaming methods get a generated sequence of a few messages,
usually a valid first one and then anything. Each call runs against the real server of the
session fixtures, over real gRPC on loopback, with a deadline:

- its status is never INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE (a crash, an unmapped
  exception, a server gone), nor DEADLINE_EXCEEDED (garbage must be answered, not hung on);
- a refusal's details are a readable message (short, no traceback);
- error events inside a stream (``TurnError``, ``SessionError``) carry no server-fault code;
- afterwards the server's health is SERVING and a valid request still succeeds.

The work one request can cause is bounded before it is sent (``bound_*``: a few tokens, tiny
images, short text), but only where the value is within the service's own limit: a value over
the limit is sent as generated, so the service's refusal of it is what is tested.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from chorus.v1 import (
    common_pb2,
    image_pb2,
    llm_pb2,
    orchestrator_pb2,
    stt_pb2,
    tts_pb2,
)
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.processes import ServiceProcess
from services.catalog import SERVICES
from services.common.audio import wav_bytes
from tests.support.proto_strategies import Limits, messages, mutations, with_bounds

pb = orchestrator_pb2
PROTO_MODULES = (common_pb2, stt_pb2, tts_pb2, llm_pb2, image_pb2, orchestrator_pb2)
DEADLINE_S = 120.0
"""Every generated call is answered well within this (a refusal in milliseconds, bounded work
in seconds); reaching it is a hang."""
SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
SERVER_FAULT_NAMES = {code.name for code in SERVER_FAULTS}
TENANT = (("x-chorus-tenant", "fuzz"),)
SCALE = int(os.environ.get("CHORUS_FUZZ_SCALE", "1"))
"""Examples per method times this: 1 in ``make test``; more for a long hunt
(``CHORUS_FUZZ_SCALE=20``), which stays reproducible (derandomized) at any scale."""

# The session fixtures' limits (tests/conftest.py): below them work is capped, above them the
# value is sent as generated and must be refused.
LLM_MAX_TOKENS = 1024
IMAGE_MAX_SIDE, IMAGE_MAX_STEPS, IMAGE_MAX_IMAGES = 512, 50, 3
TTS_MAX_TEXT = 2000
ORCH_MAX_TOKENS = 8192  # the settings' own bound on max_tokens

SMALL = Limits(huge_text=100_000, huge_bytes=100_000)
STREAMED = Limits(huge_text=20_000, huge_bytes=32_000)
"""Streams send several messages: each huge one is kept to about a second of audio."""


def _tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


TONE_WAV = wav_bytes(_tone(16_000, 0.5), 16_000)
PCM_16K = (_tone(16_000, 0.3) * 32767).astype("<i2").tobytes()
PCM_24K = (_tone(24_000, 0.3) * 32767).astype("<i2").tobytes()


# --- bounds on the work of one request ----------------------------------------------------------


def _cap(message: Message, name: str, most: int, limit: int, zero: int | None = None) -> None:
    """``message.name`` at most ``most`` where it is within ``limit``; 0 becomes ``zero`` when
    given (0 means "the default", which may be more work than ``most``)."""
    value = getattr(message, name)
    if value == 0 and zero is not None:
        setattr(message, name, zero)
    elif value <= limit:
        setattr(message, name, min(value, most))


def _cap_side(message: Message, name: str) -> None:
    """A side within the limit becomes 64 (keeping a size that is not a multiple of 8 one)."""
    value = getattr(message, name)
    if 64 < value <= IMAGE_MAX_SIDE:
        setattr(message, name, 64 + value % 8)


def bound_tts(m: Message) -> None:
    if len(m.text) <= TTS_MAX_TEXT:
        m.text = m.text[:80]


def bound_llm(m: Message) -> None:
    _cap(m, "max_tokens", 4, LLM_MAX_TOKENS, zero=4)


def bound_image(m: Message) -> None:
    _cap_side(m, "width")
    _cap_side(m, "height")
    _cap(m, "steps", 2, IMAGE_MAX_STEPS)
    _cap(m, "num_images", 1, IMAGE_MAX_IMAGES)


def _bound_turn_config(config: Message) -> None:
    options = config.options
    _cap(options, "max_tokens", 4, ORCH_MAX_TOKENS, zero=4)
    _cap_side(options, "image_width")
    _cap_side(options, "image_height")
    _cap(options, "image_steps", 2, IMAGE_MAX_STEPS)


def bound_run_turn(m: Message) -> None:
    # Without a config a turn with text runs on the defaults (96 tokens, spoken): bounded too.
    if m.HasField("config") or m.text.strip():
        _bound_turn_config(m.config)


def bound_converse(m: Message) -> None:
    if m.WhichOneof("request") == "config":
        _bound_turn_config(m.config)


def bound_session(m: Message) -> None:
    kind = m.WhichOneof("request")
    if kind == "config":
        _cap(m.config, "max_output_tokens", 4, ORCH_MAX_TOKENS, zero=4)
    elif kind == "create_response":
        _cap(m.create_response.options, "max_output_tokens", 4, ORCH_MAX_TOKENS, zero=4)


def no_bound(_: Message) -> None:
    pass


# --- the cases: every method, how to call it, what a valid request is ---------------------------


@dataclass(frozen=True)
class Case:
    """One method: its server (a session fixture), a valid request (for a stream: a valid
    sequence), how to bound generated ones, and how many to try."""

    fixture: str
    valid: tuple[Message, ...]
    bound: Callable[[Message], None] = no_bound
    examples: int = 20
    limits: Limits = SMALL
    after: tuple[Message, ...] = field(default=())
    first_only: bool = False
    """The first message's kind (a oneof member) may come only first: the ordered streams'
    later messages keep off it, so they reach the input behind it."""
    """For a stream: valid messages that may follow the generated first ones (so a valid
    config is followed by generated input, and generated config by valid input)."""


STT_CONFIG = stt_pb2.StreamingTranscribeRequest(
    config=stt_pb2.StreamingTranscribeConfig(
        format=common_pb2.RawAudioFormat(
            encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE, sample_rate_hz=16_000, channels=1
        ),
        language="en",
    )
)
TURN_CONFIG = pb.TurnConfig(
    input_mode=pb.INPUT_MODE_TEXT,
    options=pb.TurnOptions(max_tokens=4, text_only=True),
)
SESSION_CONFIG = pb.SessionConfig(
    type=pb.SESSION_TYPE_CONVERSATION,
    text_only=True,
    max_output_tokens=4,
    turn_detection=pb.TurnDetection(type=pb.TurnDetection.TYPE_NONE),
)

CASES: dict[str, Case] = {
    "/chorus.v1.SpeechToText/Transcribe": Case(
        "stt_faster_whisper",
        (stt_pb2.TranscribeRequest(audio=TONE_WAV, language="en"),),
        examples=30,
    ),
    "/chorus.v1.SpeechToText/StreamingTranscribe": Case(
        "stt_faster_whisper",
        (STT_CONFIG, stt_pb2.StreamingTranscribeRequest(audio_chunk=PCM_16K)),
        examples=25,
        limits=STREAMED,
        first_only=True,
    ),
    "/chorus.v1.SpeechToText/ListModels": Case(
        "stt_faster_whisper", (common_pb2.ListModelsRequest(),), examples=3
    ),
    "/chorus.v1.TextToSpeech/Synthesize": Case(
        "tts_piper", (tts_pb2.SynthesizeRequest(text="Hello there."),), bound_tts, 40
    ),
    "/chorus.v1.TextToSpeech/StreamingSynthesize": Case(
        "tts_piper", (tts_pb2.SynthesizeRequest(text="Hi. Bye."),), bound_tts, 25
    ),
    "/chorus.v1.TextToSpeech/ListVoices": Case(
        "tts_piper", (tts_pb2.ListVoicesRequest(),), examples=10
    ),
    "/chorus.v1.TextGeneration/Generate": Case(
        "llm_llama_cpp",
        (
            llm_pb2.GenerateTextRequest(
                messages=[llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content="Hi")],
                max_tokens=2,
                seed=1,
            ),
        ),
        bound_llm,
        30,
    ),
    "/chorus.v1.TextGeneration/ListModels": Case(
        "llm_llama_cpp", (common_pb2.ListModelsRequest(),), examples=3
    ),
    "/chorus.v1.ImageGeneration/Generate": Case(
        "image_diffusers",
        (image_pb2.GenerateImageRequest(prompt="a red square", steps=1, seed=1),),
        bound_image,
        30,
    ),
    "/chorus.v1.ImageGeneration/ListModels": Case(
        "image_diffusers", (common_pb2.ListModelsRequest(),), examples=3
    ),
    "/chorus.v1.Orchestrator/RunTurn": Case(
        "orchestrator",
        (pb.RunTurnRequest(config=TURN_CONFIG, text="Hi"),),
        bound_run_turn,
        30,
    ),
    "/chorus.v1.Orchestrator/Converse": Case(
        "orchestrator",
        (pb.ConverseRequest(config=TURN_CONFIG), pb.ConverseRequest(text="Hi")),
        bound_converse,
        25,
        STREAMED,
        after=(pb.ConverseRequest(end_of_input=pb.EndOfInput()),),
        first_only=True,
    ),
    "/chorus.v1.Orchestrator/Session": Case(
        "orchestrator",
        (
            pb.SessionRequest(config=SESSION_CONFIG),
            pb.SessionRequest(
                create_item=pb.ItemCreate(
                    item=pb.ConversationItem(role=llm_pb2.CHAT_ROLE_USER, text="Hi")
                )
            ),
        ),
        bound_session,
        25,
        STREAMED,
        after=(
            pb.SessionRequest(audio=PCM_24K),
            pb.SessionRequest(create_response=pb.ResponseCreate()),
        ),
    ),
    "/chorus.v1.Conversations/CreateConversation": Case(
        "orchestrator", (pb.CreateConversationRequest(title="fuzz"),), examples=20
    ),
    "/chorus.v1.Conversations/GetConversation": Case(
        "orchestrator", (pb.GetConversationRequest(id=""),), examples=20
    ),
    "/chorus.v1.Conversations/ListConversations": Case(
        "orchestrator", (pb.ListConversationsRequest(page_size=2),), examples=20
    ),
    "/chorus.v1.Conversations/DeleteConversation": Case(
        "orchestrator", (pb.DeleteConversationRequest(id=""),), examples=20
    ),
}
"""Path -> case; GetConversation and DeleteConversation's valid requests are given a real id
when they are checked after the fuzz (an empty one is NOT_FOUND)."""


@dataclass(frozen=True)
class Method:
    path: str
    service: str
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool


def _methods() -> dict[str, Method]:
    """Every method of every ``chorus.v1`` service, from the generated descriptors."""
    found: dict[str, Method] = {}
    for module in PROTO_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                found[path] = Method(
                    path,
                    service.full_name,
                    _class(method.input_type),
                    _class(method.output_type),
                    method.client_streaming,
                    method.server_streaming,
                )
    return found


def _class(descriptor: Any) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


METHODS = _methods()


def test_every_method_of_every_service_is_fuzzed() -> None:
    """The enumeration is complete: every chorus.v1 service is one the catalog serves (so it
    has a server here), and every method of each has a case above; a new method fails here
    until it is fuzzed."""
    served = {name for s in SERVICES for name in (s.grpc_service, *s.also_serves) if name}
    declared = {m.service for m in METHODS.values()}
    assert declared == served
    assert set(CASES) == set(METHODS)
    assert len(METHODS) >= 17
    for path, case in CASES.items():  # each valid request is of the method's own type
        assert all(type(m) is METHODS[path].request for m in case.valid + case.after), path


# --- calling a method generically ---------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list[Message]


def _serialize(request: Message | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def call(channel: grpc.Channel, method: Method, requests: list[Any]) -> Outcome:
    """One call of ``method`` with ``requests`` (one for a unary request; messages, or bytes
    sent as they are), responses read to the end, under the deadline."""
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    make = kinds[(method.client_streaming, method.server_streaming)]
    stub = make(
        method.path,
        request_serializer=_serialize,
        response_deserializer=method.response.FromString,
    )
    argument: Any = iter(requests) if method.client_streaming else requests[0]
    responses: list[Message] = []
    try:
        result = stub(argument, timeout=DEADLINE_S, metadata=TENANT)
        if method.server_streaming:
            responses.extend(result)
        else:
            responses.append(result)
    except grpc.RpcError as error:
        assert isinstance(error, grpc.Call)
        return Outcome(error.code(), error.details() or "", responses)
    return Outcome(grpc.StatusCode.OK, "", responses)


def _stream_errors(responses: Iterable[Message]) -> Iterator[tuple[str, str]]:
    """(code, message) of every error event inside a stream's responses."""
    for response in responses:
        if isinstance(response, (pb.TurnEvent, pb.SessionEvent)) and response.HasField("error"):
            yield response.error.code, response.error.message
    for response in responses:
        if isinstance(response, pb.RunTurnResponse):
            for error in response.errors:
                yield error.code, error.message


def judge(method: Method, requests: list[Message], outcome: Outcome) -> None:
    where = f"{method.path} with {[str(r)[:300] for r in requests]}"
    assert outcome.code not in SERVER_FAULTS, f"{outcome.code.name}: {outcome.details} ({where})"
    if outcome.code != grpc.StatusCode.OK:
        details = outcome.details
        assert details.strip(), f"{outcome.code.name} without a message ({where})"
        assert len(details) <= 2000 and "Traceback" not in details, (details[:500], where)
        assert not details.startswith("Exception calling application"), (details, where)
        # grpc's own words when the trailers (the status) were too large to be read: the
        # service's status was lost on the way.
        assert "metadata size exceeds" not in details, (details[:300], where)
    for code, message in _stream_errors(outcome.responses):
        assert code not in SERVER_FAULT_NAMES, f"error event {code}: {message} ({where})"
        assert message.strip(), (code, where)


# --- the fuzz -----------------------------------------------------------------------------------


def _requests(method: Method, case: Case) -> st.SearchStrategy[list[Message]]:
    """For a unary request: one generated or mutated request. For a stream: a few messages,
    each generated, a mutation of a valid one, or a valid one, in any order."""
    cls = method.request

    def bounded(strategy: st.SearchStrategy[Message]) -> st.SearchStrategy[Message]:
        return with_bounds(strategy, case.bound)

    one = bounded(
        st.one_of(
            messages(cls, case.limits),
            *[mutations(v, case.limits) for v in case.valid],
        )
    )
    if not method.client_streaming:
        return st.lists(one, min_size=1, max_size=1)
    anything = st.one_of(one, st.sampled_from(case.valid + case.after))
    rest = anything
    if case.first_only:
        first_kind = _kind(case.valid[0])
        rest = anything.filter(lambda m: _kind(m) != first_kind)
    valid_start = st.tuples(st.just(list(case.valid[:1])), st.lists(rest, max_size=3)).map(
        lambda parts: [*parts[0], *parts[1]]
    )
    # The protocol's order kept (a first message, input, the closing ones) with a field or two
    # changed: what gets past the stream's first checks to the work behind them.
    first = bounded(st.one_of(st.just(case.valid[0]), mutations(case.valid[0], case.limits)))
    later = case.valid[1:]
    later_one = (
        bounded(st.one_of(st.sampled_from(later), *[mutations(v, case.limits) for v in later]))
        if later
        else one
    )
    if case.first_only:
        later_one = later_one.filter(lambda m: _kind(m) != first_kind)
    middle = st.lists(later_one, min_size=1, max_size=2)
    ordered = st.tuples(first, middle).map(lambda parts: [parts[0], *parts[1], *case.after])
    # Half the streams keep the protocol's order (one_of draws its branches alike).
    return st.one_of(ordered, st.lists(anything, max_size=4), ordered, valid_start).map(
        lambda sent: [_copy(m) for m in sent]
    )


def _kind(message: Message) -> str | None:
    """The member set in a message's first oneof (None: none set, or no oneof)."""
    oneofs = message.DESCRIPTOR.oneofs
    return message.WhichOneof(oneofs[0].name) if oneofs else None


def _copy(message: Message) -> Message:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _channel(proc: ServiceProcess) -> grpc.Channel:
    return grpc.insecure_channel(
        proc.address,
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )


def _healthy(channel: grpc.Channel, service: str) -> None:
    from grpc_health.v1 import health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", service):
        answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


def _valid_requests(channel: grpc.Channel, method: Method, case: Case) -> list[Message]:
    requests = [_copy(m) for m in case.valid]
    if method.path.endswith(("/GetConversation", "/DeleteConversation")):
        create = METHODS["/chorus.v1.Conversations/CreateConversation"]
        created = call(channel, create, [pb.CreateConversationRequest(title="after the fuzz")])
        assert created.code == grpc.StatusCode.OK, created.details
        requests[0].id = created.responses[0].id
    if method.client_streaming:
        requests += [_copy(m) for m in case.after]
    return requests


def _succeeds(channel: grpc.Channel, method: Method, requests: list[Message]) -> Outcome:
    """The valid call, retried while the service says it is busy (work of the last generated
    call may still hold its one worker)."""
    for _ in range(60):
        outcome = call(channel, method, requests)
        if outcome.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            break
        time.sleep(1)
    assert outcome.code == grpc.StatusCode.OK, f"{outcome.code.name}: {outcome.details}"
    return outcome


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CASES))
def test_generated_requests(path: str, request: pytest.FixtureRequest) -> None:
    method, case = METHODS[path], CASES[path]
    proc: ServiceProcess = request.getfixturevalue(case.fixture)
    channel = _channel(proc)
    tried: Counter[str] = Counter()
    slowest = [0.0]
    refusals: Counter[str] = Counter()

    @settings(
        max_examples=case.examples * SCALE,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_requests(method, case))
    def fuzz(requests: list[Message]) -> None:
        started = time.monotonic()
        outcome = call(channel, method, requests)
        slowest[0] = max(slowest[0], time.monotonic() - started)
        tried[outcome.code.name] += 1
        if outcome.code != grpc.StatusCode.OK:
            refusals[f"{outcome.code.name}: {outcome.details[:70]}"] += 1
        judge(method, requests, outcome)

    try:
        fuzz()
        print(
            f"{path}: {sum(tried.values())} generated calls, {dict(tried)},"
            f" slowest {slowest[0]:.1f} s; most refused with {refusals.most_common(6)}"
        )
        assert sum(tried.values()) >= 1
        _healthy(channel, method.service)
        outcome = _succeeds(channel, method, _valid_requests(channel, method, case))
        for code, message in _stream_errors(outcome.responses):
            pytest.fail(f"a valid {path} got an error event {code}: {message}")
    finally:
        channel.close()


NOT_A_MESSAGE = st.one_of(
    st.binary(max_size=64).map(lambda b: b"\xff" + b),  # wire type 7: no message has it
    st.binary(max_size=64).map(lambda b: b"\x0a\xff\xff\xff\x0f" + b),  # a length past the end
)
"""Bytes that no protobuf parser accepts, whatever the message type."""


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(CASES))
def test_bytes_that_are_no_message(path: str, request: pytest.FixtureRequest) -> None:
    """A request (or, in a stream, a message after valid ones) whose bytes do not parse is
    INVALID_ARGUMENT naming the message type: grpc answered UNKNOWN "Unexpected DecodeError"
    before any handler ran, until the interceptor took the deserializer's error."""
    method, case = METHODS[path], CASES[path]
    proc: ServiceProcess = request.getfixturevalue(case.fixture)
    channel = _channel(proc)
    prefixes = range(len(case.valid) + 1) if method.client_streaming else range(1)

    @settings(
        max_examples=5,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(garbage=NOT_A_MESSAGE, prefix=st.sampled_from(list(prefixes)))
    def fuzz(garbage: bytes, prefix: int) -> None:
        sent: list[Any] = [*case.valid[:prefix], garbage]
        outcome = call(channel, method, sent)
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (outcome, sent)
        assert f"not a valid {method.request.DESCRIPTOR.full_name}" in outcome.details

    try:
        fuzz()
        _healthy(channel, method.service)
    finally:
        channel.close()


@pytest.mark.parametrize(
    ("fixture", "path", "huge"),
    [
        ("tts_piper", "/chorus.v1.TextToSpeech/Synthesize", tts_pb2.SynthesizeRequest(text="Hi")),
        ("stt_faster_whisper", "/chorus.v1.SpeechToText/Transcribe", stt_pb2.TranscribeRequest()),
    ],
)
def test_an_error_quoting_a_huge_name_keeps_its_status(
    fixture: str, path: str, huge: Message, request: pytest.FixtureRequest
) -> None:
    """An unknown voice or model of 100,000 characters is NOT_FOUND with a message cut short,
    not RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" (the status quoted the
    whole name in trailers larger than a peer reads)."""
    proc: ServiceProcess = request.getfixturevalue(fixture)
    message = _copy(huge)
    if isinstance(message, tts_pb2.SynthesizeRequest):
        message.voice = "é" * 100_000
    else:
        message.audio, message.model = TONE_WAV, "é" * 100_000
    channel = _channel(proc)
    try:
        outcome = call(channel, METHODS[path], [message])
    finally:
        channel.close()
    assert outcome.code == grpc.StatusCode.NOT_FOUND, outcome.details[:300]
    assert "éé" in outcome.details and len(outcome.details.encode()) < 1000


HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@pytest.mark.slow
@pytest.mark.parametrize(
    "fixture",
    ["stt_faster_whisper", "tts_piper", "llm_llama_cpp", "image_diffusers", "orchestrator"],
)
def test_generated_health_checks(fixture: str, request: pytest.FixtureRequest) -> None:
    """grpc.health.v1.Health/Check with any service name: SERVING or NOT_FOUND, nothing else
    (Watch streams until cancelled and List is one call without arguments: not fuzzed)."""
    proc: ServiceProcess = request.getfixturevalue(fixture)
    method = Method(
        HEALTH_CHECK,
        "grpc.health.v1.Health",
        health_pb2.HealthCheckRequest,
        health_pb2.HealthCheckResponse,
        False,
        False,
    )
    channel = _channel(proc)

    @settings(
        max_examples=15,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(messages(health_pb2.HealthCheckRequest, SMALL))
    def fuzz(message: Message) -> None:
        outcome = call(channel, method, [message])
        assert outcome.code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), outcome.code
        # grpcio's own HealthServicer answers an unknown name NOT_FOUND without details.
        if outcome.code == grpc.StatusCode.OK:
            judge(method, [message], outcome)

    try:
        fuzz()
        spec = next(s for s in SERVICES if s.name == fixture.split("_")[0])
        _healthy(channel, spec.grpc_service)
        # What the server says it serves (gRPC reflection) is what the descriptors declare for
        # it: no service of the process escapes the enumeration above.
        served = _reflected_services(channel) - {HEALTH, REFLECTION}
        assert served == {spec.grpc_service, *spec.also_serves}
        assert served <= {m.service for m in METHODS.values()}
    finally:
        channel.close()


HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def _reflected_services(channel: grpc.Channel) -> set[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    answers = list(stub.ServerReflectionInfo(iter([ask]), timeout=10))
    return {s.name for a in answers for s in a.list_services_response.service} - {
        "grpc.reflection.v1.ServerReflection"
    }
