"""The backends the contract tests run on: one list per model kind.

Each contract test takes ``<kind>_server``, a fixture parametrized over its kind's list here,
which starts the service through the fixture ``<kind>_<backend>`` (``-`` as ``_``:
``stt_openai_api``). ``tests/test_registry.py`` checks each list against its kind's registry,
so a backend registered without contract tests, or tested but not registered, fails a test.
"""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["CONTRACT_BACKENDS", "each_backend", "fixture_name"]

CONTRACT_BACKENDS: dict[str, tuple[str, ...]] = {
    "stt": ("faster-whisper", "openai-whisper", "openai-api"),
    "tts": ("piper", "coqui", "openai-api"),
    "llm": ("llama-cpp", "openai"),
    "image": ("diffusers", "hf-inference"),
}


def fixture_name(kind: str, backend: str) -> str:
    """The fixture that starts ``kind``'s service on ``backend``: ``stt_openai_api``."""
    return f"{kind}_{backend.replace('-', '_')}"


def each_backend(kind: str) -> Any:
    """A session fixture that is each of ``kind``'s contract backends in turn (its test ids are
    the backend names)."""

    @pytest.fixture(scope="session", params=CONTRACT_BACKENDS[kind])
    def server(request: pytest.FixtureRequest) -> Any:
        return request.getfixturevalue(fixture_name(kind, request.param))

    return server
