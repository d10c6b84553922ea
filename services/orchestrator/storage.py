"""Stored conversations in the orchestrator: the caller's tenant, the process's two stores, and
what one turn keeps.

A turn that names a ``conversation_id`` reads its history from the conversation store and, as
it runs, puts each reply audio chunk and image in the artifact store (their events carry the
ids); when it ends, the whole spoken reply goes in as one WAV file, the speech input too when
asked, and the turn's user and assistant items are appended once per turn id (the request id:
a retried call appends nothing twice). Storage never fails a turn: a failed put or append is a
non-fatal ``TurnError`` and the text and audio still arrive.

Both stores block; every call runs in a worker thread (``asyncio.to_thread``), never on the
event loop. They are opened on first use, so an orchestrator that never stores anything never
touches a database or a folder.
"""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import numpy as np
from chorus.v1 import common_pb2, llm_pb2
from chorus.v1 import orchestrator_pb2 as pb

from services.common.artifacts import (
    ArtifactMeta,
    ArtifactSettings,
    ArtifactStore,
    artifact_id,
    open_store,
)
from services.common.artifacts.model import is_tenant
from services.common.audio import decode_audio, float_to_pcm16, resample_pcm16, wav_bytes
from services.common.conversations import (
    ConversationRepository,
    ConversationSettings,
    Item,
    NewItem,
    open_repository,
)
from services.common.errors import (
    ChorusError,
    InvalidArgument,
    NotFound,
    Unavailable,
    UpstreamError,
)
from services.orchestrator.inputs import TurnInput
from services.orchestrator.stages import Stage, TurnContext

__all__ = [
    "CHAT_ROLES",
    "DEFAULT_TENANT",
    "TENANT_KEY",
    "Stores",
    "TurnRecord",
    "stored_history",
    "stored_items",
    "tenant_of",
]

log = logging.getLogger(__name__)

TENANT_KEY = "x-chorus-tenant"
"""Invocation metadata naming the caller's tenant (the gateway sets it from the caller's key)."""
DEFAULT_TENANT = "default"

T = TypeVar("T")

_MEDIA_TYPES = {
    common_pb2.AUDIO_ENCODING_WAV: "audio/wav",
    common_pb2.AUDIO_ENCODING_PCM_S16LE: "audio/L16",
    common_pb2.AUDIO_ENCODING_OGG_OPUS: "audio/ogg",
    common_pb2.AUDIO_ENCODING_MP3: "audio/mpeg",
    common_pb2.AUDIO_ENCODING_FLAC: "audio/flac",
}
CHAT_ROLES = {
    "user": llm_pb2.CHAT_ROLE_USER,
    "assistant": llm_pb2.CHAT_ROLE_ASSISTANT,
    "system": llm_pb2.CHAT_ROLE_SYSTEM,
}
"""A stored item's role as a chat message's."""
# Longest reply audio decoded back into one file (chunks in a compressed encoding only).
_MAX_REPLY_SECONDS = 3600.0


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's tenant: its ``x-chorus-tenant`` metadata, ``default`` when absent.

    Raises:
        InvalidArgument: a tenant the stores cannot hold (empty, over 256 characters).
    """
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY:
            tenant = value if isinstance(value, str) else value.decode(errors="replace")
            if not is_tenant(tenant):
                raise InvalidArgument(
                    f"{TENANT_KEY} must be 1..256 characters", field=f"metadata.{TENANT_KEY}"
                )
            return tenant
    return DEFAULT_TENANT


class Stores:
    """The artifact store and the conversation repository of this process, each opened once, on
    first use (opening migrates the database: blocking, so in a thread). A store that cannot be
    opened is UNAVAILABLE for that call, and the next call tries again."""

    def __init__(
        self,
        artifact_settings: ArtifactSettings | None = None,
        conversation_settings: ConversationSettings | None = None,
    ) -> None:
        self._artifact_settings = artifact_settings
        self._conversation_settings = conversation_settings
        self._artifacts: ArtifactStore | None = None
        self._conversations: ConversationRepository | None = None
        self._lock = asyncio.Lock()

    async def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            async with self._lock:
                if self._artifacts is None:
                    settings = self._artifact_settings or ArtifactSettings()
                    self._artifacts = await _opened(lambda: open_store(settings), "artifact")
        return self._artifacts

    async def conversations(self) -> ConversationRepository:
        if self._conversations is None:
            async with self._lock:
                if self._conversations is None:
                    settings = self._conversation_settings or ConversationSettings()
                    self._conversations = await _opened(
                        lambda: open_repository(settings), "conversation"
                    )
        return self._conversations

    async def close(self) -> None:
        if self._conversations is not None:
            await asyncio.to_thread(self._conversations.close)
            self._conversations = None


async def _opened(open_: Callable[[], T], kind: str) -> T:
    try:
        return await asyncio.to_thread(open_)
    except ChorusError:
        raise
    except Exception as error:
        log.warning("the %s store could not be opened", kind, exc_info=True)
        raise Unavailable(f"the {kind} store is unavailable; try again") from error


async def blocking(kind: str, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)`` in a worker thread; a failure that is not a ``ChorusError`` (a disk or
    network error the store did not map) is UNAVAILABLE, its details logged, not returned. A
    full disk says so (the operator's fix is space, not a retry): "no space left on device"."""
    try:
        return await asyncio.to_thread(call, *args)
    except ChorusError:
        raise
    except Exception as error:
        if _out_of_space(error):
            log.warning("the %s store is out of space: %s", kind, error)
            raise Unavailable(
                f"the {kind} store is full (no space left on device); nothing more is stored "
                "until space is freed"
            ) from error
        log.warning("the %s store failed", kind, exc_info=True)
        raise Unavailable(f"the {kind} store failed; try again") from error


