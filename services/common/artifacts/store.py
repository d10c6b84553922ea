"""One artifact store over a plain blob backend, so every rule is written once.

A backend (``local.LocalBlobs``, ``s3.S3Blobs``) only writes, reads, removes and lists keys;
``BlobArtifactStore`` owns ids, tenants, limits, metadata and retention. Each artifact is two
blobs under its tenant's folder::

    <tenant key>/<id>        the bytes
    <tenant key>/<id>.json   its record (metadata, size, time of the latest put)

The tenant key is a hash of the tenant, so no tenant name (which may hold ``/`` or ``..``) ever
becomes a path or an object key. The bytes are written before the record and the record is
removed first, so an artifact is listed only once its bytes are complete, and each blob write is
atomic in every backend: a reader or another replica never sees half an artifact.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from services.common.artifacts.model import (
    Artifact,
    ArtifactMeta,
    artifact_id,
    check_artifact_id,
    is_tenant,
)
from services.common.artifacts.retention import sweep
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted

__all__ = ["BlobArtifactStore", "Blobs", "KEY_PATTERN"]

log = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[0-9a-f]{32}/[0-9a-f]{64}(\.json)?")
"""Every key the store uses; backends may refuse any other (no key is ever a caller's text)."""
_RECORD_VERSION = 1


class Blobs(Protocol):
    """The few operations a storage backend provides. Keys match ``KEY_PATTERN``."""

    name: str
    """``local`` or ``s3``."""

    def write(self, key: str, data: bytes, media_type: str) -> None:
        """Store ``data`` under ``key`` atomically: readers see the old blob or the new one."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        """The blob's bytes ``[start, end)`` (``b""`` past its end); None when it is absent."""
        ...

    def remove(self, key: str) -> None:
        """Remove the blob; an absent one is fine."""
        ...

    def keys(self, folder: str | None = None) -> list[str]:
        """Keys of complete blobs in one tenant's folder, or in every folder."""
        ...


class BlobArtifactStore:
    """``ArtifactStore`` on any ``Blobs``.

    Args:
        blobs: where the bytes go.
        max_artifact_bytes: larger puts are refused with RESOURCE_EXHAUSTED, the code Chorus
            gives every oversized input.
        clock: Unix time for ``Artifact.created``; tests inject theirs.
    """

    def __init__(
        self, blobs: Blobs, max_artifact_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.blobs = blobs
        self._max_artifact_bytes = max_artifact_bytes
        self._clock = clock

    @property
    def backend(self) -> str:
        return self.blobs.name

    @property
    def max_artifact_bytes(self) -> int:
        return self._max_artifact_bytes

    def put(self, data: bytes, meta: ArtifactMeta) -> Artifact:
        if len(data) > self._max_artifact_bytes:
            raise ResourceExhausted(
                f"the artifact is {len(data)} bytes, more than {self._max_artifact_bytes}",
                field="data",
            )
        new_id = artifact_id(meta.tenant, data)
        key = _key(meta.tenant, new_id)
        now = self._clock()
        known = self._record(key, new_id, meta.tenant)
        if known is not None and self.blobs.read(key, 0, 1) is not None:
            # The same bytes again: one copy, the first producer's metadata; only the time of
            # the latest put moves, so retention counts the age from the newest hand-out.
            artifact = Artifact(
                id=new_id, size=known.size, created=now, backend=self.backend, meta=known.meta
            )
        else:
            self.blobs.write(key, data, meta.media_type)
            artifact = Artifact(
                id=new_id, size=len(data), created=now, backend=self.backend, meta=meta
            )
        self.blobs.write(key + ".json", _encode(artifact), "application/json")
        return artifact

    def get(
        self, artifact_id: str, tenant: str, start: int | None = None, end: int | None = None
    ) -> bytes:
        key = self._checked_key(artifact_id, tenant)
        first = 0 if start is None else start
        if first < 0:
            raise InvalidArgument("start must be >= 0", field="start")
        if end is not None and end < first:
            raise InvalidArgument("end must be >= start", field="end")
        data = self.blobs.read(key, first, end)
        if data is None:
            raise NotFound("no such artifact", field="artifact_id")
        return data

    def stat(self, artifact_id: str, tenant: str) -> Artifact:
        key = self._checked_key(artifact_id, tenant)
        artifact = self._record(key, artifact_id, tenant)
        if artifact is None:
            raise NotFound("no such artifact", field="artifact_id")
        return artifact

    def delete(self, artifact_id: str, tenant: str) -> bool:
        key = self._checked_key(artifact_id, tenant)
        if self._record(key, artifact_id, tenant) is None:
            return False
        self.blobs.remove(key + ".json")
        self.blobs.remove(key)
        return True

    def list(self, tenant: str, conversation_id: str | None = None) -> builtins.list[Artifact]:
        if not is_tenant(tenant):
            return []
        found = self._records(self.blobs.keys(_tenant_key(tenant)))
        return [
            a
            for a in found
            if a.meta.tenant == tenant
            and (conversation_id is None or a.meta.conversation_id == conversation_id)
        ]

    def scan(self) -> builtins.list[Artifact]:
        return self._records(self.blobs.keys())

    def sweep(
        self,
        *,
        now: float,
        max_age_seconds: float,
        max_total_bytes: int,
        referenced: Collection[str],
    ) -> builtins.list[str]:
        removed = sweep(
            self,
            now=now,
            max_age_seconds=max_age_seconds,
            max_total_bytes=max_total_bytes,
            referenced=referenced,
        )
        if removed:
            log.info("artifact retention removed %d artifacts", len(removed))
        return removed

    def _checked_key(self, artifact_id: str, tenant: str) -> str:
        check_artifact_id(artifact_id)
        if not is_tenant(tenant):
            raise NotFound("no such artifact", field="artifact_id")
        return _key(tenant, artifact_id)

    def _record(self, key: str, artifact_id: str, tenant: str) -> Artifact | None:
        raw = self.blobs.read(key + ".json")
        if raw is None:
            return None
        artifact = _decode(raw, self.backend)
        # The key already binds the tenant; the record must agree (a hand-copied file must not
        # hand one tenant's artifact to another).
        if artifact is None or artifact.id != artifact_id or artifact.meta.tenant != tenant:
            return None
        return artifact

    def _records(self, keys: builtins.list[str]) -> builtins.list[Artifact]:
        found: builtins.list[Artifact] = []
        for key in keys:
            if not key.endswith(".json"):
                continue
            raw = self.blobs.read(key)
            artifact = None if raw is None else _decode(raw, self.backend)
            if artifact is not None and key == _key(artifact.meta.tenant, artifact.id) + ".json":
                found.append(artifact)
        return sorted(found, key=lambda a: (a.created, a.id))


def _tenant_key(tenant: str) -> str:
    return hashlib.sha256(b"chorus-tenant-v1\0" + tenant.encode()).hexdigest()[:32]


def _key(tenant: str, artifact_id: str) -> str:
    return f"{_tenant_key(tenant)}/{artifact_id}"


def _encode(artifact: Artifact) -> bytes:
    meta = artifact.meta
    record: dict[str, Any] = {
        "version": _RECORD_VERSION,
        "id": artifact.id,
        "size": artifact.size,
        "created": artifact.created,
        "tenant": meta.tenant,
        "media_type": meta.media_type,
        "model": meta.model,
        "backend": meta.backend,
        "turn_id": meta.turn_id,
        "conversation_id": meta.conversation_id,
        "duration_seconds": meta.duration_seconds,
        "width": meta.width,
        "height": meta.height,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def _decode(raw: bytes, store_backend: str) -> Artifact | None:
    """The record, or None (logged) for one that is not a record of this version."""
    try:
        record = json.loads(raw)
        if record.pop("version") != _RECORD_VERSION:
            raise ValueError("unknown record version")
        return Artifact(
            id=record.pop("id"),
            size=int(record.pop("size")),
            created=float(record.pop("created")),
            backend=store_backend,
            meta=ArtifactMeta(**record),
        )
    except (ValueError, TypeError, KeyError, AttributeError, InvalidArgument) as error:
        log.warning("skipping an unreadable artifact record: %s", error)
        return None
