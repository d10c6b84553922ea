"""schemathesis on the routes the plain gateway run leaves out, and proof that every documented
route is in some schemathesis run.

tests/test_gateway.py runs schemathesis against a gateway over the model services only (no
orchestrator), so it leaves out ``/api/turns`` and ``/readyz``; tests/test_stored_conversations.py
runs it on ``/v1/conversations`` against a gateway with stores. This module runs it on the two
left over, against the session ``gateway`` fixture (orchestrator and models behind it), with the
work of each generated turn bounded (a few tokens, tiny images), and asserts that the three runs
together cover every operation of the OpenAPI document: a route added to the gateway (and so to
the document, which tests/test_gateway.py checks) is fuzzed by the catch-all run unless a
run's filter leaves it out, and then this test names it.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

from tests.support.gateway import GatewayProcess, conforms, schema_settings
from tests.test_gateway import DOCUMENT
from tests.test_gateway import schema as models_run
from tests.test_stored_conversations import _conversations as conversations_run

orchestrated_run = schemathesis.openapi.from_dict(DOCUMENT).include(
    path_regex=r"^/(api/turns|readyz)$"
)
"""The routes that need an orchestrator behind the gateway."""

RUNS = {
    "tests/test_gateway.py": models_run,
    "tests/test_stored_conversations.py": conversations_run,
    "tests/test_gateway_schema.py": orchestrated_run,
}


def _operations(schema: Any) -> set[tuple[str, str]]:
    return {(op.ok().path, op.ok().method.lower()) for op in schema.get_all_operations()}


def test_every_documented_operation_is_in_a_schemathesis_run() -> None:
    documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
    covered: set[tuple[str, str]] = set()
    for run in RUNS.values():
        operations = _operations(run)
        assert operations, "a run whose filter leaves nothing"
        covered |= operations
    assert documented - covered == set(), "documented but fuzzed by no schemathesis run"
    assert covered <= documented
    assert {("/api/turns", "post"), ("/readyz", "get"), ("/metrics", "get")} <= covered


def _bound_options(options: dict[str, Any]) -> None:
    """A turn's work kept small: at most 4 reply tokens, 2 denoising steps, 64-pixel sides (a
    side over the image service's limit of 512 is left, to be refused)."""
    tokens = options.get("max_tokens")
    if not isinstance(tokens, int) or 0 <= tokens <= 8192:
        options["max_tokens"] = min(tokens, 4) if isinstance(tokens, int) and tokens else 4
    steps = options.get("image_steps")
    if isinstance(steps, int) and steps > 2:
        options["image_steps"] = 2
    for side in ("image_width", "image_height"):
        value = options.get(side)
        if isinstance(value, int) and 64 < value <= 512:
            options[side] = 64 + value % 8


@orchestrated_run.parametrize()
@schema_settings(8)
def test_orchestrated_routes_conform(case: Any, gateway: GatewayProcess) -> None:
    """/api/turns (typed and spoken turns, read to the end of their event stream) and /readyz:
    no server error, and every answer is one the document gives."""
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and case.path == "/api/turns":
        if "options" in body and isinstance(body["options"], str):  # a spoken turn's form field
            try:
                options = json.loads(body["options"])
            except ValueError:
                options = None
            if isinstance(options, dict):
                _bound_options(options)
                body["options"] = json.dumps(options)
        else:
            _bound_options(body)
    conforms(case, gateway.url)
