"""The artifact store on S3: the shared contract against a real S3-compatible server (moto's,
in its own process on loopback, spoken to over HTTP by boto3), and what only S3 does: ranged
reads with the Range header, settings from the environment, an unreachable endpoint."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import free_port
from services.common.artifacts import ArtifactSettings, ArtifactStore, BlobArtifactStore, open_store
from services.common.artifacts.s3 import S3Blobs, make_client
from services.common.errors import Unavailable
from tests.support.artifact_contract import AUDIO, ArtifactStoreContract, FakeClock, MakeStore, meta

BUCKET = "chorus-artifacts-test"
REGION = "us-east-1"
# Test credentials: moto accepts any; the tests check that they never reach a log.
ACCESS_KEY = "AKIACHORUSTEST000001"
SECRET_KEY = "chorus-test-secret-5d0c2a7e91f3"


@pytest.fixture(scope="module")
def aws_environment() -> Iterator[None]:
    """boto3's credential chain sees only the test keys: no profile, no metadata service."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory, aws_environment: None) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 in a subprocess, with the bucket made through boto3;
    stopped by its pid at the end."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto exited with {process.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto did not start in 60 s: {log_path.read_text()}")
                time.sleep(0.1)
        client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client(endpoint: str, max_attempts: int = 2, timeout: float = 10.0) -> Any:
    return make_client(
        endpoint_url=endpoint,
        region=REGION,
        addressing_style="path",
        connect_timeout_seconds=timeout,
        read_timeout_seconds=timeout,
        max_attempts=max_attempts,
    )


@pytest.fixture
def prefix() -> str:
    """Each test its own prefix in the one bucket, so lists and sweeps see only its objects."""
    return f"test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def make_store(s3_endpoint: str, prefix: str) -> MakeStore:
    s3 = client(s3_endpoint)

    def make(clock: FakeClock | None = None, max_artifact_bytes: int = 1 << 20) -> ArtifactStore:
        blobs = S3Blobs(s3, BUCKET, prefix)
        return BlobArtifactStore(blobs, max_artifact_bytes, clock or FakeClock())

    return make


class TestS3Store(ArtifactStoreContract):
    """The whole contract on S3."""


def test_ranged_reads_send_a_range_header(make_store: MakeStore) -> None:
    store = make_store()
    assert isinstance(store, BlobArtifactStore) and isinstance(store.blobs, S3Blobs)
    sent: list[str | None] = []

    def record(request: Any, **_: Any) -> None:
        sent.append(request.headers.get("Range"))

    made = store.put(AUDIO, meta())
    store.blobs.client.meta.events.register("before-send.s3.GetObject", record)
    assert store.get(made.id, "tenant-a", 100, 200) == AUDIO[100:200]
    assert store.get(made.id, "tenant-a", 1000) == AUDIO[1000:]
    assert store.get(made.id, "tenant-a") == AUDIO
    assert [r.decode() if isinstance(r, bytes) else r for r in sent] == [
        "bytes=100-199",
        "bytes=1000-",
        None,
    ]


def test_objects_are_under_the_prefix_with_their_media_type(
    make_store: MakeStore, s3_endpoint: str, prefix: str
) -> None:
    made = make_store().put(AUDIO, meta("../evil", media_type="audio/ogg"))
    s3 = client(s3_endpoint)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])
    assert [k.rsplit("/", 1)[1] for k in keys] == [made.id, made.id + ".json"]
    assert all(k.startswith(prefix) and "evil" not in k for k in keys)
    head = s3.head_object(Bucket=BUCKET, Key=keys[0])
    assert head["ContentType"] == "audio/ogg" and head["ContentLength"] == len(AUDIO)


def test_open_store_from_the_environment(
    s3_endpoint: str, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in {
        "BACKEND": "s3",
        "S3__BUCKET": BUCKET,
        "S3__ENDPOINT_URL": s3_endpoint,
        "S3__REGION": REGION,
        "S3__PREFIX": prefix,
        "S3__ADDRESSING_STYLE": "path",
        "MAX_ARTIFACT_BYTES": "4096",
    }.items():
        monkeypatch.setenv(f"CHORUS_ARTIFACTS_{name}", value)
    with caplog.at_level(logging.DEBUG, logger="services.common.artifacts"):
        store = open_store(ArtifactSettings())
        made = store.put(AUDIO, meta())
        assert store.get(made.id, "tenant-a", 0, 4) == AUDIO[:4]
    assert (store.backend, store.max_artifact_bytes) == ("s3", 4096)
    assert BUCKET in caplog.text
    assert SECRET_KEY not in caplog.text and ACCESS_KEY not in caplog.text


def test_an_unreachable_store_is_unavailable(aws_environment: None, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    store = BlobArtifactStore(S3Blobs(client(closed, 1, 2.0), BUCKET, "x/"), 1024)
    with pytest.raises(Unavailable) as failed:
        store.put(b"data", meta())
    assert SECRET_KEY not in failed.value.message
    with pytest.raises(Unavailable):
        store.list("tenant-a")


def test_a_missing_bucket_is_unavailable(s3_endpoint: str) -> None:
    store = BlobArtifactStore(S3Blobs(client(s3_endpoint), "no-such-bucket", ""), 1024)
    with pytest.raises(Unavailable) as failed:
        store.put(b"data", meta())
    assert "NoSuchBucket" in failed.value.message