def _out_of_space(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it: SQLAlchemy wraps its driver's) is a full disk."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(error):  # SQLite's SQLITE_FULL
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def stored_history(
    stores: Stores, tenant: str, conversation_id: str, max_messages: int, max_chars: int
) -> list[llm_pb2.ChatMessage]:
    """A stored conversation's newest items within the turn limits, as a turn's history.

    Raises:
        NotFound: an unknown, malformed or another tenant's id (``config.conversation_id``).
        Unavailable: the store cannot be reached.
    """
    items = await stored_items(stores, tenant, conversation_id, max_messages, max_chars)
    return [llm_pb2.ChatMessage(role=CHAT_ROLES[item.role], content=item.text) for item in items]


async def stored_items(
    stores: Stores, tenant: str, conversation_id: str, max_messages: int, max_chars: int
) -> list[Item]:
    """The newest stored items with text within the limits, oldest first: what a turn or a
    live session starts from. Raises as ``stored_history``."""
    repository = await stores.conversations()
    try:
        items = await blocking(
            "conversation",
            repository.history,
            tenant,
            conversation_id,
            max_messages,
            max_chars,
        )
    except NotFound as error:
        raise NotFound(error.message, field="config.conversation_id") from None
    # An item with no text (a reply that failed before its first word) gives a model nothing.
    return [item for item in items if item.text.strip()]


@dataclass
class _Put:
    """One artifact of the turn: its id is known at once (a content address), the put may
    still be running."""

    id: str
    task: asyncio.Task[bool]


@dataclass
class TurnRecord:
    """What one turn that names a conversation keeps, and how it reports a storage failure.

    The turn calls ``audio_chunk`` and ``image`` as its media are made, sets ``reply_text``
    when the reply is final, and calls ``finish`` after its last audio event.
    """

    stores: Stores
    artifacts: ArtifactStore | None
    """None when the store could not be opened: every put then fails (non-fatally)."""
    tenant: str
    conversation_id: str
    turn_id: str
    artifacts_only: bool
    store_input_audio: bool
    reply_text: str = ""
    chunks: list[pb.AudioChunkEvent] = field(default_factory=list)
    images: list[_Put] = field(default_factory=list)
    _puts: list[_Put] = field(default_factory=list, init=False)
    _reported: bool = field(default=False, init=False)

    # -- during the turn ----------------------------------------------------------------

    async def audio_chunk(
        self, context: TurnContext, event: pb.AudioChunkEvent
    ) -> pb.AudioChunkEvent:
        """Put one reply chunk and return its event with the artifact id (without its bytes
        under ``artifacts_only``). The put runs in the background unless the bytes leave the
        event, so the chunk is not held up; with ``artifacts_only`` it must be stored first, and
        if it cannot be, the event keeps its bytes and no id."""
        self.chunks.append(
            pb.AudioChunkEvent(
                audio=event.audio, encoding=event.encoding, sample_rate_hz=event.sample_rate_hz
            )
        )
        meta = ArtifactMeta(
            tenant=self.tenant,
            media_type=_MEDIA_TYPES.get(event.encoding, "application/octet-stream"),
            model=context.config.voice[:256],
            turn_id=self.turn_id,
            conversation_id=self.conversation_id,
            duration_seconds=event.duration_seconds,
        )
        put = await self._attach(context, event.audio, meta)
        if put is not None:
            event.artifact_id = put.id
            if self.artifacts_only:
                event.ClearField("audio")
        return event

    async def image(self, context: TurnContext, event: pb.ImageResultEvent) -> pb.ImageResultEvent:
        """``audio_chunk`` for an image."""
        meta = ArtifactMeta(
            tenant=self.tenant,
            media_type="image/png",
            model=context.config.options.image_model[:256],
            turn_id=self.turn_id,
            conversation_id=self.conversation_id,
            width=event.width or None,
            height=event.height or None,
        )
        put = await self._attach(context, event.png, meta)
        if put is not None:
            self.images.append(put)
            event.artifact_id = put.id
            if self.artifacts_only:
                event.ClearField("png")
        return event

    async def _attach(self, context: TurnContext, data: bytes, meta: ArtifactMeta) -> _Put | None:
        """Start the put; None when the bytes must stay in the event (``artifacts_only`` and
        the put failed)."""
        put = self._put(context, data, meta)
        if self.artifacts_only and not await put.task:
            return None
        return put

    def _put(self, context: TurnContext, data: bytes, meta: ArtifactMeta) -> _Put:
        async def run() -> bool:
            try:
                if self.artifacts is None:
                    raise Unavailable("the artifact store is unavailable")
                await blocking("artifact", self.artifacts.put, data, meta)
                return True
            except ChorusError as error:
                self._report(context, error)
                return False

        put = _Put(artifact_id(self.tenant, data), asyncio.create_task(run()))
        self._puts.append(put)
        return put

    def _report(self, context: TurnContext, error: ChorusError) -> None:
        """One storage error event per turn for failed puts (a store that is down would
        otherwise send one per chunk)."""
        if not self._reported:
            self._reported = True
            context.report(Stage.STAGE_STORAGE, _storage_error(error), fatal=False)

    # -- at the end -----------------------------------------------------------------------

    async def finish(self, context: TurnContext, transcript: str, inputs: TurnInput) -> None:
        """Store the whole reply audio and the input, append the turn's two items (once per
        turn id) and send ``TurnStored``; a failure is a non-fatal error event instead."""
        await asyncio.gather(*(p.task for p in self._puts))
        reply_audio = await self._put_reply_audio(context)
        speech = inputs.live is not None or bool(inputs.audio)
        input_audio = ""
        data = inputs.audio
        if inputs.live is not None and inputs.live.kept:
            fmt = context.config.input_audio_format
            data = live_input_wav(
                bytes(inputs.live.kept), fmt.sample_rate_hz or 16000, fmt.channels or 1
            )
        if self.store_input_audio and data:
            meta = ArtifactMeta(
                tenant=self.tenant,
                media_type=_sniff(data),
                turn_id=self.turn_id,
                conversation_id=self.conversation_id,
            )
            put = self._put(context, data, meta)
            input_audio = put.id if await put.task else ""
        images = [p.id for p in self.images if p.task.result()]
        marks = context.clock.marks
        user = NewItem(
            role="user",
            text=transcript,
            transcript=transcript if speech else None,
            artifact_ids=(input_audio,) if input_audio else (),
        )
        repository = await self.stores.conversations()
        most = repository.limits.max_artifacts_per_item
        assistant = NewItem(
            role="assistant",
            text=self.reply_text,
            artifact_ids=tuple(([reply_audio] if reply_audio else []) + images)[:most],
            timings={name: round(seconds * 1000.0, 3) for name, seconds in marks.items()},
        )
        try:
            items = await blocking(
                "conversation",
                repository.append,
                self.tenant,
                self.conversation_id,
                [user, assistant],
                self.turn_id,
            )
        except ChorusError as error:
            context.report(Stage.STAGE_STORAGE, _storage_error(error), fatal=False)
            return
        stored = await self._stored(items, [user, assistant], reply_audio, input_audio, images)
        context.event(stored=stored)

    async def _put_reply_audio(self, context: TurnContext) -> str:
        if not self.chunks:
            return ""
        try:
            samples, rate = await asyncio.to_thread(_joined_pcm, self.chunks)
        except ChorusError as error:
            self._report(context, error)
            return ""
        data = wav_bytes(samples, rate)
        meta = ArtifactMeta(
            tenant=self.tenant,
            media_type="audio/wav",
            model=context.config.voice[:256],
            turn_id=self.turn_id,
            conversation_id=self.conversation_id,
            duration_seconds=len(samples) / rate,
        )
        put = self._put(context, data, meta)
        return put.id if await put.task else ""

    async def _stored(
        self,
        items: Sequence[Item],
        sent: Sequence[NewItem],
        reply_audio: str,
        input_audio: str,
        images: list[str],
    ) -> pb.TurnStored:
        """What the store holds for this turn. A retried turn (its request id already stored)
        reports the first try's items and artifacts, not the media this try made."""
        user, assistant = items[0], items[-1]
        if (
            user.artifact_ids != sent[0].artifact_ids
            or assistant.artifact_ids != sent[1].artifact_ids
        ):
            input_audio = user.artifact_ids[0] if user.artifact_ids else ""
            ids = list(assistant.artifact_ids)
            reply_audio = ""
            if ids and await self._is_audio(ids[0]):
                reply_audio = ids.pop(0)
            images = ids
        return pb.TurnStored(
            conversation_id=self.conversation_id,
            user_item_id=user.id,
            assistant_item_id=assistant.id,
            reply_audio_artifact_id=reply_audio,
            input_audio_artifact_id=input_audio,
            image_artifact_ids=images,
        )

    async def _is_audio(self, artifact_id: str) -> bool:
        """Whether the artifact is audio; False when that cannot be told (the store is down,
        the artifact is gone): the stored event then lists it among the images."""
        if self.artifacts is None:
            return False
        try:
            found = await blocking("artifact", self.artifacts.stat, artifact_id, self.tenant)
        except ChorusError:
            return False
        return found.meta.media_type.startswith("audio/")


def _storage_error(error: ChorusError) -> ChorusError:
    """The error as a turn reports it: its code, and a message that says storage failed."""
    return UpstreamError(error.code, f"storage: {error.message}")


def _joined_pcm(chunks: Sequence[pb.AudioChunkEvent]) -> tuple[np.ndarray, int]:
    """The chunks' samples end to end (int16, mono) at the first chunk's rate: WAV and raw PCM
    exactly as sent, other encodings decoded."""
    rate = chunks[0].sample_rate_hz or 24_000
    parts: list[np.ndarray] = []
    for chunk in chunks:
        pcm, chunk_rate = _pcm_of(chunk)
        parts.append(resample_pcm16(pcm, chunk_rate, rate))
    return np.concatenate(parts), rate


def _pcm_of(chunk: pb.AudioChunkEvent) -> tuple[np.ndarray, int]:
    if chunk.encoding == common_pb2.AUDIO_ENCODING_PCM_S16LE:
        # A chunk without a rate is at the default rate, as ``_joined_pcm`` assumes (a rate of
        # 0 failed in the resampler); an odd trailing byte is dropped (it failed numpy). Either
        # was an error that is not a ChorusError, so it escaped ``finish`` and failed the turn.
        usable = len(chunk.audio) - len(chunk.audio) % 2
        return np.frombuffer(chunk.audio[:usable], "<i2"), chunk.sample_rate_hz or 24_000
    if chunk.encoding in (common_pb2.AUDIO_ENCODING_WAV, common_pb2.AUDIO_ENCODING_UNSPECIFIED):
        try:
            with wave.open(io.BytesIO(chunk.audio)) as reader:
                if reader.getsampwidth() == 2 and reader.getnchannels() == 1:
                    frames = reader.readframes(reader.getnframes())
                    return np.frombuffer(frames, "<i2"), reader.getframerate()
        except (wave.Error, EOFError):
            pass  # not 16-bit PCM WAV: decoded below
    rate = chunk.sample_rate_hz or 24_000
    samples = decode_audio(
        chunk.audio, sample_rate=rate, max_seconds=_MAX_REPLY_SECONDS, field="audio_chunk"
    )
    return float_to_pcm16(samples), rate


def live_input_wav(pcm: bytes, sample_rate: int, channels: int) -> bytes:
    """Live PCM input as a WAV file (mono through the one WAV writer; more channels through
    ``wave``, which ``wav_bytes`` does not write)."""
    usable = pcm[: len(pcm) - len(pcm) % (2 * channels)]
    if channels == 1:
        return wav_bytes(np.frombuffer(usable, "<i2"), sample_rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(usable)
    return buffer.getvalue()


def _sniff(data: bytes) -> str:
    """The media type of a recorded input, from its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] == b"OggS":
        return "audio/ogg"
    if data[:4] == b"\x1aE\xdf\xa3":
        return "audio/webm"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:3] == b"ID3" or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if data[4:8] == b"ftyp":
        return "audio/mp4"
    return "application/octet-stream"
