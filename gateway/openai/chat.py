"""``/v1/chat/completions``: the LLM service's ``Generate``, whole or as OpenAI's SSE chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Literal

import grpc
from chorus.v1 import llm_pb2
from flask import Blueprint, Response, jsonify, stream_with_context

from gateway.capacity import admit_stream
from gateway.context import call_options, settings_of, stubs_of
from gateway.errors import ApiError, from_rpc_error
from gateway.openai.common import model_id, started
from gateway.openapi import documented
from gateway.parsing import check_text, json_body, validate
from gateway.responses import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatMessageOut,
    ChunkChoice,
    TokenUsage,
)
from gateway.schemas import ChatCompletionRequest
from gateway.streams import HEARTBEAT, SSE_HEADERS, SSE_HEARTBEAT, End, sse

__all__ = ["blueprint"]

blueprint = Blueprint("chat", __name__, url_prefix="/chat")

_CHAT_ROLES = {
    "system": llm_pb2.CHAT_ROLE_SYSTEM,
    "developer": llm_pb2.CHAT_ROLE_SYSTEM,
    "user": llm_pb2.CHAT_ROLE_USER,
    "assistant": llm_pb2.CHAT_ROLE_ASSISTANT,
}


def _finish(reason: int) -> Literal["stop", "length"]:
    return "length" if reason == llm_pb2.FINISH_REASON_LENGTH else "stop"


def _usage(usage: llm_pb2.TokenUsage) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _request(body: ChatCompletionRequest) -> llm_pb2.GenerateTextRequest:
    """The LLM request for an OpenAI chat request (text parts joined; limits checked)."""
    limit = settings_of().max_text_chars
    messages = []
    for i, m in enumerate(body.messages):
        content = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        check_text(content, limit, f"messages.{i}.content")
        messages.append(llm_pb2.ChatMessage(role=_CHAT_ROLES[m.role], content=content))
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    message = llm_pb2.GenerateTextRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens or 0,
        stop=stop,
        model=model_id(body.model),
    )
    for name in ("temperature", "top_p", "seed"):
        if getattr(body, name) is not None:
            setattr(message, name, getattr(body, name))
    return message


@blueprint.post("/completions")
@documented(
    "createChatCompletion",
    "chat",
    (ChatCompletion, "The completion; with stream, events of ChatCompletionChunk, then [DONE]"),
    events=ChatCompletionChunk,
    json=ChatCompletionRequest,
)
def completions() -> Response:
    """Create a chat completion, optionally streamed

    Text messages only, one choice. A failure after the stream started arrives as one event with
    an ErrorResponse, then [DONE]; closing the connection cancels the generation.
    """
    body = validate(ChatCompletionRequest, json_body())
    message = _request(body)
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    if body.stream:
        admit_stream()
    call = stubs_of().llm.Generate(message, **call_options())

    if not body.stream:
        try:
            result = next(e.result for e in call if e.WhichOneof("event") == "result")
        except grpc.RpcError as error:
            raise from_rpc_error(error, "text generation") from None
        except StopIteration:
            raise ApiError(502, "the language model returned no result", "empty_response") from None
        completion = ChatCompletion(
            id=completion_id,
            object="chat.completion",
            created=created,
            model=body.model or result.model,
            choices=[
                ChatChoice(
                    index=0,
                    message=ChatMessageOut(role="assistant", content=result.text, refusal=None),
                    logprobs=None,
                    finish_reason=_finish(result.finish_reason),
                )
            ],
            usage=_usage(result.usage),
        )
        return jsonify(completion.body())

    pump, first = started(call, "text generation")
    heartbeat = settings_of().heartbeat_seconds
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(choices: list[ChunkChoice], model: str = "", usage: TokenUsage | None = None) -> str:
        event = ChatCompletionChunk(
            id=completion_id,
            object="chat.completion.chunk",
            created=created,
            model=body.model or model,
            choices=choices,
        )
        if usage is not None:
            event.usage = usage
        return sse(None, event.body())

    def delta(content: ChatDelta, finish: Literal["stop", "length"] | None = None) -> str:
        return chunk([ChunkChoice(index=0, delta=content, logprobs=None, finish_reason=finish)])

    def stream() -> Iterator[str]:
        try:
            yield delta(ChatDelta(role="assistant", content=""))
            item = first
            items = pump.messages(heartbeat)
            while True:
                if item is HEARTBEAT:
                    yield SSE_HEARTBEAT
                elif isinstance(item, End):
                    if item.error is not None:
                        yield sse(None, from_rpc_error(item.error, "text generation").body())
                    break
                elif item.WhichOneof("event") == "delta":
                    if item.delta.text:
                        yield delta(ChatDelta(content=item.delta.text))
                else:
                    result = item.result
                    finish = _finish(result.finish_reason)
                    yield chunk(
                        [
                            ChunkChoice(
                                index=0, delta=ChatDelta(), logprobs=None, finish_reason=finish
                            )
                        ],
                        result.model,
                    )
                    if include_usage:
                        yield chunk([], result.model, _usage(result.usage))
                item = next(items)
            yield sse(None, "[DONE]")
        finally:
            pump.cancel()

    return Response(
        stream_with_context(stream()), mimetype="text/event-stream", headers=SSE_HEADERS
    )
