"""The service catalog agrees with what it describes: the protos, the settings classes, the
modules it runs; and it stays importable where only the standard library is (the Envoy image)."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from devtools.launcher import start_order
from services.catalog import BY_NAME, DEPENDED_ON, MODEL_KINDS, SERVICES, Service

ROOT = Path(__file__).resolve().parent.parent


def settings_class(service: Service) -> type:
    module, _, cls = service.settings.partition(":")
    return getattr(importlib.import_module(module), cls)


def test_catalog_imports_with_the_standard_library_alone() -> None:
    # -I -S: no site-packages and no PYTHONPATH, as in an image without Chorus's dependencies.
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import services.catalog"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_names_ports_and_prefixes_are_unique() -> None:
    for attribute in ("name", "port", "env_prefix", "module"):
        values = [getattr(s, attribute) for s in SERVICES]
        assert len(set(values)) == len(values), attribute
    metrics = [s.metrics_port for s in SERVICES if s.metrics_port is not None]
    assert len(set(metrics)) == len(metrics)
    assert not set(metrics) & {s.port for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_service_is_well_formed(service: Service) -> None:
    assert importlib.util.find_spec(f"{service.module}.__main__"), f"python -m {service.module}"
    assert service.env_prefix.startswith("CHORUS_") and service.env_prefix.endswith("_")
    if service.protocol == "http":
        assert service.ready_path.startswith("/") and not service.grpc_service
    else:
        assert service.grpc_service and not service.ready_path
    for dependency in service.dependencies:
        assert dependency.service in BY_NAME and dependency.service != service.name
        assert BY_NAME[dependency.service].protocol == "grpc"
    assert bool(service.envoy_setting) == bool(service.dependencies)


@pytest.mark.parametrize(
    "service", [s for s in SERVICES if s.protocol == "grpc"], ids=lambda s: s.name
)
def test_grpc_contract_matches_the_protos(service: Service) -> None:
    importlib.import_module("chorus.v1")
    for module in ("stt", "tts", "llm", "image", "orchestrator"):
        importlib.import_module(f"chorus.v1.{module}_pb2")
    descriptor = descriptor_pool.Default().FindServiceByName(service.grpc_service)
    streaming = {m.name for m in descriptor.methods if m.client_streaming or m.server_streaming}
    if service.stream_all:
        assert streaming, f"{service.name}: stream_all but nothing streams"
    else:
        assert set(service.streaming_methods) == streaming, service.name


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_settings_defaults_come_from_the_catalog(service: Service) -> None:
    fields = settings_class(service).model_fields
    config = settings_class(service).model_config
    assert config["env_prefix"] == service.env_prefix
    assert fields["port"].default == service.port
    for dependency in service.dependencies:
        assert dependency.setting in fields, f"{service.name} has no {dependency.setting}"
        assert fields[dependency.setting].default == BY_NAME[dependency.service].loopback
    if service.envoy_setting:
        assert fields[service.envoy_setting].default is None


def test_derived_lists() -> None:
    assert MODEL_KINDS == ("stt", "tts", "llm", "image")
    assert set(DEPENDED_ON) == {*MODEL_KINDS, "orchestrator"}
    assert start_order(BY_NAME) == [list(MODEL_KINDS), ["orchestrator"], ["gateway"]]
    assert start_order(["gateway", "stt"]) == [["stt"], ["gateway"]]
