"""The one small interface every text generation backend implements."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request: every default already applied."""

    messages: list[Message]
    """The conversation, oldest first; a system prompt, if any, is the first message."""
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    prompt_tokens: int
    completion_tokens: int


class TextGenerationBackend(Protocol):
    """One loaded model. ``generate`` runs on a worker thread."""

    name: str
    """Backend name, e.g. "llama-cpp" or "openai"."""
    model_id: str
    description: str

    def generate(
        self,
        request: GenerationRequest,
        on_delta: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Completion:
        """Generate a reply, calling ``on_delta`` with each new piece of text as it exists.

        Checks ``cancelled`` between tokens and returns promptly (finish reason "cancelled")
        once it is set, so an abandoned call frees its worker.

        Raises:
            ChorusError: for failures the caller can act on (bad key, rate limit, bad input).
        """
        ...
