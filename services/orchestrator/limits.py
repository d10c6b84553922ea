"""What one conversational turn may carry, defined once for everything that checks it.

The orchestrator owns these limits: it enforces them on every turn, whoever calls it, and they
are its own settings (``CHORUS_ORCH_MAX_TEXT_CHARS``, ``..._MAX_HISTORY_MESSAGES``,
``..._MAX_HISTORY_CHARS``). The gateway loads this same class from the same variables (every
container reads the one shared env file or ConfigMap), so it refuses an oversized turn with a 400
before calling and hands the values to the browser through ``/api/config``; the browser trims
its history to them and keeps no numbers of its own. Both sides word the refusal with the
methods below, so they cannot apply different rules either.

The text generation service has wider limits of its own (``CHORUS_LLM_MAX_MESSAGES``,
``..._MAX_INPUT_CHARS``): it serves callers other than turns. A turn within these limits always
fits inside those (``tests/test_limits.py`` checks the defaults).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.catalog import BY_NAME

__all__ = ["Overflow", "TurnLimits"]


class Overflow(NamedTuple):
    """A limit that a turn's input goes over."""

    message: str
    """What to tell the caller; names the limit and the value that broke it."""
    code: str
    """A short machine-readable reason (the gateway's OpenAI-style error ``code``)."""


class TurnLimits(BaseSettings):
    """The bounds of one turn's text and history (``CHORUS_ORCH_*``)."""

    model_config = SettingsConfigDict(env_prefix=BY_NAME["orchestrator"].env_prefix, extra="ignore")

    max_text_chars: int = Field(default=4000, ge=1, le=1_000_000)
    """Longest typed input, and longest transcript passed on to the reply."""
    max_history_messages: int = Field(default=64, ge=0, le=10_000)
    """Most earlier messages one turn may carry."""
    max_history_chars: int = Field(default=24_000, ge=0, le=10_000_000)
    """Characters of all earlier messages together. With the longest text and the text
    generation service's default instructions this stays inside its 32,000-character input
    limit (32,000 here let a turn that passed every check fail at the reply)."""

    def text_overflow(self, text: str) -> Overflow | None:
        """Why ``text`` is too long to be a turn's input, or None."""
        if len(text) <= self.max_text_chars:
            return None
        return Overflow(
            f"the text has {len(text)} characters; the limit is {self.max_text_chars}",
            "string_above_max_length",
        )

    def history_overflow(self, contents: Sequence[str]) -> Overflow | None:
        """Why a history of messages with these ``contents`` is too long, or None."""
        if len(contents) > self.max_history_messages:
            return Overflow(
                f"history has {len(contents)} messages; the limit is {self.max_history_messages}",
                "too_many_messages",
            )
        chars = sum(map(len, contents))
        if chars > self.max_history_chars:
            return Overflow(
                f"history has {chars} characters; the limit is {self.max_history_chars}",
                "history_above_max_length",
            )
        return None
