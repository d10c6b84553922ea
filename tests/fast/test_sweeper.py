"""The orchestrator's artifact sweeper over a real local store and an SQLite repository in a
temporary folder, with an injected clock: one pass at a time (``run_once``) for the policy, the
background loop for "a failed pass does not stop the next", and the rule that a replica which
never stored anything opens nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.common.artifacts import (
    ArtifactMeta,
    ArtifactSettings,
    ArtifactStore,
    BlobArtifactStore,
    LocalBlobs,
)
from services.common.conversations import (
    ConversationRepository,
    ConversationSettings,
    NewItem,
    open_repository,
)
from services.orchestrator.settings import OrchestratorSettings
from services.orchestrator.storage import Stores
from services.orchestrator.sweeper import ArtifactSweeper

TENANT = "tenant-a"
DAY = 24 * 3600.0
NOW = 1_000 * DAY
MAX_AGE = 7 * DAY


class Clock:
    """Unix time that moves only when a test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def artifact_settings(tmp_path: Path) -> ArtifactSettings:
    return ArtifactSettings(
        folder=tmp_path / "artifacts", max_age_seconds=MAX_AGE, max_total_bytes=1000
    )


@pytest.fixture
def repository(conversation_settings: ConversationSettings) -> Iterator[ConversationRepository]:
    """The same database as the sweeper's, opened by the test (as another replica would)."""
    with open_repository(conversation_settings) as repo:
        yield repo


def put(settings: ArtifactSettings, created: float, data: bytes) -> str:
    """An artifact put at ``created`` (a store on the same folder, with its own clock)."""
    store = BlobArtifactStore(LocalBlobs(settings.folder), 10**6, clock=lambda: created)
    return store.put(data, ArtifactMeta(tenant=TENANT, media_type="audio/wav")).id


def reference(repository: ConversationRepository, *artifact_ids: str) -> None:
    conversation = repository.create(TENANT)
    item = NewItem(role="assistant", text="hi", artifact_ids=artifact_ids)
    repository.append(TENANT, conversation.id, [item])


def remaining(settings: ArtifactSettings) -> set[str]:
    store = BlobArtifactStore(LocalBlobs(settings.folder), 10**6)
    return {a.id for a in store.scan()}


def sweeper(stores: Stores, settings: ArtifactSettings, **kwargs: Any) -> ArtifactSweeper:
    kwargs.setdefault("interval_seconds", 0)
    return ArtifactSweeper(stores, settings, clock=Clock(NOW), **kwargs)


async def test_a_pass_applies_the_policy_with_the_conversations_references(
    stores: Stores, artifact_settings: ArtifactSettings, repository: ConversationRepository
) -> None:
    old = NOW - MAX_AGE - 1
    old_unreferenced = put(artifact_settings, old, b"a" * 10)
    old_referenced = put(artifact_settings, old, b"b" * 10)
    young_referenced = put(artifact_settings, NOW - 60, b"c" * 2000)  # alone over the budget
    young_unreferenced = put(artifact_settings, NOW - 120, b"d" * 10)
    reference(repository, old_referenced, young_referenced)
    everything = {old_unreferenced, old_referenced, young_referenced, young_unreferenced}
    assert remaining(artifact_settings) == everything

    result = await sweeper(stores, artifact_settings).run_once()

    assert result is not None
    assert (result.removed, result.referenced) == (3, 2)
    # Age wins over a reference; over the budget only the unreferenced go, and a referenced
    # young artifact stays even though the total is still over.
    assert remaining(artifact_settings) == {young_referenced}


async def test_a_second_pass_and_another_replica_remove_nothing_twice(
    stores: Stores, artifact_settings: ArtifactSettings, conversation_settings: ConversationSettings
) -> None:
    put(artifact_settings, NOW - MAX_AGE - 1, b"old")
    first = await sweeper(stores, artifact_settings).run_once()
    other = Stores(artifact_settings, conversation_settings)
    try:
        again = await sweeper(other, artifact_settings).run_once()
    finally:
        await other.close()
    assert first is not None and first.removed == 1
    assert again is not None and again.removed == 0


async def test_a_replica_that_never_stored_anything_opens_nothing(
    tmp_path: Path, stores: Stores, artifact_settings: ArtifactSettings
) -> None:
    assert await sweeper(stores, artifact_settings).run_once() is None
    assert not artifact_settings.folder.exists()
    assert not (tmp_path / "conversations.sqlite3").exists()


class Failing:
    """The store, failing its next ``failures`` sweeps."""

    def __init__(self, store: ArtifactStore, failures: int) -> None:
        self.store = store
        self.failures = failures

    def sweep(self, **kwargs: Any) -> list[str]:
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        return self.store.sweep(**kwargs)


