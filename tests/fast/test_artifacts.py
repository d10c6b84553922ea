"""The artifact store on its default backend, a local folder (the shared contract), and what
only the folder does: its layout, atomic writes, and the settings that open it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.artifacts import (
    ArtifactSettings,
    ArtifactStore,
    BlobArtifactStore,
    LocalBlobs,
    open_store,
    plan_sweep,
)
from services.common.artifacts.model import Artifact
from services.common.errors import NotFound
from tests.support.artifact_contract import (
    AUDIO,
    MALFORMED_IDS,
    START,
    ArtifactStoreContract,
    FakeClock,
    MakeStore,
    meta,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def make_store(root: Path) -> MakeStore:
    def make(clock: FakeClock | None = None, max_artifact_bytes: int = 1 << 20) -> ArtifactStore:
        return BlobArtifactStore(LocalBlobs(root), max_artifact_bytes, clock or FakeClock())

    return make


class TestLocalStore(ArtifactStoreContract):
    """The whole contract on a folder."""


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_layout_is_tenant_hash_then_id(make_store: MakeStore, root: Path) -> None:
    made = make_store().put(AUDIO, meta("../evil/tenant"))
    [data, record] = files(root)
    assert record == data + ".json"
    folder, name = data.split("/")
    assert name == made.id and len(folder) == 32 and "evil" not in data
    assert (root / data).read_bytes() == AUDIO


def test_nothing_outside_the_folder_is_reached(make_store: MakeStore, tmp_path: Path) -> None:
    """A secret beside the store, named by every malformed id: never read, never removed."""
    secret = tmp_path / "secret"
    secret.write_text("keep")
    store = make_store()
    made = store.put(AUDIO, meta())
    for bad in [*MALFORMED_IDS, "../../secret", f"../{made.id}", "../secret"]:
        for call in (store.get, store.stat, store.delete):
            with pytest.raises(NotFound):
                call(bad, "tenant-a")
    assert secret.read_text() == "keep"


def test_a_failed_write_leaves_nothing_visible(
    make_store: MakeStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is the commit: a write that fails before it leaves no artifact, no partial
    file and no temporary file behind."""
    store = make_store()

    def crash(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.put(AUDIO, meta())
    monkeypatch.undo()
    assert store.list("tenant-a") == []
    assert files(root) == []


def test_bytes_without_a_record_are_not_listed_and_a_put_repairs_them(
    make_store: MakeStore, root: Path
) -> None:
    """A crash between the two writes leaves bytes without a record: invisible to list and
    stat, and the next put of the same bytes completes the artifact."""
    store = make_store()
    made = store.put(AUDIO, meta())
    (root / files(root)[1]).unlink()  # the record
    assert store.list("tenant-a") == []
    with pytest.raises(NotFound):
        store.stat(made.id, "tenant-a")
    assert store.put(AUDIO, meta()).id == made.id
    assert store.stat(made.id, "tenant-a").size == len(AUDIO)


def test_a_record_without_bytes_is_rewritten_by_the_next_put(
    make_store: MakeStore, root: Path
) -> None:
    store = make_store()
    made = store.put(AUDIO, meta())
    (root / files(root)[0]).unlink()  # the bytes
    store.put(AUDIO, meta())
    assert store.get(made.id, "tenant-a") == AUDIO


def test_temporary_and_foreign_files_are_ignored(make_store: MakeStore, root: Path) -> None:
    store = make_store()
    made = store.put(AUDIO, meta())
    folder = root / files(root)[0].split("/")[0]
    (folder / ".tmp-abc").write_bytes(b"half")
    (folder / "notes.txt").write_text("x")
    (root / "README").write_text("x")
    (folder / ("f" * 64 + ".json")).write_text("{not json")
    assert store.list("tenant-a") == [made]
    assert store.scan() == [made]


def test_a_record_copied_to_another_tenant_is_not_theirs(make_store: MakeStore, root: Path) -> None:
    """Defence in depth: the record must name the tenant whose folder holds it."""
    store = make_store()
    made = store.put(AUDIO, meta("tenant-a"))
    other = store.put(b"other", meta("tenant-b"))
    source = next(root.rglob(made.id)).parent
    target = next(p for p in root.iterdir() if p != source)
    for name in (made.id, made.id + ".json"):
        (target / name).write_bytes((source / name).read_bytes())
    with pytest.raises(NotFound):
        store.stat(made.id, "tenant-b")
    assert store.list("tenant-b") == [other]


def test_the_policy_is_a_pure_function() -> None:
    def artifact(i: int, created: float, size: int = 10) -> Artifact:
        return Artifact(id=f"{i:064x}", size=size, created=created, backend="x", meta=meta())

    items = [artifact(3, START + 3), artifact(1, START + 1), artifact(2, START + 2)]
    plan = plan_sweep(items, now=START + 10, max_age_seconds=8.5, max_total_bytes=10, referenced=[])
    assert [a.id[-1] for a in plan] == ["1", "2"]  # expired, then the oldest over budget


# -- settings --------------------------------------------------------------------------------


def test_default_settings_open_a_local_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = ArtifactSettings()
    assert settings.backend == "local"
    assert settings.folder == tmp_path / ".cache" / "chorus" / "artifacts"
    assert settings.max_artifact_bytes == 64 * 1024 * 1024
    store = open_store(settings)
    assert store.backend == "local"
    made = store.put(AUDIO, meta())
    assert (settings.folder / files(settings.folder)[0]).read_bytes() == AUDIO
    assert store.get(made.id, "tenant-a") == AUDIO


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHORUS_ARTIFACTS_FOLDER", str(tmp_path / "a"))
    monkeypatch.setenv("CHORUS_ARTIFACTS_MAX_ARTIFACT_BYTES", "1024")
    monkeypatch.setenv("CHORUS_ARTIFACTS_MAX_AGE_SECONDS", "60")
    monkeypatch.setenv("CHORUS_ARTIFACTS_MAX_TOTAL_BYTES", "4096")
    monkeypatch.setenv("CHORUS_ARTIFACTS_S3__PREFIX", "p/")
    settings = ArtifactSettings()
    assert (settings.folder, settings.max_artifact_bytes) == (tmp_path / "a", 1024)
    assert (settings.max_age_seconds, settings.max_total_bytes) == (60, 4096)
    assert settings.s3.prefix == "p/"
    assert open_store(settings).max_artifact_bytes == 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKEND", "ftp"),
        ("BACKEND", "s3"),  # without a bucket
        ("MAX_ARTIFACT_BYTES", "0"),
        ("MAX_ARTIFACT_BYTES", str(2 * 1024**3)),
        ("MAX_AGE_SECONDS", "0"),
        ("MAX_TOTAL_BYTES", "-1"),
        ("S3__MAX_ATTEMPTS", "0"),
        ("S3__READ_TIMEOUT_SECONDS", "0"),
        ("S3__ADDRESSING_STYLE", "sideways"),
    ],
)
def test_settings_are_bounded(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"CHORUS_ARTIFACTS_{name}", value)
    with pytest.raises(ValidationError):
        ArtifactSettings()
