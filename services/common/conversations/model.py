"""What a conversation and its items are, the ids they get, and the checks their inputs pass.

A conversation is an ordered list of items (a user's message, the assistant's reply, a system
note) kept per tenant, so that any orchestrator replica can continue it. Ids are random (never a
count or a time), and every lookup names the tenant again: an id that is malformed, unknown or
another tenant's is the same ``NotFound``, so no caller can learn that someone else's exists.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from services.common.artifacts.model import is_tenant
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_TITLE_CHARS",
    "ROLES",
    "STATUSES",
    "Conversation",
    "Item",
    "NewItem",
    "Role",
    "Status",
    "check_conversation_id",
    "check_new_item",
    "check_request_key",
    "check_tenant",
    "check_title",
    "new_conversation_id",
    "new_item_id",
]

Role = Literal["user", "assistant", "system"]
Status = Literal["completed", "incomplete", "failed"]
"""``incomplete``: a reply cut short (a barge-in kept only what was heard)."""
ROLES: tuple[str, ...] = get_args(Role)
STATUSES: tuple[str, ...] = get_args(Status)

MAX_TITLE_CHARS = 256
MAX_KEY_CHARS = 256
"""Longest request key; keys are a client's retry token, not content."""
MAX_TIMINGS = 32
"""Most named timings per item (stage -> milliseconds)."""

_CONVERSATION_ID = re.compile(r"conv_[0-9a-f]{32}")
_ARTIFACT_ID = re.compile(r"[0-9a-f]{64}")
_TIMING_NAME = re.compile(r"[a-z0-9_.]{1,64}")


def new_conversation_id() -> str:
    """``conv_`` and 128 random bits: unguessable, so an id alone never finds a conversation."""
    return "conv_" + secrets.token_hex(16)


def new_item_id() -> str:
    return "item_" + secrets.token_hex(16)


def check_conversation_id(conversation_id: str) -> None:
    """Refuse anything that no ``new_conversation_id`` could have made, before any query."""
    if not isinstance(conversation_id, str) or not _CONVERSATION_ID.fullmatch(conversation_id):
        raise NotFound("no such conversation", field="conversation_id")


def check_tenant(tenant: str) -> None:
    if not is_tenant(tenant):
        raise InvalidArgument("tenant must be 1..256 characters", field="tenant")


def check_title(title: str | None) -> None:
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE_CHARS):
        raise InvalidArgument(f"title must be at most {MAX_TITLE_CHARS} characters", field="title")


def check_request_key(request_key: str | None) -> None:
    if request_key is not None and (
        not isinstance(request_key, str) or not 0 < len(request_key) <= MAX_KEY_CHARS
    ):
        raise InvalidArgument(
            f"request_key must be 1..{MAX_KEY_CHARS} characters", field="request_key"
        )


@dataclass(frozen=True, kw_only=True)
class NewItem:
    """An item to append; the store gives it its id, position and time."""

    role: Role
    text: str
    """What was said, as text: a user's typed words or transcript, the assistant's reply. This is
    what ``history`` counts and what a model is given."""
    transcript: str | None = None
    """The words of the item's audio when they differ from ``text`` (a reply cut by a barge-in
    keeps its full text and the transcript of what was heard)."""
    status: Status = "completed"
    artifact_ids: tuple[str, ...] = ()
    """The item's audio and images in the artifact store, in order."""
    timings: Mapping[str, float] | None = None
    """Milliseconds per stage (``stt``, ``llm.first_token``, ...), for inspection."""


@dataclass(frozen=True, kw_only=True)
class Item:
    """A stored item."""

    id: str
    conversation_id: str
    position: int
    """0, 1, 2, ... within the conversation: the order of the talk, with no gaps."""
    role: Role
    text: str
    transcript: str | None
    status: Status
    artifact_ids: tuple[str, ...]
    timings: Mapping[str, float] | None
    request_key: str | None
    """The key of the append that stored it (items of one append share it)."""
    created: float
    """Unix seconds."""


@dataclass(frozen=True, kw_only=True)
class Conversation:
    id: str
    tenant: str
    title: str | None
    created: float
    updated: float
    """Unix seconds of the latest append (or of creation): ``list`` orders by it."""
    items: tuple[Item, ...] = field(default=())
    """In order; ``get`` fills them, ``list`` does not."""


def check_new_item(
    item: NewItem, index: int, *, max_text_chars: int, max_artifacts_per_item: int
) -> None:
    """Refuse an item the store must not hold; ``index`` names it in the error's field."""
    where = f"items[{index}]"
    if not isinstance(item, NewItem):
        raise InvalidArgument("an item must be a NewItem", field=where)
    if item.role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}", field=f"{where}.role")
    if item.status not in STATUSES:
        raise InvalidArgument(
            f"status must be one of {', '.join(STATUSES)}", field=f"{where}.status"
        )
    for name in ("text", "transcript"):
        value = getattr(item, name)
        if value is None and name == "transcript":
            continue
        if not isinstance(value, str):
            raise InvalidArgument(f"{name} must be text", field=f"{where}.{name}")
        if len(value) > max_text_chars:
            raise ResourceExhausted(
                f"{name} is {len(value)} characters, more than {max_text_chars}",
                field=f"{where}.{name}",
            )
    _check_artifact_ids(item.artifact_ids, f"{where}.artifact_ids", max_artifacts_per_item)
    if item.timings is not None:
        _check_timings(item.timings, f"{where}.timings")


def _check_artifact_ids(ids: Sequence[str], where: str, most: int) -> None:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidArgument("artifact_ids must be a sequence of ids", field=where)
    if len(ids) > most:
        raise ResourceExhausted(f"{len(ids)} artifacts, more than {most}", field=where)
    for value in ids:
        if not isinstance(value, str) or not _ARTIFACT_ID.fullmatch(value):
            raise InvalidArgument("an artifact id is 64 lowercase hex digits", field=where)


def _check_timings(timings: Mapping[str, float], where: str) -> None:
    if not isinstance(timings, Mapping):
        raise InvalidArgument("timings must map names to milliseconds", field=where)
    if len(timings) > MAX_TIMINGS:
        raise InvalidArgument(f"at most {MAX_TIMINGS} timings", field=where)
    for name, value in timings.items():
        if not isinstance(name, str) or not _TIMING_NAME.fullmatch(name):
            raise InvalidArgument("a timing name is 1..64 of [a-z0-9_.]", field=where)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidArgument(f"timing {name} must be finite and >= 0", field=where)
