"""A live session that names a stored conversation (``SessionConfig.conversation_id``).

The session starts from the conversation's stored items (its history within the turn limits)
and appends its own as they settle: each batch when the next response starts and the rest when
the session ends, so an assistant item is stored after the client had its chance to truncate it
(the page truncates right after ``response.done``) and holds the words that were heard. A
spoken reply is stored with the audio that was sent of it (cut where a truncate cut it) as one
WAV, and its pictures; the user's items with their text (typed, or the transcript).

Appends are idempotent per batch (the request key names the batch's first and last item), so a
retried flush adds nothing twice; a store that fails becomes a non-fatal error event and the
batch is tried again at the next flush. Replicas keep nothing: the next session of the same
conversation, on any replica, starts from the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from chorus.v1 import llm_pb2

from services.common.artifacts import ArtifactMeta
from services.common.audio import wav_bytes
from services.common.conversations import NewItem
from services.common.errors import ChorusError
from services.orchestrator.storage import CHAT_ROLES, Stores, blocking, stored_items

__all__ = ["SessionMedia", "SessionRecord", "StoredTurn"]

log = logging.getLogger(__name__)

_NAMES = {role: name for name, role in CHAT_ROLES.items()}


@dataclass
class SessionMedia:
    """What a spoken assistant item sent: its PCM (16-bit mono) and its pictures."""

    pcm: bytearray = field(default_factory=bytearray)
    rate: int = 0
    images: list[bytes] = field(default_factory=list)

    def cut(self, audio_end_ms: int) -> None:
        """Keep the first ``audio_end_ms`` of the audio (a truncate)."""
        if self.rate:
            keep = int(self.rate * audio_end_ms / 1000) * 2
            del self.pcm[keep:]


@dataclass(frozen=True)
class StoredTurn:
    """One settled item of the session, as the store wants it."""

    item_id: str
    role: llm_pb2.ChatRole
    text: str
    status: str
    media: SessionMedia | None


class SessionRecord:
    """The stored conversation of one session."""

    def __init__(self, stores: Stores, tenant: str, conversation_id: str, session_id: str) -> None:
        self.stores = stores
        self.tenant = tenant
        self.conversation_id = conversation_id
        self.session_id = session_id
        self.stored: set[str] = set()
        """Ids of the session's items already in the store (or loaded from it)."""
        self._lock = asyncio.Lock()

    async def history(
        self, max_messages: int, max_chars: int
    ) -> list[tuple[str, llm_pb2.ChatRole, str]]:
        """(stored id, role, text) of the newest stored items within the limits, oldest first.

        Raises:
            NotFound: an unknown, malformed or another tenant's conversation
                (``config.conversation_id``).
            Unavailable: the store cannot be reached.
        """
        items = await stored_items(
            self.stores, self.tenant, self.conversation_id, max_messages, max_chars
        )
        # A session's system items are its own instructions, not the conversation's.
        loaded = [(i.id, CHAT_ROLES[i.role], i.text) for i in items if i.role != "system"]
        self.stored.update(item_id for item_id, _, _ in loaded)
        return loaded

    async def flush(self, settled: list[StoredTurn], report: Callable[[ChorusError], None]) -> None:
        """Append the items of ``settled`` not stored yet, in order, with their media."""
        async with self._lock:
            batch = [t for t in settled if t.item_id not in self.stored]
            if not batch:
                return
            try:
                new_items = [await self._new_item(turn) for turn in batch]
                repository = await self.stores.conversations()
                key = f"{self.session_id}:{batch[0].item_id}:{batch[-1].item_id}"[:256]
                await blocking(
                    "conversation",
                    repository.append,
                    self.tenant,
                    self.conversation_id,
                    new_items,
                    key,
                )
            except ChorusError as error:
                log.warning("session %s: storing its items failed: %s", self.session_id, error)
                report(error)
                return
            self.stored.update(t.item_id for t in batch)

    async def _new_item(self, turn: StoredTurn) -> NewItem:
        artifacts: list[str] = []
        media = turn.media
        if media is not None and (media.pcm or media.images):
            store = await self.stores.artifacts()
            if media.pcm and media.rate:
                samples = np.frombuffer(bytes(media.pcm), dtype="<i2")
                meta = ArtifactMeta(
                    tenant=self.tenant,
                    media_type="audio/wav",
                    turn_id=self.session_id[:256],
                    conversation_id=self.conversation_id,
                    duration_seconds=len(samples) / media.rate,
                )
                wav = wav_bytes(samples, media.rate)
                artifacts.append((await blocking("artifact", store.put, wav, meta)).id)
            for png in media.images:
                meta = ArtifactMeta(
                    tenant=self.tenant,
                    media_type="image/png",
                    turn_id=self.session_id[:256],
                    conversation_id=self.conversation_id,
                )
                artifacts.append((await blocking("artifact", store.put, png, meta)).id)
        return NewItem(
            role=_NAMES[turn.role],  # type: ignore[arg-type]
            text=turn.text,
            status=turn.status,  # type: ignore[arg-type]
            artifact_ids=tuple(artifacts),
        )
