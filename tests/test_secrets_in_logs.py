"""After every other test of the session: no configured secret in any service's log.

The session's services (model services, orchestrator, gateway, Envoy, the loopback fakes of
hosted APIs, dockerd and Compose's containers, PostgreSQL) write their logs under pytest's base
temporary folder; tests/conftest.py runs this module last, so it reads them all after every key,
token and password was used: in headers, refused, echoed back by a hosted API, in URLs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.secrets import configured_secrets, kept_logs, leaks, log_files

pytestmark = pytest.mark.after_everything


def test_the_scan_finds_a_secret_that_was_logged(tmp_path: Path) -> None:
    """The check below can fail: a secret written to a log, plainly or inside a URL, is found."""
    secrets = {"planted": "sk-planted-0123456789/+="}
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "service.log").write_text(
        "INFO POST /v1/audio?key=sk-planted-0123456789%2F%2B%3D -> 200\n"
    )
    (tmp_path / "clean.log").write_text("INFO key sk-plant… (redacted)\n")
    found = leaks(secrets, [tmp_path], {})
    assert [(Path(leak.log).name, leak.secret) for leak in found] == [("service.log", "planted")]
    assert leaks(secrets, [], {"postgres": b"password sk-planted-0123456789/+="})


def test_no_configured_secret_is_in_any_service_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    secrets = configured_secrets()
    # The convention finds the keys where tests define them (conftest's is always loaded).
    assert "tests.conftest.OPENAI_API_KEY" in secrets
    root = tmp_path_factory.getbasetemp()
    logs = list(log_files([root]))
    assert logs, f"no service log under {root}"
    found = leaks(secrets, [root], kept_logs())
    print(f"{len(secrets)} secrets searched in {len(logs) + len(kept_logs())} logs")
    assert not found, "secrets in logs (names only): " + ", ".join(
        f"{leak.secret} in {leak.log}" for leak in found
    )
