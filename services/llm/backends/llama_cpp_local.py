"""Local GGUF models through llama-cpp-python, in-process.

The conversation is rendered to one prompt here (the GGUF's own chat template, a named
llama-cpp chat format, or a plain transcript for base models), then streamed token by token
with ``create_completion``; so prompt tokens are counted exactly and every format gets the
same stop handling and cancellation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import llama_cpp
from llama_cpp import llama_chat_format
from llama_cpp.llama_types import CreateCompletionStreamResponse

from services.common.errors import InvalidArgument
from services.llm.backends.base import Completion, GenerationRequest, Message

log = logging.getLogger(__name__)

TRANSCRIPT = "transcript"


@dataclass(frozen=True)
class Prompt:
    text: str
    stop: list[str]


def transcript_prompt(messages: list[Message]) -> Prompt:
    """A plain dialogue a base model continues as the assistant, one paragraph at a time.

    Base models were never taught turn tokens, but they have read plenty of "User:/Assistant:"
    transcripts; stopping at the next blank line or speaker label keeps the reply short and on
    the question.
    """
    lines: list[str] = []
    for message in messages:
        if message.role == "system":
            lines.append(message.content.strip() + "\n")
        else:
            speaker = "User" if message.role == "user" else "Assistant"
            lines.append(f"{speaker}: {message.content.strip()}")
    lines.append("Assistant:")
    return Prompt("\n".join(lines), ["\n\n", "\nUser:", "\nAssistant:"])


class LlamaCppBackend:
    name = "llama-cpp"

    def __init__(
        self,
        model_id: str,
        path: Path,
        chat_format: str = "",
        context_tokens: int = 2048,
        threads: int = 0,
        gpu_layers: int = 0,
    ) -> None:
        threads = threads or os.cpu_count() or 1
        self.model_id = model_id
        self._llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context_tokens,
            # Every configured thread for generation and prompt processing alike: two threads
            # give ~1.6x the tokens/s of llama.cpp's default on a 2-core machine.
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=gpu_layers,
            verbose=False,
        )
        self._format = self._pick_format(chat_format)
        self.description = f"GGUF {path.name} ({self._format_name}, {threads} threads)"
        # A llama.cpp context holds one sequence: calls on one model take turns.
        self._lock = threading.Lock()
        log.info("loaded %s from %s, prompt format %s", model_id, path, self._format_name)

    def _pick_format(self, chat_format: str) -> Callable[[list[Message]], Prompt]:
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not chat_format and template:
            self._format_name = "the GGUF's chat template"
            formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
                stop_token_ids=[self._llama.token_eos()],
            )
            return lambda messages: _from_formatter(formatter, messages)
        if not chat_format or chat_format == TRANSCRIPT:
            self._format_name = TRANSCRIPT
            return transcript_prompt
        named = getattr(llama_chat_format, "format_" + chat_format.replace("-", "_"), None)
        if named is None:
            raise ValueError(f"unknown llama-cpp chat format {chat_format!r}")
        self._format_name = f"chat format {chat_format}"
        return lambda messages: _from_formatter(named, messages)

    def _token_text(self, token: int) -> str:
        return self._llama.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def render(self, messages: list[Message]) -> Prompt:
        """The prompt text and stop strings for a conversation."""
        return self._format(messages)

    def generate(
        self,
        request: GenerationRequest,
        on_delta: Callable[[str], None],
        cancelled: threading.Event,
    ) -> Completion:
        prompt = self.render(request.messages)
        stop = list(dict.fromkeys([*prompt.stop, *request.stop]))
        with self._lock:
            tokens = self._llama.tokenize(prompt.text.encode(), add_bos=True, special=True)
            prompt_tokens = len(tokens)
            if prompt_tokens + 1 >= self._llama.n_ctx():
                raise InvalidArgument(
                    f"the conversation is {prompt_tokens} tokens; the model's context holds "
                    f"{self._llama.n_ctx()}",
                    field="messages",
                )
            pieces: list[str] = []
            finish = "stop"
            completion_tokens = 0
            if request.seed is not None:
                # Reusing a cached prompt prefix changes the logits in the last bits, enough for
                # seeded sampling to drift: a seeded call evaluates its whole prompt afresh.
                self._llama.reset()
            # stream=True: a generator of chunks (the declared return also allows a whole answer).
            stream = cast(
                Generator[CreateCompletionStreamResponse, None, None],
                self._llama.create_completion(
                    prompt.text,
                    max_tokens=request.max_tokens,
                    temperature=request.temperature,
                    top_p=request.top_p,
                    stop=stop,
                    seed=request.seed,
                    stream=True,
                ),
            )
            try:
                for chunk in stream:
                    if cancelled.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    # One chunk per sampled token (text held back while it may start a stop
                    # string comes as ""), then a last one carrying only the finish reason.
                    completion_tokens += choice["finish_reason"] is None
                    text = choice["text"]
                    if not pieces:
                        text = text.lstrip()  # "Assistant: Paris" → "Paris", not " Paris"
                    if text:
                        pieces.append(text)
                        on_delta(text)
                    if choice["finish_reason"]:
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
            finally:
                stream.close()
        return Completion("".join(pieces), finish, prompt_tokens, completion_tokens)  # type: ignore[arg-type]


def _from_formatter(formatter: Callable[..., object], messages: list[Message]) -> Prompt:
    response = formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
    stop = getattr(response, "stop", None) or []
    if isinstance(stop, str):
        stop = [stop]
    return Prompt(response.prompt, list(stop))  # type: ignore[attr-defined]
