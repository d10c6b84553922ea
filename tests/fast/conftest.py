"""The fast layer: in-process tests, no model and no server process, seconds for all of them.

``make test-fast`` runs this folder (``make test`` runs it too, beside the real-server tests).
Stubs stand in for the gRPC channels (``tests/support/fakes.py``), so what is tested is the
code between a request and its calls: validation, limits, auth, error mapping, event framing,
the turn's rules.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.common.artifacts import ArtifactSettings
from services.common.conversations import ConversationSettings
from services.orchestrator.storage import Stores


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: none of the runner's CHORUS_* variables may leak in."""
    for name in list(os.environ):
        if name.startswith("CHORUS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def conversation_settings(tmp_path: Path) -> ConversationSettings:
    """An SQLite conversation store in the test's folder."""
    return ConversationSettings(url=SecretStr(f"sqlite:///{tmp_path / 'conversations.sqlite3'}"))


@pytest.fixture
async def stores(
    artifact_settings: ArtifactSettings, conversation_settings: ConversationSettings
) -> AsyncIterator[Stores]:
    """The orchestrator's stores over the module's ``artifact_settings`` and that database."""
    stores = Stores(artifact_settings, conversation_settings)
    yield stores
    await stores.close()
