"""Backend registries and the settings built from them (in-process, no model loaded).

One registry per model kind names its backends; the kind's settings read it (the ``backend``
field's allowed values, one nested section per backend) and so do the services (which backend
to build), and the contract tests run on the same list. Every remote backend reads its key by
one rule (``ApiSettings``).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from services.catalog import BY_NAME, MODEL_KINDS
from services.common.registry import Backend, Factory, Registry, UnknownBackendError
from services.common.settings import ApiSettings, ModelServiceSettings, ServerSettings
from services.orchestrator.settings import OrchestratorSettings
from tests.support.backends import CONTRACT_BACKENDS

ROOT = Path(__file__).resolve().parent.parent


def registry(kind: str) -> Registry[Any]:
    return importlib.import_module(f"services.{kind}.backends").BACKENDS


def settings_class(kind: str) -> type[ModelServiceSettings]:
    module, _, name = BY_NAME[kind].settings.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: none of the runner's CHORUS_* variables may leak in."""
    for name in list(os.environ):
        if name.startswith("CHORUS_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_contract_tests_cover_every_registered_backend(kind: str) -> None:
    assert CONTRACT_BACKENDS[kind] == registry(kind).names


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_unknown_backend_is_refused_with_the_known_ones(kind: str) -> None:
    with pytest.raises(ValidationError) as error:
        settings_class(kind)(backend="no-such-engine")
    message = str(error.value)
    assert "no-such-engine" in message
    for name in registry(kind).names:
        assert name in message
    with pytest.raises(UnknownBackendError, match="known: "):
        registry(kind).get("no-such-engine")


def test_unknown_backend_stops_the_service_at_start() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "gen"), str(ROOT)]),
        "CHORUS_TTS_BACKEND": "espeak",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.tts"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unknown tts backend 'espeak'; known: piper, coqui, openai-api" in result.stderr


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_backend_section_is_read_from_its_nested_variables(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = BY_NAME[kind].env_prefix
    for backend in registry(kind):
        settings = settings_class(kind)(backend=backend.name)
        options = registry(kind).options(settings)
        if backend.settings is None:
            assert options is None
            continue
        assert isinstance(options, backend.settings)
        # Its first plain field, changed through CHORUS_<KIND>_<BACKEND>__<FIELD>:
        field = next(f for f in backend.settings.model_fields if getattr(options, f) is not None)
        value, expected = _another_value(getattr(options, field))
        monkeypatch.setenv(f"{prefix}{backend.section.upper()}__{field.upper()}", value)
        changed = registry(kind).options(settings_class(kind)(backend=backend.name))
        assert getattr(changed, field) == expected, f"{kind}/{backend.name}.{field}"


def _another_value(current: Any) -> tuple[str, Any]:
    """An environment value for a field other than its default, and what it parses to."""
    if isinstance(current, bool):
        return ("false", False) if current else ("true", True)
    if isinstance(current, int | float):
        return str(current + 1), current + 1
    return "float16", "float16"  # a string field (also a valid diffusers dtype)


def test_flat_backend_names_are_gone() -> None:
    """The old flat names (``CHORUS_TTS_SPIN_WAIT``) are no settings any more: a deployment that
    still sets one is caught by tests/test_deploy_static.py instead of being obeyed."""
    from services.tts.settings import TtsSettings

    assert "spin_wait" not in TtsSettings.model_fields
    assert "api_key" not in settings_class("stt").model_fields
    assert "hf_token" not in settings_class("image").model_fields


def test_remote_defaults_are_kept() -> None:
    from services.image.settings import ImageSettings
    from services.llm.settings import LlmSettings
    from services.stt.settings import SttSettings
    from services.tts.settings import TtsSettings

    assert (SttSettings().openai_api.timeout_seconds, SttSettings().openai_api.max_retries) == (
        60.0,
        2,
    )
    assert TtsSettings().openai_api.model == "tts-1"
    assert (LlmSettings().openai.timeout_seconds, LlmSettings().openai.max_retries) == (120.0, 0)
    hf = ImageSettings().hf_inference
    assert hf.base_url == "https://router.huggingface.co/hf-inference"
    assert (hf.timeout_seconds, hf.max_retries) == (120.0, 0)


# --- one key rule for every remote backend ------------------------------------------------------

REMOTE = [
    ("stt", "openai-api"),
    ("tts", "openai-api"),
    ("llm", "openai"),
    ("image", "hf-inference"),
]


@pytest.mark.parametrize(("kind", "backend"), REMOTE, ids=lambda v: v)
def test_key_from_a_file_or_inline_never_both(
    kind: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    section = f"{BY_NAME[kind].env_prefix}{registry(kind).get(backend).section.upper()}__"
    secret = tmp_path / "key"
    secret.write_text("sk-from-file-1234\n")

    def options() -> ApiSettings:
        return registry(kind).options(settings_class(kind)(backend=backend))

    assert options().api_key() is None  # a remote that wants no key

    monkeypatch.setenv(f"{section}KEY_FILE", str(secret))
    assert options().api_key().get_secret_value() == "sk-from-file-1234"  # stripped

    monkeypatch.setenv(f"{section}KEY", "")  # secrets.env.example lists every key empty
    assert options().api_key().get_secret_value() == "sk-from-file-1234"

    monkeypatch.setenv(f"{section}KEY", "sk-inline-5678")
    with pytest.raises(ValidationError, match="set key or key_file, not both"):
        options()

    monkeypatch.delenv(f"{section}KEY_FILE")
    inline = options()
    assert inline.api_key().get_secret_value() == "sk-inline-5678"
    assert "sk-inline-5678" not in repr(inline) and "sk-inline-5678" not in str(inline)


def test_an_empty_key_file_means_no_key(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")
    assert ApiSettings(key_file=empty).api_key() is None
    assert ApiSettings(key=SecretStr("")).api_key() is None


# --- the server part and the model-service part --------------------------------------------------


def test_orchestrator_has_no_model_service_knobs() -> None:
    model_only = set(ModelServiceSettings.model_fields) - set(ServerSettings.model_fields)
    assert model_only >= {"preload", "idle_unload_seconds", "max_workers", "cpu_threads"}
    assert not model_only & set(OrchestratorSettings.model_fields)
    assert set(ServerSettings.model_fields) <= set(OrchestratorSettings.model_fields)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_model_services_keep_every_knob(kind: str) -> None:
    assert set(ModelServiceSettings.model_fields) <= set(settings_class(kind).model_fields)


# --- the generic registry ------------------------------------------------------------------------


def test_registry_refuses_two_backends_with_one_section() -> None:
    with pytest.raises(ValueError, match="share a settings section"):
        Registry("x", [Backend("a-b", Factory(str)), Backend("a_b", Factory(str))])
    with pytest.raises(ValueError, match="share a name"):
        Registry("x", [Backend("a", Factory(str)), Backend("a", Factory(str))])
