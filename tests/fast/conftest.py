"""The fast layer: in-process tests, no model and no server process, seconds for all of them.

``make test-fast`` runs this folder (``make test`` runs it too, beside the real-server tests).
Stubs stand in for the gRPC channels (``tests/support/fakes.py``), so what is tested is the
code between a request and its calls: validation, limits, auth, error mapping, event framing,
the turn's rules.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: none of the runner's CHORUS_* variables may leak in."""
    for name in list(os.environ):
        if name.startswith("CHORUS_"):
            monkeypatch.delenv(name)
