"""Server bootstrap shared by every service: one factory, one ``serve`` entrypoint.

``ChorusServer`` binds first and reports NOT_SERVING through the official health service while
the model loads, SERVING once it is ready, and NOT_SERVING again while draining on SIGTERM, so
Kubernetes probes, Envoy health checks and ``make run`` all read the same truth.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.interceptor import ServiceInterceptor
from services.common.logs import configure_logging
from services.common.metrics import serve_metrics
from services.common.models import ModelManager
from services.common.settings import ModelServiceSettings, ServerSettings
from services.common.tracing import configure_tracing, shutdown_tracing
from services.common.workers import WorkerPool

__all__ = ["ChorusServer", "ServiceDefinition", "model_server", "models_and_workers", "serve"]

M = TypeVar("M")

log = logging.getLogger(__name__)


class _Health(Protocol):
    """What the server uses of grpc_health's asyncio ``HealthServicer`` (``health.aio``, which
    grpc_health's stubs leave out: they describe only the synchronous servicer)."""

    async def set(self, service: str, status: int) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


@dataclass(frozen=True)
class ServiceDefinition:
    """A gRPC service to host: its full name (for health and reflection) and how to add it."""

    name: str
    register: Callable[[grpc.aio.Server], None]


class ChorusServer:
    """A grpc.aio server with health, reflection, metrics, limits and graceful shutdown."""

    def __init__(
        self,
        settings: ServerSettings,
        services: Sequence[ServiceDefinition],
        warm_up: Callable[[], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        drain: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``drain``: run as a drain starts, once health says NOT_SERVING, to end the calls
        that would never end on their own (the orchestrator's live sessions)."""
        self.settings = settings
        self._services = list(services)
        self._warm_up = warm_up
        self._close = close
        self._drain = drain
        self.health: _Health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.port = 0
        self._server = grpc.aio.server(
            interceptors=[ServiceInterceptor()],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )

    async def _set_status(self, status: int) -> None:
        await self.health.set("", status)
        for service in self._services:
            await self.health.set(service.name, status)

    async def start(self) -> int:
        """Bind and start answering (NOT_SERVING until ``warm_up`` is done); returns the port."""
        for service in self._services:
            service.register(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        await self._set_status(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.reflection:
            names = [s.name for s in self._services]
            names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
            reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], self._server)
        address = f"{self.settings.host}:{self.settings.port}"
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind {address}")
        await self._server.start()
        if self.settings.metrics_port is not None:
            serve_metrics(self.settings.host, self.settings.metrics_port)
        return self.port

    async def warm_up(self) -> None:
        """Load what must be loaded, then report SERVING."""
        if self._warm_up is not None:
            await self._warm_up()
        await self._set_status(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING at once, refuse new calls, let in-flight calls finish."""
        await self.health.enter_graceful_shutdown()
        if self._drain is not None:
            await self._drain()
        await self._server.stop(self.settings.grace_seconds if grace is None else grace)
        if self._close is not None:
            await self._close()

    async def wait(self) -> None:
        await self._server.wait_for_termination()


def models_and_workers(
    settings: ModelServiceSettings,
    loaders: dict[str, Callable[[], M]],
    default: str,
    name: str,
) -> tuple[ModelManager[M], WorkerPool]:
    """A model service's worker pool and model manager, wired so that models load on the
    worker threads that will run them (one OpenMP thread team per process; see models.py)."""
    workers = WorkerPool(settings.max_workers, settings.max_queue, name=name)
    models = ModelManager(
        loaders,
        default=default,
        idle_unload_seconds=settings.idle_unload_seconds,
        load_executor=workers.executor,
    )
    return models, workers


def model_server(
    settings: ModelServiceSettings,
    service: ServiceDefinition,
    models: ModelManager[Any],
    pools: Sequence[WorkerPool],
) -> ChorusServer:
    """A ChorusServer for a model service: the default model is loaded before health says
    SERVING (unless ``preload`` is off), idle models are unloaded, and shutdown stops both."""

    async def warm_up() -> None:
        if settings.preload:
            await models.load(models.default)
        models.start_reaper()

    async def close() -> None:
        await models.close()
        for pool in pools:
            pool.shutdown()

    return ChorusServer(settings, [service], warm_up=warm_up, close=close)


def serve(name: str, settings: ServerSettings, build: Callable[[], ChorusServer]) -> None:
    """Entrypoint of a service process: log, start, warm up, run until SIGTERM/SIGINT, drain."""
    configure_logging(settings.log_level, settings.log_json, service=name)
    configure_tracing(name, settings.otlp_endpoint, settings.trace_file)

    async def main() -> None:
        server = build()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        port = await server.start()
        log.info("%s listening on %s:%d (loading)", name, settings.host, port)
        warm = asyncio.create_task(server.warm_up())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({warm, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not warm.done():
            warm.cancel()
        elif warm.exception() is None:
            log.info("%s SERVING on %s:%d", name, settings.host, port)
            await stopper
        elif not isinstance(settings, ModelServiceSettings) or settings.exit_on_load_failure:
            warm.result()
        else:
            log.error(
                "%s cannot serve: its model did not load; health stays NOT_SERVING until it is "
                "stopped",
                name,
                exc_info=warm.exception(),
            )
            await stopper
        log.info("%s draining (grace %.0f s)", name, settings.grace_seconds)
        await server.stop()
        shutdown_tracing()
        log.info("%s stopped", name)

    asyncio.run(main())
