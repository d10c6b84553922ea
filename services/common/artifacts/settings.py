"""Artifact store settings, read from ``CHORUS_ARTIFACTS_*``, and the factory that opens one.

The local folder is the default, so one machine needs nothing set up; ``BACKEND=s3`` moves the
artifacts to an object store that every replica shares, e.g.::

    CHORUS_ARTIFACTS_BACKEND=s3 CHORUS_ARTIFACTS_S3__BUCKET=chorus \\
    CHORUS_ARTIFACTS_S3__ENDPOINT_URL=http://minio:9000 CHORUS_ARTIFACTS_S3__ADDRESSING_STYLE=path
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.artifacts.local import LocalBlobs
from services.common.artifacts.model import ArtifactStore
from services.common.artifacts.store import BlobArtifactStore

__all__ = ["ArtifactSettings", "S3ArtifactSettings", "open_store"]

log = logging.getLogger(__name__)

_GIB = 1024**3


class S3ArtifactSettings(BaseModel):
    """Where in S3 (``CHORUS_ARTIFACTS_S3__*``). Credentials are not settings: boto3 reads
    them from its usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an
    instance role), so they never pass through Chorus code or its logs."""

    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    """An existing bucket; required with ``backend=s3``."""
    endpoint_url: str | None = None
    """Another S3-compatible service (``http://minio:9000``); unset: AWS."""
    region: str | None = None
    """Unset: boto3's own (``AWS_DEFAULT_REGION``, the profile)."""
    prefix: str = Field(default="chorus/artifacts/", max_length=512)
    """Put before every object key, so the bucket can hold other things."""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """``path`` for most self-hosted services (MinIO), whose buckets are not host names."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    read_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Tries per request (boto3's standard retry mode: throttling and 5xx, with backoff)."""


class ArtifactSettings(BaseSettings):
    """The artifact store's knobs, e.g. ``CHORUS_ARTIFACTS_MAX_ARTIFACT_BYTES=1048576``."""

    model_config = SettingsConfigDict(
        env_prefix="CHORUS_ARTIFACTS_", env_nested_delimiter="__", extra="ignore"
    )

    backend: Literal["local", "s3"] = "local"
    folder: Path = Field(default_factory=lambda: Path.home() / ".cache" / "chorus" / "artifacts")
    """The local backend's root; replicas that share it (one volume) share the artifacts."""
    s3: S3ArtifactSettings = Field(default_factory=S3ArtifactSettings)
    max_artifact_bytes: int = Field(default=64 * 1024 * 1024, ge=1, le=_GIB)
    """Largest artifact; a bigger put gets RESOURCE_EXHAUSTED. Puts hold it in memory once."""
    max_age_seconds: float = Field(default=7 * 24 * 3600.0, gt=0, le=10 * 366 * 24 * 3600.0)
    """Retention: older artifacts are removed, referenced or not."""
    max_total_bytes: int = Field(default=10 * _GIB, ge=0, le=1024**5)
    """Retention: beyond this total, the oldest unreferenced artifacts are removed."""

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> ArtifactSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("backend s3 needs CHORUS_ARTIFACTS_S3__BUCKET")
        return self


def open_store(settings: ArtifactSettings) -> ArtifactStore:
    """The store ``settings`` name. boto3 is imported only for ``s3`` (orchestrator extra)."""
    if settings.backend == "local":
        log.info("artifact store: local folder %s", settings.folder)
        return BlobArtifactStore(LocalBlobs(settings.folder), settings.max_artifact_bytes)
    from services.common.artifacts.s3 import S3Blobs, make_client

    s3 = settings.s3
    assert s3.bucket is not None  # checked by the settings' validator
    client = make_client(
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        addressing_style=s3.addressing_style,
        connect_timeout_seconds=s3.connect_timeout_seconds,
        read_timeout_seconds=s3.read_timeout_seconds,
        max_attempts=s3.max_attempts,
    )
    log.info(
        "artifact store: s3 bucket %s prefix %r at %s",
        s3.bucket,
        s3.prefix,
        s3.endpoint_url or "AWS",
    )
    return BlobArtifactStore(S3Blobs(client, s3.bucket, s3.prefix), settings.max_artifact_bytes)
