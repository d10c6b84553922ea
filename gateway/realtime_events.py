"""OpenAI Realtime events <-> the orchestrator's ``Session`` messages, for one socket.

``RealtimeTranslator`` is everything ``/v1/realtime`` knows about a session besides the socket:
client events (JSON) become ``SessionRequest``s, ``SessionEvent``s become server events (JSON
objects). It holds the per-socket state the protocol needs and the orchestrator does not keep:

- the session's settings as the client built them. ``session.update`` names a few members and
  the rest stay, while a ``SessionConfig`` replaces the whole config: each update is merged into
  the last one sent and the whole config goes out. A refused update (an unknown voice, say) leaves
  the orchestrator on its previous config, and the next update builds on that one again.
- the names the client chose (``alloy``, ``whisper-1``, ``audio/pcmu``) where Chorus maps them to
  its own ids, so the session it is shown says what it asked for.
- each response as OpenAI frames it: one assistant item with one content part, whose
  ``*.added`` / ``*.done`` events the orchestrator has no counterpart for.
- the input transcript already sent: the orchestrator sends whole hypotheses, OpenAI deltas.

No I/O and no threads of its own, so tests/fast/test_realtime_events.py drives it directly; the
socket (``gateway/openai/realtime.py``) calls it from its reader and writer threads, under the
translator's lock. Both protocols are served: GA names by default, the beta names and session
layout (``OpenAI-Beta: realtime=v1``) through ``Dialect``, a table and two small rewrites.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb
from pydantic import ValidationError

from gateway import g711
from gateway.realtime_schemas import (
    CLIENT_EVENTS,
    UNSUPPORTED_EVENTS,
    AudioFormat,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemTruncate,
    InputAudioBufferAppend,
    ResponseCancel,
    ResponseCreate,
    ResponseParams,
    Session,
    SessionUpdate,
    TurnDetection,
    VoiceId,
    from_beta,
)

__all__ = [
    "AUDIO_CHUNK_BYTES",
    "AUDIO_DELTA_BYTES",
    "BETA",
    "BETA_NAMES",
    "GA",
    "Dialect",
    "EventError",
    "RealtimeTranslator",
    "dumps",
    "error_event",
    "new_event_id",
]

JSON = dict[str, Any]

AUDIO_CHUNK_BYTES = 64 * 1024
"""An append is sent to the orchestrator in pieces of at most this much PCM (1.4 s at 24 kHz),
well under its per-message limit, so a client's large append is not refused there."""
AUDIO_DELTA_BYTES = 48_000
"""Most audio per ``response.output_audio.delta`` (1 s of 24 kHz PCM16; 64 kB of base64): the
orchestrator's sentence-sized pieces (up to ~20 s) would exceed many clients' frame limits
(1 MiB by default in the ``websockets`` library)."""

BETA_NAMES: dict[str, str | None] = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
    "conversation.item.done": None,
}
"""GA server event name -> the beta protocol's (None: the beta protocol has no such event)."""

_BETA_PARAMS = (
    ("session.audio.output.voice", "session.voice"),
    ("session.audio.output.format", "session.output_audio_format"),
    ("session.audio.input.format", "session.input_audio_format"),
    ("session.audio.input.transcription", "session.input_audio_transcription"),
    ("session.audio.input.turn_detection", "session.turn_detection"),
    ("session.output_modalities", "session.modalities"),
    ("session.max_output_tokens", "session.max_response_output_tokens"),
    ("response.audio.output.voice", "response.voice"),
    ("response.output_modalities", "response.modalities"),
    ("response.max_output_tokens", "response.max_response_output_tokens"),
)
"""GA ``param`` prefix -> where a beta client put that member."""

_BETA_CONTENT = {"output_audio": "audio", "output_text": "text"}
_BETA_FORMATS = {"pcm": "pcm16", "pcmu": "g711_ulaw", "pcma": "g711_alaw"}


@dataclass(frozen=True)
class Dialect:
    """Which protocol the client speaks: GA (the default) or beta."""

    beta: bool = False

    def name(self, ga: str) -> str | None:
        return BETA_NAMES.get(ga, ga) if self.beta else ga

    def param(self, ga: str | None) -> str | None:
        if ga is None or not self.beta:
            return ga
        for prefix, beta in _BETA_PARAMS:
            if ga == prefix or ga.startswith(prefix + "."):
                return beta + ga[len(prefix) :]
        return ga

    def content_type(self, ga: str) -> str:
        return _BETA_CONTENT.get(ga, ga) if self.beta else ga


GA = Dialect()
BETA = Dialect(beta=True)


class EventError(Exception):
    """A client event that cannot be carried out: answered with one ``error`` event, and the
    session goes on."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str = "invalid_value",
        *,
        kind: str = "invalid_request_error",
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.event_id = event_id


def new_event_id() -> str:
    return "event_" + uuid.uuid4().hex[:22]


def dumps(event: JSON) -> str:
    """An event as the socket sends it: strict JSON, where a NaN or an infinity (from a peer
    that sent one) is null; Python's ``NaN`` token is no JSON, and a browser's ``JSON.parse``
    throws on it (found by tests/fast/test_fuzz_realtime.py)."""
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(event), separators=(",", ":"), ensure_ascii=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_finite(member) for member in value]
    return value


def error_event(
    message: str,
    *,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    event_id: str | None = None,
) -> JSON:
    """OpenAI's ``error`` event; ``event_id`` inside is the client event at fault, if one is."""
    return {
        "type": "error",
        "event_id": new_event_id(),
        "error": {
            "type": kind,
            "code": code,
            "message": message,
            "param": param,
            "event_id": event_id,
        },
    }


