"""The artifact store's retention, applied by the orchestrator: one background task per replica.

Every ``CHORUS_ORCH_ARTIFACT_SWEEP_SECONDS`` the sweeper reads which artifacts conversation items
reference and applies the store's policy (``services.common.artifacts.retention``): expired
artifacts go, referenced or not; over the total budget the oldest unreferenced ones go too.

Several replicas may sweep the same store, each on its own schedule: the policy is idempotent
(a pass computes what to remove from what it lists, and an artifact already removed by another
replica is neither removed nor counted twice), so no lock or leader is needed. The first pass
comes at a random point of the first interval, which spreads replicas started together and lets
a replica that restarts more often than the interval still sweep now and then.

When to open the stores: an orchestrator that never stores anything must touch no database and
make no folder. So a pass runs only where there is something to sweep: with the local backend,
when its folder exists (some turn, on this replica or one sharing the volume, stored an
artifact); with S3, always (an operator who names a bucket means to store). A pass then opens
both stores through ``Stores`` (the same objects the turns use). If the conversation store
cannot be read, the pass is skipped: sweeping without the references could remove an artifact a
conversation still shows.

A known gap of the policy, not of the sweeper: a turn's media are put while it runs and
referenced only when its items are appended at its end, so while the store is over its total
budget an in-flight turn's newest media count as unreferenced (they are also the youngest, so
they are the last to go).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.artifacts import ArtifactSettings, ArtifactStore
from services.common.conversations import ConversationRepository
from services.orchestrator.storage import Stores

__all__ = ["ArtifactSweeper", "SweepResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """What one pass did."""

    removed: int
    """Artifacts removed."""
    referenced: int
    """Artifact ids the conversation items reference (kept unless expired)."""
    seconds: float


class ArtifactSweeper:
    """Applies the retention policy every ``interval_seconds`` (0: never) in a background task.

    Args:
        stores: the process's stores (opened on the first pass that has something to sweep).
        settings: the artifact store's settings: its limits and where it keeps its files.
        interval_seconds: time between passes; 0 disables the task (``run_once`` still works).
        clock: Unix time, the ``now`` of the policy; tests inject theirs.
        first_delay: seconds before the first pass; None: random within the first interval.
    """

    def __init__(
        self,
        stores: Stores,
        settings: ArtifactSettings,
        interval_seconds: float,
        clock: Callable[[], float] = time.time,
        first_delay: float | None = None,
    ) -> None:
        self._stores = stores
        self._settings = settings
        self._interval = interval_seconds
        self._clock = clock
        self._first_delay = (
            random.uniform(0, interval_seconds) if first_delay is None else first_delay
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        """Passes ended (skipped and failed ones too)."""

    def start(self) -> None:
        """Start the background task (on the running loop); nothing when disabled or started."""
        if self._interval > 0 and self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run_forever(), name="artifact-sweeper")

    async def close(self, timeout: float = 10.0) -> None:
        """Stop: no new pass starts; one under way may finish (up to ``timeout``), so its
        deletes are not cut off by the stores closing under it. Call before ``Stores.close``."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            log.warning("artifact sweep still running after %.0f s; abandoned", timeout)

    async def run_once(self) -> SweepResult | None:
        """One pass now; None when skipped or failed. Never raises (but cancellation): a
        failure is logged and the next pass tries again."""
        try:
            if not await asyncio.to_thread(self._has_artifacts):
                log.debug("artifact sweep skipped: nothing stored yet")
                return None
            store = await self._stores.artifacts()
            repository = await self._stores.conversations()
            result = await asyncio.to_thread(self._sweep, store, repository)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("artifact sweep failed; the next pass tries again", exc_info=True)
            return None
        finally:
            self.passes += 1
        log.info(
            "artifact sweep removed %d artifacts (%d referenced) in %.2f s",
            result.removed,
            result.referenced,
            result.seconds,
        )
        return result

    async def _run_forever(self) -> None:
        delay = self._first_delay
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            await self.run_once()
            delay = self._interval

    def _has_artifacts(self) -> bool:
        if self._settings.backend == "local":
            return self._settings.folder.expanduser().is_dir()
        return True

    def _sweep(self, store: ArtifactStore, repository: ConversationRepository) -> SweepResult:
        """Blocking: the references, then the policy over everything the store lists."""
        started = time.perf_counter()
        referenced = repository.referenced_artifacts()
        removed = store.sweep(
            now=self._clock(),
            max_age_seconds=self._settings.max_age_seconds,
            max_total_bytes=self._settings.max_total_bytes,
            referenced=referenced,
        )
        return SweepResult(len(removed), len(referenced), time.perf_counter() - started)
