"""A live conversation: the ``Session`` RPC's state machine.

One ``LiveSession`` per call. The client streams requests whenever it likes (audio, text items,
commits, response requests, cancels, truncations); the session answers with ``SessionEvent``s.
Three kinds of work run beside the request loop, each an asyncio task the session owns:

- ``SpeechInput``: one StreamingTranscribe call carrying the input audio, with the speech
  service's voice activity events on. Its speech_started / speech_stopped become the session's
  turn detection; each final closes a user item. It ends at a commit (the client's, or a rotation
  before the speech service's per-stream limit) and is dropped at a clear.
- ``Response``: one answer (``Turn.answer``: reply, speech, image) over the conversation so far.
  At most one is live. With server VAD a response may start *speculatively* on the speech
  service's candidate final, while the pause is still being confirmed: its events are held back
  and it is adopted when the final has the same words, or dropped unseen if the user goes on
  speaking. Speech that starts while a response is live interrupts it (every downstream call is
  cancelled) and it ends INTERRUPTED.
- the outbound queue, which the servicer drains into the call.

The conversation (``Conversation``) is the call's own: replicas keep nothing between sessions.
Requests are handled one at a time, in order; a bad one is answered with a non-fatal
``SessionError`` and the session goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from chorus.v1 import common_pb2, llm_pb2, stt_pb2, tts_pb2
from chorus.v1 import orchestrator_pb2 as pb
from prometheus_client import Counter, Gauge

from services.common.audio import pcm16_to_float32, wav_bytes
from services.common.clients import call_metadata
from services.common.errors import (
    ChorusError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    from_rpc_error,
)
from services.orchestrator.downstream import Downstream
from services.orchestrator.session_store import SessionMedia, SessionRecord, StoredTurn
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.stages import Clock, StageFailed, TurnContext
from services.orchestrator.storage import DEFAULT_TENANT, Stores
from services.orchestrator.turn import Turn

__all__ = ["LiveSession", "effective_config"]

log = logging.getLogger(__name__)

SESSIONS_OPEN = Gauge("chorus_sessions_open", "Live sessions open on this replica.")
RESPONSES = Counter(
    "chorus_session_responses_total",
    "Responses of live sessions, by how they ended (speculative: started on a candidate final "
    "and dropped because the user went on speaking).",
    ["status"],
)

_USER, _ASSISTANT, _SYSTEM = (
    llm_pb2.CHAT_ROLE_USER,
    llm_pb2.CHAT_ROLE_ASSISTANT,
    llm_pb2.CHAT_ROLE_SYSTEM,
)
_PCM = common_pb2.AUDIO_ENCODING_PCM_S16LE
_VAD, _NO_VAD = pb.TurnDetection.TYPE_SERVER_VAD, pb.TurnDetection.TYPE_NONE
_STATUS_NAMES = {
    pb.RESPONSE_STATUS_COMPLETED: "completed",
    pb.RESPONSE_STATUS_CANCELLED: "cancelled",
    pb.RESPONSE_STATUS_INTERRUPTED: "interrupted",
    pb.RESPONSE_STATUS_FAILED: "failed",
}
_RATES = (8000, 192_000)
_MIN_COMMIT_MS = 100  # OpenAI's least committable input
_PREFIX_PADDING_MS = 300


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def effective_config(config: pb.SessionConfig, settings: OrchestratorSettings) -> pb.SessionConfig:
    """``config`` with every default filled in, as ``SessionUpdated`` reports it.

    Raises:
        InvalidArgument: a field the session cannot work with (names it).
    """
    out = pb.SessionConfig()
    out.CopyFrom(config)
    if out.type == pb.SESSION_TYPE_UNSPECIFIED:
        out.type = pb.SESSION_TYPE_CONVERSATION
    fmt = out.input_audio_format
    if fmt.encoding not in (common_pb2.AUDIO_ENCODING_UNSPECIFIED, _PCM):
        raise InvalidArgument(
            "input audio must be raw PCM_S16LE", field="config.input_audio_format.encoding"
        )
    fmt.encoding = _PCM
    fmt.sample_rate_hz = fmt.sample_rate_hz or 24000
    fmt.channels = fmt.channels or 1
    if not _RATES[0] <= fmt.sample_rate_hz <= _RATES[1] or fmt.channels > 8:
        raise InvalidArgument(
            f"input audio rate must be {_RATES[0]}..{_RATES[1]} Hz with 1..8 channels",
            field="config.input_audio_format.sample_rate_hz",
        )
    out.output_encoding = out.output_encoding or _PCM
    out.output_sample_rate_hz = out.output_sample_rate_hz or 24000
    if not _RATES[0] <= out.output_sample_rate_hz <= _RATES[1]:
        raise InvalidArgument(
            f"output audio rate must be {_RATES[0]}..{_RATES[1]} Hz",
            field="config.output_sample_rate_hz",
        )
    if out.image_mode == pb.IMAGE_MODE_UNSPECIFIED:
        out.image_mode = pb.IMAGE_MODE_OFF
    if len(out.instructions) > settings.max_text_chars:
        raise InvalidArgument(
            f"instructions have more than {settings.max_text_chars} characters",
            field="config.instructions",
        )
    out.max_output_tokens = out.max_output_tokens or settings.max_tokens
    td = out.turn_detection
    td.type = td.type or _VAD
    if td.type == _VAD:
        if not td.HasField("threshold"):
            td.threshold = settings.session_vad_threshold
        if not 0 < td.threshold < 1:
            raise InvalidArgument(
                "threshold must be in (0, 1)", field="config.turn_detection.threshold"
            )
        if not td.HasField("silence_duration_ms"):
            td.silence_duration_ms = settings.session_silence_ms
        if not 100 <= td.silence_duration_ms <= 10_000:
            raise InvalidArgument(
                "silence_duration_ms must be 100..10000",
                field="config.turn_detection.silence_duration_ms",
            )
        if not td.HasField("prefix_padding_ms"):
            td.prefix_padding_ms = _PREFIX_PADDING_MS
        if td.prefix_padding_ms > 10_000:
            raise InvalidArgument(
                "prefix_padding_ms must be at most 10000",
                field="config.turn_detection.prefix_padding_ms",
            )
        for flag in ("create_response", "interrupt_response"):
            if not td.HasField(flag):
                setattr(td, flag, True)
    else:
        out.turn_detection.CopyFrom(pb.TurnDetection(type=_NO_VAD))
    return out


# -- the conversation ------------------------------------------------------------------------


@dataclass
class Item:
    """One conversation item, and for a spoken reply what each sentence's audio lasted."""

    id: str
    role: llm_pb2.ChatRole
    text: str = ""
    status: pb.ItemStatus = pb.ITEM_STATUS_COMPLETED
    audio: bool = False
    spoken: list[tuple[str, float]] = field(default_factory=list)
    """(sentence, seconds of audio) in speaking order: where a truncation cuts the text."""
    media: SessionMedia | None = None
    """In a stored session, what a reply sent (audio as sent, pictures): what is stored."""

    def message(self) -> pb.ConversationItem:
        return pb.ConversationItem(
            id=self.id, role=self.role, text=self.text, status=self.status, audio=self.audio
        )

    def heard(self, audio_end_ms: int) -> str:
        """The text of the first ``audio_end_ms`` of this item's audio: whole sentences played to
        the end, and of the sentence playing then the share of its words that was played."""
        left = audio_end_ms / 1000
        words: list[str] = []
        for sentence, seconds in self.spoken:
            if left >= seconds:
                words.extend(sentence.split())
                left -= seconds
                continue
            parts = sentence.split()
            words.extend(parts[: int(len(parts) * max(0.0, left) / seconds)] if seconds else [])
            break
        return " ".join(words)


