"""What an artifact is, how its id is made, and the interface every store offers.

An artifact is a blob a turn produced (reply audio, an image) kept so that a client can fetch it
later by id instead of receiving it inline. Ids are content addresses bound to a tenant:
``sha256(tenant, bytes)``. Two tenants putting the same bytes get two artifacts, and since the
tenant is part of every lookup, no id of one tenant ever reaches another's data.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from services.common.errors import InvalidArgument, NotFound

__all__ = [
    "MAX_TEXT_CHARS",
    "Artifact",
    "ArtifactMeta",
    "ArtifactStore",
    "artifact_id",
    "check_artifact_id",
    "is_tenant",
]

MAX_TEXT_CHARS = 256
"""Longest tenant, media type, model, backend, turn or conversation id: metadata stays small."""
_ID = re.compile(r"[0-9a-f]{64}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ArtifactMeta:
    """What the producer knows about the bytes it stores; checked when made.

    The size and the time of storing are not here: the store measures them (``Artifact``), so
    no caller can claim a size its bytes do not have.
    """

    tenant: str
    """Whose artifact it is; every read names it again, and only the same tenant finds it."""
    media_type: str
    """``audio/wav``, ``image/png``, ...: what a client is told when it fetches the bytes."""
    model: str = ""
    """The model that made it, and the backend that ran that model."""
    backend: str = ""
    turn_id: str = ""
    conversation_id: str | None = None
    """``ArtifactStore.list`` can select one conversation's artifacts."""
    duration_seconds: float | None = None
    """Audio and video: the playing time."""
    width: int | None = None
    """Images: pixels."""
    height: int | None = None

    def __post_init__(self) -> None:
        if not is_tenant(self.tenant):
            raise InvalidArgument(f"tenant must be 1..{MAX_TEXT_CHARS} characters", field="tenant")
        if not _MEDIA_TYPE.fullmatch(self.media_type) or len(self.media_type) > MAX_TEXT_CHARS:
            raise InvalidArgument(
                f"media type {self.media_type[:40]!r} is not type/subtype", field="media_type"
            )
        for name in ("model", "backend", "turn_id", "conversation_id"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_TEXT_CHARS:
                raise InvalidArgument(
                    f"{name} is longer than {MAX_TEXT_CHARS} characters", field=name
                )
        if self.duration_seconds is not None and not (
            math.isfinite(self.duration_seconds) and self.duration_seconds >= 0
        ):
            raise InvalidArgument(
                "duration_seconds must be finite and >= 0", field="duration_seconds"
            )
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1_000_000:
                raise InvalidArgument(f"{name} must be in 1..1000000", field=name)


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A stored artifact: its id, what the store measured, and the producer's metadata."""

    id: str
    """64 lowercase hex digits: ``artifact_id(meta.tenant, bytes)``."""
    size: int
    """Bytes."""
    created: float
    """Unix seconds of the latest ``put`` of these bytes: putting them again renews it, so an
    artifact just handed out again is not swept as old."""
    backend: str
    """The store that holds it: ``local`` or ``s3`` (``ArtifactMeta.backend`` is the model's)."""
    meta: ArtifactMeta


def artifact_id(tenant: str, data: bytes) -> str:
    """The content address of ``data`` for ``tenant``: the tenant is length-prefixed, so no
    tenant/bytes split of one input can collide with another's."""
    name = tenant.encode()
    digest = hashlib.sha256(b"chorus-artifact-v1\0")
    digest.update(len(name).to_bytes(4, "big"))
    digest.update(name)
    digest.update(data)
    return digest.hexdigest()


def check_artifact_id(artifact_id: str) -> None:
    """Refuse anything but 64 lowercase hex digits (``../x``, ``a/b``, ``''``, a suffix) before
    a store builds a path or key from it: such an id cannot exist, hence NotFound."""
    if not isinstance(artifact_id, str) or not _ID.fullmatch(artifact_id):
        raise NotFound("no such artifact", field="artifact_id")


def is_tenant(tenant: str) -> bool:
    """A tenant is 1..MAX_TEXT_CHARS characters; stores hash it, so any characters are safe."""
    return isinstance(tenant, str) and 0 < len(tenant) <= MAX_TEXT_CHARS


class ArtifactStore(Protocol):
    """Where turns keep the audio and images they produce. Every method is blocking (run it
    off the event loop); every lookup names the tenant, and any id that is malformed, unknown
    or another tenant's is ``NotFound``: callers cannot tell those apart, by design."""

    @property
    def backend(self) -> str:
        """``local`` or ``s3``."""
        ...

    @property
    def max_artifact_bytes(self) -> int:
        """Largest artifact ``put`` accepts."""
        ...

    def put(self, data: bytes, meta: ArtifactMeta) -> Artifact:
        """Store ``data``; the same bytes for the same tenant again keep one copy and one id.

        Raises:
            ResourceExhausted: ``data`` is larger than ``max_artifact_bytes``.
        """
        ...

    def get(
        self, artifact_id: str, tenant: str, start: int | None = None, end: int | None = None
    ) -> bytes:
        """The bytes, or the slice ``[start, end)`` of them (Python slice rules: ``end`` is
        exclusive and clamps to the size; a ``start`` at or past the end gives ``b""``).

        Raises:
            NotFound: no such artifact for this tenant.
            InvalidArgument: a negative bound, or ``end < start``.
        """
        ...

    def stat(self, artifact_id: str, tenant: str) -> Artifact:
        """The artifact's record without its bytes. Raises NotFound as ``get`` does."""
        ...

    def delete(self, artifact_id: str, tenant: str) -> bool:
        """Remove it; False when this tenant has no such artifact (deleting twice is fine).

        Raises:
            NotFound: a malformed id (it can never have existed).
        """
        ...

    def list(self, tenant: str, conversation_id: str | None = None) -> list[Artifact]:
        """The tenant's artifacts (one conversation's, if named), oldest first."""
        ...

    # ``builtins.list`` below: inside this class ``list`` names the method above.
    def scan(self) -> builtins.list[Artifact]:
        """Every tenant's artifacts, oldest first: for retention, never for a caller's request."""
        ...

    def sweep(
        self,
        *,
        now: float,
        max_age_seconds: float,
        max_total_bytes: int,
        referenced: Collection[str],
    ) -> builtins.list[str]:
        """Apply the retention policy (``retention.plan_sweep``); the ids removed."""
        ...
