"""A small model manager: load at start (so health means ready), share, unload when idle.

Models are loaded on a thread so the event loop (and the health service) keep answering while
weights are read. Each model is ref-counted while in use; an idle reaper unloads models nobody
used for ``idle_unload_seconds`` and the next call loads them again.

Services load on their own worker threads (``load_executor``), the threads that later run the
model: PyTorch, CTranslate2 and llama.cpp run on OpenMP, which keeps one thread team per calling
thread, and a team left behind by a loader thread made libgomp throttle its spin-wait (more
OpenMP threads than cores), slowing the tiny diffusion model's steps by about a quarter.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from chorus.v1 import common_pb2

from services.common import metrics
from services.common.errors import NotFound

__all__ = ["ModelManager", "list_models"]

log = logging.getLogger(__name__)

M = TypeVar("M")


@dataclass
class _Slot(Generic[M]):
    loader: Callable[[], M]
    model: M | None = None
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelManager(Generic[M]):
    """Holds the models a service may use, keyed by the id callers put in requests."""

    def __init__(
        self,
        loaders: dict[str, Callable[[], M]],
        default: str,
        idle_unload_seconds: float = 0.0,
        load_executor: Executor | None = None,
    ) -> None:
        """``load_executor``: where loaders run (the service's worker threads); None: asyncio's
        default executor."""
        if default not in loaders:
            raise ValueError(f"default model {default!r} is not among {sorted(loaders)}")
        self._slots = {model_id: _Slot(loader) for model_id, loader in loaders.items()}
        self.default = default
        self._idle = idle_unload_seconds
        self._reaper: asyncio.Task[None] | None = None
        self._load_executor = load_executor

    @property
    def ids(self) -> list[str]:
        return list(self._slots)

    def is_loaded(self, model_id: str) -> bool:
        return self._slots[model_id].model is not None

    def peek(self, model_id: str) -> M | None:
        """The model if it is loaded, without loading it or counting as a use."""
        return self._slots[model_id].model

    def resolve(self, model_id: str, field_name: str = "model") -> str:
        """Map a request's model field to a known id (empty means the default)."""
        model_id = model_id or self.default
        if model_id not in self._slots:
            raise NotFound(
                f"unknown {field_name} {model_id!r}; available: {', '.join(self._slots)}",
                field=field_name,
            )
        return model_id

    async def load(self, model_id: str) -> M:
        slot = self._slots[model_id]
        async with slot.lock:
            if slot.model is None:
                started = time.perf_counter()
                log.info("loading model %s", model_id)
                loop, ctx = asyncio.get_running_loop(), contextvars.copy_context()
                slot.model = await loop.run_in_executor(self._load_executor, ctx.run, slot.loader)
                elapsed = time.perf_counter() - started
                metrics.MODEL_LOAD_SECONDS.labels(model_id).set(elapsed)
                metrics.MODEL_LOADED.labels(model_id).set(1)
                log.info("model %s loaded in %.2f s", model_id, elapsed)
            slot.last_used = time.monotonic()
            return slot.model

    @contextlib.asynccontextmanager
    async def use(self, model_id: str) -> AsyncIterator[M]:
        """Borrow a loaded model (loading it if needed); it will not be unloaded meanwhile."""
        slot = self._slots[model_id]
        slot.users += 1
        try:
            yield await self.load(model_id)
        finally:
            slot.users -= 1
            slot.last_used = time.monotonic()

    def start_reaper(self) -> None:
        if self._idle > 0 and self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self._idle / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for model_id, slot in self._slots.items():
                if (
                    slot.model is not None
                    and slot.users == 0
                    and now - slot.last_used >= self._idle
                ):
                    async with slot.lock:
                        if slot.users == 0 and slot.model is not None:
                            slot.model = None
                            gc.collect()
                            metrics.MODEL_LOADED.labels(model_id).set(0)
                            log.info("model %s unloaded after %.0f s idle", model_id, self._idle)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None


def list_models(
    models: ModelManager[Any],
    backend: str,
    descriptions: dict[str, str] | None = None,
    placeholders: Collection[str] = (),
) -> common_pb2.ListModelsResponse:
    """The ``ListModels`` answer for a service whose models are all run by one backend;
    ``placeholders``: the ids of stand-in models (``ModelInfo.placeholder``)."""
    descriptions = descriptions or {}
    return common_pb2.ListModelsResponse(
        models=[
            common_pb2.ModelInfo(
                id=model_id,
                backend=backend,
                loaded=models.is_loaded(model_id),
                is_default=model_id == models.default,
                description=descriptions.get(model_id, ""),
                placeholder=model_id in placeholders,
            )
            for model_id in models.ids
        ]
    )
