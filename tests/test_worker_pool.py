"""WorkerPool admission, in-process: refused at once when full, or (wait) admitted in turn."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.common.errors import ResourceExhausted
from services.common.workers import WorkerPool


async def _blocked(pool: WorkerPool) -> tuple[asyncio.Future, threading.Event]:
    """A pool's only place held by work that runs until the returned event is set."""
    release = threading.Event()
    holder = asyncio.ensure_future(pool.run(release.wait, 10))
    await asyncio.sleep(0.05)
    return holder, release


def test_full_pool_refuses_or_makes_the_caller_wait() -> None:
    async def scenario() -> None:
        pool = WorkerPool(max_workers=1, max_queue=0, name="test")
        holder, release = await _blocked(pool)
        with pytest.raises(ResourceExhausted):
            await pool.run(lambda: "refused")
        waiting = [asyncio.ensure_future(pool.run(lambda i=i: i, wait=True)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiting)
        with pytest.raises(ResourceExhausted):  # no overtaking the callers that wait
            await pool.run(lambda: "refused")
        release.set()
        assert [(await w).value for w in waiting] == [0, 1, 2]
        await holder
        assert (await pool.run(lambda: "free")).value == "free"  # every place came back
        pool.shutdown()

    asyncio.run(scenario())


def test_a_caller_that_leaves_while_waiting_gives_no_place_away() -> None:
    async def scenario() -> None:
        pool = WorkerPool(max_workers=1, max_queue=0, name="test")
        holder, release = await _blocked(pool)
        leaving = asyncio.ensure_future(pool.run(lambda: "never", wait=True))
        staying = asyncio.ensure_future(pool.run(lambda: "ran", wait=True))
        await asyncio.sleep(0.05)
        leaving.cancel()
        release.set()
        assert (await staying).value == "ran"
        await holder
        assert leaving.cancelled()
        assert (await pool.run(lambda: "free")).value == "free"
        pool.shutdown()

    asyncio.run(scenario())
