"""The repository: every query of the conversation store, over one SQLAlchemy engine.

Thread-safety: one ``ConversationRepository`` (one engine, one connection pool) per process,
shared by every thread; each call checks a connection out of the pool for one transaction and
returns it, so calls from many threads (and many replicas on one PostgreSQL) are safe. Every
method blocks: call it off the event loop (``asyncio.to_thread``).

Concurrent appends to one conversation are serialized on the conversation's row: PostgreSQL
locks it (``SELECT ... FOR UPDATE``), SQLite takes its one write lock at ``BEGIN IMMEDIATE``.
Between taking the lock and committing, an append reads the last position and the request
key's earlier items, so two replicas never pick one position and a retried request never stores
its items twice. The unique indexes on (conversation, position) and (conversation, request key)
hold those rules even for a writer that skipped the lock; such a conflict is retried.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from services.common.artifacts.model import is_tenant
from services.common.conversations.model import (
    Conversation,
    Item,
    NewItem,
    Role,
    Status,
    check_conversation_id,
    check_new_item,
    check_request_key,
    check_tenant,
    check_title,
    new_conversation_id,
    new_item_id,
)
from services.common.conversations.schema import conversations, items
from services.common.errors import (
    ChorusError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

__all__ = ["WRITE", "ConversationLimits", "ConversationRepository"]

log = logging.getLogger(__name__)

WRITE = "chorus_write"
"""Execution option of a connection that will write: SQLite then begins ``IMMEDIATE``."""
_APPEND_ATTEMPTS = 3
_STREAM_ROWS = 500


@dataclass(frozen=True, kw_only=True)
class ConversationLimits:
    """The bounds every call is held to (``ConversationSettings`` has their documentation)."""

    max_items_per_conversation: int = 10_000
    max_text_chars: int = 100_000
    max_list_limit: int = 100
    max_artifacts_per_item: int = 16


class ConversationRepository:
    """Conversations and their items, per tenant, in one SQL database.

    Any id that is malformed, unknown or another tenant's raises ``NotFound``; an input over a
    size limit raises ``ResourceExhausted``, the code Chorus gives every oversized input.

    Args:
        engine: from ``open_repository`` (it sets SQLite up: foreign keys, WAL, immediate
            write transactions); the repository owns it and ``close`` disposes of it.
        limits: the bounds.
        clock: Unix time for ``created`` and ``updated``; tests inject theirs.
    """

    def __init__(
        self,
        engine: Engine,
        limits: ConversationLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.limits = limits or ConversationLimits()
        self._clock = clock

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the pool's connections; the repository must not be used after."""
        self._engine.dispose()

    def __enter__(self) -> ConversationRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, tenant: str, title: str | None = None) -> Conversation:
        """A new empty conversation.

        Raises:
            InvalidArgument: a tenant that is not 1..256 characters, a title over 256.
        """
        check_tenant(tenant)
        check_title(title)
        now = self._clock()
        conversation = Conversation(
            id=new_conversation_id(), tenant=tenant, title=title, created=now, updated=now
        )
        with self._write() as conn:
            conn.execute(
                conversations.insert().values(
                    id=conversation.id, tenant=tenant, title=title, created=now, updated=now
                )
            )
        return conversation

    def get(self, tenant: str, conversation_id: str) -> Conversation:
        """The conversation with its items in order. Raises NotFound."""
        check_conversation_id(conversation_id)
        with self._read() as conn:
            row = conn.execute(_owned(conversation_id, tenant)).one_or_none()
            if row is None:
                raise _not_found()
            found = conn.execute(
                items.select()
                .where(items.c.conversation_id == conversation_id)
                .order_by(items.c.position)
            ).all()
        return _conversation(row, tuple(_item(r) for r in found))

    def list(
        self, tenant: str, limit: int, before: str | None = None
    ) -> builtins.list[Conversation]:
        """The tenant's conversations, most recently updated first, without their items.

        Args:
            limit: 1..``max_list_limit``.
            before: the last id of the previous page: this page continues after it. A
                conversation appended to between two pages moves to the front, as in any
                newest-first feed.

        Raises:
            InvalidArgument: ``limit`` below 1.
            ResourceExhausted: ``limit`` over ``max_list_limit``.
            NotFound: ``before`` is not one of the tenant's conversations.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument("limit must be >= 1", field="limit")
        if limit > self.limits.max_list_limit:
            raise ResourceExhausted(
                f"limit {limit} is more than {self.limits.max_list_limit}", field="limit"
            )
        if before is not None:
            check_conversation_id(before)
        if not is_tenant(tenant):
            if before is not None:
                raise _not_found("before")
            return []
        query = (
            conversations.select()
            .where(conversations.c.tenant == tenant)
            .order_by(conversations.c.updated.desc(), conversations.c.id.desc())
            .limit(limit)
        )
        with self._read() as conn:
            if before is not None:
                cursor = conn.execute(
                    sa.select(conversations.c.updated, conversations.c.id).where(
                        conversations.c.id == before, conversations.c.tenant == tenant
                    )
                ).one_or_none()
                if cursor is None:
                    raise _not_found("before")
                query = query.where(
                    sa.tuple_(conversations.c.updated, conversations.c.id)
                    < sa.tuple_(sa.literal(cursor.updated, sa.Double()), sa.literal(cursor.id))
                )
            rows = conn.execute(query).all()
        return [_conversation(row, ()) for row in rows]

    def delete(self, tenant: str, conversation_id: str) -> builtins.list[str]:
        """Remove the conversation and its items; the artifact ids they referenced (each once,
        in the items' order), for the caller to delete from the artifact store.

        Raises:
            NotFound: as ``get``; deleting twice raises it the second time.
        """
        check_conversation_id(conversation_id)
        with self._write() as conn:
            # Locked first, so an append that commits meanwhile cannot add artifacts unseen.
            if conn.execute(_owned(conversation_id, tenant).with_for_update()).first() is None:
                raise _not_found()
            referenced: dict[str, None] = {}
            for ids in conn.execute(
                sa.select(items.c.artifact_ids)
                .where(items.c.conversation_id == conversation_id)
                .order_by(items.c.position)
            ).scalars():
                referenced.update(dict.fromkeys(ids))
            # The items go by ON DELETE CASCADE (SQLite: foreign_keys is on for every connection).
            conn.execute(conversations.delete().where(conversations.c.id == conversation_id))
        return builtins.list(referenced)

    def append(
        self,
        tenant: str,
        conversation_id: str,
        new_items: Sequence[NewItem],
        request_key: str | None = None,
    ) -> builtins.list[Item]:
        """Add items at the end of the conversation, in order, in one transaction.

        Args:
            new_items: at least one.
            request_key: the request's idempotency key: when items were already stored with it
                in this conversation, they are returned and nothing is added (a retried turn
                appends once, even when both tries run at the same time on two replicas).
                What the retry passes as ``new_items`` is then not looked at beyond its checks.

        Raises:
            NotFound: as ``get``.
            InvalidArgument: no items, or an item or key the store cannot hold.
            ResourceExhausted: a text over ``max_text_chars``, too many artifacts in an item,
                or the conversation would pass ``max_items_per_conversation``.
        """
        check_conversation_id(conversation_id)
        check_request_key(request_key)
        if isinstance(new_items, NewItem) or not isinstance(new_items, Sequence) or not new_items:
            raise InvalidArgument("append needs at least one item", field="items")
        limits = self.limits
        if len(new_items) > limits.max_items_per_conversation:
            raise ResourceExhausted(
                f"{len(new_items)} items, more than {limits.max_items_per_conversation}",
                field="items",
            )
        for index, item in enumerate(new_items):
            check_new_item(
                item,
                index,
                max_text_chars=limits.max_text_chars,
                max_artifacts_per_item=limits.max_artifacts_per_item,
            )
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                return self._append_once(tenant, conversation_id, new_items, request_key)
            except sa.exc.IntegrityError:
                # Another writer took the position or the key between our read and insert:
                # only possible without the row lock; the next try sees its items.
                log.warning("append to %s conflicted (try %d)", conversation_id, attempt)
        raise Unavailable("the conversation is being changed by others; try again")

    def history(
        self, tenant: str, conversation_id: str, max_messages: int, max_chars: int
    ) -> builtins.list[Item]:
        """The newest items that fit in ``max_messages`` items and ``max_chars`` characters of
        ``text`` together, oldest first: what a model is given as the talk so far. It stops at
        the first item (from the newest) that does not fit, so the result has no gaps.

        Raises:
            NotFound: as ``get``.
            InvalidArgument: a negative bound.
        """
        check_conversation_id(conversation_id)
        for name, value in (("max_messages", max_messages), ("max_chars", max_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"{name} must be >= 0", field=name)
        # No conversation holds more than this, so a larger bound reads nothing more.
        max_messages = min(max_messages, self.limits.max_items_per_conversation)
        kept: builtins.list[Item] = []
        with self._read() as conn:
            if conn.execute(_owned(conversation_id, tenant)).first() is None:
                raise _not_found()
            if max_messages == 0:
                return []
            newest_first = conn.execution_options(yield_per=_STREAM_ROWS).execute(
                items.select()
                .where(items.c.conversation_id == conversation_id)
                .order_by(items.c.position.desc())
                .limit(max_messages)
            )
            chars = 0
            for row in newest_first:
                chars += len(row.text)
                if chars > max_chars:
                    break
                kept.append(_item(row))
            newest_first.close()
        kept.reverse()
        return kept

    def referenced_artifacts(self, tenant: str | None = None) -> set[str]:
        """Every artifact id an item references (one tenant's, if named): what the artifact
        store's retention must not remove as unreferenced."""
        query = sa.select(items.c.artifact_ids)
        if tenant is not None:
            if not is_tenant(tenant):
                return set()
            query = query.where(items.c.tenant == tenant)
        found: set[str] = set()
        with self._read() as conn:
            for ids in conn.execution_options(yield_per=_STREAM_ROWS).execute(query).scalars():
                found.update(ids)
        return found

    def _append_once(
        self,
        tenant: str,
        conversation_id: str,
        new_items: Sequence[NewItem],
        request_key: str | None,
    ) -> builtins.list[Item]:
        with self._write() as conn:
            locked = _owned(conversation_id, tenant).with_for_update()
            if conn.execute(locked).first() is None:
                raise _not_found()
            if request_key is not None:
                stored = conn.execute(
                    items.select()
                    .where(
                        items.c.conversation_id == conversation_id,
                        items.c.request_key == request_key,
                    )
                    .order_by(items.c.position)
                ).all()
                if stored:
                    return [_item(row) for row in stored]
            last = conn.execute(
                sa.select(sa.func.max(items.c.position)).where(
                    items.c.conversation_id == conversation_id
                )
            ).scalar()
            start = 0 if last is None else int(last) + 1
            most = self.limits.max_items_per_conversation
            if start + len(new_items) > most:
                raise ResourceExhausted(
                    f"the conversation has {start} items; {len(new_items)} more pass {most}",
                    field="items",
                )
            now = self._clock()
            made = [
                Item(
                    id=new_item_id(),
                    conversation_id=conversation_id,
                    position=start + index,
                    role=item.role,
                    text=item.text,
                    transcript=item.transcript,
                    status=item.status,
                    artifact_ids=tuple(item.artifact_ids),
                    timings=None if item.timings is None else dict(item.timings),
                    request_key=request_key,
                    created=now,
                )
                for index, item in enumerate(new_items)
            ]
            conn.execute(
                items.insert(),
                [
                    {
                        "id": item.id,
                        "conversation_id": conversation_id,
                        "tenant": tenant,
                        "position": item.position,
                        "role": item.role,
                        "text": item.text,
                        "transcript": item.transcript,
                        "status": item.status,
                        "artifact_ids": list(item.artifact_ids),
                        "timings": item.timings,
                        "request_key": request_key,
                        "request_index": None if request_key is None else index,
                        "created": now,
                    }
                    for index, item in enumerate(made)
                ],
            )
            conn.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id)
                .values(updated=now)
            )
        return made

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """One transaction, so a call's queries see one state of the database."""
        with _unavailable_on_failure(), self._engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _unavailable_on_failure(), self._engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """A database that cannot be reached, or stays locked past the busy timeout, is
    UNAVAILABLE (worth a retry), not an internal error; its message is logged, not returned."""
    try:
        yield
    except ChorusError:
        raise
    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as error:
        log.warning("conversation store unavailable: %s", type(error).__name__, exc_info=True)
        raise Unavailable("the conversation store is unavailable; try again") from error


def _owned(conversation_id: str, tenant: str) -> sa.Select[Any]:
    return conversations.select().where(
        conversations.c.id == conversation_id, conversations.c.tenant == tenant
    )


def _not_found(field: str = "conversation_id") -> NotFound:
    return NotFound("no such conversation", field=field)


def _conversation(row: Row[Any], found: tuple[Item, ...]) -> Conversation:
    return Conversation(
        id=row.id,
        tenant=row.tenant,
        title=row.title,
        created=row.created,
        updated=row.updated,
        items=found,
    )


def _item(row: Row[Any]) -> Item:
    timings = cast(Mapping[str, float] | None, row.timings)
    return Item(
        id=row.id,
        conversation_id=row.conversation_id,
        position=row.position,
        role=cast(Role, row.role),
        text=row.text,
        transcript=row.transcript,
        status=cast(Status, row.status),
        artifact_ids=tuple(row.artifact_ids),
        timings=None if timings is None else dict(timings),
        request_key=row.request_key,
        created=row.created,
    )