async def failing_store(stores: Stores, failures: int) -> None:
    store = await stores.artifacts()
    stores._artifacts = Failing(store, failures)  # type: ignore[assignment]


async def test_a_failed_pass_is_logged_and_the_next_one_runs(
    stores: Stores, artifact_settings: ArtifactSettings, caplog: pytest.LogCaptureFixture
) -> None:
    doomed = put(artifact_settings, NOW - MAX_AGE - 1, b"old")
    await failing_store(stores, failures=1)
    sweep = sweeper(stores, artifact_settings)
    with caplog.at_level(logging.WARNING, logger="services.orchestrator.sweeper"):
        assert await sweep.run_once() is None
    assert "artifact sweep failed" in caplog.text and "disk on fire" in caplog.text
    assert doomed in remaining(artifact_settings)
    result = await sweep.run_once()
    assert result is not None and result.removed == 1
    assert remaining(artifact_settings) == set()


async def test_an_unreadable_conversation_store_skips_the_pass(
    tmp_path: Path, artifact_settings: ArtifactSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the references a pass could remove what a conversation shows: it removes
    nothing."""
    young = put(artifact_settings, NOW - 60, b"x" * 5000)  # over the budget, unreferenced
    (tmp_path / "not-a-folder").write_text("")
    broken = ConversationSettings(
        url=SecretStr(f"sqlite:///{tmp_path / 'not-a-folder' / 'c.sqlite3'}")
    )
    stores = Stores(artifact_settings, broken)
    with caplog.at_level(logging.WARNING):
        assert await sweeper(stores, artifact_settings).run_once() is None
    assert "artifact sweep failed" in caplog.text
    assert remaining(artifact_settings) == {young}


async def wait_for_passes(sweep: ArtifactSweeper, count: int) -> None:
    async def reached() -> None:
        while sweep.passes < count:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), 60)  # a bound for a hung test, not a timing assertion


async def test_the_background_loop_survives_a_failed_pass_and_stops_on_close(
    stores: Stores, artifact_settings: ArtifactSettings, caplog: pytest.LogCaptureFixture
) -> None:
    put(artifact_settings, NOW - MAX_AGE - 1, b"old")
    await failing_store(stores, failures=1)
    sweep = sweeper(stores, artifact_settings, interval_seconds=0.01, first_delay=0)
    with caplog.at_level(logging.INFO, logger="services.orchestrator.sweeper"):
        sweep.start()
        await wait_for_passes(sweep, 2)
        await sweep.close()
    assert "artifact sweep failed" in caplog.text
    assert "artifact sweep removed 1 artifacts" in caplog.text
    assert remaining(artifact_settings) == set()
    passes = sweep.passes
    await asyncio.sleep(0.05)
    assert sweep.passes == passes  # closed: no pass after


async def test_a_disabled_sweeper_starts_nothing(
    stores: Stores, artifact_settings: ArtifactSettings
) -> None:
    sweep = sweeper(stores, artifact_settings, interval_seconds=0, first_delay=0)
    sweep.start()
    await asyncio.sleep(0)
    assert sweep.passes == 0
    await sweep.close()  # fine when never started


async def test_close_lets_a_pass_under_way_finish(
    stores: Stores, artifact_settings: ArtifactSettings
) -> None:
    put(artifact_settings, NOW - MAX_AGE - 1, b"old")
    store = await stores.artifacts()
    entered, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    class Slow:
        def sweep(self, **kwargs: Any) -> list[str]:
            loop.call_soon_threadsafe(entered.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(60)
            return store.sweep(**kwargs)

    stores._artifacts = Slow()  # type: ignore[assignment]
    sweep = sweeper(stores, artifact_settings, interval_seconds=3600, first_delay=0)
    sweep.start()
    await asyncio.wait_for(entered.wait(), 60)
    closing = asyncio.create_task(sweep.close())
    await asyncio.sleep(0)
    release.set()
    await closing
    assert remaining(artifact_settings) == set()
    assert sweep.passes == 1


def test_the_interval_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OrchestratorSettings().artifact_sweep_seconds == 3600
    monkeypatch.setenv("CHORUS_ORCH_ARTIFACT_SWEEP_SECONDS", "0")
    assert OrchestratorSettings().artifact_sweep_seconds == 0
    for bad in ("0.5", "-1", str(8 * DAY)):
        monkeypatch.setenv("CHORUS_ORCH_ARTIFACT_SWEEP_SECONDS", bad)
        with pytest.raises(ValidationError):
            OrchestratorSettings()