class Conversation:
    """The session's items in order, bounded by ``max_items`` (the oldest go first)."""

    def __init__(self, max_items: int) -> None:
        self.items: list[Item] = []
        self._max = max_items
        self.version = 0
        """Bumped by every change: a speculative response started on an older version is
        answering a conversation that no longer exists."""

    def get(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    def add(self, item: Item, previous_id: str = "") -> tuple[str, list[Item]]:
        """Insert ``item`` after ``previous_id`` ("" the end, "root" the start); returns the id
        of the item before it and the oldest items dropped over the bound.

        Raises:
            NotFound: ``previous_id`` names no item.
        """
        if previous_id in ("", None):
            index = len(self.items)
        elif previous_id == "root":
            index = 0
        else:
            found = [n for n, i in enumerate(self.items) if i.id == previous_id]
            if not found:
                raise NotFound(f"no item {previous_id!r}", field="previous_item_id")
            index = found[0] + 1
        self.items.insert(index, item)
        self.version += 1
        dropped: list[Item] = []
        while len(self.items) > self._max:  # the oldest go, never the item just added
            position = 1 if self.items[0] is item else 0
            dropped.append(self.items.pop(position))
            if position < index:
                index -= 1
        return (self.items[index - 1].id if index > 0 else ""), dropped

    def delete(self, item_id: str) -> None:
        item = self.get(item_id)
        if item is None:
            raise NotFound(f"no item {item_id!r}", field="item_id")
        self.items.remove(item)
        self.version += 1

    def touch(self) -> None:
        self.version += 1

    def context(self, settings: OrchestratorSettings) -> list[Item]:
        """The newest items that fit the turn's history limits, oldest first (empty items, such
        as speech nothing could be made of, are left out): what a reply is given."""
        chosen: list[Item] = []
        chars = 0
        for item in reversed(self.items):
            text = item.text.strip()
            if not text:
                continue
            if chosen and (
                len(chosen) > settings.max_history_messages
                or chars + len(text) > settings.max_history_chars
            ):
                break
            chosen.append(item)
            chars += len(text)
        return chosen[::-1]


# -- the input audio -------------------------------------------------------------------------


class SpeechInput:
    """One StreamingTranscribe call over the session's input audio.

    ``base_ms`` is where the call's audio starts in the session's audio, so every offset the
    session reports counts from the session's first sample. The arrival time of each chunk is
    kept, so a response can be timed from the moment the end of the user's speech reached the
    orchestrator."""

    def __init__(self, session: LiveSession, base_ms: float) -> None:
        self._session = session
        self.base_ms = base_ms
        self.bytes = 0
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._arrivals: list[tuple[float, float]] = []  # (stream ms at the chunk's end, when)
        self.pending: deque[str] = deque()
        """Item ids of speech heard but not yet finalized, oldest first."""
        self.finals: list[str] = []
        self.item_id = _new_id("item")
        """Without server VAD: the one user item this call's audio becomes at its commit."""
        self.item: Item | None = None
        self.language = ""
        self.ended = False
        self.task = session.spawn(self._run)  # the session's: cancelled when it ends

    @property
    def ms(self) -> float:
        """Milliseconds of audio this call has carried."""
        return self.bytes / self._session.bytes_per_ms

    def push(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self._arrivals.append((self.ms, time.monotonic()))
        self._chunks.put_nowait(chunk)

    def end(self) -> None:
        """No more audio: the speech service finishes the pending speech, then the call ends."""
        if not self.ended:
            self.ended = True
            self._chunks.put_nowait(None)

    def arrived(self, stream_ms: float) -> float:
        """When the audio up to ``stream_ms`` had arrived (monotonic seconds)."""
        index = bisect.bisect_left(self._arrivals, (stream_ms, 0.0))
        if index >= len(self._arrivals):
            return time.monotonic()
        return self._arrivals[index][1]

    async def _requests(self) -> AsyncIterator[stt_pb2.StreamingTranscribeRequest]:
        config = self._session.config
        td = config.turn_detection
        stt = stt_pb2.StreamingTranscribeConfig(
            format=config.input_audio_format,
            language=config.language,
            model=config.transcription_model,
            speech_events=td.type == _VAD,
        )
        if td.type == _VAD:
            stt.vad_threshold = td.threshold
            stt.vad_silence_ms = td.silence_duration_ms
            stt.vad_speculate_ms = min(
                self._session.settings.session_speculate_ms, td.silence_duration_ms - 1
            )
        yield stt_pb2.StreamingTranscribeRequest(config=stt)
        while (chunk := await self._chunks.get()) is not None:
            yield stt_pb2.StreamingTranscribeRequest(audio_chunk=chunk)

    async def _run(self) -> None:
        session = self._session
        try:
            call = session.services.stt.StreamingTranscribe(
                self._requests(),
                timeout=session.settings.max_session_seconds,
                metadata=call_metadata(),
            )
            async for response in call:
                await session.on_speech(self, response)
        except grpc.aio.AioRpcError as err:
            error = from_rpc_error(err, "speech-to-text")
            if error.field == "config.format":
                error.field = "config.input_audio_format"
            item_id = self.item.id if self.item is not None else ""
            session.error(error, reason="transcription_failed", item_id=item_id)
        finally:
            # Ends the request generator, which grpc's own task may still be waiting in when the
            # call failed (a replica killed): left waiting, it was destroyed pending.
            self.end()
            session.on_speech_input_done(self)


# -- responses -------------------------------------------------------------------------------


@dataclass
class Response:
    """One answer in progress, and where its events go."""

    id: str
    item: Item
    transcript: str
    version: int
    """The conversation version it answers (a speculative one: before its user item)."""
    held: list[pb.SessionEvent] | None = None
    """Events of a speculative response, held until it is adopted (None: live)."""
    status: pb.ResponseStatus = pb.RESPONSE_STATUS_COMPLETED
    task: asyncio.Task[None] | None = None
    clock: Clock = field(default_factory=Clock)
    usage: llm_pb2.TokenUsage = field(default_factory=llm_pb2.TokenUsage)
    error: pb.TurnError | None = None
    context: list[str] = field(default_factory=list)
    """The ids of the items it answers, oldest first."""
    finished: bool = False
    """Ran to its end while still speculative: ``_go_live`` ends it once its events are out."""
    audio: asyncio.Queue[pb.SessionEvent | None] = field(default_factory=asyncio.Queue)
    """Its audio deltas, sliced, waiting to be sent at the pace of playback (None: no more)."""
    live: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by ``_go_live``: its audio may go out."""

    @property
    def speculative(self) -> bool:
        return self.held is not None


# -- the session -----------------------------------------------------------------------------


class LiveSession:
    """One ``Session`` call: feed it the request stream, read its events from ``events``."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        services: Downstream,
        session_id: str,
        deadline: float,
        stores: Stores | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """``stores`` and ``tenant``: where a session naming a conversation keeps it."""
        self.settings = settings
        self.services = services
        self.stores = stores
        self.tenant = tenant
        self.record: SessionRecord | None = None
        self.session_id = session_id
        self.deadline = deadline
        self.started = time.monotonic()
        self.config = effective_config(pb.SessionConfig(), settings)
        self.conversation = Conversation(settings.max_session_items)
        self._out: asyncio.Queue[pb.SessionEvent | None] = asyncio.Queue()
        self._speech: SpeechInput | None = None
        self._ending: list[SpeechInput] = []  # committed calls still finishing
        self._audio_ms = 0.0  # audio received in the session
        self._uncommitted = 0  # bytes since the last commit, clear or final (no server VAD)
        self._response: Response | None = None
        self._speculative: Response | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._overflowed = False
        self._transcribed = asyncio.Event()
        """Set whenever a user item's transcription ends (a waiting response looks again)."""
        self._awaiting: asyncio.Task[None] | None = None
        """A requested response waiting for user items still being transcribed."""

    @property
    def bytes_per_ms(self) -> float:
        fmt = self.config.input_audio_format
        return fmt.sample_rate_hz * fmt.channels * 2 / 1000

    # -- the call --------------------------------------------------------------------------

    async def events(
        self, requests: AsyncIterator[pb.SessionRequest]
    ) -> AsyncIterator[pb.SessionEvent]:
        """The session's events until the client ends the call (and the work it asked for is
        done) or the session's time runs out. Leaving early cancels everything downstream."""
        SESSIONS_OPEN.inc()
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                timeout = self.deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(self._out.get(), max(timeout, 0))
                except TimeoutError:
                    message = "the session reached its time limit"
                    yield self._event(
                        error=pb.SessionError(
                            code="DEADLINE_EXCEEDED",
                            message=message,
                            fatal=True,
                            reason="session_expired",
                        )
                    )
                    raise DeadlineExceeded(message) from None
                if event is None:
                    break
                yield event
            # The client ended the call: what settled is stored before the call ends, so a
            # client that reads the conversation next finds all of it.
            final = self._flush()
            if final is not None:
                await final
            if self._overflowed:
                raise ResourceExhausted(
                    "the client stopped reading the session's events; the session was ended"
                )
            await reader
        finally:
            SESSIONS_OPEN.dec()
            for task in [reader, *self._tasks]:
                task.cancel()
            for task in [reader, *self._tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # What settled last is stored even when the client left: shielded, so the call's
            # cancellation does not cancel it.
            final = self._flush()
            if final is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(final)

    async def _read(self, requests: AsyncIterator[pb.SessionRequest]) -> None:
        try:
            first = await anext(aiter(requests), None)
            if first is None or first.WhichOneof("request") != "config":
                raise InvalidArgument(
                    "the first message of Session must be the session config", field="config"
                )
            await self._configure(first.config, first=True)
            async for request in requests:
                kind = request.WhichOneof("request")
                try:
                    await self._handle(kind, request)
                except ChorusError as error:
                    self.error(error, reason=_REASONS.get(type(error), "invalid_request"))
            # The client has said everything: finish what it asked for, then end.
            if self._speech is not None:
                self._commit_speech()
            while self._ending or self._awaiting or self._response or self._speculative:
                await asyncio.sleep(0.02)
        finally:
            self._out.put_nowait(None)

    async def _handle(self, kind: str | None, request: pb.SessionRequest) -> None:
        if kind == "config":
            await self._configure(request.config)
        elif kind == "audio":
            self._append(request.audio)
        elif kind == "commit":
            if self._speech is None or self._speech.ms < _MIN_COMMIT_MS:
                raise InvalidArgument(
                    f"the input audio buffer holds less than {_MIN_COMMIT_MS} ms: nothing to "
                    "commit",
                    field="commit",
                )
            self._commit_speech()
        elif kind == "clear":
            self._clear_speech()
            self._event(input_cleared=pb.InputCleared())
        elif kind == "create_item":
            await self._create_item(request.create_item)
        elif kind == "create_response":
            self._create_response(request.create_response.options)
        elif kind == "cancel_response":
            self._cancel_response(request.cancel_response.response_id)
        elif kind == "truncate_item":
            await self._truncate(request.truncate_item)
        elif kind == "delete_item":
            self.conversation.delete(request.delete_item.item_id)
            self._event(item_deleted=pb.ItemDeleted(item_id=request.delete_item.item_id))
        else:
            raise InvalidArgument("empty session request", field="request")

    # -- events ----------------------------------------------------------------------------

    def _event(self, **event: object) -> pb.SessionEvent:
        message = pb.SessionEvent(
            elapsed_seconds=time.monotonic() - self.started,
            **event,  # type: ignore[arg-type]
        )
        self._send(message)
        return message

    def _send(self, message: pb.SessionEvent) -> None:
        if self._out.qsize() >= self.settings.session_max_queued_events:
            # The client stopped reading: end the session rather than hold its output forever.
            if not self._overflowed:
                self._overflowed = True
                log.warning("session %s: the client stopped reading; ending it", self.session_id)
                for task in self._tasks:
                    task.cancel()
                self._out.put_nowait(None)
            return
        self._out.put_nowait(message)

    def error(
        self, error: ChorusError, *, reason: str, fatal: bool = False, item_id: str = ""
    ) -> None:
        """Tell the client a request failed; the session goes on unless ``fatal``."""
        self._event(
            error=pb.SessionError(
                code=error.code.name,
                message=error.message,
                field=error.field or "",
                fatal=fatal,
                reason=reason,
                item_id=item_id,
            )
        )

    def spawn(self, work: Callable[[], object]) -> asyncio.Task[None]:
        """Run ``work()`` as a task of this session: cancelled (and awaited) when it ends."""
        task: asyncio.Task[None] = asyncio.create_task(work())  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- configuration ---------------------------------------------------------------------

    async def _configure(self, config: pb.SessionConfig, *, first: bool = False) -> None:
        try:
            new = effective_config(config, self.settings)
            if new.voice and new.voice != self.config.voice:
                await self._check_voice(new.voice)
            opening = new.conversation_id != self.config.conversation_id
            if opening and (self.config.conversation_id or self.conversation.items):
                raise InvalidArgument(
                    "conversation_id is set once, before the session's first item",
                    field="config.conversation_id",
                )
            if opening:
                await self._open_record(new.conversation_id)
        except ChorusError as error:
            self.error(error, reason="invalid_session_config")
            if not first:
                return
            new = self.config  # the defaults: the session starts anyway
        audio_changed = (
            new.input_audio_format != self.config.input_audio_format
            or new.turn_detection != self.config.turn_detection
            or new.transcription_model != self.config.transcription_model
            or new.language != self.config.language
        )
        if audio_changed and self._speech is not None:
            self._clear_speech()  # audio in the old format / detection is dropped
        self.config = new
        self._event(session_updated=pb.SessionUpdated(session_id=self.session_id, config=new))

    async def _open_record(self, conversation_id: str) -> None:
        """Start from the stored conversation's items (within the turn limits); their items
        are announced as the client's own would be (``item_added``), so it can show them.

        Raises:
            NotFound: an unknown or another tenant's conversation (the config is refused).
        """
        if self.stores is None:
            raise FailedPrecondition("this orchestrator keeps no conversations")
        record = SessionRecord(self.stores, self.tenant, conversation_id, self.session_id)
        s = self.settings
        for item_id, role, text in await record.history(
            s.max_history_messages, s.max_history_chars
        ):
            item = Item(item_id, role, text=text)
            previous, _ = self.conversation.add(item)
            self._event(item_added=pb.ItemAdded(item=item.message(), previous_item_id=previous))
        self.record = record

    def _flush(self) -> asyncio.Task[None] | None:
        """Store the settled items not stored yet (a stored session), in the background."""
        record = self.record
        if record is None:
            return None
        settled = [
            StoredTurn(
                item.id,
                item.role,
                item.text.strip(),
                "completed" if item.status == pb.ITEM_STATUS_COMPLETED else "incomplete",
                item.media,
            )
            for item in self.conversation.items
            if item.status != pb.ITEM_STATUS_IN_PROGRESS
            and item.role in (_USER, _ASSISTANT)
            and item.text.strip()
        ]

        def report(error: ChorusError) -> None:
            self.error(error, reason="storage_failed")

        return asyncio.get_running_loop().create_task(record.flush(settled, report))

    async def _check_voice(self, voice: str) -> None:
        try:
            voices = await self.services.tts.ListVoices(
                tts_pb2.ListVoicesRequest(), timeout=10, metadata=call_metadata()
            )
        except grpc.aio.AioRpcError:
            return  # the speech service will say so itself when it speaks
        known = [v.id for v in voices.voices]
        if voice not in known:
            raise NotFound(
                f"unknown voice {voice!r}; available: {', '.join(known)}", field="config.voice"
            )

    # -- input audio -----------------------------------------------------------------------

    def _append(self, chunk: bytes) -> None:
        s = self.settings
        if len(chunk) > s.session_max_chunk_bytes:
            raise ResourceExhausted(
                f"an audio chunk has {len(chunk)} bytes; the limit is {s.session_max_chunk_bytes}",
                field="audio",
            )
        frame = 2 * self.config.input_audio_format.channels
        if len(chunk) % frame:
            raise InvalidArgument(
                f"audio chunks must hold whole 16-bit PCM frames ({frame} bytes each)",
                field="audio",
            )
        if self.config.turn_detection.type == _NO_VAD:
            limit = s.max_input_buffer_seconds * self.bytes_per_ms * 1000
            if self._uncommitted + len(chunk) > limit:
                raise ResourceExhausted(
                    f"the uncommitted input is over {s.max_input_buffer_seconds:.0f} s; commit "
                    "or clear it",
                    field="audio",
                )
        self._uncommitted += len(chunk)
        speech = self._speech
        if (
            speech is not None
            and self.config.turn_detection.type == _VAD
            and speech.ms >= s.session_stream_seconds * 1000
            and not speech.pending
        ):
            self._commit_speech()  # before the speech service's own per-stream limit
            speech = None
        if speech is None:
            speech = self._speech = SpeechInput(self, self._audio_ms)
        speech.push(chunk)
        self._audio_ms += len(chunk) / self.bytes_per_ms

    def _commit_speech(self) -> None:
        """End the current STT call; what it still transcribes becomes items. Without server
        VAD the user item exists from now on (in progress until its transcript is final), so a
        response requested next waits for it rather than missing it."""
        speech = self._speech
        if speech is None:
            return
        self._speech = None
        self._ending.append(speech)
        speech.end()
        self._uncommitted = 0
        if self.config.turn_detection.type != _VAD:
            speech.item = self._user_speech_item(speech.item_id)

    def _clear_speech(self) -> None:
        speech = self._speech
        self._speech = None
        self._uncommitted = 0
        if speech is not None:
            speech.task.cancel()
        self._drop_speculative()

    def on_speech_input_done(self, speech: SpeechInput) -> None:
        """The STT call ended: a committed one becomes one user item (without server VAD)."""
        if speech in self._ending:
            self._ending.remove(speech)
        if speech is self._speech:
            self._speech = None
        if speech.item is not None and speech.item.status == pb.ITEM_STATUS_IN_PROGRESS:
            text = " ".join(f for f in speech.finals if f)
            self._add_transcribed(speech.item, text, speech.language)

    async def on_speech(
        self, speech: SpeechInput, response: stt_pb2.StreamingTranscribeResponse
    ) -> None:
        """One event of an STT call: turn detection, transcripts, speculation."""
        event = response.WhichOneof("event")
        vad = self.config.turn_detection.type == _VAD
        if event == "speech_started":
            self._drop_speculative()  # the candidate's pause did not hold
            if not response.speech_started.resumed:
                item_id = _new_id("item")
                speech.pending.append(item_id)
                start = speech.base_ms + response.speech_started.audio_start_ms
                padding = self.config.turn_detection.prefix_padding_ms
                self._event(
                    speech_started=pb.SessionSpeechStarted(
                        audio_start_ms=int(max(0.0, start - padding)), item_id=item_id
                    )
                )
            if self.config.turn_detection.interrupt_response and self._response is not None:
                self._interrupt(self._response, pb.RESPONSE_STATUS_INTERRUPTED)
        elif event == "speech_stopped":
            item_id = speech.pending[0] if speech.pending else _new_id("item")
            if not speech.pending:
                speech.pending.append(item_id)
            self._event(
                speech_stopped=pb.SessionSpeechStopped(
                    audio_end_ms=int(speech.base_ms + response.speech_stopped.audio_end_ms),
                    item_id=item_id,
                )
            )
        elif response.is_final:
            text = response.text.strip()
            speech.language = response.language or speech.language
            if not vad:
                speech.finals.append(text)
                return
            item_id = speech.pending.popleft() if speech.pending else _new_id("item")
            self._uncommitted = 0
            version = self.conversation.version
            item = self._user_speech_item(item_id)
            self._add_transcribed(item, text, response.language)
            self._answer_turn(item, version, ended=speech.arrived(response.segment.end * 1000))
        elif response.candidate:
            if vad and response.text.strip():
                self._speculate(speech, response)
        elif response.text.strip():
            item_id = speech.pending[0] if speech.pending else ("" if vad else speech.item_id)
            text = " ".join([*speech.finals, response.text.strip()]) if not vad else response.text
            self._event(input_transcript=pb.InputTranscript(item_id=item_id, text=text.strip()))

    def _user_speech_item(self, item_id: str) -> Item:
        item = Item(item_id, _USER, status=pb.ITEM_STATUS_IN_PROGRESS, audio=True)
        previous, dropped = self.conversation.add(item)
        self._announce_dropped(dropped)
        self._event(input_committed=pb.InputCommitted(item_id=item_id, previous_item_id=previous))
        self._event(item_added=pb.ItemAdded(item=item.message(), previous_item_id=previous))
        return item

    def _add_transcribed(self, item: Item, text: str, language: str) -> None:
        self._transcribed.set()
        limit = self.settings.max_text_chars
        item.text, item.status = text[:limit], pb.ITEM_STATUS_COMPLETED
        self.conversation.touch()
        self._event(
            input_transcript=pb.InputTranscript(
                item_id=item.id, text=item.text, final=True, language=language
            )
        )
        self._event(item_done=pb.ItemDone(item=item.message()))

    def _announce_dropped(self, dropped: list[Item]) -> None:
        for old in dropped:
            self._event(item_deleted=pb.ItemDeleted(item_id=old.id))

    # -- items -----------------------------------------------------------------------------

    async def _create_item(self, create: pb.ItemCreate) -> None:
        given = create.item
        role = given.role or _USER
        if role not in (_USER, _ASSISTANT, _SYSTEM):
            raise InvalidArgument("unknown item role", field="item.role")
        if given.id and self.conversation.get(given.id) is not None:
            raise InvalidArgument(f"an item {given.id!r} exists already", field="item.id")
        if len(given.id) > 64:
            raise InvalidArgument("item ids are at most 64 characters", field="item.id")
        text = given.text.strip()
        overflow = self.settings.text_overflow(text)
        if overflow is not None:
            raise ResourceExhausted(overflow.message, field="item.text")
        if create.audio and role != _USER:
            raise InvalidArgument("only user items may carry audio", field="item.audio")
        if not text and not create.audio:
            raise InvalidArgument("the item has no text and no audio", field="item.text")
        if create.previous_item_id not in ("", "root") and (
            self.conversation.get(create.previous_item_id) is None
        ):
            raise NotFound(f"no item {create.previous_item_id!r}", field="previous_item_id")
        limit = self.settings.max_input_buffer_seconds * self.bytes_per_ms * 1000
        if len(create.audio) > limit:
            raise ResourceExhausted(
                f"the item's audio is over {self.settings.max_input_buffer_seconds:.0f} s",
                field="item.audio",
            )
        item = Item(given.id or _new_id("item"), role, text, audio=bool(create.audio))
        if create.audio:
            item.status = pb.ITEM_STATUS_IN_PROGRESS
        previous, dropped = self.conversation.add(item, create.previous_item_id)
        self._announce_dropped(dropped)
        self._event(item_added=pb.ItemAdded(item=item.message(), previous_item_id=previous))
        if not create.audio:
            self._event(item_done=pb.ItemDone(item=item.message()))
            return
        self.spawn(lambda: self._transcribe_item(item, create.audio))

    async def _transcribe_item(self, item: Item, pcm: bytes) -> None:
        fmt = self.config.input_audio_format
        try:
            response = await self.services.stt.Transcribe(
                stt_pb2.TranscribeRequest(
                    audio=wav_bytes(pcm16_to_float32(pcm, fmt.channels), fmt.sample_rate_hz),
                    language=self.config.language,
                    model=self.config.transcription_model,
                ),
                timeout=self.settings.transcription_timeout,
                metadata=call_metadata(),
            )
        except grpc.aio.AioRpcError as err:
            item.status = pb.ITEM_STATUS_INCOMPLETE
            self._transcribed.set()
            error = from_rpc_error(err, "speech-to-text")
            self.error(error, reason="transcription_failed", item_id=item.id)
            self._event(item_done=pb.ItemDone(item=item.message()))
            return
        self._add_transcribed(item, response.text.strip(), response.language)

    async def _truncate(self, truncate: pb.ItemTruncate) -> None:
        item = self.conversation.get(truncate.item_id)
        if item is None:
            raise NotFound(f"no item {truncate.item_id!r}", field="item_id")
        if item.role != _ASSISTANT or not item.audio:
            raise InvalidArgument("only a spoken assistant item can be truncated", field="item_id")
        response = self._response
        if response is not None and response.item is item and response.task is not None:
            self._interrupt(response, pb.RESPONSE_STATUS_CANCELLED)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(response.task)
        total_ms = sum(seconds for _, seconds in item.spoken) * 1000
        if truncate.audio_end_ms > total_ms + 1:
            raise InvalidArgument(
                f"audio_end_ms {truncate.audio_end_ms} is past the item's audio "
                f"({total_ms:.0f} ms)",
                field="audio_end_ms",
            )
        item.text = item.heard(truncate.audio_end_ms)
        item.spoken = [(item.text, truncate.audio_end_ms / 1000)]
        if item.media is not None:
            item.media.cut(truncate.audio_end_ms)
        item.status = pb.ITEM_STATUS_INCOMPLETE
        self.conversation.touch()
        self._event(
            item_truncated=pb.ItemTruncated(
                item_id=item.id, audio_end_ms=truncate.audio_end_ms, text=item.text
            )
        )

    # -- responses -------------------------------------------------------------------------

    def _answer_turn(self, item: Item, version: int, *, ended: float) -> None:
        """A user's spoken turn is final: adopt the speculative answer to exactly these words
        over the same conversation (``version``: the one before the turn's item), or start one
        (server VAD with create_response)."""
        td = self.config.turn_detection
        spec, self._speculative = self._speculative, None
        if self.config.type != pb.SESSION_TYPE_CONVERSATION or not td.create_response:
            if spec is not None:
                self._drop(spec)
            return
        if not item.text:
            if spec is not None:
                self._drop(spec)
            return
        if self._response is not None:
            self._interrupt(self._response, pb.RESPONSE_STATUS_INTERRUPTED)
        if spec is not None and spec.transcript == item.text and spec.version == version:
            spec.held = spec.held or []
            self._go_live(spec)
            return
        if spec is not None:
            self._drop(spec)
        self._start_response(pb.ResponseOptions(), ended=ended)

    def _speculate(
        self, speech: SpeechInput, response: stt_pb2.StreamingTranscribeResponse
    ) -> None:
        td = self.config.turn_detection
        if self.config.type != pb.SESSION_TYPE_CONVERSATION or not td.create_response:
            return
        self._drop_speculative()
        text = response.text.strip()[: self.settings.max_text_chars]
        # The user item the candidate will become, as it will be when the final comes.
        user = Item(speech.pending[0] if speech.pending else "", _USER, text)
        context = [*self.conversation.context(self.settings), user]
        ended = speech.arrived(response.segment.end * 1000)
        self._speculative = self._launch(pb.ResponseOptions(), context, ended=ended)

    def _drop_speculative(self) -> None:
        spec, self._speculative = self._speculative, None
        if spec is not None:
            self._drop(spec)

    def _drop(self, response: Response) -> None:
        RESPONSES.labels("speculative").inc()
        if response.task is not None:
            response.task.cancel()

    def _go_live(self, response: Response) -> None:
        """``response`` becomes the session's response: its assistant item joins the
        conversation and the events it held (all of a speculative one's so far) go out."""
        held, response.held = response.held or [], None
        self._response = response
        previous, dropped = self.conversation.add(response.item)
        self._announce_dropped(dropped)
        for event in held:
            if event.WhichOneof("event") == "item_added":
                event.item_added.previous_item_id = previous
            self._send(event)
        response.live.set()
        if response.finished:
            self._finish(response)

    def _create_response(self, options: pb.ResponseOptions) -> None:
        if self.config.type != pb.SESSION_TYPE_CONVERSATION:
            raise InvalidArgument(
                "a transcription session makes no responses", field="create_response"
            )
        if self._response is not None or self._awaiting is not None:
            raise InvalidArgument(
                "a response is still in progress; cancel it first", field="create_response"
            )
        if len(options.instructions) > self.settings.max_text_chars:
            raise InvalidArgument(
                f"instructions have more than {self.settings.max_text_chars} characters",
                field="options.instructions",
            )
        self._drop_speculative()
        if self._transcribing():
            self._awaiting = self.spawn(lambda: self._respond_when_transcribed(options))
            return
        self._start_response(options, ended=time.monotonic())

    def _transcribing(self) -> bool:
        return any(
            i.role == _USER and i.status == pb.ITEM_STATUS_IN_PROGRESS
            for i in self.conversation.items
        )

    async def _respond_when_transcribed(self, options: pb.ResponseOptions) -> None:
        """A response requested while user items are still being transcribed (a commit or an
        audio item just before it) starts when their words are known, as OpenAI's does."""
        ended = time.monotonic()
        try:
            while self._transcribing():
                self._transcribed.clear()
                await self._transcribed.wait()
            self._awaiting = None
            self._start_response(options, ended=ended)
        except ChorusError as error:
            self.error(error, reason="invalid_request")
        finally:
            self._awaiting = None

    def _start_response(self, options: pb.ResponseOptions, *, ended: float) -> None:
        self._flush()  # what settled before this response (a truncated reply as truncated)
        context = self.conversation.context(self.settings)
        if not context or context[-1].role != _USER:
            raise InvalidArgument(
                "the conversation must end with a user item to be answered",
                field="create_response",
            )
        self._go_live(self._launch(options, context, ended=ended))

    def _launch(
        self,
        options: pb.ResponseOptions,
        context: list[Item],
        *,
        ended: float,
    ) -> Response:
        """Start a response to ``context`` (ending with the user's item), holding its events:
        ``_go_live`` sends them (at once for a requested response, at the final for a
        speculative one) or ``_drop`` discards them."""
        config = self.config
        transcript = context[-1].text.strip()
        # The text service takes system messages only before the first user message: a system
        # item added mid-conversation joins the instructions instead.
        system = [i.text.strip() for i in context if i.role == _SYSTEM]
        messages = [
            llm_pb2.ChatMessage(role=i.role, content=i.text.strip())
            for i in context
            if i.role != _SYSTEM
        ]
        text_only = options.text_only or config.text_only
        item = Item(
            _new_id("item"),
            _ASSISTANT,
            status=pb.ITEM_STATUS_IN_PROGRESS,
            audio=not text_only,
            media=SessionMedia() if self.record is not None else None,
        )
        response = Response(
            _new_id("resp"),
            item,
            transcript,
            self.conversation.version,
            held=[
                self._make(response_created=pb.ResponseCreated(response_id="", item_id=item.id)),
                self._make(item_added=pb.ItemAdded(item=item.message())),
            ],
            clock=Clock(input_done=ended),
            context=[i.id for i in context],
        )
        response.held[0].response_created.response_id = response.id  # type: ignore[index]
        turn_options = pb.TurnOptions(
            system_prompt="\n\n".join(
                filter(None, [options.instructions or config.instructions, *system])
            ),
            max_tokens=options.max_output_tokens or config.max_output_tokens,
            text_only=text_only,
            llm_model=config.llm_model,
        )
        temperature = options if options.HasField("temperature") else config
        if temperature.HasField("temperature"):
            turn_options.temperature = temperature.temperature
        turn = Turn(
            TurnContext(
                pb.TurnConfig(
                    voice=options.voice or config.voice,
                    output_encoding=config.output_encoding,
                    output_sample_rate_hz=config.output_sample_rate_hz,
                    image_mode=options.image_mode or config.image_mode,
                    options=turn_options,
                ),
                self.settings,
                self.services,
                response.id,
                min(self.deadline, time.monotonic() + self.settings.turn_timeout),
                clock=response.clock,
                emit=lambda event: self._on_turn_event(response, event),
            )
        )
        response.task = self.spawn(lambda: self._run_response(response, turn, messages))
        return response

    def _make(self, **event: object) -> pb.SessionEvent:
        return pb.SessionEvent(
            elapsed_seconds=time.monotonic() - self.started,
            **event,  # type: ignore[arg-type]
        )

    def _emit_for(self, response: Response, **event: object) -> None:
        message = self._make(**event)
        if response.held is not None:
            response.held.append(message)
        else:
            self._send(message)

    def _on_turn_event(self, response: Response, event: pb.TurnEvent) -> None:
        """A turn's event, as the session's: tagged with the response and its item."""
        kind = event.WhichOneof("event")
        rid, item = response.id, response.item
        if kind == "reply_delta":
            item.text += event.reply_delta.text
            self._emit_for(
                response,
                text_delta=pb.ResponseTextDelta(
                    response_id=rid, item_id=item.id, text=event.reply_delta.text
                ),
            )
        elif kind == "reply_final":
            item.text = event.reply_final.text or item.text
            response.usage.CopyFrom(event.reply_final.usage)
        elif kind == "audio_chunk":
            chunk = event.audio_chunk
            item.spoken.append((chunk.text, chunk.duration_seconds))
            for piece in audio_slices(chunk):
                delta = pb.ResponseAudioDelta(response_id=rid, item_id=item.id)
                delta.MergeFrom(piece)
                response.audio.put_nowait(self._make(audio_delta=delta))
        elif kind == "image_progress":
            self._emit_for(
                response,
                image_progress=pb.ResponseImageProgress(
                    response_id=rid, progress=event.image_progress
                ),
            )
        elif kind == "image_result":
            if item.media is not None:
                item.media.images.append(event.image_result.png)
            self._emit_for(
                response, image=pb.ResponseImage(response_id=rid, image=event.image_result)
            )
        elif kind == "error" and not event.error.fatal:
            self._emit_for(
                response,
                error=pb.SessionError(
                    code=event.error.code,
                    message=event.error.message,
                    field="image",
                    reason="image_failed",
                ),
            )

    async def _run_response(
        self, response: Response, turn: Turn, messages: list[llm_pb2.ChatMessage]
    ) -> None:
        """Make the response and send its audio at the pace of playback; it is done when the
        last of its audio is sent. Cancelled (barge-in, cancel, the session ending), nothing
        more of it goes out."""
        speaker = asyncio.get_running_loop().create_task(self._speak(response))
        try:
            await turn.answer(messages, response.transcript)
            response.audio.put_nowait(None)
            await speaker
        except asyncio.CancelledError:
            if response.speculative:
                raise  # dropped unseen
            if response.status == pb.RESPONSE_STATUS_COMPLETED:
                response.status = pb.RESPONSE_STATUS_CANCELLED  # the session is ending
        except StageFailed as failed:
            response.status = pb.RESPONSE_STATUS_FAILED
            error = failed.error
            response.error = pb.TurnError(
                stage=failed.stage,
                code=error.code.name,
                message=error.message,
                fatal=True,
                retry_after_seconds=error.retry_after or 0.0,
            )
            turn.context.report(failed.stage, error, fatal=True)
        except ChorusError as error:
            response.status = pb.RESPONSE_STATUS_FAILED
            response.error = pb.TurnError(
                code=error.code.name,
                message=error.message,
                fatal=True,
                retry_after_seconds=error.retry_after or 0.0,
            )
        finally:
            speaker.cancel()
        self._finish(response)

    async def _speak(self, response: Response) -> None:
        """Send ``response``'s audio once it is live, each slice when the client has at most
        ``session_audio_lead_ms`` of it left to play (by this clock: what was sent, played
        from when it was sent or from the end of what was before it, whichever is later)."""
        await response.live.wait()
        lead = self.settings.session_audio_lead_ms / 1000
        played_until = 0.0
        while (message := await response.audio.get()) is not None:
            now = time.monotonic()
            if lead and played_until - now > lead:
                await asyncio.sleep(played_until - now - lead)
                now = time.monotonic()
            self._send(message)
            delta = message.audio_delta
            played_until = max(played_until, now) + delta.duration_seconds
            media = response.item.media
            if media is not None and delta.encoding == _PCM:  # what was sent is what is kept
                media.pcm.extend(delta.audio)
                media.rate = delta.sample_rate_hz

    def _cancel_response(self, response_id: str) -> None:
        response = self._response
        if response is None and self._awaiting is not None:
            self._awaiting.cancel()  # it had not started: nothing was sent of it
            return
        if response is None:
            raise InvalidArgument("no response is in progress", field="cancel_response")
        if response_id and response_id != response.id:
            raise NotFound(f"response {response_id!r} is not in progress", field="response_id")
        self._interrupt(response, pb.RESPONSE_STATUS_CANCELLED)

    def _interrupt(self, response: Response, status: pb.ResponseStatus) -> None:
        if response.status == pb.RESPONSE_STATUS_COMPLETED:
            response.status = status
        if response.task is not None:
            response.task.cancel()

    def _finish(self, response: Response) -> None:
        if self._response is response:
            self._response = None
        if response.speculative:  # finished before its turn was final: ended when adopted
            response.finished = True
            return
        RESPONSES.labels(_STATUS_NAMES[response.status]).inc()
        item = response.item
        item.text = item.text.strip()
        item.status = (
            pb.ITEM_STATUS_COMPLETED
            if response.status == pb.RESPONSE_STATUS_COMPLETED
            else pb.ITEM_STATUS_INCOMPLETE
        )
        self.conversation.touch()
        marks = response.clock.marks
        timings = pb.TurnTimings(
            first_reply_token_seconds=marks.get("first_reply_token", 0.0),
            reply_seconds=marks.get("reply", 0.0),
            first_audio_seconds=marks.get("first_audio", 0.0),
            image_seconds=marks.get("image", 0.0),
            total_seconds=max(0.0, time.monotonic() - response.clock.input_done),
        )
        self._send(self._make(item_done=pb.ItemDone(item=item.message())))
        done = pb.ResponseDone(
            response_id=response.id,
            status=response.status,
            item=item.message(),
            usage=response.usage,
            timings=timings,
            input_item_ids=response.context,
        )
        if response.error is not None:
            done.error.CopyFrom(response.error)
        self._send(self._make(response_done=done))


SLICE_SECONDS = 0.2
"""The longest audio delta a response sends: a sentence's audio goes out in slices, so that
pacing is fine-grained and a barge-in leaves at most a slice more than the lead unsent."""


def audio_slices(chunk: pb.AudioChunkEvent) -> list[pb.ResponseAudioDelta]:
    """``chunk`` as audio deltas of at most ``SLICE_SECONDS`` (PCM; another encoding cannot be
    cut and stays whole); its text goes with the first."""
    whole = pb.ResponseAudioDelta(
        audio=chunk.audio,
        encoding=chunk.encoding,
        sample_rate_hz=chunk.sample_rate_hz,
        duration_seconds=chunk.duration_seconds,
        text=chunk.text,
    )
    if chunk.encoding != _PCM or not chunk.sample_rate_hz:
        return [whole]
    step = 2 * max(1, int(chunk.sample_rate_hz * SLICE_SECONDS))
    if len(chunk.audio) <= step:
        return [whole]
    return [
        pb.ResponseAudioDelta(
            audio=chunk.audio[i : i + step],
            encoding=chunk.encoding,
            sample_rate_hz=chunk.sample_rate_hz,
            duration_seconds=len(chunk.audio[i : i + step]) / 2 / chunk.sample_rate_hz,
            text=chunk.text if i == 0 else "",
        )
        for i in range(0, len(chunk.audio), step)
    ]


_REASONS: dict[type[ChorusError], str] = {
    ResourceExhausted: "limit_exceeded",
    NotFound: "not_found",
}
"""The ``SessionError.reason`` of a refused request, by the kind of refusal."""
