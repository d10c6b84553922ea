"""The artifact store: reply audio and images kept by content address, per tenant, with one
retention policy, in a local folder (the default) or any S3-compatible object store.

``open_store(ArtifactSettings())`` opens the configured one. Everything here is blocking I/O:
call it off the event loop (``asyncio.to_thread``).
"""

from services.common.artifacts.local import LocalBlobs
from services.common.artifacts.model import (
    Artifact,
    ArtifactMeta,
    ArtifactStore,
    artifact_id,
)
from services.common.artifacts.retention import plan_sweep, sweep
from services.common.artifacts.settings import ArtifactSettings, S3ArtifactSettings, open_store
from services.common.artifacts.store import BlobArtifactStore, Blobs

__all__ = [
    "Artifact",
    "ArtifactMeta",
    "ArtifactSettings",
    "ArtifactStore",
    "BlobArtifactStore",
    "Blobs",
    "LocalBlobs",
    "S3ArtifactSettings",
    "artifact_id",
    "open_store",
    "plan_sweep",
    "sweep",
]
