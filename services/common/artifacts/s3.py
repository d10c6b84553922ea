"""Artifacts in any S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...) through boto3.

Each blob is one object, ``<prefix><tenant key>/<id>`` (``.json`` for its record); a PUT is
atomic in S3, so readers never see part of one. ``read`` with a range sends an HTTP ``Range``
header, so a client seeking in reply audio fetches only what it plays. Credentials come from
boto3's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance
role), never from Chorus settings, and are never logged.

boto3 is in the orchestrator's extra only: import this module where that extra is installed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.common.artifacts.store import KEY_PATTERN
from services.common.errors import Unavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Blobs"]

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Blobs:
    """``Blobs`` in ``bucket`` under ``prefix``.

    Args:
        client: an S3 client (``make_client``); injected so tests and callers choose it.
        bucket: an existing bucket; the store never creates one.
        prefix: put before every key, e.g. ``chorus/artifacts/`` (a trailing ``/`` is added).
    """

    name = "s3"

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def write(self, key: str, data: bytes, media_type: str) -> None:
        with _errors():
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=media_type
            )

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes | None:
        if end is not None and end <= start:
            # An empty range has no HTTP form; still answer None for an absent blob.
            with _errors():
                try:
                    self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                except ClientError as error:
                    if _code(error) in _MISSING:
                        return None
                    raise
            return b""
        ranged = start > 0 or end is not None
        byte_range = f"bytes={start}-{'' if end is None else end - 1}"
        with _errors():
            try:
                if ranged:
                    reply = self.client.get_object(
                        Bucket=self.bucket, Key=self._key(key), Range=byte_range
                    )
                else:
                    reply = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
                return reply["Body"].read()
            except ClientError as error:
                if _code(error) in _MISSING:
                    return None
                if _code(error) == "InvalidRange":  # start at or past the end: Python's b""
                    return b""
                raise

    def remove(self, key: str) -> None:
        with _errors():
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, folder: str | None = None) -> list[str]:
        under = self.prefix + (f"{folder}/" if folder is not None else "")
        found: list[str] = []
        with _errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=under
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    if KEY_PATTERN.fullmatch(key):
                        found.append(key)
        return found

    def _key(self, key: str) -> str:
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not an artifact key: {key!r}")
        return self.prefix + key


def make_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    addressing_style: Literal["auto", "path", "virtual"],
    connect_timeout_seconds: float,
    read_timeout_seconds: float,
    max_attempts: int,
) -> S3Client:
    """An S3 client with bounded timeouts and retries (boto3's "standard" retry mode)."""
    config = Config(
        connect_timeout=connect_timeout_seconds,
        read_timeout=read_timeout_seconds,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": addressing_style},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn a failure of the object store into UNAVAILABLE (the caller may retry elsewhere),
    naming the error code only: botocore's messages can hold request details."""
    try:
        yield
    except ClientError as error:
        raise Unavailable(f"artifact store (s3): {_code(error) or 'error'}") from error
    except BotoCoreError as error:
        raise Unavailable(f"artifact store (s3): {type(error).__name__}") from error
