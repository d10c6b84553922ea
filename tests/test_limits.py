"""One owner per limit: a turn's text and history limits are the orchestrator's, and every other
place that applies them (the gateway, its /api/config, the browser) takes them from there.

In-process and fast: these fail as soon as a second copy of a limit appears or drifts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chorus.v1 import llm_pb2
from chorus.v1 import orchestrator_pb2 as pb

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.common.errors import ResourceExhausted
from services.llm.settings import LlmSettings
from services.orchestrator.inputs import check_config, unary_input
from services.orchestrator.limits import TurnLimits
from services.orchestrator.settings import OrchestratorSettings

APP_JS = Path(__file__).resolve().parent.parent / "frontend" / "app.js"
CHANGED = {
    "CHORUS_ORCH_MAX_TEXT_CHARS": "50",
    "CHORUS_ORCH_MAX_HISTORY_MESSAGES": "3",
    "CHORUS_ORCH_MAX_HISTORY_CHARS": "40",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets itself."""
    import os

    for name in list(os.environ):
        if name.startswith("CHORUS_"):
            monkeypatch.delenv(name)


def config_of(client) -> dict[str, int]:
    response = client.get("/api/config")
    assert response.status_code == 200
    return response.get_json()


@pytest.mark.parametrize("env", [{}, CHANGED], ids=["defaults", "changed"])
def test_gateway_and_browser_get_the_orchestrators_values(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    orchestrator = OrchestratorSettings()
    owned = TurnLimits.model_fields
    served = config_of(create_app(GatewaySettings()).test_client())
    assert {name: served[name] for name in owned} == {
        name: getattr(orchestrator, name) for name in owned
    }
    # The gateway has no setting of its own for a turn's history.
    assert not {n for n in GatewaySettings.model_fields if n.startswith("max_history")}


def test_browser_keeps_no_limits_of_its_own():
    source = APP_JS.read_text()
    assert not re.search(r"max_\w+\s*:\s*\d", source), "a limit is hard-coded in app.js"
    assert 'getJSON("config")' in source
    # The page uploads no files (its audio streams over /v1/realtime in 40 ms chunks), so of
    # /api/config's limits it applies the turn's; max_upload_bytes is for other callers.
    for name in TurnLimits.model_fields:
        assert f"limits.{name}" in source, f"app.js does not apply {name}"


def test_gateway_refuses_what_the_orchestrator_refuses(monkeypatch: pytest.MonkeyPatch):
    for name, value in CHANGED.items():
        monkeypatch.setenv(name, value)
    settings = OrchestratorSettings()
    client = create_app(GatewaySettings()).test_client()
    pair = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    cases = {
        "text": {"text": "x" * 51},
        "history": {"text": "x", "history": pair * 2},  # 4 messages, the limit is 3
        "history chars": {"text": "x", "history": [{"role": "user", "content": "y" * 41}]},
    }
    for case, body in cases.items():
        response = client.post("/api/turns", json=body)
        assert response.status_code == 400, case
        error = response.get_json()["error"]
        assert error["param"] == case.split()[0], case
        with pytest.raises(ResourceExhausted) as refused:
            history = [
                llm_pb2.ChatMessage(role=llm_pb2.CHAT_ROLE_USER, content=m["content"])
                for m in body.get("history", [])
            ]
            request = pb.RunTurnRequest(config=pb.TurnConfig(history=history), text=body["text"])
            check_config(request.config, settings)
            unary_input(request, settings)
        assert refused.value.message == error["message"], case


def test_a_turn_within_its_limits_fits_the_text_generation_service():
    """The reply gets the history, the turn's text and the instructions in one request; the
    text generation service's own limits (it serves other callers too) must hold all three."""
    turn, llm = TurnLimits(), LlmSettings()
    assert turn.max_history_messages + 1 <= llm.max_messages
    longest = turn.max_history_chars + turn.max_text_chars + len(llm.system_prompt)
    assert longest <= llm.max_input_chars
