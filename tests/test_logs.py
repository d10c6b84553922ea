"""The log lines services write: JSON for collectors, text for terminals (no servers)."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from services.common.logs import log_handler, request_id


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.logs")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


def _lines(logger: logging.Logger, *, as_json: bool) -> io.StringIO:
    stream = io.StringIO()
    logger.addHandler(log_handler("stt", as_json=as_json, stream=stream))
    return stream


def test_json_lines_carry_the_fields(logger):
    stream = _lines(logger, as_json=True)
    token = request_id.set("req-42")
    try:
        logger.warning("slow call: %d ms", 1200)
        try:
            raise ValueError("bad input")
        except ValueError:
            logger.exception("failed")
    finally:
        request_id.reset(token)
    # Outside any call: a fresh context (tests before this one may have left a request id in
    # this thread's context, as a service's own threads do between calls).
    contextvars.Context().run(logger.info, "outside a call")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "slow call: 1200 ms"
    assert first["level"] == "WARNING" and first["logger"] == "tests.logs"
    assert first["service"] == "stt" and first["request_id"] == "req-42"
    assert first["time"] and "exception" not in first
    assert second["level"] == "ERROR" and "ValueError: bad input" in second["exception"]
    assert third["request_id"] == "-"


def test_no_secret_in_any_line(logger):
    key = SecretStr("sk-very-secret")
    json_stream, text_stream = _lines(logger, as_json=True), _lines(logger, as_json=False)
    logger.info("calling with %s", key, extra={"api_key": key, "settings": {"key": key}})
    line = json.loads(json_stream.getvalue())
    assert line["api_key"] == "**********"
    for output in (json_stream.getvalue(), text_stream.getvalue()):
        assert "sk-very-secret" not in output


def test_text_lines_name_service_and_request(logger):
    stream = _lines(logger, as_json=False)
    token = request_id.set("req-7")
    try:
        logger.info("hello")
    finally:
        request_id.reset(token)
    assert " INFO stt [req-7] tests.logs: hello" in stream.getvalue()