_PCM = common_pb2.AUDIO_ENCODING_PCM_S16LE
_ROLES = {
    "user": llm_pb2.CHAT_ROLE_USER,
    "assistant": llm_pb2.CHAT_ROLE_ASSISTANT,
    "system": llm_pb2.CHAT_ROLE_SYSTEM,
}
_ROLE_NAMES = {value: name for name, value in _ROLES.items()}
_CONTENT_TYPES = {
    "user": {"input_text", "input_audio"},
    "assistant": {"text", "output_text", "audio", "output_audio"},
    "system": {"input_text"},
}
_ITEM_STATUS = {
    pb.ITEM_STATUS_IN_PROGRESS: "in_progress",
    pb.ITEM_STATUS_COMPLETED: "completed",
    pb.ITEM_STATUS_INCOMPLETE: "incomplete",
}
_IMAGE_MODES = {"off": pb.IMAGE_MODE_OFF, "on": pb.IMAGE_MODE_ON, "auto": pb.IMAGE_MODE_AUTO}
_IMAGE_MODE_NAMES = {value: name for name, value in _IMAGE_MODES.items()}
_EAGERNESS_MS = {"low": 1200, "high": 300}
"""semantic_vad's eagerness as the pause that ends a turn (medium and auto: the default)."""

_STATUS: dict[int, tuple[str, JSON | None]] = {
    pb.RESPONSE_STATUS_COMPLETED: ("completed", None),
    pb.RESPONSE_STATUS_INTERRUPTED: ("cancelled", {"type": "cancelled", "reason": "turn_detected"}),
    pb.RESPONSE_STATUS_CANCELLED: (
        "cancelled",
        {"type": "cancelled", "reason": "client_cancelled"},
    ),
    pb.RESPONSE_STATUS_FAILED: ("failed", {"type": "failed"}),
}
"""The orchestrator's ResponseStatus -> OpenAI's ``status`` and ``status_details``."""

_SERVER_CODES = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)
"""gRPC codes of the orchestrator's making (``server_error``); the others are the client's."""

_PARAMS = (
    ("config.voice", "session.audio.output.voice"),
    ("config.instructions", "session.instructions"),
    ("config.input_audio_format", "session.audio.input.format"),
    ("config.output_sample_rate_hz", "session.audio.output.format"),
    ("config.output_encoding", "session.audio.output.format"),
    ("config.turn_detection", "session.audio.input.turn_detection"),
    ("config.transcription_model", "session.audio.input.transcription.model"),
    ("config.language", "session.audio.input.transcription.language"),
    ("config.max_output_tokens", "session.max_output_tokens"),
    ("config.temperature", "session.temperature"),
    ("config.text_only", "session.output_modalities"),
    ("config.llm_model", "session.chorus.llm_model"),
    ("config.image_mode", "session.chorus.image_mode"),
    ("config.conversation_id", "session.chorus.conversation_id"),
    ("config", "session"),
    ("item.text", "item.content"),
    ("item.audio", "item.content"),
    ("item", "item"),
    ("options.instructions", "response.instructions"),
    ("options.voice", "response.audio.output.voice"),
    ("options.max_output_tokens", "response.max_output_tokens"),
    ("options", "response"),
    ("previous_item_id", "previous_item_id"),
    ("item_id", "item_id"),
    ("audio_end_ms", "audio_end_ms"),
    ("response_id", "response_id"),
    ("audio", "audio"),
)
"""A SessionError's ``field`` (the request's) -> OpenAI's ``param`` (the client event's); a field
not listed (``commit``, ``create_response``, ``image``) names no member of an event."""

_REQUEST_OF_FIELD = (
    ("config", "config"),
    ("audio_end_ms", "item"),
    ("audio", "audio"),
    ("commit", "commit"),
    ("item", "item"),
    ("item_id", "item"),
    ("previous_item_id", "item"),
    ("options", "response"),
    ("create_response", "response"),
    ("cancel_response", "cancel"),
    ("response_id", "cancel"),
)
"""A SessionError's ``field`` -> which kind of client event it answers (its latest one is the
``event_id`` of the error)."""


def _first(prefixes: Sequence[tuple[str, str]], field: str) -> tuple[str, str] | None:
    for prefix, value in prefixes:
        if field == prefix or field.startswith(prefix + "."):
            return prefix, value
    return None


def _param_of_field(field: str) -> str | None:
    found = _first(_PARAMS, field) if field else None
    if found is None:
        return None
    prefix, param = found
    # Only the turn detection's members are named alike on both sides.
    return param + field[len(prefix) :] if prefix == "config.turn_detection" else param


