"""Any OpenAI-compatible chat completions server, through the official ``openai`` client.

Works with OpenAI itself and with local servers that speak the same API (llama.cpp's server,
vLLM, Ollama, LM Studio). The API key is unwrapped only when the client is built and is never
logged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from services.common.openai_errors import remote_error
from services.common.settings import ApiSettings
from services.llm.backends.base import Completion, GenerationRequest

log = logging.getLogger(__name__)


class OpenAICompatibleBackend:
    name = "openai"

    def __init__(self, model_id: str, api: ApiSettings) -> None:
        """Build the client for ``api`` (its key read here, by ``ApiSettings.api_key``); no
        request is made, so a server that is down shows up per call, as UNAVAILABLE."""
        self.model_id = model_id
        self.description = f"{model_id} on the OpenAI-compatible server at {api.base_url}"
        key = api.api_key()
        self._secret = key.get_secret_value() if key is not None else ""
        self._client = openai.OpenAI(
            base_url=api.base_url,
            # Local servers need no key, but the client insists on one.
            api_key=self._secret or "unused",
            timeout=api.timeout_seconds,
            max_retries=api.max_retries,  # 0 by default: the caller (or Envoy) decides
        )
        log.info("openai backend: model %s at %s", model_id, api.base_url)

    def generate(
        self,
        request: GenerationRequest,
        on_delta: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Completion:
        pieces: list[str] = []
        finish = "stop"
        usage = None
        try:
            stream = self._client.chat.completions.create(
                model=self.model_id,
                # Each dict is one of the client's per-role message types (role is a Literal).
                messages=cast(
                    list[ChatCompletionMessageParam],
                    [{"role": m.role, "content": m.content} for m in request.messages],
                ),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=request.stop or None,
                seed=request.seed,
                stream=True,
                stream_options={"include_usage": True},
            )
            with stream:
                for chunk in stream:
                    if cancelled.is_set():
                        # Leaving the block closes the HTTP response, which stops the server.
                        return Completion("".join(pieces), "cancelled", 0, len(pieces))
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices[:1]:
                        text = choice.delta.content if choice.delta else None
                        if text:
                            pieces.append(text)
                            on_delta(text)
                        if choice.finish_reason:
                            finish = "length" if choice.finish_reason == "length" else "stop"
        except openai.APIError as exc:
            raise remote_error(exc, self._secret, "OpenAI-compatible server") from None
        text = "".join(pieces)
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            # Servers that ignore stream_options send no usage: count content chunks instead
            # (one token each on every server we know) and leave the prompt unknown.
            prompt_tokens, completion_tokens = 0, len(pieces)
        return Completion(text, finish, prompt_tokens, completion_tokens)  # type: ignore[arg-type]
