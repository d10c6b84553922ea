"""Settings validation, as an operator meets it: environment variables, bounds, nested backend
sections, secrets. (Which backends exist, and their sections' defaults, are tests/test_registry.py;
a turn's limits shared with the gateway, tests/test_limits.py.)"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from gateway.settings import GatewaySettings
from services.catalog import SERVICES, Service
from services.common.registry import Backend, Factory, Registry, UnknownBackendError
from services.common.settings import ModelServiceSettings


def settings_class(service: Service) -> type[BaseSettings]:
    module, _, name = service.settings.partition(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module), name)
    return cls


def numeric_fields(
    model: type[BaseModel], prefix: str = ""
) -> Iterator[tuple[str, FieldInfo, type]]:
    """(dotted name, field, int or float) of every number setting, nested sections included."""
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from numeric_fields(kind, f"{prefix}{name}.")
            continue
        for number in (int, float):
            if kind in (number, number | None):
                yield prefix + name, info, number


def lower_bound(info: FieldInfo) -> tuple[float, bool] | None:
    """(bound, inclusive) of a field's ``ge``/``gt``, or None."""
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            return float(item.ge), True
        if isinstance(item, annotated_types.Gt):
            return float(item.gt), False
    return None


def variable(service: Service, dotted: str) -> str:
    """``openai_api.timeout_seconds`` -> ``CHORUS_STT_OPENAI_API__TIMEOUT_SECONDS``."""
    return service.env_prefix + "__".join(dotted.upper().split("."))


NUMBERS = [
    pytest.param(service, dotted, info, number, id=f"{service.name}.{dotted}")
    for service in SERVICES
    for dotted, info, number in numeric_fields(settings_class(service))
]


@pytest.mark.parametrize(("service", "dotted", "info", "number"), NUMBERS)
def test_every_number_setting_has_a_lower_bound_read_from_its_variable(
    service: Service, dotted: str, info: FieldInfo, number: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A negative count, size or duration is refused at start, naming the setting, whichever
    way it is reached (``CHORUS_<SERVICE>_<FIELD>``, ``..._<BACKEND>__<FIELD>``)."""
    bound = lower_bound(info)
    assert bound is not None, f"{service.name}.{dotted} has no lower bound (ge= or gt=)"
    value, inclusive = bound
    below = value - 1 if inclusive else value
    monkeypatch.setenv(variable(service, dotted), str(number(below)))
    with pytest.raises(ValidationError) as refused:
        settings_class(service)()
    assert [e["loc"] for e in refused.value.errors()] == [tuple(dotted.split("."))]


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (GatewaySettings, "port", 65536),
        (GatewaySettings, "max_attempts", 6),  # gRPC's retry policy allows at most 5
        (GatewaySettings, "max_upload_bytes", 2 * 1024**3),
        (GatewaySettings, "threads", 1025),
        (ModelServiceSettings, "max_workers", 65),
        (ModelServiceSettings, "max_queue", 10_001),
    ],
)
def test_upper_bounds(cls: type[BaseSettings], field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        cls(**{field: value})


def test_a_number_that_is_not_one_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHORUS_GATEWAY_CALL_TIMEOUT", "soon")
    with pytest.raises(ValidationError, match="call_timeout"):
        GatewaySettings()


def test_nested_backend_settings_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.stt.settings import SttSettings
    from services.tts.settings import TtsSettings

    monkeypatch.setenv("CHORUS_TTS_OPENAI_API__VOICES", '["alloy", "nova"]')
    monkeypatch.setenv("CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT", "wav")
    monkeypatch.setenv("CHORUS_STT_OPENAI_API__BASE_URL", "http://127.0.0.1:9/v1")
    tts = TtsSettings(backend="openai-api")
    assert (tts.openai_api.voices, tts.openai_api.response_format) == (["alloy", "nova"], "wav")
    assert SttSettings().openai_api.base_url == "http://127.0.0.1:9/v1"
    # A section's own choices are validated like any other setting.
    monkeypatch.setenv("CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT", "ogg")
    with pytest.raises(ValidationError, match="response_format"):
        TtsSettings()
    # A section's fields are only reachable through the section: a flat name is not read.
    monkeypatch.delenv("CHORUS_TTS_OPENAI_API__RESPONSE_FORMAT")
    monkeypatch.setenv("CHORUS_TTS_RESPONSE_FORMAT", "ogg")
    assert TtsSettings().openai_api.response_format == "pcm"


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.stt.settings import SttSettings

    monkeypatch.setenv("CHORUS_GATEWAY_API_KEY", "sk-gateway-secret-1")
    monkeypatch.setenv("CHORUS_STT_OPENAI_API__KEY", "sk-stt-secret-2")
    shown = [repr(GatewaySettings()), str(GatewaySettings()), repr(SttSettings())]
    shown.append(SttSettings().model_dump_json())
    assert not [s for s in shown if "sk-gateway-secret-1" in s or "sk-stt-secret-2" in s]
    assert GatewaySettings().api_key == SecretStr("sk-gateway-secret-1")


# --- the generic registry (each kind's registry: tests/test_registry.py) ---------------------


class _Knobs(BaseModel):
    level: int = 1


def _load(settings: Any, section: Any, model: str) -> tuple[Any, Any, str]:
    return settings, section, model


REGISTRY: Registry[Factory[Any]] = Registry(
    "demo",
    [
        Backend("plain", Factory(_load)),
        Backend("with-knobs", Factory(_load, describe=lambda s, o, m: f"{m} at {o.level}"), _Knobs),
    ],
)


class _Base(BaseSettings):
    pass


def test_settings_base_checks_the_default_and_adds_one_section_per_backend_with_knobs() -> None:
    with pytest.raises(UnknownBackendError, match="known: plain, with-knobs"):
        REGISTRY.settings_base(_Base, default="missing")
    cls = REGISTRY.settings_base(_Base, default="plain")
    assert set(cls.model_fields) == {"backend", "with_knobs"}
    assert cls().backend == "plain"
    with pytest.raises(ValidationError, match="known: plain, with-knobs"):
        cls(backend="nope")


def test_loader_and_describe_hand_the_backend_its_own_section() -> None:
    cls = REGISTRY.settings_base(_Base, default="plain")
    plain = cls()
    assert REGISTRY.loader(plain, "m1")() == (plain, None, "m1")
    assert REGISTRY.describe(plain, "m1") == ""
    knobs = cls(backend="with-knobs", with_knobs={"level": 3})
    settings, section, model = REGISTRY.loader(knobs, "m2")()
    assert (settings, section.level, model) == (knobs, 3, "m2")
    assert REGISTRY.describe(knobs, "m2") == "m2 at 3"