def _param_of_loc(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as a dotted ``param``, without the names pydantic gives the
    branches of a union (``int``, ``VoiceId``, ``literal['inf']``, ``constrained-int``)."""
    parts = [
        str(part)
        for part in loc
        if isinstance(part, int)
        or not (
            part[:1].isupper()
            or part in ("int", "str", "float", "bool")
            or "[" in part
            or "-" in part
        )
    ]
    return ".".join(parts) or None


def _validate(model: type[ClientEvent], data: JSON) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        param = _param_of_loc(first["loc"])
        code = "missing_required_parameter" if first["type"] == "missing" else "invalid_value"
        message = f"{param}: {first['msg']}" if param else first["msg"]
        raise EventError(message, param, code) from None


def _tokens(value: int | str | None) -> int:
    return value if isinstance(value, int) else 0


def _voice_name(voice: str | VoiceId) -> str:
    return voice.id if isinstance(voice, VoiceId) else voice


def _codec(fmt: AudioFormat, param: str) -> tuple[str, int]:
    """(``pcm``, ``pcmu`` or ``pcma``; sample rate)."""
    if fmt.type == "audio/pcm":
        return "pcm", fmt.rate or 24000
    if fmt.rate not in (None, 8000):
        raise EventError("G.711 audio is 8000 Hz", param + ".rate")
    return ("pcmu" if fmt.type == "audio/pcmu" else "pcma"), 8000


def _turn_detection(td: TurnDetection | None) -> pb.TurnDetection:
    if td is None:
        return pb.TurnDetection(type=pb.TurnDetection.TYPE_NONE)
    out = pb.TurnDetection(type=pb.TurnDetection.TYPE_SERVER_VAD)
    for name in (
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "create_response",
        "interrupt_response",
    ):
        value = getattr(td, name)
        if value is not None:
            setattr(out, name, value)
    if td.type == "semantic_vad" and td.silence_duration_ms is None and td.eagerness:
        if td.eagerness in _EAGERNESS_MS:
            out.silence_duration_ms = _EAGERNESS_MS[td.eagerness]
    return out


@dataclass
class _Setup:
    """A session config as the gateway sent it, and what the config has no words for."""

    config: pb.SessionConfig
    input_codec: str = "pcm"
    output_codec: str = "pcm"
    voice: str = ""
    """The voice as the client named it (the config holds Chorus's id for it)."""
    transcription_model: str = ""


@dataclass
class _Reply:
    """One response as OpenAI frames it: one assistant item with one content part."""

    id: str
    item_id: str
    audio: bool = True
    started: bool = False
    finished: bool = False
    text: str = ""
    """The deltas sent so far: a ``*.done`` event's text is their sum, as a client adds them."""


class RealtimeTranslator:
    """One socket's session: client events in, ``SessionRequest``s out, and back.

    Thread-safe: the socket's reader and writer call it concurrently.
    """

    def __init__(
        self,
        *,
        dialect: Dialect = GA,
        model: str = "chorus",
        transcription: bool = False,
        model_id: Callable[[str], str] = lambda name: name,
        voice_id: Callable[[str], str] = lambda name: name,
        max_append_bytes: int = 1024 * 1024,
        model_check: Callable[[str], str | None] = lambda name: None,
    ) -> None:
        """
        Args:
            dialect: GA or beta names.
            model: the ``model`` the client asked for, shown in the session.
            transcription: start as a transcription session (beta ``intent=transcription``).
            model_id, voice_id: an OpenAI model or voice name -> Chorus's id ("" the default).
            max_append_bytes: most audio (decoded) one ``input_audio_buffer.append`` may carry
                (an ``input_audio`` item is bounded by the message size and the orchestrator).
            model_check: why ``session.update``'s ``model`` is refused, or None.
        """
        self.dialect = dialect
        self._model = model
        self._model_id = model_id
        self._voice_id = voice_id
        self._max_append = max_append_bytes
        self._model_check = model_check
        self._lock = threading.RLock()
        kind = pb.SESSION_TYPE_TRANSCRIPTION if transcription else pb.SESSION_TYPE_CONVERSATION
        self._sent = _Setup(
            pb.SessionConfig(
                type=kind,
                output_encoding=_PCM,
                output_sample_rate_hz=24000,
                input_audio_format=common_pb2.RawAudioFormat(
                    encoding=_PCM, sample_rate_hz=24000, channels=1
                ),
            )
        )
        self._confirmed = self._sent
        self._pending: deque[_Setup] = deque()
        self._created = False
        self.session_id = ""
        self._replies: dict[str, _Reply] = {}
        self._reply_of_item: dict[str, str] = {}
        self._heard: dict[str, str] = {}
        self._speech: dict[str, list[int]] = {}
        self._last: dict[str, str | None] = {}
        self.fatal = False
        """A fatal error event went out: the call's own failure need not be told again."""

    # -- client events -> requests ---------------------------------------------------------

    def start(self) -> pb.SessionRequest:
        """The call's first message: the default config (answered by ``session.created``)."""
        with self._lock:
            self._pending.append(self._sent)
            return pb.SessionRequest(config=self._sent.config)

    def client_event(self, message: str | bytes) -> list[pb.SessionRequest]:
        """The requests for one client event (none for some).

        Raises:
            EventError: the event is malformed or cannot be served; ``event_id`` names it.
        """
        try:
            data = json.loads(message)
        except (ValueError, UnicodeDecodeError) as error:
            raise EventError(f"the event is not valid JSON: {error}", code="invalid_json") from None
        if not isinstance(data, dict):
            raise EventError("an event must be a JSON object", code="invalid_json")
        event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
        try:
            return self._client_event(from_beta(data) if self.dialect.beta else data, event_id)
        except EventError as error:
            error.event_id = event_id
            error.param = self.dialect.param(error.param)
            raise

    def _client_event(self, data: JSON, event_id: str | None) -> list[pb.SessionRequest]:
        kind = data.get("type")
        if not isinstance(kind, str) or not kind:
            raise EventError("the event has no type", "type", "missing_required_parameter")
        if kind in UNSUPPORTED_EVENTS:
            raise EventError(f"{kind} is not supported by this server", "type", "unsupported_event")
        model = CLIENT_EVENTS.get(kind)
        if model is None:
            raise EventError(f"unknown event type {kind!r}", "type", "invalid_value")
        event = _validate(model, data)
        handler: Callable[[Any], list[pb.SessionRequest]] = getattr(
            self, "_on_" + kind.replace(".", "_")
        )
        with self._lock:
            requests = handler(event)
            request = _REQUEST_OF_EVENT.get(kind)
            if request is not None:
                self._last[request] = event_id
            return requests

    def _on_session_update(self, event: SessionUpdate) -> list[pb.SessionRequest]:
        setup = self._merge(self._sent, event.session)
        self._sent = setup
        self._pending.append(setup)
        return [pb.SessionRequest(config=setup.config)]

    def _merge(self, base: _Setup, session: Session) -> _Setup:
        """``base`` with what ``session`` names changed: the next config, whole."""
        if session.tools:
            raise EventError(
                "tools (function calling) are not supported",
                "session.tools",
                "unsupported_parameter",
            )
        refused = None if session.model is None else self._model_check(session.model)
        if refused is not None:
            raise EventError(refused, "session.model", "model_not_found")
        config = pb.SessionConfig()
        config.CopyFrom(base.config)
        setup = replace(base, config=config)
        given = session.model_fields_set
        if session.type is not None:
            config.type = (
                pb.SESSION_TYPE_TRANSCRIPTION
                if session.type == "transcription"
                else pb.SESSION_TYPE_CONVERSATION
            )
        if session.instructions is not None:
            config.instructions = session.instructions
        if session.output_modalities:
            config.text_only = "audio" not in session.output_modalities
        if "max_output_tokens" in given:
            config.max_output_tokens = _tokens(session.max_output_tokens)
        if "temperature" in given:
            if session.temperature is None:
                config.ClearField("temperature")
            else:
                config.temperature = session.temperature
        audio_in = session.audio.input if session.audio else None
        audio_out = session.audio.output if session.audio else None
        if audio_in is not None:
            if audio_in.format is not None:
                setup.input_codec, rate = _codec(audio_in.format, "session.audio.input.format")
                config.input_audio_format.CopyFrom(
                    common_pb2.RawAudioFormat(encoding=_PCM, sample_rate_hz=rate, channels=1)
                )
            if "transcription" in audio_in.model_fields_set:
                spoken = audio_in.transcription
                setup.transcription_model = (spoken.model if spoken else None) or ""
                config.transcription_model = self._model_id(setup.transcription_model)
                config.language = (spoken.language if spoken else None) or ""
            if "turn_detection" in audio_in.model_fields_set:
                config.turn_detection.CopyFrom(_turn_detection(audio_in.turn_detection))
        if audio_out is not None:
            if audio_out.format is not None:
                setup.output_codec, rate = _codec(audio_out.format, "session.audio.output.format")
                config.output_encoding = _PCM
                config.output_sample_rate_hz = rate
            if audio_out.voice is not None:
                setup.voice = _voice_name(audio_out.voice)
                config.voice = self._voice_id(setup.voice)
        if session.chorus is not None:
            if session.chorus.image_mode is not None:
                config.image_mode = _IMAGE_MODES[session.chorus.image_mode]
            if session.chorus.llm_model is not None:
                config.llm_model = self._model_id(session.chorus.llm_model)
            if session.chorus.conversation_id is not None:
                config.conversation_id = session.chorus.conversation_id
        return setup

    def _audio(self, encoded: str, param: str, limit: int | None = None) -> bytes:
        """Base64 audio in the session's input format, as PCM16; at most ``limit`` bytes."""
        if limit is not None and len(encoded) > (limit + 2) // 3 * 4 + 4:
            raise EventError(
                f"{param} holds more than {limit} bytes of audio; send it in smaller events",
                param,
                "audio_too_large",
            )
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise EventError(f"{param} is not valid base64", param, "invalid_base64") from None
        if limit is not None and len(data) > limit:
            raise EventError(
                f"{param} holds more than {limit} bytes of audio", param, "audio_too_large"
            )
        codec = self._sent.input_codec
        if codec in ("pcmu", "pcma"):
            return g711.decode(data, cast(g711.Codec, codec))
        if len(data) % 2:
            raise EventError(
                f"{param} must be 16-bit PCM: an odd number of bytes", param, "invalid_audio"
            )
        return data

    def _on_input_audio_buffer_append(
        self, event: InputAudioBufferAppend
    ) -> list[pb.SessionRequest]:
        pcm = self._audio(event.audio, "audio", self._max_append)
        return [
            pb.SessionRequest(audio=pcm[i : i + AUDIO_CHUNK_BYTES])
            for i in range(0, len(pcm), AUDIO_CHUNK_BYTES)
        ]

    def _on_input_audio_buffer_commit(self, _: ClientEvent) -> list[pb.SessionRequest]:
        return [pb.SessionRequest(commit=pb.InputCommit())]

    def _on_input_audio_buffer_clear(self, _: ClientEvent) -> list[pb.SessionRequest]:
        return [pb.SessionRequest(clear=pb.InputClear())]

    def _on_conversation_item_create(
        self, event: ConversationItemCreate
    ) -> list[pb.SessionRequest]:
        item = event.item
        if item.type != "message":
            raise EventError(
                f"{item.type} items are not supported (no function calling)",
                "item.type",
                "unsupported_parameter",
            )
        if item.role is None:
            raise EventError(
                "a message item needs a role", "item.role", "missing_required_parameter"
            )
        texts: list[str] = []
        audio = b""
        for n, part in enumerate(item.content):
            param = f"item.content.{n}"
            if part.type not in _CONTENT_TYPES[item.role]:
                raise EventError(
                    f"a {item.role} item cannot hold {part.type} content", param + ".type"
                )
            if part.type == "input_audio":
                if audio or part.audio is None:
                    raise EventError(
                        "an item holds one input_audio part, with its audio", param + ".audio"
                    )
                audio = self._audio(part.audio, param + ".audio")
            elif part.type in ("audio", "output_audio"):
                texts.append(part.transcript or "")
            elif part.text is None:
                raise EventError(
                    f"{param}.text is missing", param + ".text", "missing_required_parameter"
                )
            else:
                texts.append(part.text)
        text = "\n".join(t for t in texts if t)
        if audio and text.strip():
            raise EventError("an item holds either text or audio, not both", "item.content")
        create = pb.ItemCreate(
            item=pb.ConversationItem(id=item.id or "", role=_ROLES[item.role], text=text),
            audio=audio,
            previous_item_id=event.previous_item_id or "",
        )
        return [pb.SessionRequest(create_item=create)]

    def _on_conversation_item_truncate(
        self, event: ConversationItemTruncate
    ) -> list[pb.SessionRequest]:
        if event.content_index != 0:
            raise EventError(
                "content_index must be 0: an item has one content part", "content_index"
            )
        truncate = pb.ItemTruncate(item_id=event.item_id, audio_end_ms=event.audio_end_ms)
        return [pb.SessionRequest(truncate_item=truncate)]

    def _on_conversation_item_delete(
        self, event: ConversationItemDelete
    ) -> list[pb.SessionRequest]:
        return [pb.SessionRequest(delete_item=pb.ItemDelete(item_id=event.item_id))]

    def _on_response_create(self, event: ResponseCreate) -> list[pb.SessionRequest]:
        params = event.response or ResponseParams()
        for name, unsupported in (
            ("conversation", params.conversation not in (None, "auto")),
            ("input", bool(params.input)),
            ("tools", bool(params.tools)),
        ):
            if unsupported:
                raise EventError(
                    f"response.{name} is not supported: a response answers the conversation",
                    f"response.{name}",
                    "unsupported_parameter",
                )
        options = pb.ResponseOptions(instructions=params.instructions or "")
        if params.output_modalities:
            if "audio" in params.output_modalities and self._sent.config.text_only:
                raise EventError(
                    "the session answers in text; set its output_modalities to speak",
                    "response.output_modalities",
                )
            options.text_only = "audio" not in params.output_modalities
        output = params.audio.output if params.audio else None
        if output is not None and output.voice is not None:
            options.voice = self._voice_id(_voice_name(output.voice))
        if output is not None and output.format is not None:
            codec, rate = _codec(output.format, "response.audio.output.format")
            config = self._sent.config
            if (codec, rate) != (self._sent.output_codec, config.output_sample_rate_hz):
                raise EventError(
                    "a response speaks in the session's output format",
                    "response.audio.output.format",
                )
        options.max_output_tokens = _tokens(params.max_output_tokens)
        if params.temperature is not None:
            options.temperature = params.temperature
        if params.chorus is not None and params.chorus.image_mode is not None:
            options.image_mode = _IMAGE_MODES[params.chorus.image_mode]
        return [pb.SessionRequest(create_response=pb.ResponseCreate(options=options))]

    def _on_response_cancel(self, event: ResponseCancel) -> list[pb.SessionRequest]:
        cancel = pb.ResponseCancel(response_id=event.response_id or "")
        return [pb.SessionRequest(cancel_response=cancel)]

    # -- session events -> server events ---------------------------------------------------

    def server_event(self, event: pb.SessionEvent) -> list[JSON]:
        """The server events for one session event (none for some, several for others)."""
        kind = event.WhichOneof("event")
        if kind is None:
            return []
        handler: Callable[[Any], list[JSON]] | None = getattr(self, "_from_" + kind, None)
        if handler is None:
            return []
        with self._lock:
            return handler(getattr(event, kind))

    def _event(self, ga: str, **fields: Any) -> list[JSON]:
        name = self.dialect.name(ga)
        return [] if name is None else [{"type": name, "event_id": new_event_id(), **fields}]

    def _from_session_updated(self, updated: pb.SessionUpdated) -> list[JSON]:
        setup = self._pending.popleft() if self._pending else self._sent
        config = pb.SessionConfig()
        config.CopyFrom(updated.config)
        self._confirmed = replace(setup, config=config)
        self.session_id = updated.session_id
        verb = "updated" if self._created else "created"
        self._created = True
        noun = "session"
        if self.dialect.beta and config.type == pb.SESSION_TYPE_TRANSCRIPTION:
            noun = "transcription_session"
        return self._event(f"{noun}.{verb}", session=self.session())

    def _from_speech_started(self, started: pb.SessionSpeechStarted) -> list[JSON]:
        _bounded(self._speech)
        self._speech[started.item_id] = [started.audio_start_ms, started.audio_start_ms]
        return self._event(
            "input_audio_buffer.speech_started",
            audio_start_ms=started.audio_start_ms,
            item_id=started.item_id,
        )

    def _from_speech_stopped(self, stopped: pb.SessionSpeechStopped) -> list[JSON]:
        _bounded(self._speech)
        span = self._speech.setdefault(stopped.item_id, [stopped.audio_end_ms, 0])
        span[1] = stopped.audio_end_ms
        return self._event(
            "input_audio_buffer.speech_stopped",
            audio_end_ms=stopped.audio_end_ms,
            item_id=stopped.item_id,
        )

    def _from_input_committed(self, committed: pb.InputCommitted) -> list[JSON]:
        return self._event(
            "input_audio_buffer.committed",
            item_id=committed.item_id,
            previous_item_id=committed.previous_item_id or None,
        )

    def _from_input_cleared(self, _: pb.InputCleared) -> list[JSON]:
        return self._event("input_audio_buffer.cleared")

    def _from_item_added(self, added: pb.ItemAdded) -> list[JSON]:
        reply = self._replies.get(self._reply_of_item.get(added.item.id, ""))
        if reply is not None:
            reply.audio = added.item.audio
            return self._start(reply, added.item, added.previous_item_id)
        return self._event(
            "conversation.item.added",
            item=self.item(added.item),
            previous_item_id=added.previous_item_id or None,
        )

    def _from_item_done(self, done: pb.ItemDone) -> list[JSON]:
        reply = self._replies.get(self._reply_of_item.get(done.item.id, ""))
        if reply is not None:
            return self._finish(reply, done.item)
        return self._event("conversation.item.done", item=self.item(done.item))

    def _from_input_transcript(self, transcript: pb.InputTranscript) -> list[JSON]:
        item_id, text = transcript.item_id, transcript.text
        if not item_id:
            return []  # input not yet an item (no server VAD): nothing to attach it to
        sent = self._heard.pop(item_id, "") if transcript.final else self._heard.get(item_id, "")
        events: list[JSON] = []
        if text.startswith(sent) and len(text) > len(sent):
            # A hypothesis that extends what was sent: its new words. One that changed earlier
            # words is skipped; the final transcript carries the truth.
            events += self._event(
                "conversation.item.input_audio_transcription.delta",
                item_id=item_id,
                content_index=0,
                delta=text[len(sent) :],
            )
            if not transcript.final:
                _bounded(self._heard)
                self._heard[item_id] = text
        if transcript.final:
            start, end = self._speech.pop(item_id, [0, 0])
            events += self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": max(0, end - start) / 1000},
            )
        return events

    def _from_response_created(self, created: pb.ResponseCreated) -> list[JSON]:
        # Announced with its item (the ItemAdded right after), which says whether it speaks.
        self._replies[created.response_id] = _Reply(created.response_id, created.item_id)
        self._reply_of_item[created.item_id] = created.response_id
        return []

    def _from_text_delta(self, delta: pb.ResponseTextDelta) -> list[JSON]:
        reply = self._replies.get(delta.response_id)
        if reply is None or not delta.text:
            return []
        reply.text += delta.text
        name = (
            "response.output_audio_transcript.delta"
            if reply.audio
            else "response.output_text.delta"
        )
        return self._part_event(reply, name, delta=delta.text)

    def _from_audio_delta(self, delta: pb.ResponseAudioDelta) -> list[JSON]:
        reply = self._replies.get(delta.response_id)
        if reply is None or not reply.audio or delta.encoding != _PCM:
            return []
        audio = delta.audio
        codec = self._confirmed.output_codec
        if codec in ("pcmu", "pcma"):
            audio = g711.encode(audio, cast(g711.Codec, codec))
        return [
            event
            for i in range(0, len(audio), AUDIO_DELTA_BYTES)
            for event in self._part_event(
                reply,
                "response.output_audio.delta",
                delta=base64.b64encode(audio[i : i + AUDIO_DELTA_BYTES]).decode(),
            )
        ]

    def _from_image_progress(self, progress: pb.ResponseImageProgress) -> list[JSON]:
        return self._event(
            "chorus.response.image.progress",
            response_id=progress.response_id,
            step=progress.progress.step,
            total_steps=progress.progress.total_steps,
        )

    def _from_image(self, image: pb.ResponseImage) -> list[JSON]:
        reply = self._replies.get(image.response_id)
        return self._event(
            "chorus.response.image.done",
            response_id=image.response_id,
            item_id=reply.item_id if reply else None,
            png_base64=base64.b64encode(image.image.png).decode(),
            width=image.image.width,
            height=image.image.height,
            seed=image.image.seed,
            prompt=image.image.prompt,
        )

    def _from_response_done(self, done: pb.ResponseDone) -> list[JSON]:
        reply = self._replies.pop(done.response_id, None) or _Reply(
            done.response_id, done.item.id, done.item.audio
        )
        self._reply_of_item.pop(reply.item_id, None)
        events = [] if reply.started else self._start(reply, done.item, "")
        events += self._finish(reply, done.item)
        status, details = _STATUS.get(done.status, ("failed", {"type": "failed"}))
        if details is not None and status == "failed":
            details = {
                "type": "failed",
                "error": {
                    "type": "server_error",
                    "code": (done.error.code or "unknown").lower(),
                    "message": done.error.message or "the response failed",
                },
            }
        usage = done.usage
        response = self.response(reply, status, details, [self.item(done.item)])
        response["usage"] = {
            "total_tokens": usage.total_tokens,
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,
            "input_token_details": {
                "text_tokens": usage.prompt_tokens,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
            },
            "output_token_details": {"text_tokens": usage.completion_tokens, "audio_tokens": 0},
        }
        return events + self._event("response.done", response=response)

    def _from_item_truncated(self, truncated: pb.ItemTruncated) -> list[JSON]:
        return self._event(
            "conversation.item.truncated",
            item_id=truncated.item_id,
            content_index=0,
            audio_end_ms=truncated.audio_end_ms,
            # Chorus: the words that remain, so a client can show what was heard (OpenAI's
            # event has no text; its clients ignore the field).
            transcript=truncated.text,
        )

    def _from_item_deleted(self, deleted: pb.ItemDeleted) -> list[JSON]:
        self._heard.pop(deleted.item_id, None)
        self._speech.pop(deleted.item_id, None)
        return self._event("conversation.item.deleted", item_id=deleted.item_id)

    def _from_error(self, error: pb.SessionError) -> list[JSON]:
        if error.reason == "invalid_session_config" and self._pending:
            # Refused: the orchestrator keeps its previous config, and so does the next merge.
            self._pending.popleft()
            self._sent = self._pending[-1] if self._pending else self._confirmed
        self.fatal = self.fatal or error.fatal
        code = error.reason or error.code.lower() or None
        if error.field == "commit":
            code = "input_audio_buffer_commit_empty"
        if error.reason == "transcription_failed" and error.item_id:
            # OpenAI's own event for it, so a client can tell which item has no transcript.
            return self._event(
                "conversation.item.input_audio_transcription.failed",
                item_id=error.item_id,
                content_index=0,
                error={
                    "type": "server_error",
                    "code": error.code.lower(),
                    "message": error.message,
                    "param": None,
                },
            )
        request = _first(_REQUEST_OF_FIELD, error.field)
        return [
            error_event(
                error.message,
                kind="server_error" if error.code in _SERVER_CODES else "invalid_request_error",
                code=code,
                param=self.dialect.param(_param_of_field(error.field)),
                event_id=self._last.get(request[1]) if request else None,
            )
        ]

    # -- OpenAI's objects ------------------------------------------------------------------

    def _start(self, reply: _Reply, item: pb.ConversationItem, previous: str) -> list[JSON]:
        reply.started = True
        part: JSON = (
            {"type": "audio", "transcript": ""} if reply.audio else {"type": "text", "text": ""}
        )
        shown = self.item(item)
        return [
            *self._event(
                "response.created", response=self.response(reply, "in_progress", None, [])
            ),
            *self._event("conversation.item.added", item=shown, previous_item_id=previous or None),
            *self._event(
                "response.output_item.added", response_id=reply.id, output_index=0, item=shown
            ),
            *self._part_event(reply, "response.content_part.added", part=part),
        ]

    def _finish(self, reply: _Reply, item: pb.ConversationItem) -> list[JSON]:
        if reply.finished:
            return []
        reply.finished = True
        text = reply.text or item.text
        if reply.audio:
            events = self._part_event(reply, "response.output_audio.done")
            events += self._part_event(
                reply, "response.output_audio_transcript.done", transcript=text
            )
            part: JSON = {"type": "audio", "transcript": text}
        else:
            events = self._part_event(reply, "response.output_text.done", text=text)
            part = {"type": "text", "text": text}
        shown = self.item(item)
        return [
            *events,
            *self._part_event(reply, "response.content_part.done", part=part),
            *self._event(
                "response.output_item.done", response_id=reply.id, output_index=0, item=shown
            ),
            *self._event("conversation.item.done", item=shown),
        ]

    def _part_event(self, reply: _Reply, ga: str, **fields: Any) -> list[JSON]:
        return self._event(
            ga,
            response_id=reply.id,
            item_id=reply.item_id,
            output_index=0,
            content_index=0,
            **fields,
        )

    def item(self, item: pb.ConversationItem) -> JSON:
        """OpenAI's message item for a conversation item (one content part, no audio bytes)."""
        role = _ROLE_NAMES.get(item.role, "user")
        content: list[JSON]
        if role == "assistant":
            if item.status == pb.ITEM_STATUS_IN_PROGRESS and not item.text:
                content = []
            elif item.audio:
                content = [
                    {"type": self.dialect.content_type("output_audio"), "transcript": item.text}
                ]
            else:
                content = [{"type": self.dialect.content_type("output_text"), "text": item.text}]
        elif role == "user" and item.audio:
            content = [{"type": "input_audio", "transcript": item.text or None}]
        else:
            content = [{"type": "input_text", "text": item.text}]
        return {
            "id": item.id,
            "object": "realtime.item",
            "type": "message",
            "role": role,
            "status": _ITEM_STATUS.get(item.status, "completed"),
            "content": content,
        }

    def response(
        self, reply: _Reply, status: str, details: JSON | None, output: list[JSON]
    ) -> JSON:
        """OpenAI's response object (``usage`` is added once it is done)."""
        setup = self._confirmed
        config = setup.config
        voice = setup.voice or config.voice or None
        shown: JSON = {
            "id": reply.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": "conv_" + self.session_id if self.session_id else None,
            "max_output_tokens": config.max_output_tokens or "inf",
            "metadata": None,
            "usage": None,
        }
        if self.dialect.beta:
            shown["modalities"] = ["audio", "text"] if reply.audio else ["text"]
            shown["voice"] = voice
            shown["output_audio_format"] = _BETA_FORMATS[setup.output_codec]
        else:
            shown["output_modalities"] = ["audio"] if reply.audio else ["text"]
            shown["audio"] = {
                "output": {
                    "format": _format(setup.output_codec, config.output_sample_rate_hz),
                    "voice": voice,
                }
            }
        return shown

    def session(self) -> JSON:
        """The session as ``session.created`` / ``session.updated`` show it: the orchestrator's
        effective config (defaults filled in), with the names the client chose."""
        setup = self._confirmed
        config = setup.config
        td = _turn_detection_json(config.turn_detection)
        transcription = {
            "model": setup.transcription_model or config.transcription_model or None,
            "language": config.language or None,
        }
        chorus = {
            "image_mode": _IMAGE_MODE_NAMES.get(config.image_mode, "off"),
            "llm_model": config.llm_model or None,
            "conversation_id": config.conversation_id or None,
            "temperature": round(config.temperature, 4) if config.HasField("temperature") else None,
        }
        transcribing = config.type == pb.SESSION_TYPE_TRANSCRIPTION
        if self.dialect.beta:
            shown: JSON = {
                "id": self.session_id,
                "object": "realtime.transcription_session" if transcribing else "realtime.session",
                "input_audio_format": _BETA_FORMATS[setup.input_codec],
                "input_audio_transcription": transcription,
                "turn_detection": td,
            }
            if transcribing:
                return {**shown, "modalities": ["text"]}
            return {
                **shown,
                "model": self._model,
                "modalities": ["text"] if config.text_only else ["audio", "text"],
                "instructions": config.instructions,
                "voice": setup.voice or config.voice or None,
                "output_audio_format": _BETA_FORMATS[setup.output_codec],
                "tools": [],
                "tool_choice": "auto",
                "temperature": chorus["temperature"],
                "max_response_output_tokens": config.max_output_tokens or "inf",
                "chorus": chorus,
            }
        audio_input = {
            "format": _format(setup.input_codec, config.input_audio_format.sample_rate_hz),
            "transcription": transcription,
            "turn_detection": td,
            "noise_reduction": None,
        }
        if transcribing:
            return {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": self.session_id,
                "audio": {"input": audio_input},
                "include": None,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": self._model,
            "output_modalities": ["text"] if config.text_only else ["audio"],
            "instructions": config.instructions,
            "audio": {
                "input": audio_input,
                "output": {
                    "format": _format(setup.output_codec, config.output_sample_rate_hz),
                    "voice": setup.voice or config.voice or None,
                    "speed": 1.0,
                },
            },
            "max_output_tokens": config.max_output_tokens or "inf",
            "tools": [],
            "tool_choice": "auto",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "include": None,
            "chorus": chorus,
        }


_TRACKED_ITEMS = 256
"""Speech spans and partial transcripts kept per session: those of items never finished (speech
cleared before its transcript) go, oldest first, beyond this many."""


def _bounded(tracked: dict[str, Any]) -> None:
    while len(tracked) >= _TRACKED_ITEMS:
        del tracked[next(iter(tracked))]


def _format(codec: str, rate: int) -> JSON:
    if codec == "pcm":
        return {"type": "audio/pcm", "rate": rate or 24000}
    return {"type": f"audio/{codec}"}


def _turn_detection_json(td: pb.TurnDetection) -> JSON | None:
    if td.type == pb.TurnDetection.TYPE_NONE:
        return None
    return {
        "type": "server_vad",
        "threshold": round(td.threshold, 4) if td.HasField("threshold") else None,
        "prefix_padding_ms": td.prefix_padding_ms if td.HasField("prefix_padding_ms") else None,
        "silence_duration_ms": (
            td.silence_duration_ms if td.HasField("silence_duration_ms") else None
        ),
        "create_response": td.create_response if td.HasField("create_response") else True,
        "interrupt_response": td.interrupt_response if td.HasField("interrupt_response") else True,
        "idle_timeout_ms": None,
    }


_REQUEST_OF_EVENT = {
    "session.update": "config",
    "input_audio_buffer.append": "audio",
    "input_audio_buffer.commit": "commit",
    "conversation.item.create": "item",
    "conversation.item.truncate": "item",
    "conversation.item.delete": "item",
    "response.create": "response",
    "response.cancel": "cancel",
}
"""Client event -> the kind of request whose errors name it (see ``_REQUEST_OF_FIELD``)."""
