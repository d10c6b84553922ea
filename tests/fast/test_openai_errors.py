"""A hosted API's failures mapped onto Chorus errors (services/common/openai_errors.py): a 429
keeps the remote's own Retry-After, so a caller waits as long as the remote asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2 as httpx
import openai
import pytest

from services.common.errors import Overloaded, Unauthenticated
from services.common.openai_errors import remote_error

URL = "http://127.0.0.1:9/v1/audio/speech"


def status_error(status: int, headers: dict[str, str]) -> openai.APIStatusError:
    """The exception the official client raises for ``status`` with ``headers``."""
    response = httpx.Response(
        status,
        headers=headers,
        json={"error": {"message": "slow down sk-secret"}},
        request=httpx.Request("POST", URL),
    )
    client = openai.OpenAI(api_key="sk-secret", base_url="http://127.0.0.1:9/v1")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "7", "retry-after-ms": "1500"}, 1.5),  # the finer one wins, as openai's
        ({}, 1.0),
        ({"retry-after": "soon"}, 1.0),
        ({"retry-after": "nan"}, 1.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "86400"}, 3600.0),
    ],
)
def test_a_rate_limit_keeps_the_remotes_retry_after(headers: dict[str, str], seconds: float):
    error = remote_error(status_error(429, headers), "sk-secret", "speech API")
    assert isinstance(error, Overloaded)
    assert error.retry_after == pytest.approx(seconds)
    assert "sk-secret" not in error.message and "[redacted]" in error.message


def test_an_http_date_retry_after_is_read_as_seconds_from_now():
    when = datetime.now(UTC) + timedelta(seconds=120)
    error = remote_error(status_error(429, {"retry-after": format_datetime(when, usegmt=True)}), "")
    assert error.retry_after is not None and 100 <= error.retry_after <= 121


def test_other_statuses_say_nothing_about_retrying():
    error = remote_error(status_error(401, {"retry-after": "5"}), "sk-secret")
    assert isinstance(error, Unauthenticated)
    assert error.retry_after is None
